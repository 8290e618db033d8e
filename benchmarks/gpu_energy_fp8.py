"""Energy per inference, clock events (throttling) and FP8 on one GPU, through rtpick's own sessions and scenarios.

What it measures (issue 18), each configuration built once by `Runtime.build` and measured by
`rtpick.perf.scenarios` (single-stream at batch 1, offline at larger batches) with the energy tracker around the
measured window, exactly as `rtpick bench` does, inputs already on the GPU:

  (b) a BERT-base-like encoder (12 layers, d_model 768, 12 heads, FFN 3072, sequence 128, batch 64, random
      weights, token ids in [0, 100)) under torch-compile-cuda (default mode): bf16, fp16 and fp8; the fp8
      throughput ratio against the best of bf16/fp16 (`rtpick.runtimes.fp8.fp8_speed_verdicts`), and every
      precision's accuracy verdict against eager fp32 on fresh inputs (`rtpick.comparison` tolerances).
      Built like HF BERT (separate nn.Linear for query/key/value/output and the FFN, scaled_dot_product_attention,
      post-LayerNorm): an nn.TransformerEncoder keeps its attention projections in nn.MultiheadAttention, which
      reads the weights directly, and its eval fast path fuses the whole layer, so FP8 could reach none of them;
      that model's fp8 refusal is recorded too (`bert-nn-transformer`).
  (a) ResNet-50 (torchvision, random weights) at batch 1 and 256: torch-cuda fp32/fp16/bf16, torch-cuda fp16 with
      fuse_conv + cuda_graph, torch-compile-cuda fp16 reduce-overhead;
  (c) ResNet-50 torch-compile-cuda fp8 (reduce-overhead; only its fc layer is a Linear) against bf16 and fp16;
  (d) every row: joules per inference, the energy counter's update period, clock-event reasons with the share of
      samples each was active, SM clock range and board power.

One failing configuration is recorded with its error and the others go on; configurations that would not fit
the time budget are recorded as skipped. Writes <out>/energy-fp8.json (every record), then prints a short table.

    PYTHONPATH=src python benchmarks/gpu_energy_fp8.py --out benchmarks/results/h200/energy-fp8
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WINDOW_S = 3.0  # >= 20 updates of a 100-ms energy counter (H200), with margin
BUDGET_S = 430.0  # the whole script must end within 8 minutes: model loading and start-up come on top
BERT_BATCH, BERT_SEQ = 64, 128


@dataclass
class Job:
    """One configuration of one model, measured at each of `batches` from one build."""

    model: str  # "bert", "bert-nn-transformer", "resnet50"
    runtime: str
    precision: str
    batches: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    cost_s: float = 30.0  # expected wall time, for the budget
    measure: bool = True  # False: build and run for the reference outputs only

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.options.items() if k not in ("mode", "compile_timeout_s"))
        mode = self.options.get("mode")
        return f"{self.model} {self.runtime}:{self.precision}" + (f" {mode}" if mode else "") + (
            f" {extra}" if extra else "")


def plan(compile_timeout_s: float = 150.0) -> list[Job]:
    """Every job, most important first (the budget cuts from the end)."""
    compiled = {"mode": "default", "compile_timeout_s": compile_timeout_s}
    graphs = {"mode": "reduce-overhead", "compile_timeout_s": compile_timeout_s}
    # costs: twice what each job took on the H200 (benchmarks/results/h200/energy-fp8-log.txt, 153 s in all)
    bert = [Job("bert", "torch-cuda", "fp32", (BERT_BATCH,), cost_s=10, measure=False)]
    bert += [Job("bert", "torch-compile-cuda", p, (BERT_BATCH,), dict(compiled), cost_s=40)
             for p in ("fp8", "bf16", "fp16")]
    bert.append(Job("bert-nn-transformer", "torch-compile-cuda", "fp8", (BERT_BATCH,), dict(compiled), cost_s=5))
    resnet = [Job("resnet50", "torch-cuda", p, (1, 256), cost_s=20) for p in ("fp32", "fp16", "bf16")]
    resnet.append(Job("resnet50", "torch-cuda", "fp16", (1, 256), {"fuse_conv": True, "cuda_graph": True}, cost_s=20))
    resnet.append(Job("resnet50", "torch-compile-cuda", "fp16", (1, 256), dict(graphs), cost_s=60))
    resnet += [Job("resnet50", "torch-compile-cuda", p, (256,), dict(graphs), cost_s=35) for p in ("fp8", "bf16")]
    return bert + resnet


# ------------------------------------------------------------------------------------------------ models


def bert_like(layers: int = 12) -> Any:
    """A BERT-base-shaped encoder from stock torch modules: embeddings + `layers` post-LN transformer layers."""
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self, d: int = 768, heads: int = 12, ffn: int = 3072) -> None:
            super().__init__()
            self.heads = heads
            self.query, self.key, self.value, self.attn_out = (nn.Linear(d, d) for _ in range(4))
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.inter, self.out = nn.Linear(d, ffn), nn.Linear(ffn, d)

        def forward(self, x: Any) -> Any:
            b, n, d = x.shape

            def split(t: Any) -> Any:
                return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

            a = nn.functional.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)),
                                                           split(self.value(x)))
            x = self.norm1(x + self.attn_out(a.transpose(1, 2).reshape(b, n, d)))
            return self.norm2(x + self.out(nn.functional.gelu(self.inter(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words, self.positions = nn.Embedding(30522, 768), nn.Embedding(512, 768)
            self.norm = nn.LayerNorm(768)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids: Any) -> Any:
            x = self.norm(self.words(input_ids) + self.positions.weight[: input_ids.shape[1]])
            for layer in self.layers:
                x = layer(x)
            return x

    torch.manual_seed(0)
    return Encoder().eval()


def torch_transformer(layers: int = 2) -> Any:
    """The same shape built from nn.TransformerEncoder (only for its fp8 refusal: see the module docstring)."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(30522, 768)
            layer = nn.TransformerEncoderLayer(768, 12, 3072, activation="gelu", batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def forward(self, input_ids: Any) -> Any:
            return self.encoder(self.words(input_ids))

    torch.manual_seed(0)
    return Encoder().eval()


def load(name: str) -> Any:
    import torch

    from rtpick.sources import load_model

    if name == "resnet50":
        return load_model("torchvision:resnet50")
    module = bert_like() if name == "bert" else torch_transformer()
    return load_model(module, input_specs={"input_ids": torch.zeros(1, BERT_SEQ, dtype=torch.int64)})


# --------------------------------------------------------------------------------------------- measuring


def device_feeds(model: Any, batch: int, seed: int) -> dict[str, Any]:
    import torch

    from rtpick.data import synthetic_feeds
    from rtpick.model import resolve_shapes, with_batch

    shapes = with_batch(resolve_shapes(model.spec.inputs, None, None), batch, model.spec.inputs)
    return {k: torch.from_numpy(v).cuda() for k, v in synthetic_feeds(model.spec.inputs, shapes, seed=seed).items()}


def run_job(job: Job, model: Any, references: dict[tuple[str, int], Any]) -> list[dict[str, Any]]:
    """Build once, then per batch: first calls (compile/capture), accuracy on fresh inputs, the measured window.
    A batch that fails is recorded with its error and the next batch still runs; a failed build raises."""
    from rtpick.model import resolve_shapes, with_batch
    from rtpick.runtimes.registry import get_runtime

    base = {"model": job.model, "config": f"{job.runtime}:{job.precision}", "runtime": job.runtime,
            "precision": job.precision, "options": job.options, "label": job.label}
    shapes = with_batch(resolve_shapes(model.spec.inputs, None, None), max(job.batches), model.spec.inputs)
    start = time.perf_counter()
    session = get_runtime(job.runtime).build(model, job.precision, shapes, **job.options)
    build_s, notes = time.perf_counter() - start, list(session.info.notes)
    records = []
    try:
        for batch in sorted(job.batches, reverse=True):
            record = {**base, "batch": batch, "build_time_s": build_s, "build_notes": notes, "status": "ok",
                      "scenario": "single-stream" if batch == 1 else "offline"}
            try:
                _measure_batch(job, session, model, batch, record, references)
            except Exception as exc:  # noqa: BLE001 - recorded; the next batch goes on
                record.update(status="failed", error=_one_line(exc))
            records.append(record)
    finally:
        session.close()
    return records


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def _measure_batch(job: Job, session: Any, model: Any, batch: int, record: dict[str, Any],
                   references: dict[tuple[str, int], Any]) -> None:
    """First calls (compile/capture, not measured), accuracy on fresh inputs, then the measured window."""
    from rtpick.comparison.metrics import output_metrics, within_tolerance
    from rtpick.perf import scenarios

    feeds = device_feeds(model, batch, seed=0)
    first = time.perf_counter()
    for _ in range(3):  # a compile or graph capture at a new batch size is not part of the window
        session.run(feeds)
    session.synchronize()
    record["first_calls_s"] = time.perf_counter() - first
    check = device_feeds(model, batch, seed=1)
    output = next(iter(session.run(check).values())).float().cpu().numpy()
    key = (job.model, batch)
    if job.runtime == "torch-cuda" and job.precision == "fp32" and not job.options:
        references[key] = output
    if key in references:
        metrics = output_metrics(references[key], output)
        record["accuracy"] = {
            "passed": within_tolerance(metrics, job.precision), "rel_l2": metrics["rel_l2"],
            "cosine": metrics["cosine"], "max_abs_error": metrics["max_abs_error"],
            "reason": metrics["reasons"].get(job.precision, ""),
            "method": f"outputs on fresh inputs (seed 1, batch {batch}) against eager torch-cuda:fp32, "
                      f"judged by rtpick.comparison's {job.precision} tolerance"}
    if job.measure:
        run = scenarios.single_stream if batch == 1 else scenarios.offline_point
        result = run(session, feeds, min_duration_s=WINDOW_S, min_queries=20, warmup=None, blocks=5)
        record["metrics"] = result.to_dict()


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, so that one bad figure cannot stop the file."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def failed(job: Job, status: str, error: str) -> list[dict[str, Any]]:
    return [{"model": job.model, "config": f"{job.runtime}:{job.precision}", "runtime": job.runtime,
             "precision": job.precision, "options": job.options, "label": job.label, "batch": batch,
             "status": status, "error": error} for batch in job.batches]


# ------------------------------------------------------------------------------------------- the table


def row_text(record: dict[str, Any]) -> str:
    """One line of the final table: configuration, speed, energy, throttling, accuracy (or why none)."""
    head = f"{record['label']:<58} b{record['batch']:<4}"
    if record.get("status") != "ok":
        return f"{head} {record.get('status')}: {record.get('error', '')}"[:220]
    acc = record.get("accuracy")
    acc_text = "" if not acc else (" acc ok" if acc["passed"] else " ACC FAIL") + f" relL2 {acc['rel_l2']:.3g}"
    metrics = record.get("metrics")
    if not metrics:
        return f"{head} reference outputs only{acc_text}"
    energy = metrics.get("energy") or {}
    jpi = energy.get("joules_per_inference")
    energy_text = f"{jpi * 1e3:8.3f} mJ/inf" if jpi is not None else f"energy {energy.get('energy', '-')}"[:60]
    events = energy.get("clock_events") or {}
    throttle = ", ".join(f"{r['reason'].split(' (')[0]} {r['fraction']:.0%}" for r in events.get("reasons", [])
                         if r["throttling"]) or "no throttling"
    return (f"{head} p50 {metrics['latency_ms']['p50']:8.3f} ms {metrics['throughput']:10,.0f}/s "
            f"{energy_text} | {throttle}{acc_text}")


def verdicts(records: list[dict[str, Any]]) -> list[str]:
    from rtpick.runtimes.fp8 import fp8_speed_verdicts

    lines = []
    for model in sorted({r["model"] for r in records}):
        mine = [{**r, "scenario": r.get("scenario")} for r in records if r["model"] == model and r.get("metrics")]
        lines += [f"{model} b{v['batch']}: {v['words']}" for v in fp8_speed_verdicts(mine)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for energy-fp8.json")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="stop starting jobs after this long")
    parser.add_argument("--only", default="", help="comma-separated models to run (bert, resnet50, ...)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    import torch

    from rtpick.files import write_json
    from rtpick.perf.memory import gpu_inventory

    environment = {"torch": torch.__version__, "gpu": gpu_inventory(),
                   "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    records: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    references: dict[tuple[str, int], Any] = {}
    wanted = {m for m in args.only.split(",") if m}

    def save() -> None:  # after every job, so that an interrupted run keeps what it measured
        payload = {"command": " ".join(["python", *sys.argv]), "environment": environment, "records": records,
                   "fp8_verdicts": verdicts(records)}
        write_json(out / "energy-fp8.json", finite(payload), "results", default=str)

    for job in plan():
        if wanted and job.model.split("-")[0] not in wanted:
            continue
        left = args.budget_s - (time.perf_counter() - started)
        if left < job.cost_s:
            records += failed(job, "skipped", f"time budget: {left:.0f} s left, the job needs about {job.cost_s:g}")
            continue
        print(f"[{time.perf_counter() - started:6.1f} s] {job.label}", flush=True)
        try:
            if job.model not in models:
                models[job.model] = load(job.model)
            records += run_job(job, models[job.model], references)
        except Exception as exc:  # noqa: BLE001 - one failing configuration is recorded, the others go on
            from rtpick.errors import MissingRuntime

            records += failed(job, "unavailable" if isinstance(exc, MissingRuntime) else "failed", _one_line(exc))
            records[-1]["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]
        torch._dynamo.reset()  # each job compiles afresh: no guard list carried from the last one
        torch.cuda.empty_cache()
        save()
    save()
    print(f"\n{len(records)} rows in {time.perf_counter() - started:.0f} s -> {out / 'energy-fp8.json'}")
    for record in records:
        print(row_text(record))
    for line in verdicts(records):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
