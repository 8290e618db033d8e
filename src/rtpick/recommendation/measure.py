"""In-process measurement on cached sessions: each (runtime, precision, options) is built once per search.

The search measures every candidate at least twice (a short probe, then, for the survivors, the full
measurement); building a session is often the expensive part (a torch.compile, a quantisation, a TensorRT
engine), so the session built for the probe is the one measured in full. A build that fails (a missing
kernel, an int8 build that refuses because it is not faster than fp32) is kept as that candidate's one-line
reason and never stops the others.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rtpick.perf.record import Record


@dataclass
class Built:
    """One build: the session, or the one-line reason it could not be built."""

    session: Any = None
    error: str | None = None
    status: str = "failed"
    build_time_s: float | None = None
    notes: tuple[str, ...] = ()


class SessionCache:
    """Sessions keyed by runtime, precision, options (and shapes, for runtimes that build for one shape)."""

    def __init__(self, model: Any, on_build: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.builds = 0
        self.on_build = on_build  # hears one line per build with its wall time (a log shows where minutes went)
        self._built: dict[tuple[Any, ...], Built] = {}

    def key(self, runtime: str, precision: str, options: Mapping[str, Any],
            shapes: Mapping[str, tuple[int, ...]]) -> tuple[Any, ...]:
        from rtpick.runtimes.registry import get_runtime

        fixed = "" if get_runtime(runtime).dynamic_shapes else json.dumps(sorted(shapes.items()))
        return runtime, precision, json.dumps(dict(options), sort_keys=True, default=str), fixed

    def get(self, runtime: str, precision: str, options: Mapping[str, Any],
            shapes: Mapping[str, tuple[int, ...]]) -> Built:
        key = self.key(runtime, precision, options, shapes)
        if key not in self._built:
            self._built[key] = self._build(runtime, precision, options, shapes)
        return self._built[key]

    def _build(self, runtime: str, precision: str, options: Mapping[str, Any],
               shapes: Mapping[str, tuple[int, ...]]) -> Built:
        from rtpick.perf.worker import is_oom
        from rtpick.runtimes.registry import get_runtime

        self.builds += 1
        name = _name(runtime, precision, options)
        started = time.perf_counter()
        try:
            session = get_runtime(runtime).build(self.model, precision, dict(shapes), **dict(options))
        except Exception as exc:  # noqa: BLE001 - a failed build is this candidate's reason, not a crash
            from rtpick.errors import MissingRuntime, one_line

            text = one_line(exc)[:400]
            status = "unavailable" if isinstance(exc, MissingRuntime) else "oom" if is_oom(text) else "failed"
            self._heard(f"build of {name} stopped after {time.perf_counter() - started:.1f} s: {text[:120]}")
            return Built(error=text, status=status)
        self._heard(f"built {name} in {time.perf_counter() - started:.1f} s")
        return Built(session=session, build_time_s=session.info.build_time_s, notes=tuple(session.info.notes))

    def _heard(self, line: str) -> None:
        if self.on_build is not None:
            self.on_build(line)

    def provide(self, runtime: str, precision: str, options: Mapping[str, Any],
                shapes: Mapping[str, tuple[int, ...]]) -> Any:
        """The cached session (a `compare_configs` session provider); a failed build raises its one line."""
        from rtpick.errors import BuildError, MissingRuntime

        built = self.get(runtime, precision, options, shapes)
        if built.session is None:
            raise (MissingRuntime if built.status == "unavailable" else BuildError)(built.error or "the build failed")
        return built.session

    def timed(self, calls: dict[str, list[float]]) -> Callable[..., Any]:
        """A session provider like `provide` whose sessions time each run() into ``calls[candidate name]``."""

        def provide(runtime: str, precision: str, options: Mapping[str, Any],
                    shapes: Mapping[str, tuple[int, ...]]) -> Any:
            name = _name(runtime, precision, options)
            return TimedSession(self.provide(runtime, precision, options, shapes), calls.setdefault(name, []))

        return provide

    def discard(self, keep: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Close the sessions of every configuration not in `keep` (those that failed their check hold memory,
        a GPU's too, that the measurements of the others should have)."""
        wanted = {self.key(runtime, precision, options, {})[:3] for runtime, precision, options in keep}
        for key in [key for key in self._built if key[:3] not in wanted]:
            built = self._built.pop(key)
            if built.session is not None:
                with contextlib.suppress(Exception):  # closing is best effort
                    built.session.close()

    def close(self) -> None:
        for built in self._built.values():
            if built.session is not None:
                with contextlib.suppress(Exception):  # closing is best effort at the end of a search
                    built.session.close()
        self._built.clear()


def _name(runtime: str, precision: str, options: Mapping[str, Any]) -> str:
    """A configuration's candidate name, as the search keys it ("torch-cuda:fp16 [cuda_graph]")."""
    from rtpick.recommendation.candidate import candidate_name, variant_label

    return candidate_name(f"{runtime}:{precision}", variant_label(dict(options)))


class TimedSession:
    """A lent session whose run() calls are timed as a measurement times them (host clock around run() and
    synchronize()): the correctness check's calls are then a first look at the candidate's latency for free."""

    def __init__(self, session: Any, times: list[float]) -> None:
        self._session = session
        self._times = times

    def run(self, feeds: Mapping[str, Any]) -> Any:
        start = time.perf_counter()
        outputs = self._session.run(feeds)
        self._session.synchronize()
        self._times.append(time.perf_counter() - start)
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def measure(cache: SessionCache, job: Any) -> Record:
    """`job` (a `rtpick.perf.job.Job`) measured in this process on the cached session for its configuration."""
    from rtpick.data import synthetic_feeds
    from rtpick.model import resolve_shapes, with_batch
    from rtpick.perf.batch_rows import for_scheduler
    from rtpick.perf.scenarios.registry import get_scenario
    from rtpick.perf.worker import is_oom

    spec = cache.model.spec
    shapes = with_batch(resolve_shapes(spec.inputs, job.shapes or None, None), job.batch, spec.inputs)
    built = cache.get(job.runtime, job.precision, job.options, shapes)
    if built.session is None:
        status = "failed" if built.status == "unavailable" else built.status  # a record's statuses: ok/failed/oom
        return Record.failed(job.runtime, job.precision, job.batch, job.scenario, status,
                             f"build failed: {built.error}", job.options)
    record = Record(runtime=job.runtime, precision=job.precision, batch=job.batch, scenario=job.scenario,
                    options=dict(job.options), isolated=False, device=built.session.device,
                    build_time_s=built.build_time_s, build_notes=list(built.notes))
    try:
        ranges = {k: tuple(v) for k, v in job.ranges.items()}
        feeds = synthetic_feeds(spec.inputs, shapes, seed=job.seed, ranges=ranges)
        scenario = get_scenario(job.scenario)
        session, feeds, params = (built.session, feeds, job.params) if scenario.closed_loop else \
            for_scheduler(built.session, feeds, spec, job.params)  # one row per run without a batch axis
        record.measurement = scenario.run(session, feeds, params)
    except Exception as exc:  # noqa: BLE001 - a failed run is data about this candidate
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:400]
        record.status, record.error = ("oom" if is_oom(text) else "failed"), text
    return record
