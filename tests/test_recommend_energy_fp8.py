"""`recommend` with energy and FP8, on hand-made records (no GPU): the never-slower rule, --max-joules, throttling.

fp8 rows come from `torch-compile-cuda`, whose `speed_rule("fp8")` is FP8's never-slower rule; the ranking
applies it without knowing the precision. Energy figures sit where the scenarios put them (``metrics.energy``).
"""

from __future__ import annotations

import math

import pytest
from conftest import run_cli
from rich.console import Console

from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.recommendation import (
    CHOSEN,
    MEETS,
    NOT_FASTER,
    OVER_ENERGY,
    UNAVAILABLE,
    Constraints,
    Recommendation,
    plan,
    rank,
)
from rtpick.runtimes.base import Availability

PASSED = {"status": "pass", "passed": True, "gate": "tolerance", "reason": ""}
RT = "torch-compile-cuda"
POWER_CAP = {"throttled": True, "reasons": [
    {"reason": "power cap (software power scaling)", "throttling": True, "fraction": 0.4},
    {"reason": "GPU idle", "throttling": False, "fraction": 0.1}], "method": "sampled (test)"}


def record(config: str, *, mean: float = 1.0, p99: float = 2.0, ci: tuple[float, float] | None = None,
           energy: dict | None = None, batch: int = 1, scenario: str = "single-stream",
           options: dict | None = None) -> Record:
    """An ok, correct record; `mean` is also its p50 (the speed rule compares mean latency)."""
    runtime, precision = config.split(":")
    device = "cpu" if runtime.endswith("cpu") else "cuda"
    latency = {"p50": mean, "p90": p99, "p99": p99, "mean": mean, "max": p99}
    if ci is not None:
        latency["ci"] = {"p50": list(ci), "p99": [p99 * 0.99, p99 * 1.01], "method": "test"}
    metrics = {"scenario": scenario, "method": "hand-made", "batch": batch, "n": 100, "duration_s": 10.0,
               "latency_ms": latency, "throughput": batch * 1e3 / mean}
    if energy is not None:
        metrics["energy"] = energy
    return Record.from_dict({
        "config": config, "runtime": runtime, "precision": precision, "batch": batch, "scenario": scenario,
        "status": "ok", "device": device, "correctness": PASSED, "build_time_s": 1.0, "options": options or {},
        "memory": {"host_rss_peak_mb": 100.0}, "metrics": metrics})


def measured(joules: float, clock_events: dict | None = None) -> dict:
    return {"joules_per_inference": joules, "inferences_per_joule": 1 / joules, "energy": "measured",
            "method": "NVML (test)", "clock_events": clock_events or {"throttled": False, "reasons": []}}


def rows_by_config(out: Recommendation) -> dict[str, object]:
    return {row.config: row for row in out.rows()}


# ------------------------------------------------------------------------------------------ never slower


def test_fp8_slower_than_fp16_is_never_chosen_and_says_why():
    # fp8's p99 is the best of all, so without the rule it would win; its mean is 0.93x the fp16 one's speed
    records = [record(f"{RT}:fp16", mean=9.3, p99=12.0), record(f"{RT}:fp8", mean=10.0, p99=10.5),
               record("ort-cuda:fp16", mean=11.0, p99=13.0)]
    out = rank(records, Constraints(p99_ms=20.0))
    assert out.chosen is not None and out.chosen.config == f"{RT}:fp16"
    fp8 = rows_by_config(out)[f"{RT}:fp8"]
    assert fp8.verdict == NOT_FASTER and fp8.rank is None and fp8 not in out.ranked
    assert fp8.reason == f"fp8 not faster here: 0.93x {RT}:fp16"
    assert [r.config for r in out.ranked] == [f"{RT}:fp16", "ort-cuda:fp16"]


def test_fp8_over_budget_and_not_faster_is_no_closest_miss():
    records = [record(f"{RT}:bf16", mean=9.0, p99=30.0), record(f"{RT}:fp8", mean=10.0, p99=25.0)]
    out = rank(records, Constraints(p99_ms=5.0))
    assert out.chosen is None and [r.config for r in out.closest] == [f"{RT}:bf16"]
    fp8 = rows_by_config(out)[f"{RT}:fp8"]
    assert fp8.verdict == NOT_FASTER
    assert fp8.reason.startswith(f"fp8 not faster here: 0.90x {RT}:bf16; also p99 25 ms > 5 ms budget")


