"""Cameras per GPU on the per-batch scheduler: ResNet-50 torch-cuda fp16 (fuse_conv + CUDA graph), issue 13's target.

    PYTHONPATH=src python benchmarks/gpu_streams.py --out benchmarks/results/h200/streams-resnet50.json

What it measures, on one CUDA GPU (it stops with one line where there is none):
1. offline images/s at the max batch (closed loop, inputs already on the GPU, as GPU.md's reference figures);
   the offline bound in cameras = that / fps;
2. `find_max_streams` at `--fps` (99% of frames on time) twice: frames already on the GPU (`io=device`: the
   scheduler's own bound) and frames in host memory (`io=host`: pinned staging rows, copied in on a second CUDA
   stream while the previous batch computes), each with the fraction of the offline bound it reaches (target
   >= 0.9) and what limited it (host or device).
Batches are padded up to powers of two (one CUDA graph per size, not one per size 1..max). A short table goes to
stdout, everything with its method to `--out`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

TARGET_FRACTION = 0.9


def bucket_list(max_batch: int) -> list[int]:
    """Powers of two up to `max_batch`, and `max_batch` itself: the CUDA-graph sizes batches are padded to."""
    if max_batch < 1:
        raise SystemExit(f"gpu_streams: --max-batch must be at least 1, not {max_batch}")
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


def offline_bound(images_per_s: float, fps: float) -> float:
    """The most cameras the device could serve if every frame ran at the offline rate."""
    if not fps > 0:
        raise SystemExit(f"gpu_streams: --fps must be positive, not {fps}")
    return images_per_s / fps


def summarise(name: str, search: dict[str, Any], bound: float) -> dict[str, Any]:
    """One row of the table: cameras reached, share of the offline bound, the limit, the best trial's figures."""
    best = search.get("best") or {}
    cameras = int(search.get("max_streams") or 0)
    pipe = best.get("pipeline") or {}
    return {
        "io": name, "max_streams": cameras, "fraction_of_offline_bound": cameras / bound if bound else 0.0,
        "meets_target": bool(bound and cameras / bound >= TARGET_FRACTION),
        "on_time_fraction": (best.get("total") or {}).get("on_time_fraction"),
        "mean_batch": pipe.get("mean_batch"), "busy_fraction": pipe.get("busy_fraction"),
        "limit": (search.get("limit") or {}).get("why"),
    }


def table(offline: dict[str, Any], rows: list[dict[str, Any]], fps: float) -> str:
    lines = [f"offline: {offline['images_per_s']:,.0f} images/s at batch {offline['batch']} "
             f"-> bound {offline['bound_cameras']:,.0f} cameras at {fps:g} fps",
             f"{'frames':<8} {'cameras':>8} {'of bound':>9} {'on time':>8} {'batch':>6} {'busy':>5}  limit"]
    for row in rows:
        lines.append(f"{row['io']:<8} {row['max_streams']:>8,} {row['fraction_of_offline_bound']:>9.1%} "
                     f"{(row['on_time_fraction'] or 0):>8.1%} {(row['mean_batch'] or 0):>6.1f} "
                     f"{(row['busy_fraction'] or 0):>5.0%}  {row['limit'] or '-'}")
    return "\n".join(lines)


def require_cuda(who: str = "gpu_streams") -> Any:
    """torch with a CUDA device, or the benchmark `who` stops with one line saying what is missing."""
    try:
        import torch
    except ImportError:
        raise SystemExit(f"{who}: torch is not installed; this benchmark needs torch with CUDA") from None
    if not torch.cuda.is_available():
        raise SystemExit(f"{who}: no CUDA device here; run it on the GPU machine")
    return torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--trial-s", type=float, default=3.0, help="seconds per find-max trial")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--io", default="device,host", help="which frame placements to search (device,host)")
    args = parser.parse_args(argv)
    buckets = bucket_list(args.max_batch)
    bound_check = offline_bound(1.0, args.fps)  # validates --fps before anything heavy
    del bound_check
    placements = [p.strip() for p in args.io.split(",") if p.strip()]
    if not placements or set(placements) - {"device", "host"}:
        raise SystemExit(f"gpu_streams: --io takes device and/or host, not {args.io!r}")
    torch = require_cuda()

    import rtpick
    from rtpick.data import synthetic_feeds
    from rtpick.files import check_writable, write_json
    from rtpick.perf import scenarios

    check_writable(args.out, "benchmark results")
    session = rtpick.load("torchvision:resnet50", "torch-cuda", args.precision, batch=args.max_batch,
                          fuse_conv=True, cuda_graph=True)
    name = session.inputs[0].name
    shape = (args.max_batch, *[int(d) if isinstance(d, int) else 224 for d in session.inputs[0].shape[1:]])
    host = synthetic_feeds(session.inputs, {name: shape}, seed=0)
    device = {k: torch.from_numpy(v).to("cuda") for k, v in host.items()}
    results: dict[str, Any] = {
        "command": "PYTHONPATH=src python benchmarks/gpu_streams.py " + " ".join(argv or sys.argv[1:]),
        "gpu": torch.cuda.get_device_name(0), "config": f"{session.config} fuse_conv cuda_graph",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "batch_sizes": buckets,
    }
    point = scenarios.offline_point(session, device, min_duration_s=5.0, min_queries=200, warmup=None, split=False)
    offline = {"batch": args.max_batch, "images_per_s": point.throughput, "p50_ms": point.p50,
               "bound_cameras": offline_bound(point.throughput, args.fps), "method": point.method}
    results["offline"] = offline
    rows = []
    for placement in placements:
        feeds = device if placement == "device" else host
        search = scenarios.find_max_streams(session, feeds, fps=args.fps, duration_s=args.trial_s,
                                            max_batch=args.max_batch, batch_sizes=buckets,
                                            progress=lambda line, p=placement: print(f"  [{p}] {line}", flush=True))
        rows.append(summarise(placement, search, offline["bound_cameras"]))
        results[f"find_max_{placement}"] = search
    results["summary"] = rows
    print(table(offline, rows, args.fps))
    write_json(args.out, results, "benchmark results")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
