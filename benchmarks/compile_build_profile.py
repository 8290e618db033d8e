"""Where a torch.compile build of ResNet-50 spends its time: CPU fp32, then CUDA tf32 and fp16 with freezing and
CUDA graphs, built in one process, each timed (and, with ``profile``, under cProfile: the top functions by
cumulative and by own time). Run it three times in a row with one set of caches to see cold against warm:

    export PYTHONPATH=src RTPICK_CACHE_DIR=/tmp/c/rtpick
    export TORCHINDUCTOR_CACHE_DIR=/tmp/c/inductor TRITON_CACHE_DIR=/tmp/c/triton
    python benchmarks/compile_build_profile.py plain > cold.txt
    python benchmarks/compile_build_profile.py profile > warm.txt
    TORCHINDUCTOR_COMPILE_THREADS=1 python benchmarks/compile_build_profile.py plain > warm1.txt

This is what found Inductor's per-process instruction-set checks (`rtpick.runtimes.inductor_isa`).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

from rtpick.runtimes.registry import get_runtime
from rtpick.sources import load_model

JOBS = [("torch-compile-cpu", "fp32", {}),
        ("torch-compile-cuda", "tf32", {"freezing": True, "mode": "reduce-overhead"}),
        ("torch-compile-cuda", "fp16", {"freezing": True, "mode": "reduce-overhead"})]


def main() -> None:
    profile = len(sys.argv) > 1 and sys.argv[1] == "profile"
    loaded = load_model("torchvision:resnet50")
    shapes = {loaded.spec.inputs[0].name: (1, 3, 224, 224)}
    for runtime, precision, options in JOBS:
        profiler = cProfile.Profile() if profile else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        session = get_runtime(runtime).build(loaded, precision, shapes, **options)
        if profiler is not None:
            profiler.disable()
        print(f"{runtime}:{precision} {options} built in {time.perf_counter() - start:.1f} s", flush=True)
        if profiler is not None:
            for order, count in (("cumulative", 45), ("tottime", 15)):
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(count)
                print(text.getvalue()[:9000])
        session.close()


if __name__ == "__main__":
    main()
