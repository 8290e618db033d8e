"""Can rtpick's single-stream numbers be trusted on a GPU? One process, one model, two measurements:

1. rtpick's own single-stream scenario (`rtpick.perf.scenarios.single_stream`) on a torch-cuda session of
   ResNet-50 (torchvision architecture, random weights) at batch 1, inputs already on the GPU;
2. a separate loop over the same model called directly with torch (the same eval-mode, channels_last, fp32
   module and input), each call bracketed by CUDA events.

The two medians should agree within 5% (issue 4). The direct loop and rtpick's measurement alternate three
times (A B A B A B) so that a clock or thermal drift shows up instead of biasing one side.

    PYTHONPATH=src python benchmarks/gpu_bench_trust.py --out benchmarks/results/h100/bench-trust.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path


def direct_loop(module, x, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    import torch

    samples = []
    with torch.inference_mode():
        for _ in range(count):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            module(x.contiguous(memory_format=torch.channels_last))
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    import torch

    import rtpick
    from rtpick.perf.scenarios import single_stream
    from rtpick.sources import load_model

    model = load_model("torchvision:resnet50")
    session = rtpick.load(model, "torch-cuda", "fp32", batch=1)
    module = model.torch_module().eval().cuda().to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224, device="cuda")
    # The session is true fp32 (rtpick turns TF32 off for fp32 and sets it on every run); the direct loop
    # must run with the same switches, or it times TF32 convolutions instead.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    direct_loop(module, x, 50)  # warm-up: cuDNN picks its kernels
    rounds = []
    for _ in range(3):
        result = single_stream(session, {"input": x}, min_duration_s=args.seconds, min_queries=1000, warmup=50)
        direct = direct_loop(module, x, result.n)
        rounds.append({
            "rtpick_p50_ms": result.p50, "rtpick_p99_ms": result.p99, "rtpick_ci_p50_ms": result.ci_p50,
            "rtpick_device_p50_ms": (result.device_latency_ms or {}).get("p50"),
            "rtpick_queries": result.n, "rtpick_method": result.method,
            "direct_event_p50_ms": statistics.median(direct), "direct_calls": len(direct),
        })
    rtpick_p50 = statistics.median(r["rtpick_p50_ms"] for r in rounds)
    direct_p50 = statistics.median(r["direct_event_p50_ms"] for r in rounds)
    difference = 100.0 * (rtpick_p50 - direct_p50) / direct_p50
    payload = {
        "command": "PYTHONPATH=src python " + shlex.join(sys.argv),
        "configuration": "torch-cuda:fp32 channels_last, torchvision:resnet50 (random weights), batch 1, "
                         "inputs on the GPU",
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "rounds": rounds,
        "rtpick_p50_ms": rtpick_p50, "direct_event_p50_ms": direct_p50, "difference_pct": difference,
        "target": "within 5%", "within_target": abs(difference) <= 5.0,
    }
    from rtpick.files import atomic_write_bytes

    atomic_write_bytes(Path(args.out), json.dumps(payload, indent=2).encode())
    for r in rounds:
        print(f"rtpick single-stream p50 {r['rtpick_p50_ms']:.4f} ms (host clock; device {r['rtpick_device_p50_ms']}) "
              f"| direct CUDA-event loop p50 {r['direct_event_p50_ms']:.4f} ms")
    print(f"median of rounds: rtpick {rtpick_p50:.4f} ms vs direct {direct_p50:.4f} ms: {difference:+.2f}% "
          f"({'within' if abs(difference) <= 5 else 'OUTSIDE'} 5%)")


if __name__ == "__main__":
    main()
