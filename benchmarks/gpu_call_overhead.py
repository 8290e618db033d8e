"""Where rtpick's per-call time goes at batch 1, next to the same library call made directly on the same object.

`gpu_proof.py timing` says how much rtpick adds; this says where. Every variant runs on one built object (the
rtpick session's own ONNX Runtime InferenceSession, or the same fused module), so sessions that differ from each
other (cuDNN's exhaustive search picks per session) are out of the comparison. Variants take turns in rounds in
a shuffled order (gpu_proof.interleaved); per call: CUDA-event milliseconds and the host's microseconds from the
call to its return. Each variant against its reference as a ratio paired by round, with a 95% interval.

- ONNX Runtime, ResNet-50 fp32: rtpick's `run`; its IO-binding path without `Session.run`'s checks; the direct
  call; the direct call plus a check of torch's stream (ask whether it is idle, wait if not: what rtpick did
  before `synchronize_inputs` was found to cover it); and a session that computes on a stream of its own
  (`user_compute_stream`), ordered after torch's stream on the device (`wait_stream`) instead of on the host.
- ONNX Runtime, a one-node model (ReLU on 1x1000): the same variants, where the model costs next to nothing,
  so the differences are the per-call host work itself, in microseconds.
- torch-cuda fp16 `fuse_conv` + `cuda_graph`: rtpick's `run`, its replay path without `Session.run`, and a
  direct replay of a CUDA graph captured by hand around the same fused module.

    PYTHONPATH=/tmp/site:src python benchmarks/gpu_call_overhead.py --out call-overhead.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_proof import (  # noqa: E402
    graphed,
    interleaved,
    load,
    ort_io_binding_call,
    paired_overhead,
    waits_if_busy,
    write,
)


def relu_model(folder: Path) -> Any:
    """A one-node ONNX model (ReLU on a 1x1000 float tensor) as an rtpick Model."""
    import onnx
    from onnx import TensorProto, helper

    from rtpick.sources import load_model

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "relu",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1000])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1000])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "relu.onnx"
    onnx.save(proto, str(path))
    return load_model(str(path))


def ort_variants(model: Any, x: Any) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from rtpick.runtimes.registry import get_runtime

    ours = get_runtime("ort-cuda").build(model, "fp32", {"input": tuple(x.shape)})
    feeds = {"input": x}
    direct = ort_io_binding_call(ours._session, x)
    own = torch.cuda.Stream()
    shared = ort.InferenceSession(str(model.onnx_path()), providers=[("CUDAExecutionProvider", {
        "use_tf32": "0", "has_user_compute_stream": "1", "user_compute_stream": str(own.cuda_stream)})])
    on_own = ort_io_binding_call(shared, x)

    def ordered_on_device() -> Any:
        own.wait_stream(torch.cuda.current_stream())
        return on_own()

    return {"direct": direct,
            "direct again (a second closure: A/A check)": ort_io_binding_call(ours._session, x),
            "rtpick run": lambda: ours.run(feeds),
            "rtpick IO-binding path alone": lambda: ours._run_torch(feeds),
            "direct + host check of torch's stream": waits_if_busy(direct),
            "own-stream session, direct": on_own,
            "own-stream session + device-side wait_stream": ordered_on_device}


def torch_graph_variants(model: Any, x: Any) -> dict[str, Any]:
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv
    from rtpick.runtimes.registry import get_runtime

    ours = get_runtime("torch-cuda").build(model, "fp16", {"input": tuple(x.shape)}, fuse_conv=True,
                                           cuda_graph=True)
    feeds = {"input": x}
    fused, _ = fuse_conv(model.torch_module().eval().cuda(), [x])
    fused = fused.half().to(memory_format=torch.channels_last)

    def step(inp: Any) -> Any:
        return fused(inp.half().contiguous(memory_format=torch.channels_last)).float()

    return {"direct": graphed(step, x, copy_out=True),
            "direct again (a second capture: A/A check)": graphed(step, x, copy_out=True),
            "rtpick run": lambda: ours.run(feeds),
            "rtpick replay path alone": lambda: ours._run_graph(feeds)}


def measure(part: str, fns: dict[str, Any], rounds: int, per_round: int) -> list[dict[str, Any]]:
    host: dict[str, list[float]] = {}
    samples = interleaved(fns, warmup=20, rounds=rounds, per_round=per_round, host_us=host)
    references = {"own-stream session + device-side wait_stream": "own-stream session, direct"}
    rows = []
    for name, values in samples.items():
        reference = references.get(name, "direct")
        row = {"part": part, "variant": name, "median_ms": statistics.median(values),
               "host_us_median": statistics.median(host[name]), "samples": len(values), "reference": reference}
        if name != reference:
            row["vs_reference"] = paired_overhead(values, samples[reference], rounds)
            row["host_us_over_reference"] = row["host_us_median"] - statistics.median(host[reference])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    model, _ = load("resnet50")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224, device="cuda")
    rows = measure("torch-cuda:fp16 fuse_conv cuda_graph, ResNet-50", torch_graph_variants(model, x),
                   args.rounds, args.per_round)
    rows += measure("ort-cuda:fp32, ResNet-50", ort_variants(model, x), args.rounds, args.per_round)
    with tempfile.TemporaryDirectory() as folder:
        tiny = relu_model(Path(folder))
        small = torch.rand(1, 1000, device="cuda")
        rows += measure("ort-cuda:fp32, one ReLU", ort_variants(tiny, small), args.rounds,
                        args.per_round)
    write(args.out, {"method": __doc__.split("\n\n")[1], "rows": rows})
    print(f"{'part':<48} {'variant':<46} {'median ms':>9} {'host us':>8}  vs reference (median round ratio, 95% CI)")
    for row in rows:
        over = ""
        if "vs_reference" in row:
            low, high = row["vs_reference"]["median_ci95_pct"]
            over = (f"{row['vs_reference']['median_pct']:+6.2f}% [{low:+.1f}, {high:+.1f}]  host "
                    f"{row['host_us_over_reference']:+.1f} us")
        print(f"{row['part']:<48} {row['variant']:<46} {row['median_ms']:>9.4f} {row['host_us_median']:>8.1f}  "
              f"{over}")


if __name__ == "__main__":
    main()
