"""The server scenario's host cost, before and after it moved onto the per-batch scheduler.

    git archive <old commit> src | tar -x -C /tmp/rtpick-old      # the old code (DynamicBatcher + OpenLoop)
    PYTHONPATH=src python benchmarks/server_scenario_host.py --old-src /tmp/rtpick-old/src \\
        --out benchmarks/results/server-scenario-host.json

A near-zero-cost model (a tiny MLP, x float32[batch, 8] -> 8-32-8, on ort-cpu fp32, max batch 8, batch window
2 ms) so that what is measured is the scenario's own host cost, not the model. Two figures per variant:
1. `find_max_rate` with a p99 bound of 20 ms (trials of `--trial-s` seconds): the highest Poisson rate the
   scenario can drive and still measure under the bound.
2. Host CPU time per query: user + system CPU seconds of the whole process (every thread: the arrival feeder,
   the batcher or scheduler, ONNX Runtime's threads) over one run at each of two fixed rates that both variants
   keep up with (2,000 and 20,000 q/s), divided by its queries.
The variants run in separate processes (each with its own `PYTHONPATH`), interleaved round by round with the
order alternating, so that a change in the machine's load hits both. The machine's load average is recorded
before and after each run: it is shared with other engineers' builds and tests, so the figures are a
comparison on the same busy host, not the host's capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from streams_host import mlp_model as streams_mlp_model

MAX_BATCH = 8
P99_MS = 20.0
FIXED_RATES = (2000.0, 20000.0)  # well under both variants' find-max rates: both keep up


def mlp_model(path: Path, width: int = 32) -> Path:
    """The MLP of the committed results: one hidden layer of `width` (streams_host's builder)."""
    return streams_mlp_model(path, width, hidden=1)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def worker(model: str, trial_s: float, fixed_s: float) -> dict[str, Any]:
    """One variant, in its own process: whichever `rtpick` is first on PYTHONPATH."""
    import rtpick
    from rtpick.perf import scenarios

    feeds = {"x": np.random.default_rng(1).standard_normal((MAX_BATCH, 8)).astype(np.float32)}
    session = rtpick.load(model, "ort-cpu", "fp32", shapes={"x": (MAX_BATCH, 8)})
    out: dict[str, Any] = {"rtpick": str(Path(rtpick.__file__).parent)}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    search = scenarios.find_max_rate(session, feeds, p99_bound_ms=P99_MS, duration_s=trial_s, max_batch=MAX_BATCH)
    out["find_max"] = {
        "max_qps": search["max_qps"], "capacity_qps": search["capacity_qps"], "wall_s": time.perf_counter() - started,
        "trials": [{"target_qps": t["target_qps"], "achieved_qps": t["achieved_qps"], "queries": t["queries"],
                    "incomplete": t["incomplete"], "p99_ms": t["latency_ms"]["p99"],
                    "mean_batch": t["mean_batch"], "meets": t["meets_bound"]} for t in search["trials"]],
        "load_avg_before": load, "load_avg_after": os.getloadavg()[0],
    }
    out["fixed_rate"] = [fixed(scenarios, session, feeds, rate, fixed_s) for rate in FIXED_RATES]
    session.close()
    return out


def fixed(scenarios: Any, session: Any, feeds: dict[str, np.ndarray], rate: float, fixed_s: float) -> dict[str, Any]:
    """One server run at `rate`: its CPU seconds (all threads) per query."""
    load, before, started = os.getloadavg()[0], cpu_s(), time.perf_counter()
    run = scenarios.server(session, feeds, rate_qps=rate, duration_s=fixed_s, max_batch=MAX_BATCH,
                           warm=False, seed=11)
    cpu, wall = cpu_s() - before, time.perf_counter() - started
    return {
        "rate_qps": rate, "duration_s": fixed_s, "queries": run["queries"], "completed": run["completed"],
        "achieved_qps": run["achieved_qps"], "p50_ms": run["latency_ms"]["p50"], "p99_ms": run["latency_ms"]["p99"],
        "mean_batch": run["mean_batch"], "cpu_s": cpu, "wall_s": wall,
        "cpu_us_per_query": cpu / run["queries"] * 1e6,
        "load_avg_before": load, "load_avg_after": os.getloadavg()[0],
    }


def run_variant(src: str, model: Path, trial_s: float, fixed_s: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run([sys.executable, __file__, "--worker", "--model", str(model), "--trial-s", str(trial_s),
                           "--fixed-s", str(fixed_s)], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"the worker for {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["find_max"]["max_qps"] or 0.0 for r in runs]
    out: dict[str, Any] = {"find_max_qps": {"median": float(np.median(rates)), "runs": rates}}
    for i, rate in enumerate(FIXED_RATES):
        cpu = [r["fixed_rate"][i]["cpu_us_per_query"] for r in runs]
        p99 = [r["fixed_rate"][i]["p99_ms"] for r in runs]
        out[f"at_{rate:g}_qps"] = {"cpu_us_per_query": {"median": float(np.median(cpu)), "runs": cpu},
                                   "p99_ms": {"median": float(np.median(p99)), "runs": p99}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-src", help="the old code's src/ directory")
    parser.add_argument("--out", help="JSON results file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trial-s", type=float, default=1.5, help="seconds per find-max trial")
    parser.add_argument("--fixed-s", type=float, default=3.0, help="seconds of the fixed-rate run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.model, args.trial_s, args.fixed_s)))
        return 0
    if not args.old_src or not args.out:
        parser.error("--old-src and --out are required")
    new_src = str(Path(__file__).resolve().parents[1] / "src")
    variants = {"before": str(Path(args.old_src).resolve()), "after": new_src}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = mlp_model(Path(tmp) / "mlp.onnx")
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for name in order:
                result = run_variant(variants[name], model, args.trial_s, args.fixed_s)
                result["round"] = round_
                runs[name].append(result)
                print(f"round {round_} {name}: find-max {result['find_max']['max_qps'] or 0:,.0f} q/s, "
                      + ", ".join(f"{f['cpu_us_per_query']:.1f} us CPU/query at {f['rate_qps']:g} q/s"
                                  for f in result["fixed_rate"])
                      + f" (load {result['find_max']['load_avg_before']:.2f})", flush=True)
    results = {
        "command": "PYTHONPATH=src python " + " ".join(["benchmarks/server_scenario_host.py", *sys.argv[1:]]),
        "configuration": {"model": "MLP x[batch,8] -> MatMul 8x32 -> Relu -> MatMul 32x8, ONNX opset 17",
                          "runtime": "ort-cpu:fp32", "max_batch": MAX_BATCH, "batch_window_ms": 2.0,
                          "p99_bound_ms": P99_MS, "trial_s": args.trial_s, "fixed_rates_qps": list(FIXED_RATES),
                          "fixed_s": args.fixed_s, "rounds": args.rounds},
        "machine": {"cpus": os.cpu_count(), "shared": "2 cores shared with other engineers' builds and tests "
                    "during the run (see each run's load_avg_before/after)"},
        "method": ("each variant in its own process (PYTHONPATH = its src/), interleaved round by round with the "
                   "order alternating; find-max: rtpick.perf.scenarios.find_max_rate (closed-loop capacity at "
                   "batch 8, then Poisson trials bisecting the rate in log space for p99 <= 20 ms with <= 1% "
                   "unanswered); CPU per query: getrusage(RUSAGE_SELF) user+sys over one server() run at each "
                   "fixed rate, / its queries"),
        "summary": {name: summary(r) for name, r in runs.items()},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
