"""`--repeats N`: each configuration measured in N processes, intervals from the spread between them."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from bench_fakes import Recorder
from conftest import run_cli

from rtpick.errors import RtpickError
from rtpick.perf import stats
from rtpick.perf.run import BenchRequest, combine_replicates, command_line, run_bench

# ------------------------------------------------------------------------------------------ the interval


def test_replication_interval_of_known_values() -> None:
    out = stats.replication_ci_ms([1.0, 2.0, 4.0])
    assert out["estimate"] == pytest.approx(2.0)  # geometric mean
    half = 4.303 * math.log(2.0) / math.sqrt(3)  # t(0.975, 2) x sd(log) / sqrt(N); sd(0, ln2, 2 ln2) = ln 2
    assert out["log_half_width"] == pytest.approx(half, rel=1e-3)
    assert out["ci"] == pytest.approx([2.0 * math.exp(-half), 2.0 * math.exp(half)], rel=1e-3)
    assert out["replicates"] == [1.0, 2.0, 4.0] and out["dof"] == 2
    same = stats.replication_ci_ms([0.07, 0.07, 0.07, 0.07, 0.07])
    assert same["ci"] == pytest.approx([0.07, 0.07]) and same["log_half_width"] == 0.0


def test_replication_interval_refuses_what_it_cannot_judge() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        stats.replication_ci_ms([1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.replication_ci_ms([1.0, 0.0])


def test_combined_summary_pools_counts_and_spread_exactly() -> None:
    rng = np.random.default_rng(3)
    processes = [rng.lognormal(np.log(0.001) + offset, 0.2, 500) for offset in (0.0, 0.1, -0.05)]
    summaries = [stats.latency_summary(blocks_s=stats.split_blocks(x, 5)) for x in processes]
    out = stats.combine_latency_ms(summaries)
    every = np.concatenate(processes) * 1e3
    assert out["n"] == 1500
    assert out["max"] == pytest.approx(every.max()) and out["min"] == pytest.approx(every.min())
    assert out["std"] == pytest.approx(every.std(ddof=1), rel=1e-9)
    p50s = [s["p50"] for s in summaries]
    assert out["p50"] == pytest.approx(math.exp(np.mean(np.log(p50s))))
    assert out["mean"] == pytest.approx(math.exp(np.mean(np.log([s["mean"] for s in summaries]))))
    ci = out["ci"]
    assert ci["replicates"] == 3 and ci["replicate_p50"] == p50s and len(ci["replicate_p99"]) == 3
    assert "independent replications" in ci["method"] and "N = 3 processes" in ci["method"]
    assert ci["blocks_per_replicate"] == 5 and "blocks" not in ci  # not to be read as sectioning
    assert ci["p50"][0] < out["p50"] < ci["p50"][1] and ci["p99"][0] < out["p99"] < ci["p99"][1]


def _process(rng: np.random.Generator, offset_sd: float = 0.05, calls: int = 1000) -> np.ndarray:
    """One process's calls: a per-process offset (sd 5% on the log scale) that every call shares, then 10%
    call-to-call noise. The target, the centre of the processes' medians, is exactly 1 ms."""
    return 0.001 * np.exp(rng.normal(0.0, offset_sd) + rng.normal(0.0, 0.1, calls))


def test_replications_cover_a_per_process_offset_that_sectioning_cannot_see() -> None:
    """The reason for --repeats: every block of one process shares its offset, so a sectioning interval is
    narrow around that process's level and misses the truth (and the next process); the interval over 5
    processes covers it at about the nominal 95%, and two such runs overlap."""
    rng = np.random.default_rng(11)
    runs = 300
    truth_p99 = math.exp(0.1 * 2.3263)  # the 99th percentile of the call noise, at the 1 ms centre
    replicated, sectioned = [], []
    for _ in range(runs):
        summaries = [stats.latency_summary(blocks_s=stats.split_blocks(_process(rng), 10)) for _ in range(5)]
        replicated.append(stats.combine_latency_ms(summaries)["ci"])
        sectioned.append(summaries[0]["ci"])  # what a run without --repeats would report
    cover = np.mean([lo <= 1.0 <= hi for lo, hi in (c["p50"] for c in replicated)])
    cover_p99 = np.mean([lo <= truth_p99 <= hi for lo, hi in (c["p99"] for c in replicated)])
    cover_sectioned = np.mean([lo <= 1.0 <= hi for lo, hi in (c["p50"] for c in sectioned)])
    assert 0.90 <= cover <= 0.99, cover
    assert 0.88 <= cover_p99 <= 0.99, cover_p99
    assert cover_sectioned <= 0.5, cover_sectioned
    pairs = range(0, runs, 2)
    agree = np.mean([stats.intervals_overlap(replicated[i]["p50"], replicated[i + 1]["p50"]) for i in pairs])
    agree_sectioned = np.mean([stats.intervals_overlap(sectioned[i]["p50"], sectioned[i + 1]["p50"])
                               for i in pairs])
    assert agree >= 0.95 and agree_sectioned <= 0.6, (agree, agree_sectioned)


