"""What a report shows: every search answer and the frames on time, the method once per scenario, every figure
of the table also in the HTML page, and (where Chromium is installed) the page rendered in a headless browser."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rtpick.perf.record import Record
from rtpick.perf.scenarios.closedloop import SingleStreamMeasurement
from rtpick.perf.scenarios.server import ServerSearchMeasurement
from rtpick.report import html_page, markdown
from rtpick.results import Results

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "h100"
CHROMIUM = "/usr/bin/chromium"


def _single(p50: float, n: int, runtime: str = "ort-cpu") -> Record:
    lat = {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 2, "mean": p50, "max": p50 * 3,
           "ci": {"p50": [p50 * 0.9, p50 * 1.1], "p99": [p50 * 1.8, p50 * 2.2], "blocks": 5,
                  "method": "sectioning over 5 blocks"}}
    metrics = {"scenario": "single-stream", "latency_ms": lat, "throughput": 1e3 / p50, "n": n, "batch": 1,
               "duration_s": 2.0, "method": f"host clock, {n:,} calls of batch 1 back to back over 2.0 s"}
    return Record(runtime=runtime, precision="fp32", batch=1, scenario="single-stream",
                  measurement=SingleStreamMeasurement.from_dict(metrics))


def _find_max(max_qps: float) -> Record:
    trial = {"achieved_qps": max_qps, "latency_ms": {"p99": 4.5}}
    metrics = {"scenario": "server-find-max", "max_qps": max_qps, "trials": [trial], "best": trial,
               "method": "Poisson runs bisecting the rate"}
    return Record(runtime="ort-cpu", precision="fp32", batch=1, scenario="server",
                  measurement=ServerSearchMeasurement.from_dict(metrics))


def _results(*records: Record) -> Results:
    return Results(command="rtpick bench m", scenario={"scenario": "mixed"},
                   model={"sha256": "x", "spec": {"name": "m"}}, configurations=list(records))


def _table_cells(md: str) -> list[str]:
    """Every cell of the Markdown table's data rows."""
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| configuration")]
    return [cell.strip() for row in rows for cell in row.strip("|").split("|") if cell.strip()]


@pytest.mark.parametrize("name", ["bench-r50-max-streams.json", "bench-r50-multistream.json",
                                  "bench-r50-single.json", "bench-r50-offline.json"])
def test_every_figure_of_the_table_is_in_the_html_page(name: str) -> None:
    results = Results.read(RESULTS / name)
    md, page = markdown(results, figs=[]), html_page(results, figs=[])
    cells = _table_cells(md)
    assert cells
    for cell in cells:
        assert html.escape(cell, quote=True) in page, cell


def test_search_answers_and_on_time_are_shown_and_the_method_once() -> None:
    multistream = Results.read(RESULTS / "bench-r50-multistream.json").configurations[0]
    cameras = Results.read(RESULTS / "bench-r50-max-streams.json").configurations[0]
    results = _results(_single(0.5, 1000), _single(0.6, 1100, "torch-cpu"), _find_max(412.5), multistream, cameras)
    md, page = markdown(results, figs=[]), html_page(results, figs=[])
    for text in ("max 412.5 q/s under the p99 bound", "max 59 cameras", "100.0% on time"):
        assert text in md and html.escape(text) in page, text
    assert "| 100.0% |" in md  # the frames-on-time column
    # two single-stream rows measured the same way share one note; the method text is not in the rows
    assert md.count("calls of batch 1 back to back") == 1
    assert md.count("note 1 |") == 2
    assert page.count("calls of batch 1 back to back") == 1


def test_repr_of_results_is_short() -> None:
    text = repr(_results(_single(0.5, 1000), _find_max(412.5)))
    assert text.startswith("<Results m, mixed: 2 ok, 0 failed>")
    assert "max 412.5 q/s" in text and len(text.splitlines()) == 3


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (CI has no browser); "
                    "the figure-in-page test above still runs")
def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rtpick.report import write_reports

    source = RESULTS / "bench-r50-single.json"
    copy = tmp_path / "r.json"
    shutil.copyfile(source, copy)
    paths = write_reports(copy)
    page = next(p for p in paths if p.suffix == ".html")
    shot = Path(os.environ.get("RTPICK_SCREENSHOT", tmp_path / "page.png"))
    dump = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert dump.returncode == 0, dump.stderr[-500:]
    body = re.sub(r"\s+", " ", html.unescape(dump.stdout))
    for cell in _table_cells(markdown(Results.read(copy), figs=[])):
        assert re.sub(r"\s+", " ", cell) in body, cell
    assert body.count("<img") >= 2
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 10_000
