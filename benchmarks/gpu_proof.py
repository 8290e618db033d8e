"""The GPU tier's proof: correctness of every GPU runtime and precision, and rtpick's timing against the same
library calls made directly, in the same process, on ResNet-50 (torchvision architecture) and a BERT-base encoder.

    PYTHONPATH=src python benchmarks/gpu_proof.py compare --model resnet50 --out r50-compare.json
    PYTHONPATH=src python benchmarks/gpu_proof.py timing --model resnet50 --batches 1,256 --out r50-timing.json
    PYTHONPATH=src python benchmarks/gpu_proof.py fusion-compare --out r50-fusion-compare.json
    PYTHONPATH=src python benchmarks/gpu_proof.py compile-cache --out compile-cache.json
    PYTHONPATH=src python benchmarks/gpu_proof.py paired-summary results/h100/resnet50-timing-*.json

Timing method (as GPU.md's reference figures): inputs already on the GPU as torch tensors; per call a pair of
CUDA events around the call, event-synchronised; warm-up first; the rtpick session and the direct call run in
alternating blocks, in an order shuffled per round, so that clock drift hits both alike; the median of all samples
of each is reported, and what rtpick adds over the direct call also as the ratio of their medians paired by round,
with a 95% interval. ONNX Runtime rows are also paired with a direct call on rtpick's own InferenceSession.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESNET_CONFIGS = [
    "torch-cuda:fp32", "torch-cuda:tf32", "torch-cuda:fp16", "torch-cuda:bf16",
    "torch-compile-cuda:fp32", "torch-compile-cuda:tf32", "torch-compile-cuda:fp16", "torch-compile-cuda:bf16",
    "ort-cuda:fp32", "ort-cuda:tf32", "ort-cuda:fp16",
    "tensorrt:fp16", "ort-tensorrt:fp16",
]


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for package in ("torch", "torchvision", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "triton",
                    "numpy", "tensorrt"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "gpu": gpu,
        "cuda": torch.version.cuda,
        "driver": _driver(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def bert_base() -> Any:
    """A BERT-base-sized encoder (12 layers, hidden 768, 12 heads) from its config, random weights."""
    import torch
    from transformers import BertConfig, BertModel

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(BertConfig(), add_pooling_layer=True).eval()

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    torch.manual_seed(0)
    return Encoder().eval()


def load(model: str) -> Any:
    """The model as an rtpick Model, and the input ranges that make sensible synthetic inputs."""
    from rtpick.model import TensorSpec
    from rtpick.sources import load_model

    if model == "resnet50":
        return load_model("torchvision:resnet50"), None
    if model == "bert-base":
        specs = [TensorSpec("input_ids", "int64", ("batch", 128)),
                 TensorSpec("attention_mask", "int64", ("batch", 128))]
        loaded = load_model(bert_base(), input_specs=specs)
        return loaded, {"input_ids": (0.0, 30522.0), "attention_mask": (1.0, 2.0)}
    raise SystemExit(f"unknown model {model}")


def write(path: str, payload: dict[str, Any]) -> None:
    from rtpick.files import atomic_write_bytes

    payload = {"command": "PYTHONPATH=src python " + shlex.join(sys.argv), "environment": environment(), **payload}
    atomic_write_bytes(Path(path), json.dumps(payload, indent=2, default=str).encode())


# ------------------------------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> None:
    import rtpick

    model, ranges = load(args.model)
    shapes = {t.name: (args.batch, 128) for t in model.spec.inputs} if args.model == "bert-base" else None
    configs = args.configs.split(",") if args.configs else RESNET_CONFIGS
    start = time.perf_counter()
    result = rtpick.compare(model, ["ort-cpu:fp32", *configs] if args.cpu_reference else configs,
                            batch=None if shapes else args.batch, shapes=shapes, seed=args.seed,
                            input_ranges=ranges)
    payload = {"model": args.model, "batch": args.batch, "wall_s": time.perf_counter() - start,
               "comparison": result.to_dict()}
    write(args.out, payload)
    for row in result.to_dict()["rows"]:
        print(json.dumps(row, default=str)[:400])


def cmd_fusion_compare(args: argparse.Namespace) -> None:
    """fuse_conv's accuracy next to the same model unfused: one process, so one draw of the random weights; for
    each seed the same feeds and the same reference (ort-cpu:fp32) for every torch-cuda precision, without the
    pass and with it (replayed from a CUDA graph, the fastest way to run it)."""
    import rtpick

    model, _ = load(args.model)
    configs = ["ort-cpu:fp32", *(f"torch-cuda:{p}" for p in ("fp32", "tf32", "fp16", "bf16"))]
    variants = {"unfused": None, "fuse_conv": {"torch-cuda": {"fuse_conv": True, "cuda_graph": True}}}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant, options in variants.items():
            result = rtpick.compare(model, configs, batch=args.batch, seed=seed, reference="ort-cpu:fp32",
                                    options=options).to_dict()
            for row in result["rows"][1:]:
                rows.append({"seed": seed, "variant": variant, **{k: row.get(k) for k in (
                    "config", "status", "reason", "rel_l2", "cosine", "max_abs", "top1_agreement",
                    "top5_agreement", "options", "notes")}})
    write(args.out, {"model": args.model, "batch": args.batch, "reference": "ort-cpu:fp32",
                     "method": cmd_fusion_compare.__doc__, "rows": rows})
    print(f"{'seed':>4} {'config':<18} {'variant':<10} {'status':<9} {'rel L2':>9} {'top-1':>7} {'top-5':>7}")
    for row in rows:
        if row["rel_l2"] is None:
            print(f"{row['seed']:>4} {row['config']:<18} {row['variant']:<10} {row['status']:<9} {row['reason']}")
            continue
        print(f"{row['seed']:>4} {row['config']:<18} {row['variant']:<10} {row['status']:<9} {row['rel_l2']:>9.2e} "
              f"{row['top1_agreement']:>7.3f} {row['top5_agreement']:>7.3f}")


# ------------------------------------------------------------------------------------------------- timing


def cuda_event_times(fn: Any, count: int, host_us: list[float] | None = None) -> list[float]:
    """Milliseconds of `count` calls, each bracketed by CUDA events and synchronised on the end event.
    `host_us`, when given, also gets each call's host time in microseconds (from the call to its return: for a
    synchronous runtime its latency, for an asynchronous one the host work of submitting it)."""
    import torch

    samples = []
    for _ in range(count):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        start = time.perf_counter()
        fn()
        if host_us is not None:
            host_us.append((time.perf_counter() - start) * 1e6)
        end.record()
        end.synchronize()
        samples.append(begin.elapsed_time(end))
    return samples


def interleaved(fns: dict[str, Any], warmup: int, rounds: int, per_round: int,
                host_us: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Every call takes its turn in each round, `per_round` calls back to back, in an order shuffled per round
    (seeded): a call that always followed the same other one would carry that one's after-effects (a different
    session's memory in the caches, clocks) in every sample. `host_us`, when given, collects host times by name."""
    import random

    import torch

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            hosts = host_us.setdefault(name, []) if host_us is not None else None
            samples[name].extend(cuda_event_times(fns[name], per_round, hosts))
    return samples


