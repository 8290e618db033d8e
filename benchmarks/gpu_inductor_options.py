"""Which Inductor and cuDNN settings make ResNet-50 fastest on this GPU: the evidence behind rtpick's defaults.

Direct torch.compile calls only (no rtpick session), fp16 weights, channels_last, input already fp16
channels_last on the GPU, each variant compiled from its own copy of the module; timed as in gpu_proof.py
(a CUDA-event pair around each call, event-synchronised, variants alternating in rounds, medians).

    PYTHONPATH=src python benchmarks/gpu_inductor_options.py --batches 1,256 --out inductor-options.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_proof import compiled_call, interleaved, load, write  # noqa: E402

VARIANTS: list[tuple[str, str, dict[str, Any], bool]] = [  # name, mode, Inductor options, cudnn.benchmark
    ("cudnn.benchmark off", "", {}, False),
    ("cudnn.benchmark on", "", {}, True),
    ("freezing", "", {"freezing": True}, True),
    ("conv_1x1_as_mm", "", {"conv_1x1_as_mm": True}, True),
    ("coordinate_descent_tuning", "", {"coordinate_descent_tuning": True}, True),
    ("conv_1x1_as_mm + coordinate_descent_tuning", "", {"conv_1x1_as_mm": True,
                                                        "coordinate_descent_tuning": True}, True),
]


def build(module: Any, mode: str, extra: dict[str, Any]) -> Any:
    import torch
    from torch._inductor import list_mode_options

    return torch.compile(copy.deepcopy(module), options={**list_mode_options(mode), **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    # Every variant recompiles the same forward (a different backend each): without room for all of them Dynamo
    # falls back to eager after 8 and the later rows would time eager code.
    torch._dynamo.config.recompile_limit = 64
    model, _ = load("resnet50")
    base = model.torch_module().eval().cuda().half().to(memory_format=torch.channels_last)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        mode = "reduce-overhead" if batch == 1 else "default"
        x = torch.rand(batch, 3, 224, 224, device="cuda").half().contiguous(memory_format=torch.channels_last)
        fns = {}
        for name, _, extra, benchmark in VARIANTS:
            call = compiled_call(build(base, mode, extra), x, graphs=mode == "reduce-overhead",
                                 cudnn_benchmark=benchmark)

            start = time.perf_counter()
            try:
                call()
                torch.cuda.synchronize()
            except Exception as exc:  # noqa: BLE001 - a variant that fails is a row, not the end
                rows.append({"batch": batch, "mode": mode, "variant": name,
                             "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            rows.append({"batch": batch, "mode": mode, "variant": name, "options": extra,
                         "cudnn_benchmark": benchmark, "compile_s": time.perf_counter() - start})
            fns[name] = call
        samples = interleaved(fns, warmup=10 if batch == 1 else 3, rounds=5, per_round=40 if batch == 1 else 10)
        for name, values in samples.items():
            row = next(r for r in rows if r["batch"] == batch and r["variant"] == name)
            median = statistics.median(values)
            row.update(median_ms=median, min_ms=min(values), samples=len(values), throughput_per_s=batch / median * 1e3)
    write(args.out, {"model": "resnet50", "method": __doc__.split("\n\n")[1], "rows": rows})
    print(f"{'batch':>5} {'mode':<16} {'variant':<45} {'median ms':>10} {'img/s':>9} {'compile s':>9}")
    for row in rows:
        if "median_ms" in row:
            print(f"{row['batch']:>5} {row['mode']:<16} {row['variant']:<45} {row['median_ms']:>10.4f} "
                  f"{row['throughput_per_s']:>9.0f} {row['compile_s']:>9.1f}")
        else:
            print(f"{row['batch']:>5} {row['mode']:<16} {row['variant']:<45} failed: {row['error'][:80]}")


if __name__ == "__main__":
    main()
