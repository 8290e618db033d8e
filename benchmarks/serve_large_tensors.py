"""`rtpick serve` with large tensors on the CPU: 3x224x224 FP32 requests of 32 images, socket vs shared memory.

    PYTHONPATH=src python benchmarks/serve_large_tensors.py --out benchmarks/results/serve-large-tensors.json \\
        --compare-rev main

Why: on the H200 the served ResNet-50 reached 4.4% of the offline images/s with 19 MB requests, the server's
data handling, not the GPU, being the limit. This measures that data handling alone: the model is a tiny conv net
(Conv 3->4, 8x8 stride 8, global average pool; ~19 MFLOP per 32 images) on ort-cpu, so requests/s and MB/s are
what the server moves, not what it computes. Each configuration is a `python -m rtpick serve model.onnx -r
ort-cpu:fp32` subprocess on free loopback ports; this process drives it with rtpick's load generator (closed
loop, `--concurrency` requests in flight, each `--rows` images):
- raw: gRPC ModelInfer with the images in raw_input_contents (what gpu_serve.py measured on the H200);
- shm: gRPC ModelInfer naming system shared-memory regions (one input and one output region per connection; the
  client writes its images into its region before each request, one copy);
- with `--compare-rev REV`, raw against a server running that revision's src/ (extracted with git archive), the
  "before" of a change;
- with `--protocols grpc,http`, the same over HTTP too (raw: the binary tensor extension; shm: a JSON body of
  shared-memory parameters).
Rounds interleave the configurations (each round runs every one for `--duration` s) so drift on a shared machine
hits all alike; the table reports each one's median over rounds. MB/s counts the input bytes of the 200s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_cpu import free_port, stop_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
MODEL = "large_tensors"


def make_model(path: Path) -> None:
    """A conv net with a 3x224x224 input that costs next to nothing per image (the server's data handling shows)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"], strides=[8, 8]),
         helper.make_node("GlobalAveragePool", ["c"], ["p"]),
         helper.make_node("Flatten", ["p"], ["features"])],
        MODEL, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def extract_src(rev: str, into: Path) -> Path:
    """`rev`'s src/ (git archive), so a server of that revision can run beside this one."""
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


class Server:
    def __init__(self, src: Path, model: Path, max_batch: int, label: str) -> None:
        self.port, self.grpc_port, self.label = free_port(), free_port(), label
        self.command = [sys.executable, "-m", "rtpick", "serve", str(model), "-r", "ort-cpu:fp32", "--name", MODEL,
                        "--max-batch", str(max_batch), "--port", str(self.port), "--grpc-port", str(self.grpc_port),
                        "--max-queue-delay-ms", "2", "--timeout-ms", "0", "--max-request-bytes", str(1 << 30),
                        "--exit-timeout", "10"]
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.process = subprocess.Popen(self.command, env=env, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        wait_ready(self.port, self.process, f"serve_large_tensors ({self.label} server)", timeout_s)

    def stop(self) -> None:
        stop_server(self.process)


def run_one(server: Server, mode: str, images: np.ndarray, concurrency: int, duration_s: float,
            protocol: str = "grpc") -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from rtpick.serve.loadgen import GrpcTarget, HttpTarget, run_closed
    from rtpick.serve.loadgen_shm import ShmGrpcTarget, ShmHttpTarget

    feeds, types = {"image": images}, {"image": "FP32"}
    if protocol == "http":
        url = f"http://127.0.0.1:{server.port}"
        target: Any = ShmHttpTarget(url, MODEL, feeds, types, concurrency) if mode == "shm" else \
            HttpTarget(url, MODEL, feeds, types, binary=True)
    else:
        url = f"grpc://127.0.0.1:{server.grpc_port}"
        target = ShmGrpcTarget(url, MODEL, feeds, types, concurrency) if mode == "shm" else \
            GrpcTarget(url, MODEL, feeds, types)
    try:
        summary = run_closed(target, concurrency, max_requests=1_000_000, duration_s=duration_s).summary(len(images))
    finally:
        if hasattr(target, "close"):
            target.close()
    summary["mb_per_s"] = summary["requests_per_s"] * images.nbytes / 1e6
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--compare-rev", help="also serve raw with this git revision's src/ (the 'before')")
    parser.add_argument("--protocols", default="grpc", help="grpc, http or grpc,http (HTTP raw = binary tensors)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from rtpick.files import check_writable, write_json

    check_writable(args.out, "benchmark results")
    images = np.random.default_rng(1).standard_normal((args.rows, 3, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="rtpick-large-") as tmp:
        model = Path(tmp) / "large_tensors.onnx"
        make_model(model)
        servers = {"after": Server(ROOT / "src", model, args.max_batch, "this revision")}
        if args.compare_rev:
            servers["before"] = Server(extract_src(args.compare_rev, Path(tmp)), model, args.max_batch,
                                       args.compare_rev)
        protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
        if not protocols or set(protocols) - {"grpc", "http"}:
            raise SystemExit(f"serve_large_tensors: --protocols takes grpc and/or http, not {args.protocols!r}")
        configs = [(server, mode, protocol) for protocol in protocols
                   for server, mode in [("after", "raw"), ("after", "shm")]
                   + ([("before", "raw")] if args.compare_rev else [])]
        rows: dict[str, list[dict[str, Any]]] = {f"{s} {p} {m}": [] for s, m, p in configs}
        try:
            for server in servers.values():
                server.wait_ready()
            for server, mode, protocol in configs:  # warm-up: connections, first batches
                run_one(servers[server], mode, images, args.concurrency, 1.0, protocol)
            for round_index in range(args.rounds):
                order = configs if round_index % 2 == 0 else configs[::-1]
                for server, mode, protocol in order:
                    rows[f"{server} {protocol} {mode}"].append(run_one(servers[server], mode, images,
                                                                       args.concurrency, args.duration, protocol))
        finally:
            for server in servers.values():
                server.stop()
    results: dict[str, Any] = {
        "command": "PYTHONPATH=src python benchmarks/serve_large_tensors.py " + " ".join(argv or sys.argv[1:]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "machine_note": "a 2-core machine shared with other engineers' tests and benchmarks at the time; the "
                        "client runs on the same cores as the server",
        "request": {"rows": args.rows, "shape": list(images.shape), "datatype": "FP32", "bytes": images.nbytes},
        "method": f"closed loop, {args.concurrency} calls in flight ({'/'.join(protocols)}), {args.duration:g} s per "
                  f"configuration per round, {args.rounds} rounds interleaved (order reversed on odd rounds) after a "
                  "1 s warm-up of each; median over rounds; MB/s = requests/s x input bytes per request",
        "configs": {},
    }
    print(f"{'configuration':<24} {'requests/s':>10} {'MB/s':>8} {'p50 ms':>8}  (median of {args.rounds} rounds)")
    for label, runs in rows.items():
        rps = float(np.median([r["requests_per_s"] for r in runs]))
        p50 = float(np.median([r["p50_ms"] or np.nan for r in runs]))
        statuses: dict[str, int] = {}
        for r in runs:
            for code, count in r["statuses"].items():
                statuses[code] = statuses.get(code, 0) + count
        results["configs"][label] = {"requests_per_s_median": rps, "mb_per_s_median": rps * images.nbytes / 1e6,
                                     "p50_ms_median": p50, "statuses": statuses, "rounds": runs}
        print(f"{label:<24} {rps:>10.1f} {rps * images.nbytes / 1e6:>8.0f} {p50:>8.1f}  statuses {statuses}")
    write_json(args.out, results, "benchmark results")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
