"""What a user asks `rtpick bench` for: `BenchRequest`, spelled once for the CLI, the Python API and the
"reproduce this" command.

The request's own fields (the model's batch, shapes and inputs, isolation, repeats) and the scenario's
`Params` each carry their command-line words (`flag()` in `rtpick.perf.scenarios.base`): the CLI declares its
options with those words, `rtpick.bench(**kwargs)` takes the field names, and `command_line()` writes the
words back, so the three cannot drift.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from rtpick.errors import RtpickError
from rtpick.options import OPTION_HELP
from rtpick.perf.job import Job
from rtpick.perf.scenarios.base import Params, flag
from rtpick.perf.scenarios.registry import DEFAULT_SCENARIO, SCENARIOS, all_params, get_scenario


@dataclass
class BenchRequest(Params):
    """The request's own fields; `params` holds the scenario's (see `create` for the flat form)."""

    scenario: str = flag(("--scenario", "-s"), " | ".join(SCENARIOS), DEFAULT_SCENARIO)
    batches: list[int] | None = flag(("--batch", "-b"), "Batch sizes, e.g. 1,8,32 (server: max batch).")
    quick: bool = flag("--quick", "A few seconds per configuration.", False)
    seed: int = flag("--seed", "Seed of the synthetic inputs, arrival times and camera phases.", 0)
    shapes: dict[str, tuple[int, ...]] = flag("--shape", "Fix a symbolic dim: name:1x3x224x224 (repeatable).",
                                              default_factory=dict)
    ranges: dict[str, tuple[float, float]] = flag("--input-range", "Synthetic input range name:lo:hi.",
                                                  default_factory=dict)
    # rtpick.options' forms: {"ort-cpu.threads": 2, "channels_last": True} or {"ort-cpu": {"threads": 2}}
    options: dict[str, Any] = flag(("--option", "-o"), OPTION_HELP, default_factory=dict)
    io: str = flag("--io", "host: inputs start in host memory; device: on the GPU.", "host")
    isolate: bool = flag("--no-isolate", "Run configurations in this process.", True)
    timeout_s: float | None = flag("--timeout", "Seconds before a configuration is killed.", check="positive")
    input_path: str | None = flag("--input", "Labelled set inputs (.npz/.npy), with --labels.")
    labels: str | None = flag("--labels", "True classes (.npy/.npz) for top-1 accuracy.")
    accuracy: bool = flag("--no-accuracy", "Skip scoring the labelled set.", True)
    repeats: int = flag("--repeats", "single-stream/offline: measure each configuration in N separate processes; "
                        "CIs from the spread between them (N times the time).", 1, minimum=1)
    params: Params | None = flag(None, "The scenario's parameters.")

    @classmethod
    def create(cls, scenario: str | None = None, **values: Any) -> BenchRequest:
        """The flat form: the request's fields and the scenario's in one set of keywords.

        A value for another scenario's field (``rate_qps`` with multistream) is refused in one line; defaults
        (None, False) of other scenarios' fields are ignored, so the CLI can pass every option it has.
        """
        chosen = get_scenario(scenario if scenario is not None else DEFAULT_SCENARIO)
        own = {f.name for f in fields(cls)} - {"params", "scenario"}
        mine = {f.name for f in fields(chosen.params)}
        request_values: dict[str, Any] = {}
        param_values: dict[str, Any] = {}
        for name, value in values.items():
            if name in own:
                request_values[name] = value
            elif name in mine:
                param_values[name] = value
            else:
                owners = [s.name for s in SCENARIOS.values() if name in {f.name for f in fields(s.params)}]
                if not owners:
                    raise RtpickError(f"unknown bench parameter {name!r}")
                if value is None or all(value == _field_default(get_scenario(o).params, name) for o in owners):
                    continue  # another scenario's field left at its default (the CLI passes every option)
                words = flag_words(name)
                raise RtpickError(f"{words} belongs to --scenario {' or '.join(owners)}, not {chosen.name}")
        return cls(scenario=chosen.name, params=chosen.params(**param_values), **request_values)

    @property
    def scenario_params(self) -> Params:
        return self.params if self.params is not None else get_scenario(self.scenario).params()

    def check(self) -> None:
        chosen = get_scenario(self.scenario)
        for batch in self.batches or []:
            if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
                raise RtpickError(f"--batch values must be positive whole numbers, not {batch}")
        if self.io not in ("host", "device"):
            raise RtpickError(f"--io must be host or device, not {self.io!r}")
        if self.repeats > 1 and not chosen.closed_loop:
            closed = [s.name for s in SCENARIOS.values() if s.closed_loop]
            raise RtpickError(f"--repeats applies to {' and '.join(closed)} (closed-loop) scenarios, not "
                              f"{chosen.name}")
        if self.repeats > 1 and not self.isolate:
            raise RtpickError("--repeats runs each configuration in separate processes; it cannot be combined "
                              "with --no-isolate")
        if not isinstance(self.scenario_params, chosen.params):
            raise RtpickError(f"the parameters given are not {chosen.name}'s")
        self.scenario_params.validate()

    def describe(self) -> dict[str, Any]:
        """The configuration stored in a results file: everything asked for, defaults of the scenario included."""
        resolved = get_scenario(self.scenario).resolve(self.scenario_params, quick=self.quick, batch=0,
                                                       seed=self.seed)
        out: dict[str, Any] = {"scenario": self.scenario}
        out.update({k: v for k, v in self.given().items() if k not in ("params", "shapes", "ranges")})
        out.update({k: v for k, v in self.scenario_params.given().items() if k != "seed"})
        out.update(seed=self.seed, accuracy=self.accuracy, isolate=self.isolate, io=self.io)
        if getattr(resolved, "blocks", None) is not None:
            out["blocks"] = resolved.blocks  # type: ignore[attr-defined]
        out["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        out["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        return out

    def job(self, source: str, runtime: str, precision: str, batch: int,
            accuracy: dict[str, Any] | None = None) -> Job:
        """The worker's job for one configuration at one batch (`accuracy`: the labelled set to score, if any)."""
        from rtpick.options import options_for

        params = get_scenario(self.scenario).resolve(self.scenario_params, quick=self.quick, batch=batch,
                                                     seed=self.seed)
        return Job(model=source, runtime=runtime, precision=precision, batch=batch, scenario=self.scenario,
                   params=params, options=options_for(runtime, self.options),
                   shapes={k: list(v) for k, v in self.shapes.items()},
                   ranges={k: list(v) for k, v in self.ranges.items()}, io=self.io, seed=self.seed,
                   accuracy=accuracy)

    def to_args(self) -> list[str]:
        from rtpick.options import option_args

        out = ["--scenario", self.scenario]
        given = self.given()
        for name in ("batches", "quick", "seed", "io", "isolate", "timeout_s", "input_path", "labels", "accuracy",
                     "repeats"):
            if name in given:
                out += _words(name, given[name])
        out += self.scenario_params.to_args()
        out += [i for name, shape in self.shapes.items() for i in ("--shape", f"{name}:{'x'.join(map(str, shape))}")]
        out += [i for name, (lo, hi) in self.ranges.items() for i in ("--input-range", f"{name}:{lo!r}:{hi!r}")]
        out += option_args(self.options)
        return out


