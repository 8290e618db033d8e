"""The Python API behind `rtpick.load`, `rtpick.compare` and `rtpick.runtimes`; the CLI calls these too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rtpick.errors import RtpickError
from rtpick.model import Model, resolve_shapes
from rtpick.runtimes import DEFAULT_RUNTIME
from rtpick.sources import load_model

if TYPE_CHECKING:
    from rtpick.comparison.result import Comparison
    from rtpick.recommendation import Recommendation
    from rtpick.runtimes.base import Session


def load(
    model: Any,
    runtime: str = DEFAULT_RUNTIME,
    precision: str = "fp32",
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    input_specs: Any = None,
    weights: str | None = None,
    **options: Any,
) -> Session:
    """Build `model` on `runtime` at `precision` and return a ready `Session`.

    `model` is an .onnx/.pt2 path, ``torchvision:<name>``, ``rtpick:digits``, a torch module (with
    `input_specs`) or a loaded `Model`. `shapes` fixes symbolic dims (``{"x": (1, 3, 224, 224)}``); runtime
    `options` are listed by ``rtpick runtimes --verbose``. A deploy file (``rtpick recommend --save``) is
    used as it is: its runtime, precision, options and shapes, after checking the model's sha256.
    """
    from rtpick.deploy import is_deploy_file
    from rtpick.runtimes.registry import get_runtime

    if is_deploy_file(model):
        from rtpick.deploy import load_deploy

        return load_deploy(model, runtime, precision, shapes=shapes, batch=batch, weights=weights, **options)
    source = model if isinstance(model, Model) else load_model(model, weights=weights, input_specs=input_specs)
    target = get_runtime(runtime)
    try:
        resolved = resolve_shapes(source.spec.inputs, shapes, batch)
    except RtpickError:
        # a symbolic dim left open: fine for a runtime that takes its sizes from the feeds at run time
        if shapes or batch is not None or not target.builds_without_shapes(precision):
            raise
        resolved = {}
    return target.build(source, precision, resolved, **options)


def compare(model: Any, configs: Sequence[str], **kwargs: Any) -> Comparison:
    """Run the same feeds through each ``runtime:precision`` and compare every output with a reference."""
    from rtpick.comparison.run import compare_configs

    return compare_configs(model, configs, **kwargs)


def recommend(model: Any, **kwargs: Any) -> Recommendation:
    """The best configuration of `model` for a budget, gated on correctness; every other one with its reason.

    Keyword arguments are those of `rtpick.recommendation.recommend` (configs, p99_ms, streams, fps, min_throughput,
    max_accuracy_drop, labels, expected_inferences, max_gpu_mem_mb, max_host_mem_mb, max_joules, cpu_only, quick,
    from_results, batch, ...).
    """
    from rtpick.recommendation import recommend as run_recommend

    return run_recommend(model, **kwargs)


def runtimes() -> list[dict[str, Any]]:
    """Every runtime rtpick knows, with whether it runs here and why not."""
    from rtpick.runtimes.registry import RUNTIMES, availability, get_runtime

    rows = []
    for name in RUNTIMES:
        state = availability(name)
        rows.append({**get_runtime(name).describe(), "available": state.ok, "reason": state.reason})
    return rows


def bench(
    model: Any,
    configs: Sequence[str] | str,
    *,
    scenario: str | None = None,
    batch: int | Sequence[int] | None = None,
    json: str | None = None,
    isolate: bool = True,
    repeats: int = 1,
    **kwargs: Any,
) -> Any:
    """Measure `model` on each ``runtime:precision`` in one scenario (default single-stream); returns
    `rtpick.results.Results`.

    Keyword arguments are the fields of `rtpick.perf.request.BenchRequest` (quick, seed, shapes, ranges,
    options, io, timeout_s, ...) and of the scenario's `Params` (duration_s, keep_samples, blocks; server:
    rate_qps, find_max, p99_ms; multistream: streams, fps, deadline_ms, find_max_streams), the same names
    `rtpick bench --help` spells as flags. A path or zoo name runs each configuration in its own process;
    an in-memory model runs in this one. ``repeats=N`` (single-stream and offline, a path or name) measures
    each configuration in N separate processes and takes its intervals from the spread between them, which
    also covers what stays constant within one process (see `rtpick.perf.stats`); it takes N times as long.
    """
    from rtpick.perf.request import BenchRequest, command_line
    from rtpick.perf.run import run_bench
    from rtpick.runtimes.registry import parse_config, parse_configs

    parsed = parse_configs(configs) if isinstance(configs, str) else [parse_config(c) for c in configs]
    batches = None if batch is None else [batch] if isinstance(batch, int) else list(batch)
    request = BenchRequest.create(scenario, batches=batches, isolate=isolate, repeats=repeats, **kwargs)
    command = command_line(model, parsed, request, json)
    return run_bench(model, parsed, request, json_path=json, command=command)
