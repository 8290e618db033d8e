"""The one contract every runtime keeps: a `Runtime` builds a `Session`; a `Session` runs feeds.

Runtimes declare what they are as class-level facts (name, device, precisions, options), so the registry can
list them without importing anything heavy. The base classes do the checks every runtime needs (feed names,
shapes and dtypes; precision; options; use after close), so each runtime module stays thin.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rtpick.errors import RtpickError
from rtpick.model import Model, TensorSpec

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")

# A precision's speed rule (`Runtime.speed_rule`): bench records (as stored, ``Record.to_dict()``) in, one verdict
# per record of the rule's precision out: {"config", "batch", "faster": True/False/None, "words": one line, ...}.
SpeedRule = Callable[[Sequence[Mapping[str, Any]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Availability:
    """Whether a runtime can run on this machine, and if not, why and what to do."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Option:
    """One build option a runtime accepts: its default, type and what it does."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None

    def coerce(self, name: str, value: Any) -> Any:
        kind = type(self.default) if self.default is not None else str
        if isinstance(value, str) and kind is not str:
            try:
                value = _parse_text(value, kind)
            except ValueError as exc:
                raise RtpickError(f"option {name}={value!r} must be a {kind.__name__}") from exc
        if self.choices is not None and value not in self.choices:
            raise RtpickError(f"option {name}={value!r} must be one of {', '.join(map(str, self.choices))}")
        return value


def _parse_text(text: str, kind: type) -> Any:
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    return kind(text)


# How long building one candidate variant takes, roughly: the search probes the cheap ones first and says what
# an expensive one costs before it starts it.
COST_SECONDS = "seconds"  # a session object (ONNX Runtime, eager torch)
COST_COMPILE = "tens of seconds"  # kernels compiled (torch.compile, a CUDA graph capture after a compile)
COST_MINUTES = "minutes"  # an autotuning compile or a TensorRT engine build
COST_CLASSES = (COST_SECONDS, COST_COMPILE, COST_MINUTES)


@dataclass(frozen=True)
class Variant:
    """One set of build options worth trying when searching for the best configuration.

    Declared by each runtime (``Runtime.variants``), so `recommend` never lists options itself: the options
    that can change which configuration wins (a fused conv, a CUDA graph, a compile mode, a thread count)
    are facts about the runtime. `options` are given on top of the runtime's defaults; `precisions` limits
    the variant to those precisions (empty: all of the runtime's); `cost` is one of `COST_CLASSES`.

    `fallback_for` names the options of a sibling variant (same runtime and precision) that runs the same
    kernels at least as fast, so this one can only win where that one cannot run: a search of fixed shapes
    (closed-loop budgets, no memory limit) tries it only when that sibling fails its build or its check. The CUDA
    graph variants are such siblings: one graph replay instead of a launch per op, the same kernels.
    `fallback_why` says why the sibling covers this one where the reason is not "the same kernels" (measured
    equivalence, with where it was measured).
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    cost: str = COST_SECONDS
    precisions: tuple[str, ...] = ()
    why: str = ""
    fallback_for: Mapping[str, Any] | None = None
    fallback_why: str = ""

    @property
    def label(self) -> str:
        """The options in words ("fuse_conv, cuda_graph"; "" for the runtime's defaults)."""
        return ", ".join(k if v is True else f"{k}={v}" for k, v in sorted(self.options.items()))


@dataclass
class BuildInfo:
    """What building a session cost and what it decided, for results and reports."""

    build_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class Session(ABC):
    """A built model on one runtime at one precision: `run(feeds) -> outputs`, then `close()`.

    Feeds are numpy arrays or torch tensors; outputs come back as the same kind (torch CUDA tensors in, torch CUDA
    tensors out, with no host copies). Validation of names, shapes and dtypes happens here, once per new
    signature, so the per-call cost of a steady loop is a dictionary lookup.
    """

    def __init__(
        self,
        runtime: str,
        precision: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        device: str,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self.precision = precision
        self.inputs = inputs
        self.outputs = outputs
        self.device = device
        self.options = dict(options or {})
        self.info = BuildInfo()
        self._closed = False
        self._checked: set[tuple[Any, ...]] = set()
        self._input_names = tuple(t.name for t in inputs)
        self._output_names = tuple(t.name for t in outputs)

    @property
    def config(self) -> str:
        return f"{self.runtime}:{self.precision}"

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model once. Raises `RtpickError` for feeds that do not match the model."""
        if self._closed:
            raise RtpickError(f"session {self.config} is closed; build a new one with rtpick.load")
        try:
            signature = tuple([(name, value.shape, value.dtype, type(value)) for name, value in feeds.items()])
        except AttributeError:  # not an array at all: let validation say so
            signature = None
        if signature is None or signature not in self._checked:
            self._validate(feeds)
            self._checked.add(signature)  # type: ignore[arg-type]
        return self._run(feeds)

    @abstractmethod
    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run validated feeds; return outputs of the same kind (numpy or torch) as the feeds."""

    def synchronize(self) -> None:  # noqa: B027 - a no-op for host runtimes, overridden by device ones
        """Block until work this session queued on its device has finished (a no-op on the CPU)."""

    def close(self) -> None:
        """Free what the session holds. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # noqa: B027 - sessions with nothing to free need not override
        """Free runtime resources; called once by `close`."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()

    # ------------------------------------------------------------------------------------------- validation

    def _validate(self, feeds: Mapping[str, Any]) -> None:
        given = set(feeds)
        expected = set(self._input_names)
        if given != expected:
            missing = sorted(expected - given)
            extra = sorted(given - expected)
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unknown {extra}")
            raise RtpickError(f"feeds do not match the model's inputs {list(self._input_names)}: {', '.join(parts)}")
        kinds = {_kind(v) for v in feeds.values()}
        if len(kinds) > 1:
            raise RtpickError("feeds mix numpy arrays and torch tensors; give one kind")
        for spec in self.inputs:
            value = feeds[spec.name]
            dtype = _dtype_name(value)
            if dtype != spec.dtype:
                raise RtpickError(
                    f"feed {spec.name!r} has dtype {dtype} but the model wants {spec.dtype}; "
                    f"convert it (array.astype('{spec.dtype}'))"
                )
            shape = tuple(value.shape)
            if len(shape) != len(spec.shape) or any(
                isinstance(want, int) and want != got for want, got in zip(spec.shape, shape)
            ):
                raise RtpickError(
                    f"feed {spec.name!r} has shape {list(shape)} but the model wants "
                    f"{[d for d in spec.shape]} ({spec.describe()})"
                )


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "numpy"
    module = type(value).__module__
    if module.startswith("torch"):
        return f"torch:{value.device.type}"
    raise RtpickError(f"a feed must be a numpy array or a torch tensor, not {type(value).__name__}")


def _dtype_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return str(value.dtype)
    return str(value.dtype).replace("torch.", "")


def is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


class Runtime(ABC):
    """A way to run a model: facts about it as class attributes, `availability()` and `build()`."""

    name: ClassVar[str]
    device: ClassVar[str]  # "cpu" or "cuda"
    engine: ClassVar[str]  # "onnxruntime", "torch", "tensorrt"
    precisions: ClassVar[tuple[str, ...]]
    dynamic_shapes: ClassVar[bool] = True
    needs_source: ClassVar[str] = "onnx"  # "onnx" or "torch": the model form it builds from
    install_hint: ClassVar[str] = ""
    verified: ClassVar[bool] = True  # False for runtimes written to documentation but never run by the project
    compiled: ClassVar[bool] = False  # True when a build compiles kernels (builds take tens of seconds or more)
    options: ClassVar[dict[str, Option]] = {}
    # the option sets a search tries (the defaults first); a runtime with options that can change the answer
    # declares them here
    variants: ClassVar[tuple[Variant, ...]] = (Variant(),)
    # precision -> (the precision that runs the same model at least as fast, why): the search tries the first
    # only where the second fails its build or check (fp32 on a GPU: tf32 only allows tensor-core kernels too)
    precision_fallbacks: ClassVar[dict[str, tuple[str, str]]] = {}

    def candidate_variants(self, precision: str) -> list[Variant]:
        """The declared variants that apply to `precision`, each checked against `options` (a typo in a
        declaration is a bug here, found by tests/test_runtime_contract.py, not by a user)."""
        out = []
        for variant in self.variants:
            if variant.precisions and precision not in variant.precisions:
                continue
            self.check_options(dict(variant.options))
            out.append(variant)
        return out

    @abstractmethod
    def availability(self) -> Availability:
        """Whether this machine can run it; the reason (missing package, no GPU...) when not."""

    def precision_availability(self, precision: str) -> Availability:
        """Whether this machine can run one of the runtime's precisions (e.g. FP8 needs FP8 tensor cores)."""
        return Availability(True)

    def model_availability(self, model: Model) -> Availability:
        """Whether this runtime can run `model` at all (a torch runtime needs a PyTorch source), known before
        anything is built: a search lists such runtimes in one line instead of failing a build per candidate."""
        del model
        return Availability(True)

    def speed_rule(self, precision: str) -> SpeedRule | None:
        """The rule a precision must pass before `recommend` may choose it for speed, or None (no rule).

        A precision that is worth its accuracy cost only where it is measured faster than the runtime's own
        higher-precision configurations declares one here; `recommend` applies it to the records it ranks and
        lists a configuration the rule does not call faster with the rule's words, whatever its own figures.
        """
        del precision
        return None

    def check_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """All options with defaults filled in; unknown or ill-typed ones are the user's mistake."""
        unknown = set(given) - set(self.options)
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise RtpickError(f"{self.name} has no option {sorted(unknown)[0]!r}; its options: {known}")
        return {key: opt.coerce(key, given.get(key, opt.default)) for key, opt in self.options.items()}

    def builds_without_shapes(self, precision: str) -> bool:
        """Whether a session can be built before every symbolic dim is known (the feeds bring them at run time).

        False by default: static runtimes, TensorRT profiles and int8 calibration need concrete shapes first.
        """
        del precision
        return False

    def build(
        self,
        model: Model,
        precision: str,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
        **options: Any,
    ) -> Session:
        """Build a session; `shapes` are the concrete input shapes the caller will use (a hint for static
        runtimes, the optimisation profile for TensorRT). Records build time on the session."""
        if precision not in self.precisions:
            raise RtpickError(
                f"{self.name} does not support {precision}; it supports {', '.join(self.precisions)}"
            )
        state = self.availability()
        if not state.ok:
            from rtpick.errors import MissingRuntime

            raise MissingRuntime(f"{self.name} is not available here: {state.reason}")
        precision_state = self.precision_availability(precision)
        if not precision_state.ok:
            from rtpick.errors import MissingRuntime

            raise MissingRuntime(f"{self.name}:{precision} is not available here: {precision_state.reason}")
        resolved = self.check_options(options)
        start = time.perf_counter()
        session = self._build(model, precision, dict(shapes or {}), resolved)
        session.info.build_time_s = time.perf_counter() - start
        return session

    @abstractmethod
    def _build(
        self, model: Model, precision: str, shapes: dict[str, tuple[int, ...]], options: dict[str, Any]
    ) -> Session:
        """Build a session from checked arguments."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "engine": self.engine,
            "precisions": list(self.precisions),
            "dynamic_shapes": self.dynamic_shapes,
            "verified": self.verified,
            "options": {key: opt.default for key, opt in self.options.items()},
        }
