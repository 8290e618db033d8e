from __future__ import annotations

import copy
import html

import rtpick
from rtpick.perf.record import Record
from rtpick.perf.scenarios.closedloop import SingleStreamMeasurement
from rtpick.report import diff, html_page, markdown, write_reports
from rtpick.results import Results


def test_report_and_diff_from_a_real_run(small_onnx, tmp_path) -> None:
    out = tmp_path / "r.json"
    results = rtpick.bench(str(small_onnx), "ort-cpu:fp32", scenario="offline", batch=[1, 4], json=str(out),
                           isolate=False, duration_s=0.2, quick=True)
    assert [c.batch for c in results.ok()] == [1, 4]
    assert results.sweeps["ort-cpu:fp32"]["saturation_batch"] in (1, 4)
    page = html_page(results)
    assert results.command.startswith("rtpick bench ") and "--scenario offline --batch 1,4" in results.command
    assert page.count("data:image/png;base64,") >= 2 and html.escape(results.command) in page
    assert "| ort-cpu:fp32 b4 | ok |" in markdown(results)
    paths = write_reports(out)
    assert {p.suffix for p in paths} >= {".md", ".html", ".png"}

    same = diff(results, Results.read(out))
    assert same and not any(c.significant for c in same)
    assert all(c.old_ci == c.new_ci and c.old_ci[0] <= c.old <= c.old_ci[1] for c in same)
    slower = copy.deepcopy(results)
    for record in slower.configurations:
        lat = record.measurement.data["latency_ms"]
        for key in ("p50", "p99"):
            lat[key] *= 3
            lat["ci"][key] = [v * 3 for v in lat["ci"][key]]
    flagged = diff(results, slower)
    # flagged exactly where the stored intervals stop touching: the verdict a reader of the two tables reaches
    assert all(c.significant == (c.old_ci[1] < c.new_ci[0]) for c in flagged)
    assert flagged[0].ratio > 2.5 and any(c.significant for c in flagged if c.metric == "p50")


def _record(p50: float, ci: list[float], blocks: int = 10) -> Record:
    lat = {"p50": p50, "p90": p50, "p99": 2 * p50, "mean": p50, "max": 3 * p50,
           "ci": {"p50": ci, "p99": [2 * v for v in ci], "blocks": blocks}}
    metrics = {"scenario": "single-stream", "latency_ms": lat, "throughput": 1e3 / p50, "n": 100, "batch": 1,
               "duration_s": 1.0, "method": "hand-made"}
    return Record(runtime="ort-cpu", precision="fp32", batch=1, scenario="single-stream",
                  measurement=SingleStreamMeasurement.from_dict(metrics))


def test_diff_judges_by_the_stored_intervals() -> None:
    def results(*records: Record) -> Results:
        return Results(command="rtpick bench m", scenario={}, model={"sha256": "x", "spec": {"name": "m"}},
                       configurations=list(records))

    close = diff(results(_record(1.0, [0.95, 1.05])), results(_record(1.04, [1.0, 1.09])))
    assert [c.significant for c in close] == [False, False]
    apart = diff(results(_record(1.0, [0.98, 1.02])), results(_record(1.1, [1.05, 1.15], blocks=1)))
    assert all(c.significant for c in apart)
    assert "different kinds" in apart[0].note and "within-run bootstrap" in apart[0].note


def test_diff_says_when_the_machine_load_differed() -> None:
    quiet, busy = _record(1.0, [0.98, 1.02]), _record(1.3, [1.25, 1.35])
    quiet.measurement.data["load_avg"] = {"before": 0.4, "after": 0.6, "cpus": 2}
    busy.measurement.data["load_avg"] = {"before": 4.8, "after": 5.2, "cpus": 2}

    def results(record: Record) -> Results:
        return Results(command="c", scenario={}, model={"sha256": "x", "spec": {"name": "m"}},
                       configurations=[record])

    change = diff(results(quiet), results(busy))[0]
    assert change.significant and "load differed (1-min load average 0.6 vs 5.2 on 2 CPUs)" in change.note
    busy_too = _record(1.0, [0.98, 1.02])
    busy_too.measurement.data["load_avg"] = {"before": 4.9, "after": 5.0, "cpus": 2}
    assert "busy with other work" in diff(results(busy_too), results(busy))[0].note


def test_diff_never_pairs_two_option_sets_of_one_configuration() -> None:
    """A recommend search stores several variants of ort-cpu:fp32 at batch 1 (threads=1 and the default): each
    pairs with its own kind, so a file diffed with itself changes nothing; a lone option set still pairs with
    the other file's lone record (a run with --option against one without is what diff is for)."""
    default, one_thread = _record(1.0, [0.98, 1.02]), _record(3.0, [2.9, 3.1])
    one_thread.options = {"threads": 1}

    def results(*records: Record) -> Results:
        return Results(command="c", scenario={}, model={"sha256": "x", "spec": {"name": "m"}},
                       configurations=list(records))

    both = results(default, one_thread)
    changes = diff(both, both)
    assert len(changes) == 4 and not any(c.significant for c in changes)
    assert {c.key for c in changes} == {"ort-cpu:fp32 b1 single-stream", "ort-cpu:fp32 [threads=1] b1 single-stream"}
    lone = diff(results(default), results(one_thread))
    assert lone and all(c.significant for c in lone)