# ------------------------------------------------------------------------------------------ the records


def _record(p50_ms: float, *, status: str = "ok", accuracy: float = 0.99, rss: float = 100.0,
            load: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """A worker record as `run_job` writes it, around calls of known median."""
    base = {"config": "ort-cpu:fp32", "runtime": "ort-cpu", "precision": "fp32", "batch": 1, "options": {},
            "scenario": "single-stream", "status": status}
    if status != "ok":
        return {**base, "error": "RuntimeError: boom"}
    calls = np.random.default_rng(seed).lognormal(np.log(p50_ms / 1e3), 0.1, 400)
    latency = stats.latency_summary(blocks_s=stats.split_blocks(calls, 5))
    metrics = {"scenario": "single-stream", "batch": 1, "n": 400, "duration_s": float(calls.sum()), "warmup": 7,
               "latency_ms": latency, "throughput": 400 / float(calls.sum()),
               "method": "host clock (perf_counter) around run() and synchronize(), 400 calls of batch 1 back to "
                         "back in 5 blocks over 0.4 s after 7 warm-up calls; 95% CI by sectioning over the blocks",
               "device_latency_ms": None, "transfers": None,
               "load_avg": {"before": load, "after": load, "cpus": 2, "what": "1-minute load average"}}
    return {**base, "load_time_s": 0.5, "build_time_s": 0.01 * (1 + seed), "first_inference_ms": 0.5,
            "device": "cpu", "metrics": metrics, "warnings": [], "accuracy": accuracy,
            "memory": {"host_rss_peak_mb": rss, "host_rss_method": "psutil RSS", "process_rss_peak_mb": rss},
            "accuracy_detail": {"metric": "top-1", "n": 540}}


def test_replicates_combine_into_one_record_of_the_usual_shape() -> None:
    records = [_record(1.0, rss=100.0, load=0.5, seed=1), _record(1.2, rss=130.0, load=2.5, seed=2),
               _record(1.1, rss=110.0, accuracy=0.98, load=1.0, seed=3)]
    out = combine_replicates(records)
    m = out["metrics"]
    assert out["status"] == "ok" and m["n"] == 1200 and m["warmup"] == 21
    assert m["latency_ms"]["ci"]["replicates"] == 3
    assert m["throughput"] == pytest.approx(1e3 / m["latency_ms"]["mean"])  # batch 1 / combined mean
    assert m["method"].startswith("3 separate processes") and "sectioning" not in m["method"]
    assert out["memory"]["host_rss_peak_mb"] == 130.0 and "largest of 3" in out["memory"]["host_rss_method"]
    assert m["load_avg"]["before"] == 0.5 and m["load_avg"]["after"] == 1.0 and m["load_avg"]["max"] == 2.5
    assert out["build_time_s"] == pytest.approx(0.03)  # the median of 0.02, 0.03, 0.04
    assert out["accuracy"] == 0.99 and any("accuracy differed" in w for w in out["warnings"])
    kept = out["replicates"]
    assert [r["process"] for r in kept] == [1, 2, 3] and all(r["status"] == "ok" for r in kept)
    assert kept[1]["p50"] == records[1]["metrics"]["latency_ms"]["p50"]
    assert kept[1]["ci_p50"] == records[1]["metrics"]["latency_ms"]["ci"]["p50"]
    assert kept[1]["load_avg"]["before"] == 2.5 and kept[1]["build_time_s"] == pytest.approx(0.03)


def test_a_failed_process_does_not_take_the_configuration_down() -> None:
    out = combine_replicates([_record(1.0, seed=1), _record(0, status="crashed"), _record(1.1, seed=2)])
    assert out["status"] == "ok" and out["metrics"]["latency_ms"]["ci"]["replicates"] == 2
    assert any("1 of 3 processes failed" in w and "process 2: crashed" in w for w in out["warnings"])
    assert [r["status"] for r in out["replicates"]] == ["ok", "crashed", "ok"]

    alone = combine_replicates([_record(0, status="oom"), _record(1.0, seed=1)])
    assert alone["status"] == "ok" and alone["metrics"]["latency_ms"]["ci"]["blocks"] == 5  # its own sectioning
    assert any("no replication interval" in w and "process 1: oom" in w for w in alone["warnings"])

    none = combine_replicates([_record(0, status="timeout"), _record(0, status="crashed")])
    assert none["status"] == "timeout" and len(none["replicates"]) == 2


# ------------------------------------------------------------------------------------------ the request


def test_request_checks_and_reproducing_command() -> None:
    with pytest.raises(RtpickError, match="at least 1"):
        BenchRequest.create(repeats=0).validate()
    with pytest.raises(RtpickError, match="single-stream and offline"):
        BenchRequest.create(scenario="server", rate_qps=10, repeats=3).validate()
    with pytest.raises(RtpickError, match="no-isolate"):
        BenchRequest.create(repeats=2, isolate=False).validate()
    BenchRequest.create(scenario="offline", repeats=3).validate()
    line = command_line("rtpick:digits", [("ort-cpu", "fp32")], BenchRequest.create(repeats=5))
    assert "--repeats 5" in line
    assert "--repeats" not in command_line("rtpick:digits", [("ort-cpu", "fp32")], BenchRequest.create())


def test_an_in_memory_model_cannot_be_repeated() -> None:
    from rtpick.sources import load_model

    with pytest.raises(RtpickError, match="path or name"):
        run_bench(load_model("rtpick:digits"), [("ort-cpu", "fp32")], BenchRequest.create(repeats=2))


@pytest.mark.parametrize("args, words", [
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--repeats", "2", "--scenario", "server", "--rate", "50"], "--repeats applies to single-stream and offline"),
    (["--repeats", "2", "--no-isolate"], "--no-isolate"),
])
def test_bad_repeats_exit_2_with_one_line(small_onnx, args, words) -> None:
    done = run_cli("bench", str(small_onnx), "--quick", *args)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ end to end


def test_an_offline_sweep_repeats_each_batch_and_sweeps_on_the_combined_throughput(small_onnx, tmp_path) -> None:
    recorder = Recorder()
    request = BenchRequest.create(scenario="offline", batches=[1, 2], quick=True, duration_s=0.1, repeats=2)
    results = run_bench(str(small_onnx), [("ort-cpu", "fp32")], request, progress=recorder,
                        json_path=tmp_path / "offline.json")
    assert recorder.events == [("plan", 2), ("start", "ort-cpu:fp32 batch 1 repeat 1/2"),
                               ("start", "ort-cpu:fp32 batch 1 repeat 2/2"), ("done", 1),
                               ("start", "ort-cpu:fp32 batch 2 repeat 1/2"),
                               ("start", "ort-cpu:fp32 batch 2 repeat 2/2"), ("done", 2)]
    points = results.sweeps["ort-cpu:fp32"]["points"]
    assert [p["throughput"] for p in points] == [r.headline().throughput for r in results.configurations]
    assert all(r.measurement.ci()["replicates"] == 2 for r in results.configurations)
    assert json.loads((tmp_path / "offline.json").read_text())["scenario"]["repeats"] == 2


def test_cli_repeats_end_to_end_with_report_and_diff(tmp_path) -> None:
    out = tmp_path / "out.json"
    done = run_cli("bench", "rtpick:digits", "-r", "ort-cpu:fp32", "--batch", "1", "--quick", "--duration", "0.5",
                   "--repeats", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    words = " ".join(done.stdout.split())  # rich wraps the caption to the terminal's width
    assert "repeat 2/2" in words and "independent replications over 2 processes" in words
    data = json.loads(out.read_text())
    assert "--repeats 2" in data["command"]
    record = data["configurations"][0]
    ci = record["metrics"]["latency_ms"]["ci"]
    assert record["status"] == "ok" and record["isolated"] is True
    assert ci["method"].startswith("independent replications") and ci["replicates"] == 2
    assert len(ci["replicate_p50"]) == 2 and len(record["replicates"]) == 2
    assert all(r["status"] == "ok" and r["n"] > 0 for r in record["replicates"])
    assert record["metrics"]["n"] == sum(r["n"] for r in record["replicates"])
    rep = run_cli("report", str(out))
    assert rep.returncode == 0, rep.stderr
    assert "independent replications" in (tmp_path / "out.md").read_text()
    same = run_cli("diff", str(out), str(out))
    assert same.returncode == 0, same.stderr
    assert "0 of 2 figures changed" in same.stdout
    assert "independent replications over 2 processes" in " ".join(same.stdout.split())


def test_median_ci_is_the_sign_test_interval() -> None:
    """n = 20: P(B <= 5) = 0.0207 <= 0.025 < P(B <= 6), so the interval is the 6th to the 15th value."""
    out = stats.median_ci(list(range(20, 0, -1)))
    assert out["estimate"] == 10.5
    assert out["ci"] == [6.0, 15.0]
    assert out["coverage"] == pytest.approx(1 - 2 * 0.020694, abs=1e-5)


def test_median_ci_covers_the_median_of_a_heavy_tailed_distribution() -> None:
    """Monte Carlo: intervals from samples of a Cauchy distribution (no mean at all) cover its median 0 at least
    as often as promised."""
    rng = np.random.default_rng(7)
    trials = 2000
    covered = sum(low <= 0.0 <= high for low, high in
                  (stats.median_ci(rng.standard_cauchy(30))["ci"] for _ in range(trials)))
    assert covered / trials >= 0.95 - 3 * (0.05 * 0.95 / trials) ** 0.5


def test_median_ci_needs_enough_values() -> None:
    with pytest.raises(ValueError, match="cannot give a 95% interval"):
        stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert stats.median_ci([3.0, 1.0, 2.0, 6.0, 5.0, 4.0])["ci"] == [1.0, 6.0]