def compiled_direct(module: Any, mode: str, freezing: bool) -> Any:
    """torch.compile as a user would call it: the mode alone, or the mode spelled out as options plus freezing."""
    import torch

    if not freezing:
        return torch.compile(module, mode=mode)
    from torch._inductor import list_mode_options

    return torch.compile(module, options={**list_mode_options(mode), "freezing": True})


def direct_calls(model: Any, x32: Any, compiled_variants: list[tuple[str, bool]], *,
                 with_ort: bool = True) -> dict[str, Any]:
    """The same work done straight through the libraries, without rtpick.

    Each direct call starts, as the rtpick session does, from the fp32 NCHW image tensor on the GPU and makes
    the same choices: the same precision (true fp32 means TF32 off in ONNX Runtime too), the same cuDNN algorithm
    search setting as rtpick's torch CUDA runtimes by default, and for torch.compile the same mode and freezing
    as the rtpick configuration it is paired with (`compiled_variants`). The fp16 torch paths are also timed from
    an input already cast to fp16 channels_last, the best case a hand-written loop can have. `with_ort`: also
    the direct ONNX Runtime sessions.
    """
    import torch
    from torch._inductor.cudagraph_trees import mark_step_begin

    from rtpick.runtimes.torch import TorchCuda

    benchmark = TorchCuda.options["cudnn_benchmark"].default  # the same cuDNN search as rtpick's sessions
    module = model.torch_module().eval().cuda().half().to(memory_format=torch.channels_last)
    x16 = x32.half().contiguous(memory_format=torch.channels_last)
    calls: dict[str, Any] = {}

    def eager_from_fp32() -> Any:
        torch.backends.cudnn.benchmark = benchmark
        with torch.inference_mode():
            return module(x32.half().contiguous(memory_format=torch.channels_last)).float()

    def eager_from_fp16() -> Any:
        torch.backends.cudnn.benchmark = benchmark
        with torch.inference_mode():
            return module(x16)

    calls["direct torch eager fp16, fp32 input"] = eager_from_fp32
    calls["direct torch eager fp16, fp16 channels_last input"] = eager_from_fp16
    calls.update(fused_calls(model, x32, benchmark))
    for mode, freezing in compiled_variants:
        # Each variant compiles its own copy: variants of one module share Dynamo's cache on its forward, and
        # every call then checks the guards of all of them first (with one shared module the direct reduce-overhead
        # call measured 15% slower than rtpick's at batch 1; with copies, 2% faster: results/h100/README.md).
        compiled = compiled_direct(copy.deepcopy(module), mode, freezing)
        graphs = mode in ("reduce-overhead", "max-autotune")
        label = f"direct torch.compile {mode}{' freezing' if freezing else ''} fp16"

        def from_fp32(compiled: Any = compiled, graphs: bool = graphs) -> Any:
            torch.backends.cudnn.benchmark = benchmark
            with torch.inference_mode():
                if graphs:
                    mark_step_begin()
                return compiled(x32.half().contiguous(memory_format=torch.channels_last)).float()

        calls[f"{label}, fp32 input"] = from_fp32
        calls[f"{label}, fp16 channels_last input"] = compiled_call(compiled, x16, graphs=graphs,
                                                                    cudnn_benchmark=benchmark)
    try:
        import onnxruntime as ort
    except ImportError:
        return calls
    if not with_ort:
        return calls
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return calls
    for label, tf32 in (("fp32", "0"), ("tf32", "1")):
        sess = ort.InferenceSession(str(model.onnx_path()),
                                    providers=[("CUDAExecutionProvider", {"use_tf32": tf32})])
        calls[f"direct onnxruntime CUDA EP {label} io-binding"] = ort_io_binding_call(sess, x32.contiguous())
    return calls


