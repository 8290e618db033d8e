"""Host-side capacity of the per-batch scheduler (issue 13's targets), on models of near-zero cost on ort-cpu.

    PYTHONPATH=src python benchmarks/streams_host.py --out benchmarks/results/streams-host.json

Three measurements, each with its configuration and method in the JSON:
1. `find_max_streams` at 30 fps, max batch 256, ONNX Identity (x float32[batch, 8]): the most cameras kept at
   >= 99% on time (target >= 2,000 on a 2-core machine) and what limited the search.
2. The overload: 500 cameras x 1000 fps x 3 s through `multistream` at max batch 256: wall time (target < 15 s)
   and goodput (frames on time per second of the run) against the offline scenario's throughput at batch 256
   (target >= 0.5). Run for the Identity (where 500,000 frames/s is below offline capacity, so the ratio is
   also given against the offered rate) and for a small MLP (8-512-512-8) that 500,000 frames/s overloads
   ~15x (with a 50 ms deadline, since its batch of 256 alone takes longer than the default 1 ms).
Nothing here is a unit test: it writes figures, the machine's load and the command that made them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MAX_BATCH = 256


def identity_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def mlp_model(path: Path, width: int = 512, hidden: int = 2) -> Path:
    """An ONNX MLP, 8 -> `hidden` layers of `width` (ReLU) -> 8, weights from seed 0; written to `path`.
    (`server_scenario_host.py` uses it with one hidden layer of 32: the models of the committed results.)"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [8, *[width] * hidden, 8]
    weights = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), f"w{i}")
               for i, s in enumerate(zip(dims, dims[1:]))]
    nodes, last = [], "x"
    for i in range(len(weights)):
        out = "y" if i == len(weights) - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [out]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            last = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def offline(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    from rtpick.perf import scenarios

    result = scenarios.offline_point(session, feeds, min_duration_s=2.0, min_queries=200, warmup=None, blocks=5,
                                     split=False)
    return {"throughput": result.throughput, "p50_ms": result.p50, "method": result.method}


def overload(session: Any, feeds: dict[str, np.ndarray], offline_tp: float,
             deadline_ms: float | None = None) -> dict[str, Any]:
    from rtpick.perf import scenarios

    start = time.perf_counter()
    result = scenarios.multistream(session, feeds, streams=500, fps=1000, duration_s=3.0, max_batch=MAX_BATCH,
                                   warm=False, per_camera=False, deadline_ms=deadline_ms)
    wall = time.perf_counter() - start
    offered = 500 * 1000.0
    goodput = result["total"]["on_time"] / result["pipeline"]["wall_s"]
    return {
        "wall_s": wall, "goodput_fps": goodput, "offered_fps": offered, "offline_fps": offline_tp,
        "goodput_over_offline": goodput / offline_tp,
        "goodput_over_min_offline_offered": goodput / min(offline_tp, offered),
        "total": result["total"], "pipeline": {k: v for k, v in result["pipeline"].items()},
        "method": result["method"] + "; wall time from the call to its return (run, drain and bookkeeping)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--trial-s", type=float, default=1.5, help="seconds per find-max trial")
    args = parser.parse_args(argv)
    import rtpick
    from rtpick.files import write_json
    from rtpick.perf import scenarios

    results: dict[str, Any] = {
        "command": "PYTHONPATH=src python benchmarks/streams_host.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg()[0]},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    feeds = {"x": np.random.default_rng(0).random((MAX_BATCH, 8), dtype=np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("identity", identity_model(Path(tmp) / "identity.onnx")),
                           ("mlp512", mlp_model(Path(tmp) / "mlp.onnx"))):
            session = rtpick.load(str(path), "ort-cpu", "fp32", shapes={"x": (MAX_BATCH, 8)})
            entry: dict[str, Any] = {"config": f"{name} on ort-cpu:fp32, max batch {MAX_BATCH}"}
            entry["offline"] = offline(session, feeds)
            print(f"{name}: offline {entry['offline']['throughput']:,.0f} samples/s at batch {MAX_BATCH}",
                  flush=True)
            # the Identity at the default deadline (1/fps = 1 ms); the MLP's batch of 256 alone takes ~8 ms, so it
            # gets a 50 ms deadline: the question there is whether goodput stays at capacity, not the deadline
            deadline = None if name == "identity" else 50.0
            entry["overload"] = overload(session, feeds, entry["offline"]["throughput"], deadline)
            o = entry["overload"]
            print(f"{name}: 500 x 1000 fps x 3 s, deadline {deadline or 1.0:g} ms: wall {o['wall_s']:.2f} s, "
                  f"goodput {o['goodput_fps']:,.0f} "
                  f"frames/s = {o['goodput_over_offline']:.2f} x offline, "
                  f"{o['goodput_over_min_offline_offered']:.2f} x min(offline, offered)", flush=True)
            if name == "identity":
                search = scenarios.find_max_streams(session, feeds, fps=30, duration_s=args.trial_s,
                                                    max_batch=MAX_BATCH, progress=lambda line: print("  " + line,
                                                                                                     flush=True))
                for trial in search["trials"]:  # per-camera tables of ~8,000 cameras: summaries only
                    trial["per_camera"] = None
                entry["find_max_streams_30fps"] = search
                print(f"{name}: find-max-streams at 30 fps: {search['max_streams']:,} cameras; limit: "
                      f"{(search.get('limit') or {}).get('why', '-')}", flush=True)
            results[name] = entry
            session.close()
    results["machine"]["load_avg_after"] = os.getloadavg()[0]
    write_json(args.out, results, "benchmark results")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