def test_fp8_faster_is_allowed_and_says_so():
    records = [record(f"{RT}:fp16", mean=9.0, p99=11.0, ci=(8.9, 9.1)),
               record(f"{RT}:fp8", mean=7.5, p99=9.0, ci=(7.4, 7.6))]
    out = rank(records, Constraints(p99_ms=20.0))
    assert out.chosen.config == f"{RT}:fp8" and out.chosen.verdict == CHOSEN
    assert f"fp8 faster here: 1.20x {RT}:fp16" in out.chosen.reason
    assert rows_by_config(out)[f"{RT}:fp16"].verdict == MEETS


def test_fp8_within_the_intervals_is_not_faster():
    records = [record(f"{RT}:fp16", mean=10.0, p99=12.0, ci=(9.0, 11.0)),
               record(f"{RT}:fp8", mean=9.8, p99=11.0, ci=(8.8, 10.8))]
    out = rank(records, Constraints(p99_ms=20.0))
    assert out.chosen.config == f"{RT}:fp16"
    assert rows_by_config(out)[f"{RT}:fp8"].reason.endswith("(within the 95% intervals)")


def test_fp8_without_its_baseline_is_ranked_only_when_asked_for_alone():
    fp8 = record(f"{RT}:fp8", mean=5.0, p99=6.0)
    out = rank([fp8, record("ort-cuda:fp16", mean=9.0, p99=10.0)], Constraints(p99_ms=20.0))
    assert out.chosen.config == "ort-cuda:fp16"
    row = rows_by_config(out)[f"{RT}:fp8"]
    assert row.verdict == NOT_FASTER and row.reason.startswith("fp8 not compared")
    alone = rank([fp8], Constraints(p99_ms=20.0))
    assert alone.chosen.config == f"{RT}:fp8" and "the only configuration asked for" in alone.chosen.reason


def test_dropped_baselines_probe_is_the_evidence():
    """fp16 dropped after the probe (no full record): its probe records still judge fp8, both ways."""
    fp8 = record(f"{RT}:fp8", mean=7.5, p99=9.0, ci=(7.4, 7.6))
    faster = rank([fp8], Constraints(p99_ms=20.0), evidence=[record(f"{RT}:fp16", mean=9.0, ci=(8.9, 9.1))])
    assert faster.chosen.config == f"{RT}:fp8" and "fp8 faster here: 1.20x" in faster.chosen.reason
    other = record("ort-cuda:fp16", mean=9.0, p99=10.0)
    slower = rank([fp8, other], Constraints(p99_ms=20.0), evidence=[record(f"{RT}:bf16", mean=7.0)])
    assert slower.chosen.config == "ort-cuda:fp16"
    assert rows_by_config(slower)[f"{RT}:fp8"].reason.startswith("fp8 not faster here: 0.93x")


def test_throughput_sweep_keeps_the_batch_where_fp8_wins():
    """The rule compares the same batch: fp8 loses at batch 1 but wins at 64, so the batch-64 row is ranked."""
    records = [record(f"{RT}:fp16", mean=1.0, batch=1), record(f"{RT}:fp16", mean=40.0, batch=64),
               record(f"{RT}:fp8", mean=1.1, batch=1), record(f"{RT}:fp8", mean=30.0, batch=64)]
    out = rank(records, Constraints(min_throughput=100.0))
    assert out.chosen.config == f"{RT}:fp8" and out.chosen.batch == 64
    assert "fp8 faster here: 1.33x" in out.chosen.reason


def test_a_record_the_rule_cannot_read_is_not_compared():
    """Camera records carry no mean latency for the rule to compare: fp8 is then not chosen for speed (unless
    asked for alone), never chosen by default."""
    from rtpick.perf.scenarios.multistream import MultistreamMeasurement

    def cams(config: str, p99: float) -> Record:
        rec = record(config)
        rec.scenario = "multistream"
        rec.measurement = MultistreamMeasurement.from_dict(
            {"scenario": "multistream", "streams": 4, "fps": 30.0, "duration_s": 2.0, "method": "m",
             "total": {"p99_ms": p99, "p50_ms": p99 / 2, "on_time_fraction": 1.0, "processed": 240, "frames": 240,
                       "late": 0, "dropped": 0}})
        return rec

    out = rank([cams(f"{RT}:fp8", 5.0), cams(f"{RT}:fp16", 10.0)], Constraints(streams=4, fps=30.0))
    assert out.chosen.config == f"{RT}:fp16"
    fp8 = rows_by_config(out)[f"{RT}:fp8"]
    assert fp8.verdict == NOT_FASTER and "not compared" in fp8.reason


