"""`rtpick report` and `rtpick diff` on crafted files: escaped HTML, no matplotlib, other models, exit statuses."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from rtpick.report import html_page
from rtpick.results import Results

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DIGITS = RESULTS / "bench-repeat-run1.json"  # rtpick:digits, single-stream, two configurations
RESNET = RESULTS / "h100" / "bench-r50-server.json"  # resnet50


def _crafted(tmp_path: Path) -> Path:
    data = json.loads(DIGITS.read_text())
    evil = "<script>alert(1)</script>"
    data["command"] += " " + evil
    data["model"]["spec"]["name"] = evil
    data["environment"]["cpu"] = evil
    data["scenario"]["scenario"] = evil
    first, second = data["configurations"]
    first["runtime"] = evil
    first["metrics"]["method"] = evil
    first["metrics"]["latency_ms"]["ci"]["method"] = evil
    first["accuracy_detail"]["method"] = evil
    second.update(status=evil, error=evil)
    second.pop("metrics")
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(data))
    return path


def test_every_string_from_a_results_file_is_escaped_in_html(tmp_path: Path) -> None:
    page = html_page(Results.read(_crafted(tmp_path)))
    assert "<script" not in page.lower() and page.count("&lt;script&gt;") >= 7
    done = run_cli("report", str(_crafted(tmp_path)), "--out", str(tmp_path / "evil"))
    assert done.returncode == 0, done.stderr
    assert "<script" not in (tmp_path / "evil.html").read_text().lower()


def test_report_without_matplotlib_writes_tables_and_says_how_to_get_plots(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no matplotlib here (test)')\n")
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(src)])}
    done = subprocess.run([sys.executable, "-m", "rtpick", "report", str(DIGITS), "--out", str(tmp_path / "plain")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "pip install 'rtpick[report]'" in " ".join(done.stdout.split())
    assert not list(tmp_path.glob("plain-fig*.png"))
    assert "No plots: plots need matplotlib" in (tmp_path / "plain.md").read_text()
    assert "| ort-cpu:fp32 b1 | ok |" in (tmp_path / "plain.md").read_text()


def test_diff_of_two_models_is_refused(tmp_path: Path) -> None:
    done = run_cli("diff", str(DIGITS), str(RESNET))
    assert done.returncode == 2 and "different models" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_diff_exits_1_when_it_flags_a_change(tmp_path: Path) -> None:
    data = json.loads(DIGITS.read_text())
    slower = copy.deepcopy(data)
    for record in slower["configurations"]:
        lat = record["metrics"]["latency_ms"]
        for key in ("p50", "p99"):
            lat[key] *= 3
            lat["ci"][key] = [v * 3 for v in lat["ci"][key]]
    path = tmp_path / "slower.json"
    path.write_text(json.dumps(slower))
    flagged = run_cli("diff", str(DIGITS), str(path))
    assert flagged.returncode == 1, flagged.stderr
    assert "changed by more than the measured noise" in flagged.stdout
    same = run_cli("diff", str(DIGITS), str(DIGITS))
    assert same.returncode == 0 and "0 of 4 figures changed" in same.stdout
