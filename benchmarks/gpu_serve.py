"""`rtpick serve` on one CUDA GPU: ResNet-50 fp16 (fuse_conv + CUDA graph) over gRPC, vs the offline scenario.

    PYTHONPATH=src python benchmarks/gpu_serve.py --out benchmarks/results/h200/serve-resnet50.json

Issue 14's target: the server reaches at least 70% of the offline scenario's images/s at the same max batch.
1. offline: `scenarios.offline_point` at `--max-batch`, inputs already on the GPU, in this process (then freed);
2. served: the same configuration served by `python -m rtpick serve torchvision:resnet50 -r torch-cuda:fp16
   --option fuse_conv=true --option cuda_graph=true --max-batch N` (a subprocess, loopback, batches padded to
   powers of two, one CUDA graph each; MODEL -r rather than a deploy file because random torchvision weights
   hash differently in each process);
   `--client-procs` processes of rtpick's own load generator each keep `--concurrency` gRPC ModelInfer
   calls in flight (closed loop, `--rows-per-request` images per request, fp32 as the model's input is
   declared) for `--duration` seconds; images/s = the sum of the 200s' rows over the wall time. With
   `--shared-memory both` (the default) this runs twice: "socket" with the images in raw_input_contents, and
   "shm" with them in system shared memory (each client process registers one input and one output region
   with a slot per call in flight and writes its images into its slot before each call); `none` or `system`
   runs one of them;
3. where `perf_analyzer` is on PATH, the same with perf_analyzer over gRPC (its stdout kept; with
   `--shared-memory system` for the shm row).
A short table goes to stdout, everything with its method to `--out`. Without CUDA it stops with one line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpu_streams import bucket_list, require_cuda  # the CUDA-graph sizes batches are padded to, as streams uses
from serve_cpu import free_port, stop_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
TARGET_FRACTION = 0.7
MODEL = "resnet50"


def check_plan(max_batch: int, rows_per_request: int, client_procs: int, concurrency: int) -> None:
    """Refuse a load that could never fill a batch or that a request alone would overflow."""
    if not 1 <= rows_per_request <= max_batch:
        raise SystemExit(f"gpu_serve: --rows-per-request must be 1..{max_batch} (the max batch), "
                         f"not {rows_per_request}")
    if client_procs < 1 or concurrency < 1:
        raise SystemExit("gpu_serve: --client-procs and --concurrency must be at least 1")


def combine(outcomes: list[dict[str, Any]], rows_per_request: int) -> dict[str, Any]:
    """Sum the client processes' summaries: images/s over the longest wall time, the worst p99, every status."""
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        for code, count in outcome["statuses"].items():
            statuses[code] = statuses.get(code, 0) + int(count)
    ok = statuses.get("200", 0)
    wall = max((o["wall_s"] for o in outcomes), default=0.0)
    p99s = [o["p99_ms"] for o in outcomes if o.get("p99_ms") is not None]
    p50s = [o["p50_ms"] for o in outcomes if o.get("p50_ms") is not None]
    return {"statuses": statuses, "requests_ok": ok, "wall_s": wall,
            "images_per_s": ok * rows_per_request / wall if wall > 0 else 0.0,
            "p50_ms_median_of_clients": sorted(p50s)[len(p50s) // 2] if p50s else None,
            "p99_ms_worst_client": max(p99s) if p99s else None,
            "errors": [e for o in outcomes for e in o.get("errors", [])][:5]}


def verdict(offline_images_per_s: float, served_images_per_s: float) -> dict[str, Any]:
    fraction = served_images_per_s / offline_images_per_s if offline_images_per_s > 0 else 0.0
    return {"fraction_of_offline": fraction, "target": TARGET_FRACTION, "meets_target": fraction >= TARGET_FRACTION}


def table(offline: dict[str, Any], served: dict[str, Any] | None, result: dict[str, Any] | None,
          pa: dict[str, Any] | None, shm: dict[str, Any] | None = None, shm_result: dict[str, Any] | None = None,
          pa_shm: dict[str, Any] | None = None) -> str:
    """The offline row, then a row per transport measured (socket: raw_input_contents; shm: shared memory)."""
    lines = [f"{'what':<40} {'images/s':>10} {'of offline':>10}",
             f"{'offline, batch ' + str(offline['batch']):<40} {offline['images_per_s']:>10,.0f} {1:>10.0%}"]
    for label, row, verdict_of, analyzer in (("gRPC raw contents", served, result, pa),
                                             ("gRPC system shared memory", shm, shm_result, pa_shm)):
        if row is not None and row.get("skipped"):
            lines.append(f"{'served (' + label + ')':<40} skipped: {row['skipped']}")
            continue
        if row is None or verdict_of is None:
            continue
        lines.append(f"{'served (' + label + ', own loadgen)':<40} {row['images_per_s']:>10,.0f} "
                     f"{verdict_of['fraction_of_offline']:>10.1%}")
        if analyzer and analyzer.get("images_per_s"):
            lines.append(f"{'served (' + label + ', perf_analyzer)':<40} {analyzer['images_per_s']:>10,.0f} "
                         f"{analyzer['images_per_s'] / offline['images_per_s']:>10.1%}")
        lines.append(f"  {label}: target >= {TARGET_FRACTION:.0%}: "
                     f"{'met' if verdict_of['meets_target'] else 'NOT met'}; statuses {row['statuses']}; "
                     f"p99 (worst client) {row['p99_ms_worst_client']} ms")
    return "\n".join(lines)


def perf_analyzer_images_per_s(stdout: str, rows_per_request: int) -> float | None:
    """perf_analyzer's 'Throughput: N infer/sec' line of its last concurrency (infer = one request of -b rows)."""
    import re

    found = re.findall(r"Throughput:\s*([0-9.]+)\s*infer/sec", stdout)
    return float(found[-1]) * rows_per_request if found else None


def client_worker(port: int, model: str, input_name: str, shape: list[int], concurrency: int,
                  duration_s: float, shared_memory: str = "none") -> dict[str, Any]:
    """One client process: `concurrency` gRPC calls in flight, closed loop, for `duration_s` seconds; the
    images in raw_input_contents (`shared_memory` "none") or in system shared memory ("system")."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from rtpick.serve.loadgen import GrpcTarget, run_closed

    x = np.random.default_rng(os.getpid()).standard_normal(shape).astype(np.float32)
    url = f"grpc://127.0.0.1:{port}"
    if shared_memory == "system":
        from rtpick.serve.loadgen_shm import ShmGrpcTarget

        target: Any = ShmGrpcTarget(url, model, {input_name: x}, {input_name: "FP32"}, concurrency)
    else:
        target = GrpcTarget(url, model, {input_name: x}, {input_name: "FP32"})
    try:
        return run_closed(target, concurrency, max_requests=10_000_000, duration_s=duration_s).summary(shape[0])
    finally:
        if hasattr(target, "close"):
            target.close()


def transports(shared_memory: str) -> list[str]:
    """The load generator's --shared-memory values to run: both by default."""
    return {"both": ["none", "system"], "none": ["none"], "system": ["system"]}[shared_memory]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--rows-per-request", type=int, default=32, help="images per gRPC request")
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per client process")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument("--shared-memory", choices=["both", "none", "system"], default="both",
                        help="how the clients pass images: none (gRPC raw contents), system (shared memory), both")
    args = parser.parse_args(argv)
    buckets = bucket_list(args.max_batch)
    check_plan(args.max_batch, args.rows_per_request, args.client_procs, args.concurrency)
    torch = require_cuda("gpu_serve")
    sys.path.insert(0, str(ROOT / "src"))
    import multiprocessing

    import rtpick
    from rtpick.data import synthetic_feeds
    from rtpick.files import check_writable, write_json
    from rtpick.perf import scenarios

    check_writable(args.out, "benchmark results")
    options = {"fuse_conv": True, "cuda_graph": True}
    session = rtpick.load("torchvision:resnet50", "torch-cuda", args.precision, batch=args.max_batch, **options)
    name = session.inputs[0].name
    shape = (args.max_batch, *[int(d) if isinstance(d, int) else 224 for d in session.inputs[0].shape[1:]])
    host = synthetic_feeds(session.inputs, {name: shape}, seed=0)
    device = {k: torch.from_numpy(v).to("cuda") for k, v in host.items()}
    point = scenarios.offline_point(session, device, min_duration_s=5.0, min_queries=200, warmup=None, split=False)
    offline = {"batch": args.max_batch, "images_per_s": point.throughput, "p50_ms": point.p50, "method": point.method}
    del session, device
    torch.cuda.empty_cache()

    port, grpc_port = free_port(), free_port()
    results: dict[str, Any] = {
        "command": "PYTHONPATH=src python benchmarks/gpu_serve.py " + " ".join(argv or sys.argv[1:]),
        "gpu": torch.cuda.get_device_name(0), "config": f"torch-cuda:{args.precision} fuse_conv cuda_graph",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "batch_sizes": buckets, "offline": offline,
    }
    command = [sys.executable, "-m", "rtpick", "serve", "torchvision:resnet50", "-r",
               f"torch-cuda:{args.precision}", "--option", "fuse_conv=true", "--option", "cuda_graph=true",
               "--max-batch", str(args.max_batch), "--name", MODEL, "--port", str(port),
               "--grpc-port", str(grpc_port), "--batch-sizes", ",".join(map(str, buckets)),
               "--max-queue-delay-ms", str(args.max_queue_delay_ms), "--timeout-ms", "0",
               "--max-request-bytes", str(1 << 30), "--exit-timeout", "10"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen(command, env=env)
    results["server_command"] = " ".join(["rtpick", *command[3:]])
    try:
        wait_ready(port, server, "gpu_serve", 600)
        request_shape = [args.rows_per_request, *shape[1:]]
        context = multiprocessing.get_context("spawn")
        for mode in transports(args.shared_memory):
            key = "served" if mode == "none" else "served_shm"
            how = "raw_input_contents" if mode == "none" else "system shared memory"
            try:
                results[f"warm_up_{mode}"] = client_worker(grpc_port, MODEL, name, request_shape, 2, 3.0, mode)
                with context.Pool(args.client_procs) as pool:
                    outcomes = pool.starmap(client_worker, [(grpc_port, MODEL, name, request_shape,
                                                             args.concurrency, args.duration, mode)]
                                            * args.client_procs)
            except Exception as exc:  # noqa: BLE001 - e.g. /dev/shm too small: that row is skipped, said why
                results[key] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            served = combine(outcomes, args.rows_per_request)
            served["method"] = (f"{args.client_procs} processes x {args.concurrency} gRPC ModelInfer calls in "
                                f"flight, {args.rows_per_request} images each ({how}, FP32), closed loop for "
                                f"{args.duration:g} s; images/s = 200s x rows / the longest wall time")
            results[key] = served
            results[f"clients_{mode}"] = outcomes
        binary = shutil.which("perf_analyzer")
        for mode in transports(args.shared_memory):
            key = "perf_analyzer" if mode == "none" else "perf_analyzer_shm"
            if not binary:
                results[key] = {"skipped": "perf_analyzer is not on PATH"}
                continue
            extra = [] if mode == "none" else ["--shared-memory", "system", "--output-shared-memory-size",
                                               str(args.rows_per_request * 1000 * 4)]
            run = subprocess.run([binary, "-m", MODEL, "-u", f"127.0.0.1:{grpc_port}", "-i", "grpc",
                                  "-b", str(args.rows_per_request), "--concurrency-range",
                                  str(args.client_procs * args.concurrency), "--shape",
                                  f"{name}:{','.join(map(str, shape[1:]))}", "--measurement-interval",
                                  "5000", *extra], capture_output=True, text=True, timeout=600)
            results[key] = {"returncode": run.returncode, "stdout_tail": run.stdout[-3000:],
                            "images_per_s": perf_analyzer_images_per_s(run.stdout, args.rows_per_request)}
    finally:
        stop_server(server)
    for key, verdict_key in (("served", "result"), ("served_shm", "result_shm")):
        if key in results and not results[key].get("skipped"):
            results[verdict_key] = verdict(offline["images_per_s"], results[key]["images_per_s"])
    print(table(offline, results.get("served"), results.get("result"), results.get("perf_analyzer"),
                results.get("served_shm"), results.get("result_shm"), results.get("perf_analyzer_shm")))
    write_json(args.out, results, "benchmark results")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
