"""What every registered scenario must do (a new one passes this file or is not done).

Params: its examples validate, every single-field rule refuses bad values in one line, each flag is spelled
once across scenarios and the CLI accepts it. Run: on a fake session of known cost it gives a Measurement of a
kind the registry knows, whose record round-trips to_dict/from_dict and states its headline figures. And no
scenario name is compared anywhere outside perf/scenarios/.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

import pytest
from bench_fakes import SpinSession, feeds

from rtpick.errors import RtpickError
from rtpick.perf.record import Record
from rtpick.perf.request import BenchRequest
from rtpick.perf.scenarios.base import Headline, Measurement, Params
from rtpick.perf.scenarios.registry import MEASUREMENTS, SCENARIOS, get_scenario

NAMES = list(SCENARIOS)
SRC = Path(__file__).resolve().parents[1] / "src" / "rtpick"


@pytest.mark.parametrize("name", NAMES)
def test_params_examples_validate_and_bad_values_are_refused_in_one_line(name: str) -> None:
    scenario = get_scenario(name)
    assert scenario.loop in ("closed", "open") and scenario.default_batches and scenario.summary
    for example in scenario.examples:
        scenario.params(**example).validate()
    base = scenario.examples[0]
    for f in fields(scenario.params):
        check, minimum = f.metadata.get("check"), f.metadata.get("minimum")
        bad: list[float] = []
        if check == "positive":
            bad = [0.0, -1.0, math.inf, math.nan]
        elif check == "non-negative":
            bad = [-0.5, math.inf, math.nan]
        if minimum is not None:
            bad.append(minimum - 1)
        for value in bad:
            with pytest.raises(RtpickError) as caught:
                scenario.params(**{**base, f.name: value}).validate()
            assert len(str(caught.value).splitlines()) == 1
            words = f.metadata.get("flag") or (f.name,)
            assert words[0] in str(caught.value)


def test_each_flag_is_spelled_once_and_the_cli_takes_it() -> None:
    import typer.main

    from rtpick.commands import bench  # noqa: F401 - registers the command
    from rtpick.commands.app import app

    spelled: dict[str, tuple[str, ...]] = {}
    for cls in (BenchRequest, *(s.params for s in SCENARIOS.values())):
        for name, words in cls.flags().items():
            assert spelled.setdefault(name, words) == words, f"{name} is spelled two ways"
    by_word = [w for words in spelled.values() for w in words]
    assert len(by_word) == len(set(by_word)), "two fields share a flag"
    command = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    accepted = {opt for param in command.params for opt in param.opts}
    assert set(by_word) <= accepted, set(by_word) - accepted


@pytest.mark.parametrize("name", NAMES)
def test_a_run_on_a_fake_session_gives_a_measurement_that_round_trips(name: str) -> None:
    scenario = get_scenario(name)
    params = scenario.params(**{**scenario.examples[0], "duration_s": 0.3})
    params.validate()
    resolved = scenario.resolve(params, quick=True, batch=2, seed=3)
    assert isinstance(resolved, Params)
    measurement = scenario.run(SpinSession(0.001, sleep=True), feeds(2), resolved)
    assert isinstance(measurement, Measurement) and type(measurement) in scenario.measurements
    assert MEASUREMENTS[measurement.kind] is type(measurement) and measurement.method
    record = Record(runtime="ort-cpu", precision="fp32", batch=2, scenario=name, measurement=measurement)
    back = Record.from_dict(record.to_dict())
    assert back.to_dict() == record.to_dict() and back.headline() == record.headline()
    h = record.headline()
    assert isinstance(h, Headline) and h.p99 is not None and h.p99 > 0 and h.throughput is not None


def test_every_measurement_kind_belongs_to_a_scenario_and_refuses_a_malformed_object() -> None:
    for kind in MEASUREMENTS.values():
        assert kind.kind and kind.required
        with pytest.raises(RtpickError):
            kind.from_dict({"scenario": kind.kind})


def test_no_scenario_name_is_compared_outside_perf_scenarios() -> None:
    names = [*SCENARIOS, *MEASUREMENTS]
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"""["']({alternatives})["']""")
    offenders = []
    for path in SRC.rglob("*.py"):
        if "perf/scenarios" in path.as_posix():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
