"""The one ``--option`` syntax of every command (compare, run, bench, recommend), parsed and checked in one place.

``--option runtime.key=value`` applies to that runtime only; ``--option key=value`` applies to every selected
runtime that has an option called ``key`` (so ``threads=2`` can serve ``-r ort-cpu:fp32,torch-cpu:fp32`` although
only ort-cpu takes threads). Where both are given, ``runtime.key`` wins for that runtime, whatever the order.
An option that reaches no selected runtime, or a value the runtime's option cannot take, is the user's mistake,
reported before anything is built. Runtime names hold no dots and option names hold none either, so the first
dot is the separator.

In the API, options are either this flat form (``{"ort-cpu.threads": 2, "channels_last": True}``) or nested by
runtime (``{"ort-cpu": {"threads": 2}}``); `flatten` turns the second into the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rtpick.errors import RtpickError

SYNTAX = "runtime.key=value (that runtime) or key=value (every selected runtime that has the option)"
EXAMPLE = "e.g. --option ort-cpu.threads=2 or --option threads=2"
OPTION_HELP = ("Runtime option: runtime.key=value for that runtime, key=value for every selected runtime that has "
               "it (repeatable; rtpick runtimes -v lists the options).")


def parse_option_args(items: Iterable[str]) -> dict[str, str]:
    """``--option`` items -> ``{"runtime.key" or "key": "value"}`` (values stay text; the runtime coerces them).

    Only the syntax is checked here (and that a named runtime exists); which runtimes an option reaches is
    `check_options`'s job, once the selected runtimes are known.
    """
    from rtpick.runtimes.registry import RUNTIMES

    parsed: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise RtpickError(f"--option {item!r} must look like {SYNTAX}; {EXAMPLE}")
        runtime, dot, key = name.partition(".")
        if dot:
            if not runtime or not key or "." in key:
                raise RtpickError(f"--option {item!r} must look like {SYNTAX}; {EXAMPLE}")
            if runtime not in RUNTIMES:
                raise RtpickError(f"--option {item!r}: {runtime!r} is not a runtime; the runtimes are: "
                                  f"{', '.join(RUNTIMES)}")
        if name in parsed:
            raise RtpickError(f"--option {name} is given twice ({name}={parsed[name]} and {item}); give it once")
        parsed[name] = value
    return parsed


def flatten(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flat or runtime-nested options -> the flat form (``{"ort-cpu": {"threads": 2}}`` -> ``ort-cpu.threads``)."""
    from rtpick.runtimes.registry import RUNTIMES

    flat: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if name in RUNTIMES and isinstance(value, Mapping):
            flat.update({f"{name}.{key}": item for key, item in value.items()})
        else:
            flat[name] = value
    return flat


# Options that start threads: more than a few per core only adds contention, and a typo (threads=100000) made
# ONNX Runtime reserve memory until the kernel killed the process.
THREAD_OPTIONS = ("threads", "intra_op_threads", "inter_op_threads", "num_threads")


def max_threads() -> int:
    import os

    return 4 * (os.cpu_count() or 1)


def _bounded(runtime: str, key: str, value: Any) -> Any:
    number = isinstance(value, int) and not isinstance(value, bool)
    if key in THREAD_OPTIONS and number and not 0 <= value <= max_threads():
        raise RtpickError(f"{key} must be between 0 (the runtime's default) and {max_threads()} (4 per CPU core "
                          f"of this machine) for {runtime}, not {value}")
    return value


def _text(name: str, value: Any) -> str:
    return f"{name}={value}"


def check_options(runtimes: Sequence[str], options: Mapping[str, Any] | None) -> None:
    """Every option must reach at least one of `runtimes`, with a value its option takes; else one clear line.

    `runtimes` are runtime names (``ort-cpu``), or configurations (``ort-cpu:fp16``) whose runtime part is used.
    """
    from rtpick.runtimes.registry import get_runtime

    selected = list(dict.fromkeys(r.partition(":")[0] for r in runtimes))
    for name, value in flatten(options).items():
        target, dot, key = name.partition(".")
        if dot:
            if target not in selected:
                raise RtpickError(f"--option {_text(name, value)}: {target} is not among the selected runtimes "
                                  f"({', '.join(selected)}); add it to -r or drop the option")
            reached = [target]
        else:
            key = name
            reached = [r for r in selected if key in get_runtime(r).options]
            if not reached:
                theirs = "; ".join(f"{r}: {', '.join(sorted(get_runtime(r).options)) or 'none'}" for r in selected)
                raise RtpickError(f"--option {_text(name, value)}: no selected runtime has an option {key!r} "
                                  f"(their options: {theirs})")
        for runtime in reached:
            known = get_runtime(runtime).options
            if key not in known:
                raise RtpickError(f"--option {_text(name, value)}: {runtime} has no option {key!r}; its options: "
                                  f"{', '.join(sorted(known)) or 'none'}")
            try:
                _bounded(runtime, key, known[key].coerce(key, value))
            except RtpickError as exc:
                hint = "" if dot else f" (a bare key reaches every selected runtime; use runtime.{key}=... for one)"
                raise RtpickError(f"--option {_text(name, value)} for {runtime}: {exc}{hint}") from None


def options_for(runtime: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options that reach `runtime` (names without the runtime prefix), values coerced to the option's type.

    A bare ``key`` reaches it when it has such an option; ``runtime.key`` reaches it and wins over a bare one.
    Call `check_options` first: this one silently leaves out what reaches other runtimes.
    """
    from rtpick.runtimes.registry import get_runtime

    known = get_runtime(runtime).options
    bare: dict[str, Any] = {}
    named: dict[str, Any] = {}
    for name, value in flatten(options).items():
        target, dot, key = name.partition(".")
        if dot and target == runtime:
            named[key] = value
        elif not dot and name in known:
            bare[name] = value
    chosen = {**bare, **named}
    return {key: _bounded(runtime, key, known[key].coerce(key, value)) if key in known else value
            for key, value in chosen.items()}


def resolve_options(options: Mapping[str, Any] | None, runtimes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Checked options per runtime, ``{runtime: {key: value}}`` (runtimes that no option reaches left out)."""
    check_options(runtimes, options)
    names = dict.fromkeys(r.partition(":")[0] for r in runtimes)
    per_runtime = {runtime: options_for(runtime, options) for runtime in names}
    return {runtime: chosen for runtime, chosen in per_runtime.items() if chosen}


def option_args(options: Mapping[str, Any] | None) -> list[str]:
    """The ``--option`` arguments that give `options` back (for the command line stored with results)."""
    return [item for name, value in flatten(options).items() for item in ("--option", _text(name, value))]
