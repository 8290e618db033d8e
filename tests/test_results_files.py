"""Every results file committed under benchmarks/results/ (and one written before the typed Record) loads,
reports and diffs; malformed files of every kind give one line and exit 2, never a traceback (fuzzed)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
import typer

from rtpick import plots
from rtpick.commands import bench as commands
from rtpick.report import html_page, markdown, table
from rtpick.results import SCHEMA, Results

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p for p in (ROOT / "benchmarks" / "results").rglob("*.json")
                   if json.loads(p.read_text()).get("schema") == SCHEMA)
# written by rtpick before results were typed (commit 6f7b4fa): a server --find-max run and a failed config
BEFORE = Path(__file__).parent / "data" / "results-before-record.json"


def test_the_committed_files_are_found() -> None:
    assert len(COMMITTED) >= 30 and BEFORE.is_file()


@pytest.mark.parametrize("path", [*COMMITTED, BEFORE], ids=lambda p: p.name)
def test_a_stored_file_loads_reports_and_diffs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)  # the plots are tested once, below
    results = Results.read(path)
    assert results.configurations and all(r.ok == (r.measurement is not None) or not r.ok
                                          for r in results.configurations)
    again = Results.from_dict(json.loads(json.dumps(results.to_dict())))
    assert again.to_dict() == results.to_dict()  # the typed record writes back the keys it read
    assert json.loads(path.read_text())["configurations"] == results.to_dict()["configurations"]
    for record in results.ok():
        h = record.headline()
        assert h.p99 is not None or h.max_qps is not None or h.max_streams is not None, record.label
    assert "<script" not in html_page(results) and results.model_name in markdown(results)
    table(results)
    _run(commands.report, results_file=str(path), out=str(tmp_path / "r"))
    assert _run(commands.diff, old=str(path), new=str(path)) == 0  # a file against itself changes nothing


def test_the_plots_of_an_old_file() -> None:
    results = Results.read(BEFORE)
    figs = plots.figures(results, "95% CI")
    assert figs and all(f.png.startswith(b"\x89PNG") for f in figs)


def _run(command: Any, **kwargs: Any) -> int:
    """A command function called in-process: its exit status (an exception other than Exit fails the test)."""
    try:
        command(**kwargs)
    except typer.Exit as exc:
        return int(exc.exit_code)
    return 0


WEIRD: list[Any] = [None, "NaN", "<script>alert(1)</script>", 1e308, 10**400, -1, 0, True, [], {}, [1, 2, 3],
                    "", float("nan"), float("inf"), {"p50": "x"}, [None, None]]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            out += _paths(value, (*prefix, index))
    return out


def _mutate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data = copy.deepcopy(data)
    path = rng.choice(_paths(data)[1:])
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.4:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(WEIRD))
    return data


SEEDS = [ROOT / "benchmarks/results" / name for name in (
    "bench-repeat-run1.json", "bench-replicated-run1.json", "h100/bench-r50-server.json", "h100/bench-r50-offline.json",
    "h100/bench-r50-multistream.json", "h100/bench-r50-max-streams.json")] + [BEFORE]


def test_fuzzed_results_files_never_give_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(12)
    seeds = [json.loads(p.read_text()) for p in SEEDS]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(seeds[0]))
    statuses: dict[int, int] = {}
    for case in range(360):
        draw = case % 40 == 0  # plots drawn for a few
        monkeypatch.setattr(plots, "have_matplotlib", lambda draw=draw: draw)
        bad = tmp_path / f"bad{case}.json"
        if case % 30 == 29:
            bad.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
        elif case % 30 == 28:
            bad.write_text(json.dumps(rng.choice(seeds))[: rng.randrange(1, 2000)])
        else:
            bad.write_text(json.dumps(_mutate(rng.choice(seeds), rng)))
        for code in (_run(commands.report, results_file=str(bad), out=str(tmp_path / "out")),
                     _run(commands.diff, old=str(good), new=str(bad)),
                     _run(commands.diff, old=str(bad), new=str(bad))):
            statuses[code] = statuses.get(code, 0) + 1
            assert code in (0, 1, 2)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert all(line.startswith("rtpick: error: ") for line in err.strip().splitlines()), err
    assert statuses.get(2, 0) > 100 and statuses.get(0, 0) > 50, statuses  # both kinds were reached


@pytest.mark.parametrize("value", [10**400, -(10**400), float("nan"), float("inf"), 1e308])
def test_extreme_numbers_in_every_figure_give_a_report_and_a_diff(value: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    data = json.loads(SEEDS[0].read_text())
    for record in data["configurations"]:
        lat = record["metrics"]["latency_ms"]
        for key in ("p50", "p90", "p99", "mean", "max"):
            lat[key] = value
        lat["ci"]["p50"] = [value, value]
        record["metrics"]["throughput"] = value
        record["metrics"]["load_avg"].update(before=value, after=value, cpus=value)
        record.update(build_time_s=value, first_inference_ms=value, accuracy=value)
        record["memory"]["host_rss_peak_mb"] = value
    path = tmp_path / "extreme.json"
    path.write_text(json.dumps(data))
    expected = 2 if isinstance(value, int) else 0  # a whole number no float holds is refused in one line
    assert _run(commands.report, results_file=str(path), out=str(tmp_path / "r")) == expected
    assert _run(commands.diff, old=str(SEEDS[0]), new=str(path)) in ((2,) if expected else (0, 1))


def test_a_deeply_nested_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert _run(commands.report, results_file=str(path), out=None) == 2