def ort_io_binding_call(sess: Any, x: Any) -> Any:
    """The IO-binding call a user writes for a classifier: bind the GPU input and a new GPU output tensor for its
    (batch, 1000) scores, run, wait."""
    import numpy as np
    import torch

    in_name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name

    def call() -> Any:
        out = torch.empty((x.shape[0], 1000), device="cuda")
        binding = sess.io_binding()
        binding.bind_input(in_name, "cuda", 0, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(out_name, "cuda", 0, np.float32, tuple(out.shape), out.data_ptr())
        binding.synchronize_inputs()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out

    return call


def waits_if_busy(call: Any) -> Any:
    """`call` preceded by a host-side check of torch's current stream: ask whether it is idle, wait only if not
    (what rtpick's ort-cuda session did before each run until the third session)."""
    import torch

    def checked() -> Any:
        stream = torch.cuda.current_stream()
        if not stream.query():
            stream.synchronize()
        return call()

    return checked


def compiled_call(compiled: Any, x: Any, *, graphs: bool, cudnn_benchmark: bool) -> Any:
    """A direct call of a torch.compile'd module on a ready input, as a user writes it: the cuDNN search setting,
    inference mode and, with CUDA graphs (reduce-overhead), the step marker before the call and a copy of the
    output after it (the graph owns its output buffer)."""
    import torch
    from torch._inductor.cudagraph_trees import mark_step_begin

    def call() -> Any:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        with torch.inference_mode():
            if graphs:
                mark_step_begin()
                return compiled(x).clone()
            return compiled(x)

    return call


def fused_calls(model: Any, x32: Any, benchmark: bool) -> dict[str, Any]:
    """rtpick's conv fusion pass applied by hand (folded in fp32, then fp16 channels_last) and called directly:
    eagerly, and replayed from a CUDA graph that a user captures around the cast and the module, as rtpick's
    `cuda_graph` option does. The replay returns a copy of the graph's output, as rtpick's session does and as a
    caller who keeps the result must: the next replay overwrites the graph's own output buffer."""
    import torch

    from rtpick.runtimes.conv_fusion import fuse_conv

    fused, _ = fuse_conv(model.torch_module().eval().cuda(), [x32])
    fused = fused.half().to(memory_format=torch.channels_last)

    def step(inp: Any) -> Any:
        return fused(inp.half().contiguous(memory_format=torch.channels_last)).float()

    def eager() -> Any:
        torch.backends.cudnn.benchmark = benchmark
        with torch.inference_mode():
            return step(x32)

    torch.backends.cudnn.benchmark = benchmark
    return {"direct torch eager fp16 fused, fp32 input": eager,
            "direct torch eager fp16 fused, CUDA graph, fp32 input": graphed(step, x32, copy_out=True)}


def graphed(fn: Any, x: Any, *, copy_out: bool) -> Any:
    """Capture fn(static input) in a CUDA graph, in inference mode, after a warm-up on a side stream (so that
    cuDNN and cuBLAS choose their kernels outside the capture); return a call that copies `x` in and replays.
    `copy_out`: return a copy of the graph's output (what a caller who keeps it needs) rather than the buffer."""
    import torch

    with torch.inference_mode():
        static = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(static)

    def replay() -> Any:
        with torch.inference_mode():  # the static input is an inference tensor
            static.copy_(x)
            graph.replay()
            return out.clone() if copy_out else out

    return replay


TIMED = [
    ("torch-cuda", "fp32", {}),
    ("torch-cuda", "tf32", {}),
    ("torch-cuda", "fp16", {}),
    ("torch-cuda", "fp16", {"cuda_graph": True}),
    ("torch-cuda", "fp16", {"fuse_conv": True}),
    ("torch-cuda", "fp16", {"fuse_conv": True, "cuda_graph": True}),
    ("torch-cuda", "bf16", {"fuse_conv": True, "cuda_graph": True}),
    ("torch-compile-cuda", "fp16", {"mode": "default"}),
    ("torch-compile-cuda", "fp16", {"mode": "default", "freezing": True}),
    ("torch-compile-cuda", "fp16", {"mode": "reduce-overhead"}),
    ("torch-compile-cuda", "fp16", {"mode": "reduce-overhead", "freezing": True}),
    ("ort-cuda", "fp32", {}),
    ("ort-cuda", "tf32", {}),
    ("ort-cuda", "fp16", {}),
    ("ort-cuda", "fp16", {"prefer_nhwc": True}),
    ("ort-cuda", "fp16", {"cuda_graph": True}),
    ("ort-cuda", "fp16", {"cuda_graph": True, "prefer_nhwc": True}),
]


# ONNX Runtime sessions of one model and settings differ from each other by a few percent at batch 1 (cuDNN's
# per-session algorithm search: results/h100/ort-session-spread*.json), so the ort-cuda rows are also paired with
# the direct IO-binding call made on rtpick's own InferenceSession: that difference is rtpick's per-call code alone.
SAME_SESSION_PAIRS = {
    "ort-cuda:fp32": "direct onnxruntime IO-binding call on rtpick's ort-cuda:fp32 InferenceSession",
    "ort-cuda:tf32": "direct onnxruntime IO-binding call on rtpick's ort-cuda:tf32 InferenceSession",
}


def label_of(runtime: str, precision: str, options: dict[str, Any]) -> str:
    return f"{runtime}:{precision}" + "".join(f" {k}={v}" for k, v in options.items())


def pairs() -> dict[str, str]:
    """rtpick configuration -> the direct call doing the same work from the same fp32 input."""
    out = {
        "torch-cuda:fp16": "direct torch eager fp16, fp32 input",
        "torch-cuda:fp16 fuse_conv=True": "direct torch eager fp16 fused, fp32 input",
        "torch-cuda:fp16 fuse_conv=True cuda_graph=True": "direct torch eager fp16 fused, CUDA graph, fp32 input",
        "ort-cuda:fp32": "direct onnxruntime CUDA EP fp32 io-binding",
        "ort-cuda:tf32": "direct onnxruntime CUDA EP tf32 io-binding",
    }
    for runtime, precision, options in TIMED:
        if runtime == "torch-compile-cuda":
            freezing = " freezing" if options.get("freezing") else ""
            out[label_of(runtime, precision, options)] = (
                f"direct torch.compile {options['mode']}{freezing} {precision}, fp32 input")
    return out


def paired_overhead(ours: list[float], direct: list[float], rounds: int) -> dict[str, Any]:
    """What rtpick adds, as a ratio paired by round: in each round both calls took their turn, so the ratio of
    their round medians cancels what drifts between rounds (clocks, the host's other load). The rounds' ratios
    are independent replications, summarised two ways: their median with a distribution-free interval
    (`median_ci`, the headline: on the lent host a few rounds' ratios reach 0.4 or 2.5, which stretch a
    t-interval and pull its centre), and their geometric mean with a t-interval on the logs."""
    per = len(ours) // rounds
    ratios = [statistics.median(ours[r * per:(r + 1) * per]) / statistics.median(direct[r * per:(r + 1) * per])
              for r in range(rounds)]
    return {**summarize_ratios(ratios), "rounds": rounds, "round_ratios": ratios}


def summarize_ratios(ratios: list[float]) -> dict[str, Any]:
    """Round ratios -> percentages: median with its order-statistics interval, geometric mean with its t-interval."""
    from rtpick.perf.stats import median_ci, replication_ci_ms

    geometric = replication_ci_ms(ratios)
    middle = median_ci(ratios)
    return {"median_pct": 100.0 * (middle["estimate"] - 1.0),
            "median_ci95_pct": [100.0 * (v - 1.0) for v in middle["ci"]],
            "pct": 100.0 * (geometric["estimate"] - 1.0),
            "ci95_pct": [100.0 * (v - 1.0) for v in geometric["ci"]]}


def cmd_paired_summary(args: argparse.Namespace) -> None:
    """Both summaries of every paired comparison in timing files, from the round ratios they store (files made
    before the median summary existed included)."""
    print(f"{'file':<40} {'batch':>5} {'configuration':<50} {'vs':<9} {'median of rounds [95%]':>26} "
          f"{'geometric mean [95%]':>26}")
    for path in args.files:
        for row in json.loads(Path(path).read_text())["rows"]:
            for key, what in (("paired_overhead", "direct"), ("paired_overhead_same_session", "same sess")):
                if key not in row:
                    continue
                summary = summarize_ratios(row[key]["round_ratios"])
                low, high = summary["median_ci95_pct"]
                glow, ghigh = summary["ci95_pct"]
                print(f"{Path(path).name:<40} {row['batch']:>5} {row['config']:<50} {what:<9} "
                      f"{summary['median_pct']:>+8.2f}% [{low:+6.2f}, {high:+6.2f}] "
                      f"{summary['pct']:>+8.2f}% [{glow:+6.2f}, {ghigh:+6.2f}]")


def cmd_timing(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from rtpick.runtimes.registry import availability, get_runtime

    model, _ = load(args.model)
    wanted = [c for c in args.configs.split(";") if c]
    timed = [t for t in TIMED if not wanted or label_of(*t) in wanted]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        torch.manual_seed(batch)
        x = torch.rand(batch, 3, 224, 224, device="cuda")
        fns: dict[str, Any] = {}
        sessions = []
        for runtime, precision, options in timed:
            label = label_of(runtime, precision, options)
            if not availability(runtime).ok:
                rows.append({"batch": batch, "config": label, "error": availability(runtime).reason})
                continue
            try:
                session = get_runtime(runtime).build(model, precision, {"input": (batch, 3, 224, 224)}, **options)
            except Exception as exc:  # noqa: BLE001 - a failed configuration is a row, not the end
                rows.append({"batch": batch, "config": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            sessions.append(session)
            feeds = {"input": x}
            fns[label] = (lambda s=session, f=feeds: s.run(f))
            if label in SAME_SESSION_PAIRS:
                fns[SAME_SESSION_PAIRS[label]] = ort_io_binding_call(session._session, x)
            rows_build = {"batch": batch, "config": label, "build_s": session.info.build_time_s}
            rows.append(rows_build)
        variants = [(o["mode"], bool(o.get("freezing"))) for r, _, o in timed if r == "torch-compile-cuda"]
        fns.update(direct_calls(model, x, variants, with_ort=any(r == "ort-cuda" for r, _, _ in timed)))
        per_round = args.per_round or (40 if batch == 1 else 10)
        samples = interleaved(fns, warmup=10 if batch == 1 else 3, rounds=args.rounds, per_round=per_round)
        for name, values in samples.items():
            median = statistics.median(values)
            row = next((r for r in rows if r["batch"] == batch and r["config"] == name), None)
            if row is None:
                row = {"batch": batch, "config": name}
                rows.append(row)
            row.update({"median_ms": median, "p90_ms": float(np.percentile(values, 90)),
                        "min_ms": min(values), "samples": len(values),
                        "throughput_per_s": batch / (median / 1e3)})
        for suffix, mapping in (("", pairs()), ("_same_session", SAME_SESSION_PAIRS)):
            for ours, direct in mapping.items():
                a = next((r for r in rows if r["batch"] == batch and r["config"] == ours and "median_ms" in r), None)
                b = next((r for r in rows if r["batch"] == batch and r["config"] == direct and "median_ms" in r),
                         None)
                if a and b:
                    a[f"direct{suffix}_ms"] = b["median_ms"]
                    a[f"overhead{suffix}_pct"] = 100.0 * (a["median_ms"] - b["median_ms"]) / b["median_ms"]
                    if args.rounds >= 3:
                        a[f"paired_overhead{suffix}"] = paired_overhead(samples[ours], samples[direct], args.rounds)
        for session in sessions:
            session.close()
        del fns
        torch.cuda.empty_cache()
    write(args.out, {"model": args.model, "method": __doc__.split("Timing method")[1].strip(), "rows": rows})
    print(f"{'batch':>5} {'configuration':<68} {'median ms':>10} {'img/s':>10} vs direct (median round ratio, 95% CI)")
    for row in rows:
        if "median_ms" in row:
            over = f"{row['overhead_pct']:+.2f}%" if "overhead_pct" in row else ""
            for suffix, what in (("", "paired"), ("_same_session", "same session")):
                if f"paired_overhead{suffix}" in row:
                    paired = row[f"paired_overhead{suffix}"]
                    low, high = paired["median_ci95_pct"]
                    over += f"  {what} {paired['median_pct']:+.2f}% [{low:+.1f}, {high:+.1f}]"
            print(f"{row['batch']:>5} {row['config']:<68} {row['median_ms']:>10.4f} "
                  f"{row['throughput_per_s']:>10.0f} {over:>10}")
        elif "error" in row:
            print(f"{row['batch']:>5} {row['config']:<68} {'failed: ' + row['error'][:60]}")


# ------------------------------------------------------------------------------------------------- compile cache


def cmd_compile_cache(args: argparse.Namespace) -> None:
    """Build the same torch.compile configuration twice in fresh processes sharing rtpick's cache dir."""
    script = (
        "import json, rtpick; s = rtpick.load('torchvision:resnet50', 'torch-compile-cuda', 'fp16', batch=1); "
        "print(json.dumps({'build_s': s.info.build_time_s}))"
    )
    results = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "RTPICK_CACHE_DIR": cache}
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        env.pop("TRITON_CACHE_DIR", None)
        for attempt in ("cold cache", "warm cache"):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            results.append({"attempt": attempt, "process_wall_s": time.perf_counter() - start,
                            **(json.loads(line[-1]) if line else {"error": out.stderr[-500:]})})
            print(results[-1])
    write(args.out, {"config": "torch-compile-cuda:fp16 mode=default, torchvision:resnet50, batch 1",
                     "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare")
    compare.add_argument("--model", default="resnet50")
    compare.add_argument("--configs", default="")
    compare.add_argument("--batch", type=int, default=64)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--cpu-reference", action="store_true")
    compare.add_argument("--out", required=True)
    timing = sub.add_parser("timing")
    timing.add_argument("--model", default="resnet50")
    timing.add_argument("--batches", default="1,256")
    timing.add_argument("--rounds", type=int, default=5, help="rounds in which every call takes its turn")
    timing.add_argument("--per-round", type=int, default=0, help="calls per turn (default 40 at batch 1, else 10)")
    timing.add_argument("--configs", default="", help="only these rtpick configurations, as labelled in the "
                        "output, separated by ';' (default: all of TIMED)")
    timing.add_argument("--out", required=True)
    fusion = sub.add_parser("fusion-compare")
    fusion.add_argument("--model", default="resnet50")
    fusion.add_argument("--batch", type=int, default=64)
    fusion.add_argument("--seeds", default="0,1,2")
    fusion.add_argument("--out", required=True)
    summary = sub.add_parser("paired-summary", help="both summaries of the paired comparisons in timing files")
    summary.add_argument("files", nargs="+")
    cache = sub.add_parser("compile-cache")
    cache.add_argument("--out", required=True)
    args = parser.parse_args()
    {"compare": cmd_compare, "timing": cmd_timing, "fusion-compare": cmd_fusion_compare,
     "compile-cache": cmd_compile_cache, "paired-summary": cmd_paired_summary}[args.command](args)


if __name__ == "__main__":
    main()
