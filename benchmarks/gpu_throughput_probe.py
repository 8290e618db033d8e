"""Where ResNet-50's time goes on the GPU, and what moves it: the evidence behind rtpick's `fuse_conv` option.

Direct library calls only (no rtpick session), fp16 weights, channels_last, input already fp16 channels_last on
the GPU. Variants:
- torch.compile default mode (GPU.md's reference configuration for batch 256) and reduce-overhead (batch 1);
- eager PyTorch as is;
- eager PyTorch after rtpick's conv fusion pass (batch norm folded in fp32, then conv+bias+ReLU and
  conv+bias+residual+ReLU as single cuDNN calls), with cuDNN's algorithm search off and on, and replayed from a
  CUDA graph;
- torch.compile default mode called on two CUDA streams at once (two batches in flight; images/s counts both).
Timed as in gpu_proof.py (a CUDA-event pair around each call, event-synchronised, variants alternating in rounds,
medians). A torch.profiler pass then sums GPU kernel time by kind (cuDNN/cuBLAS/CUTLASS library kernels, Triton
kernels Inductor generated, the rest) for the main variants. Accuracy of each variant against the fp32 eager
model on the same input: norm-wise relative error and top-1 agreement.

    PYTHONPATH=src python benchmarks/gpu_throughput_probe.py --batches 256,1 --out throughput-probe.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_proof import compiled_call, graphed, interleaved, load, write  # noqa: E402


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("triton") or "triton_" in lowered:
        return "triton (Inductor)"
    if any(key in lowered for key in ("cudnn", "xmma", "cutlass", "sm90", "sm80", "gemm", "conv", "implicit")):
        return "cuDNN/cuBLAS/CUTLASS"
    return "other"


def profile(fn: Any, iterations: int = 5) -> dict[str, Any]:
    """GPU kernel time per call by kind, and the wall time per call over the same calls."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1e3 / iterations
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    launches = 0
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = getattr(event, "device_time", None) or getattr(event, "cuda_time", 0.0)
        by_kind[kernel_kind(event.name)] += us / 1e3 / iterations
        by_name[event.name[:90]] += us / 1e3 / iterations
        launches += 1
    top = sorted(by_name.items(), key=lambda item: -item[1])[:8]
    return {"wall_ms_per_call": wall_ms, "kernel_ms_per_call": dict(by_kind),
            "kernels_per_call": launches / iterations, "top_kernels_ms": dict(top)}


def accuracy(out: Any, reference: Any) -> dict[str, float]:
    out, reference = out.float(), reference.float()
    rel = float((out - reference).norm() / reference.norm())
    top1 = float((out.argmax(1) == reference.argmax(1)).float().mean())
    return {"relative_error": rel, "top1_agreement": top1, "finite": bool(out.isfinite().all())}