def test_an_fp8_gpu_cannot_run_is_unavailable_with_its_reason(monkeypatch):
    from rtpick.runtimes import registry
    from rtpick.runtimes.torch_compile import TorchCompileCuda

    monkeypatch.setattr(registry, "availability", lambda name: Availability(True))
    reason = "FP8 needs a GPU with FP8 tensor cores (compute capability >= 8.9); NVIDIA A100 is 8.0"
    monkeypatch.setattr(TorchCompileCuda, "precision_availability",
                        lambda self, p: Availability(p != "fp8", reason if p == "fp8" else ""))
    runnable, skipped = plan([f"{RT}:fp16", f"{RT}:fp8"], cpu_only=False)
    assert runnable == [f"{RT}:fp16"]
    (row,) = skipped
    assert (row.config, row.verdict, row.reason) == (f"{RT}:fp8", UNAVAILABLE, reason)

    def broken(self, precision):
        raise OSError("libcuda went away")

    monkeypatch.setattr(TorchCompileCuda, "precision_availability", broken)
    _, skipped = plan([f"{RT}:fp8"], cpu_only=False)
    assert skipped[0].verdict == UNAVAILABLE and "checking fp8 failed: OSError" in skipped[0].reason


def test_without_a_gpu_fp8_is_unavailable_like_the_other_gpu_rows():
    from rtpick.runtimes.registry import availability

    if availability(RT).ok:
        pytest.skip(f"{RT} runs here")
    _, skipped = plan(None, cpu_only=False)
    rows = {row.config: row for row in skipped}
    assert rows[f"{RT}:fp8"].verdict == UNAVAILABLE
    assert rows[f"{RT}:fp8"].reason == rows[f"{RT}:fp16"].reason  # the runtime's one reason


# ----------------------------------------------------------------------------------------------- energy


