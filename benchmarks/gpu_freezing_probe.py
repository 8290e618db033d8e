"""Why torch-compile-cuda with `freezing` and CUDA graphs was 2.6x slower in rtpick than the direct call.

For rtpick's reduce-overhead and default sessions with Inductor freezing (ResNet-50, fp16, batch 1, input on the
GPU): the median of 100 calls (CUDA events) and how many `aten::copy_` one call runs (torch profiler). With the
model compiled inside rtpick's dtype-cast wrapper, one call ran 269 copies: every weight copied into the CUDA
graph's inputs before the replay. rtpick now compiles the model itself under freezing and casts around it.

    PYTHONPATH=src python benchmarks/gpu_freezing_probe.py > freezing-probe.txt
"""

from __future__ import annotations

import collections
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_proof import cuda_event_times, load  # noqa: E402


def copies_per_call(call: Any) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
        torch.cuda.synchronize()
    return collections.Counter(event.name for event in prof.events())["aten::copy_"]


def main() -> None:
    import torch

    from rtpick.runtimes.registry import get_runtime

    model, _ = load("resnet50")
    x = torch.rand(1, 3, 224, 224, device="cuda")
    for mode in ("reduce-overhead", "default"):
        session = get_runtime("torch-compile-cuda").build(model, "fp16", {"input": (1, 3, 224, 224)}, mode=mode,
                                                          freezing=True)

        def call(session: Any = session) -> Any:
            return session.run({"input": x})

        times = cuda_event_times(call, 100)
        print(f"torch-compile-cuda:fp16 mode={mode} freezing=True: median {statistics.median(times):.4f} ms, "
              f"aten::copy_ per call {copies_per_call(call)}", flush=True)
        session.close()


if __name__ == "__main__":
    main()
