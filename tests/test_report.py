from __future__ import annotations

import copy
import html

import rtpick
from rtpick.report import diff, html_page, markdown, write_reports
from rtpick.results import Results


def test_report_and_diff_from_a_real_run(small_onnx, tmp_path) -> None:
    out = tmp_path / "r.json"
    results = rtpick.bench(str(small_onnx), "ort-cpu:fp32", scenario="offline", batch=[1, 4], json=str(out),
                           isolate=False, duration_s=0.2, quick=True)
    assert [c["batch"] for c in results.ok()] == [1, 4]
    assert results.sweeps["ort-cpu:fp32"]["saturation_batch"] in (1, 4)
    page = html_page(results)
    assert results.command.startswith("rtpick bench ") and "--scenario offline --batch 1,4" in results.command
    assert page.count("data:image/png;base64,") >= 2 and html.escape(results.command) in page
    assert "| ort-cpu:fp32 b4 | ok |" in markdown(results)
    paths = write_reports(out)
    assert {p.suffix for p in paths} >= {".md", ".html", ".png"}

    same = diff(results, Results.read(out))
    assert same and not any(c.significant for c in same)
    slower = copy.deepcopy(results)
    for record in slower.configurations:
        lat = record["metrics"]["latency_ms"]
        for key in ("p50", "p99"):
            lat[key] *= 3
            lat["ci"][key] = [v * 3 for v in lat["ci"][key]]
    flagged = diff(results, slower)
    assert all(c.significant for c in flagged) and flagged[0].ratio > 2.5
