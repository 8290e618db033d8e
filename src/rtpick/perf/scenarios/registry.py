"""Every scenario rtpick can measure, by name, and every measurement kind a record can hold, by label.

Adding a scenario: a module with a `Scenario` subclass (see `base.py`), listed in `SCENARIOS` below; the
contract test (tests/test_scenario_contract.py) then runs it.
"""

from __future__ import annotations

from typing import Any

from rtpick.errors import RtpickError
from rtpick.perf.scenarios.base import Measurement, Params, Scenario
from rtpick.perf.scenarios.closedloop import CapacityMeasurement
from rtpick.perf.scenarios.multistream import Multistream
from rtpick.perf.scenarios.offline import Offline
from rtpick.perf.scenarios.server import Server
from rtpick.perf.scenarios.single_stream import SingleStream

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (SingleStream(), Offline(), Server(), Multistream())}
DEFAULT_SCENARIO = SingleStream.name
MEASUREMENTS: dict[str, type[Measurement]] = {
    kind.kind: kind for scenario in SCENARIOS.values() for kind in scenario.measurements
}
MEASUREMENTS[CapacityMeasurement.kind] = CapacityMeasurement


def names() -> list[str]:
    return list(SCENARIOS)


def get_scenario(name: Any) -> Scenario:
    """The scenario called `name`, or one line listing the ones that exist."""
    if not isinstance(name, str) or name not in SCENARIOS:
        raise RtpickError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def for_budget(budget: str) -> Scenario:
    """The scenario that answers a `rtpick recommend` budget (latency, throughput, streams)."""
    for scenario in SCENARIOS.values():
        if scenario.budget == budget:
            return scenario
    raise RtpickError(f"no scenario answers a {budget!r} budget")


def measurement_from_dict(data: Any, where: str = "metrics") -> Measurement:
    """A record's stored measurement, as its kind, checked; one line when it is malformed or unknown."""
    if not isinstance(data, dict):
        raise RtpickError(f"{where} is {type(data).__name__}, not an object")
    kind = MEASUREMENTS.get(data.get("scenario"))  # type: ignore[arg-type]
    if kind is None:
        raise RtpickError(f"{where} holds an unknown measurement kind {data.get('scenario')!r}")
    return kind.from_dict(data, where)


def all_params() -> list[type[Params]]:
    return list(dict.fromkeys(s.params for s in SCENARIOS.values()))