def measure_batch(batch: int, fp32: Any, base: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every variant at one batch size: timed rows with their accuracy, then kernel-time profiles."""
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv

    torch.manual_seed(batch)
    x32 = torch.rand(batch, 3, 224, 224, device="cuda")
    x = x32.half().contiguous(memory_format=torch.channels_last)
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        reference = fp32(x32)
    start = time.perf_counter()
    fused, report = fuse_conv(fp32, [x32])  # folded in fp32, then cast, as rtpick's option does
    fuse_s = time.perf_counter() - start
    fused = fused.half().to(memory_format=torch.channels_last)

    def with_search(on: bool, module: Any) -> Any:
        def call() -> Any:
            torch.backends.cudnn.benchmark = on
            with torch.inference_mode():
                return module(x)
        return call

    fns: dict[str, Any] = {
        "eager fp16": with_search(False, base),
        "eager fp16, fused, cudnn search off": with_search(False, fused),
        "eager fp16, fused, cudnn search on": with_search(True, fused),
    }
    torch.backends.cudnn.benchmark = True
    fns["eager fp16, fused, cudnn search on, CUDA graph"] = graphed(fused, x, copy_out=False)
    torch.backends.cudnn.benchmark = False
    fns["eager fp16, CUDA graph"] = graphed(base, x, copy_out=False)

    mode = "default" if batch > 1 else "reduce-overhead"
    compiled = torch.compile(copy.deepcopy(base), mode=mode)

    call_compiled = compiled_call(compiled, x, graphs=mode == "reduce-overhead", cudnn_benchmark=False)

    start = time.perf_counter()
    call_compiled()
    torch.cuda.synchronize()
    build = {f"torch.compile {mode} fp16": time.perf_counter() - start}
    fns[f"torch.compile {mode} fp16"] = call_compiled
    if batch > 1:
        streams = [torch.cuda.Stream(), torch.cuda.Stream()]
        second = x.clone()

        def two_streams() -> Any:
            torch.backends.cudnn.benchmark = False
            main_stream = torch.cuda.current_stream()
            outs = []
            with torch.inference_mode():
                for stream, inp in zip(streams, (x, second)):
                    stream.wait_stream(main_stream)
                    with torch.cuda.stream(stream):
                        outs.append(compiled(inp))
                for stream in streams:
                    main_stream.wait_stream(stream)
            return outs[0]

        fns["torch.compile default fp16, two streams (2 batches a call)"] = two_streams

    rows = []
    samples = interleaved(fns, warmup=10 if batch == 1 else 3, rounds=5, per_round=40 if batch == 1 else 10)
    for name, values in samples.items():
        images = batch * (2 if "two streams" in name else 1)
        median = statistics.median(values)
        with torch.inference_mode():
            out = fns[name]()
            torch.cuda.synchronize()
            quality = accuracy(out, reference)
        rows.append({"batch": batch, "variant": name, "median_ms": median, "min_ms": min(values),
                     "samples": len(values), "images_per_call": images,
                     "throughput_per_s": images / median * 1e3, "build_s": build.get(name), **quality})
    rows.append({"batch": batch, "variant": "fusion pass", "fuse_s": fuse_s, "report": report.describe()})
    profiles = {f"batch {batch}: {name}": profile(fns[name])
                for name in ("eager fp16", "eager fp16, fused, cudnn search on", f"torch.compile {mode} fp16",
                             "eager fp16, fused, cudnn search on, CUDA graph")}
    return rows, profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="256,1")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    torch._dynamo.config.recompile_limit = 64
    model, _ = load("resnet50")
    fp32 = model.torch_module().eval().cuda()
    base = copy.deepcopy(fp32).half().to(memory_format=torch.channels_last)
    rows: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        try:
            batch_rows, batch_profiles = measure_batch(batch, fp32, base)
        except Exception as exc:  # noqa: BLE001 - keep what other batches measured
            batch_rows, batch_profiles = [{"batch": batch, "variant": "all", "error": repr(exc)[:500]}], {}
        rows += batch_rows
        profiles.update(batch_profiles)
        torch.cuda.empty_cache()
    write(args.out, {"model": "resnet50", "method": __doc__.split("\n\n")[1], "rows": rows, "profiles": profiles})
    for key, value in profiles.items():
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in value["kernel_ms_per_call"].items())
        print(f"{key}: wall {value['wall_ms_per_call']:.2f} ms/call, {value['kernels_per_call']:.0f} kernels; {kinds}")
    print(f"{'batch':>5} {'variant':<62} {'median ms':>10} {'img/s':>9} {'rel err':>9} {'top1':>6}")
    for row in rows:
        if "median_ms" in row:
            print(f"{row['batch']:>5} {row['variant']:<62} {row['median_ms']:>10.4f} "
                  f"{row['throughput_per_s']:>9.0f} {row['relative_error']:>9.1e} {row['top1_agreement']:>6.3f}")
        else:
            print(f"{row['batch']:>5} {row['variant']:<62} {row.get('report') or row.get('error', '')}")


if __name__ == "__main__":
    main()
