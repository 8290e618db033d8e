"""The Scenario contract: what every measurement scenario declares and does, so readers never branch on names.

A scenario has a name, a loop (closed: back-to-back calls; open: arrivals scheduled in advance), a `Params`
dataclass (defaults, validation, and the command-line words of each field, so the CLI, the Python API and the
"reproduce this" command share one spelling), `run(session, feeds, params) -> Measurement`, and the
`Measurement` kinds its records hold. A Measurement states its own headline figures (`headline()`), which is
all that the table, the report, `diff` and `recommend` ask of it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from rtpick.errors import RtpickError

Feeds = Mapping[str, Any]


def flag(words: str | tuple[str, ...] | None, help: str, default: Any = None, *, check: str = "",
         minimum: float | None = None, **kwargs: Any) -> Any:
    """A Params field with its command-line spelling (`words`: "--rate" or ("--batch", "-b"); None: no flag).

    `check`: "positive" (finite, > 0), "non-negative" (finite, >= 0) or "" (finite when a number);
    `minimum`: the smallest whole number allowed. Validation reads these, so the rule lives beside the flag.
    """
    words = (words,) if isinstance(words, str) else words
    metadata = {"flag": words, "help": help, "check": check, "minimum": minimum}
    if "default_factory" in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class Params:
    """A scenario's parameters. Subclasses add fields made with `flag()` and cross-field rules in `check()`."""

    @classmethod
    def flags(cls) -> dict[str, tuple[str, ...]]:
        """Field name -> its command-line words (fields without a flag are left out)."""
        return {f.name: f.metadata["flag"] for f in fields(cls) if f.metadata.get("flag")}

    def validate(self) -> None:
        """One clear line for the first value that makes no sense; nothing is measured before this passes."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = (f.metadata.get("flag") or (f.name,))[0]
            check, minimum = f.metadata.get("check", ""), f.metadata.get("minimum")
            if not math.isfinite(value):
                raise RtpickError(f"{name} must be a finite number, not {value}")
            if check == "positive" and not value > 0:
                raise RtpickError(f"{name} must be positive, not {value}")
            if check == "non-negative" and value < 0:
                raise RtpickError(f"{name} must be zero or more, not {value}")
            if minimum is not None and value < minimum:
                raise RtpickError(f"{name} must be at least {minimum:g}, not {value}")
        self.check()

    def check(self) -> None:
        """Rules between fields (a subclass's); single-field rules come from `flag()`'s metadata."""

    def given(self) -> dict[str, Any]:
        """The fields that differ from their defaults: what a user asked for."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != _default(f)}

    def to_args(self) -> list[str]:
        """The command-line words that give these values (defaults left out), in field order."""
        out: list[str] = []
        for name, value in self.given().items():
            words = type(self).flags().get(name)
            if not words:
                continue
            if isinstance(value, bool):
                out.append(words[0])  # a switch's word flips its default (--quick, --no-isolate)
            elif isinstance(value, list | tuple):
                out += [words[0], ",".join(str(v) for v in value)]
            else:
                out += [words[0], str(value)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Params:
        """The Params written by `to_dict` (a job file, a results file); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RtpickError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}")
        return cls(**dict(data))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@dataclass(frozen=True)
class Headline:
    """The figures one row of any table shows, whatever the scenario: latencies in ms, rates per second."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None
    ci_p50: tuple[float, float] | None = None
    ci_p99: tuple[float, float] | None = None
    throughput: float | None = None  # samples (or frames, or completed queries) per second
    n: int | None = None
    result: str = ""  # the scenario's own verdict in words ("max 412 q/s under the p99 bound")
    on_time_fraction: float | None = None
    max_qps: float | None = None
    max_streams: int | None = None
    streams: int | None = None
    fps: float | None = None
    curve: tuple[tuple[float, float], ...] = ()  # (throughput, p99 ms) points for a latency/throughput plot


class Measurement:
    """One record's figures as stored (the record's ``metrics`` object), checked on the way in.

    Each kind names the label it is stored under (`kind`, the ``scenario`` key of ``metrics``) and the keys
    it needs with their types (`required`); `from_dict` refuses a malformed object in one line, and
    `headline()` turns it into the figures readers show.
    """

    kind: ClassVar[str] = ""
    required: ClassVar[dict[str, Any]] = {}

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics") -> Measurement:
        if not isinstance(data, dict):
            raise RtpickError(f"{where} is {type(data).__name__}, not an object")
        check_keys(data, cls.required, where)
        return cls(data)

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @property
    def method(self) -> str:
        return str(self.data.get("method", ""))

    def headline(self) -> Headline:
        raise NotImplementedError

    def ci(self) -> dict[str, Any]:
        """The latency interval's description (``blocks``, ``replicates``, ``method``), {} when none."""
        ci = (self.data.get("latency_ms") or {}).get("ci") if isinstance(self.data.get("latency_ms"), dict) else None
        return ci if isinstance(ci, dict) else {}

    def load(self) -> dict[str, Any]:
        load = self.data.get("load_avg")
        return load if isinstance(load, dict) else {}


NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))


def check_keys(data: Mapping[str, Any], required: Mapping[str, Any], where: str) -> None:
    """Each required key present with its type; a nested dict of requirements checks a nested object."""
    for key, kind in required.items():
        if key not in data:
            raise RtpickError(f"{where} has no {key!r}")
        value = data[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise RtpickError(f"{where}.{key} is {type(value).__name__}, not an object")
            check_keys(value, kind, f"{where}.{key}")
            continue
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise RtpickError(f"{where}.{key} is a boolean, not {_names(kind)}")
        if not isinstance(value, kind):  # NaN/inf pass as numbers: a fact of the run, never a passed budget
            raise RtpickError(f"{where}.{key} is {type(value).__name__}, not {_names(kind)}")


def _names(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def interval(value: Any) -> tuple[float, float] | None:
    """A stored [low, high] as a pair of numbers, None when it is not one."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value):
        low, high = number(value[0]), number(value[1])
        return (low, high) if low is not None and high is not None else None
    return None


def number(value: Any) -> float | None:
    """A stored number as a float (a whole number too large for a float reads as infinity), None otherwise."""
    if not _is_number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Scenario:
    """The contract every scenario module implements (see the module docstring)."""

    name: ClassVar[str]
    loop: ClassVar[str]  # "closed" or "open"
    params: ClassVar[type[Params]]
    measurements: ClassVar[tuple[type[Measurement], ...]]
    default_batches: ClassVar[tuple[int, ...]] = (1,)
    sweeps_batches: ClassVar[bool] = False  # an offline sweep: stop when throughput stops growing
    budget: ClassVar[str | None] = None  # the `rtpick recommend` budget it answers: latency, throughput, streams
    summary: ClassVar[str] = ""
    # the smallest values a run needs, one dict per way of running it (a rate; a search): the contract test
    # and the docs use them
    examples: ClassVar[tuple[dict[str, Any], ...]] = ({},)

    @property
    def closed_loop(self) -> bool:
        return self.loop == "closed"

    def resolve(self, params: Params, *, quick: bool, batch: int, seed: int) -> Params:
        """The params a run uses: the user's, with unset durations and counts filled in (quick or full)."""
        return params

    def run(self, session: Any, feeds: Feeds, params: Params) -> Measurement:
        raise NotImplementedError