def _field_default(cls: type[Params], name: str) -> Any:
    return next(f.default for f in fields(cls) if f.name == name)


def _words(name: str, value: Any) -> list[str]:
    word = BenchRequest.flags()[name][0]
    if isinstance(value, bool):
        return [word]
    if isinstance(value, list | tuple):
        return [word, ",".join(map(str, value))]
    return [word, str(value)]


def flag_words(name: str) -> str:
    """The command-line word of a field of the request or of any scenario's params."""
    for cls in (BenchRequest, *all_params()):
        words = cls.flags().get(name)
        if words:
            return words[0]
    return name


def flag_help(name: str) -> str:
    for cls in (BenchRequest, *all_params()):
        for f in fields(cls):
            if f.name == name and f.metadata.get("flag"):
                return str(f.metadata["help"])
    raise KeyError(name)


def spelling(name: str) -> tuple[str, ...]:
    """Every command-line word of a field (for the CLI's option declarations)."""
    for cls in (BenchRequest, *all_params()):
        words = cls.flags().get(name)
        if words:
            return words
    raise KeyError(name)


def command_line(model: Any, configs: Sequence[tuple[str, str]], request: BenchRequest,
                 json_path: str | None = None) -> str:
    """The `rtpick bench` command that asks for exactly `request`: stored so reports can print how to reproduce."""
    parts = ["rtpick", "bench", str(model), "-r", ",".join(f"{a}:{b}" for a, b in configs), *request.to_args()]
    if json_path is not None:
        parts += ["--json", str(json_path)]
    return " ".join(shlex.quote(p) for p in parts)


def scenario_fields() -> Mapping[str, Any]:
    """Every scenario field name -> its dataclass field, for the CLI (each spelled once, shared ones once)."""
    out: dict[str, Any] = {}
    for cls in all_params():
        for f in fields(cls):
            if f.metadata.get("flag"):
                out.setdefault(f.name, f)
    return out