def test_max_joules_keeps_excludes_and_explains():
    short = {"joules_per_inference": None, "inferences_per_joule": None, "energy": (
        "not measured: the window (1.20 s) is shorter than 20 updates of the energy counter"),
        "clock_events": {"throttled": False, "reasons": []}}
    records = [record("torch-cuda:fp16", mean=1.0, p99=1.5, energy=measured(0.5)),  # fastest, over the limit
               record("ort-cuda:fp16", mean=2.0, p99=3.0, energy=measured(0.04)),
               record("tensorrt:fp16", mean=0.5, p99=0.8, energy=short),
               record("ort-cpu:fp32", mean=3.0, p99=4.0, energy={"energy": "not measured: runs on the CPU"}),
               record("ort-cuda:fp32", mean=2.5, p99=3.5)]  # a record from before energy was recorded
    out = rank(records, Constraints(p99_ms=10.0, max_joules=0.1))
    assert out.chosen.config == "ort-cuda:fp16" and out.chosen.joules_per_inference == pytest.approx(0.04)
    rows = rows_by_config(out)
    assert rows["torch-cuda:fp16"].verdict == OVER_ENERGY
    assert rows["torch-cuda:fp16"].reason == "500 mJ per inference > --max-joules 100 mJ (by 400 mJ)"
    assert rows["tensorrt:fp16"].verdict == OVER_ENERGY
    assert rows["tensorrt:fp16"].reason == ("energy not measured: the window (1.20 s) is shorter than 20 updates of "
                                            "the energy counter, so --max-joules cannot be checked")
    assert rows["ort-cpu:fp32"].verdict == OVER_ENERGY
    assert rows["ort-cpu:fp32"].reason.startswith("energy is not measured on CPUs")
    assert rows["ort-cuda:fp32"].verdict == OVER_ENERGY and "no energy entry" in rows["ort-cuda:fp32"].reason
    # without the limit, energy does not decide anything
    free = rank(records, Constraints(p99_ms=10.0))
    assert free.chosen.config == "tensorrt:fp16" and not free.excluded


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_max_joules_must_be_positive_and_finite(value):
    with pytest.raises(RtpickError, match="--max-joules must be a positive, finite number"):
        Constraints(p99_ms=10.0, max_joules=value).validate()


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_cli_refuses_a_bad_max_joules_in_one_line(value):
    done = run_cli("recommend", "rtpick:digits", "--p99-ms", "10", "--max-joules", value, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--max-joules must be a positive, finite number" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_throttled_rows_are_flagged_and_the_table_shows_energy():
    from rtpick.commands.recommend import render

    records = [record("torch-cuda:fp16", mean=1.0, p99=1.5, energy=measured(0.0412, POWER_CAP)),
               record("ort-cpu:fp32", mean=3.0, p99=4.0, energy={"energy": "not measured: runs on the CPU"})]
    out = rank(records, Constraints(p99_ms=10.0))
    out.model = {"name": "test"}
    assert out.chosen.throttled == "power cap (software power scaling) 40%"  # idle is not throttling
    assert out.to_dict()["chosen"]["joules_per_inference"] == pytest.approx(0.0412)
    console = Console(record=True, width=250)
    console.print(render(out))
    text = console.export_text()
    assert "energy" in text and "41.2 mJ/inf" in text
    assert "THROTTLED: power cap (software power scaling) 40%" in text
    cpu_only = rank([records[1]], Constraints(p99_ms=10.0))
    cpu_only.model = {"name": "test"}
    console = Console(record=True, width=250)
    console.print(render(cpu_only))
    assert "mJ" not in console.export_text() and "energy" not in console.export_text()


def test_cli_max_joules_on_cpu_rows_excludes_them_with_the_reason(tmp_path, monkeypatch):
    """Through the CLI, on a stored record (nothing measured): a CPU row cannot be checked against --max-joules."""
    from rtpick.results import Results
    from rtpick.sources import load_model

    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    spec = load_model("rtpick:digits").spec
    stored = tmp_path / "stored.json"
    Results(command="hand-made", scenario={"scenario": "single-stream"},
            model={"sha256": spec.sha256, "spec": {"name": spec.name}},
            configurations=[record("ort-cpu:fp32", energy={"energy": "not measured: runs on the CPU"})]).write(stored)
    done = run_cli("recommend", "rtpick:digits", "--p99-ms", "1000", "--from", str(stored), "--max-joules", "1",
                   timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if "ort-cpu:fp32" in line and "│" in line]
    assert "over energy limit" in row and "energy is not measured on CPUs" in row
    without = run_cli("recommend", "rtpick:digits", "--p99-ms", "1000", "--from", str(stored), timeout=120)
    assert without.returncode == 0 and "recommended: ort-cpu:fp32" in without.stdout


def test_every_declared_speed_rule_answers_for_records():
    """The contract: `speed_rule(precision)` is None or a function of records; no records, no verdicts."""
    from rtpick.runtimes.registry import RUNTIMES, get_runtime

    rules = {}
    for name in RUNTIMES:
        runtime = get_runtime(name)
        for precision in runtime.precisions:
            rule = runtime.speed_rule(precision)
            assert rule is None or callable(rule)
            if rule is not None:
                assert rule([]) == []
                rules[f"{name}:{precision}"] = rule
    assert f"{RT}:fp8" in rules


def test_search_readmits_the_baseline_an_fp8_rejected_by_its_rule_dominated(monkeypatch):
    """The probe said fp8 surely beats fp16 (fp16 dropped as dominated); in full, fp8 is not faster than fp16's
    probe: its claim is refuted, so fp16 is measured in full after all and can be chosen."""
    from dataclasses import replace

    from rtpick.perf.progress import Phases
    from rtpick.perf.scenarios.closedloop import SingleStreamMeasurement
    from rtpick.recommendation import survey as survey_module
    from rtpick.recommendation.search import Choice
    from rtpick.sources import load_model

    def fake_measure(cache, job):  # type: ignore[no-untyped-def]
        full = float(job.params.duration_s) >= 2.0
        p99, p50 = {("fp8", False): (1.0, 0.5), ("fp16", False): (2.0, 1.0),
                    ("fp8", True): (1.5, 1.2), ("fp16", True): (2.0, 1.0)}[(job.precision, full)]
        data = {"batch": job.batch, "n": 500, "duration_s": 1.0, "throughput": 1e3 / p50, "method": "test",
                "latency_ms": {"p50": p50, "p90": p99, "p99": p99, "mean": p50, "max": p99,
                               "ci": {"p50": [p50 * 0.95, p50 * 1.05], "p99": [p99 * 0.95, p99 * 1.05]}}}
        return replace(Record(runtime=job.runtime, precision=job.precision, batch=job.batch,
                              scenario="single-stream", measurement=SingleStreamMeasurement(data),
                              build_time_s=1.0), batch=job.batch)

    monkeypatch.setattr(survey_module, "measure", fake_measure)
    c = Constraints(p99_ms=5.0)
    survey = survey_module.Survey("rtpick:digits", load_model("rtpick:digits"), c, quick=True, repeats=1,
                                  batches=None, shapes={}, timeout_s=None, command="", phases=Phases())
    choices = [Choice(RT, "fp16", {}), Choice(RT, "fp8", {})]
    measured, dropped = survey.run(choices, exhaustive=False)
    assert sorted(r.precision for r in measured) == ["fp16", "fp8"] and not dropped
    out = rank([replace(r, correctness=PASSED) for r in measured], c, evidence=survey.evidence)
    assert out.chosen.config == f"{RT}:fp16"
    assert rows_by_config(out)[f"{RT}:fp8"].reason.startswith("fp8 not faster here: 0.83x")
