"""The contract every registered runtime keeps; what a new runtime must pass to be listed.

Runs over `RUNTIMES` (the registry), so adding a runtime adds its cases here without editing this file:

- facts: name, device, engine, model form, precisions (a subset of `PRECISIONS`), options with defaults that
  validate, and a refusal of unknown, ill-typed or out-of-choice option values and unsupported precisions;
- `availability()` answers with a one-line reason when the runtime cannot run, and on a machine without a GPU a
  CUDA runtime answers without importing torch or tensorrt (a fresh process proves it);
- where it is available here: a build at every precision it declares, on a tiny model, gives outputs that agree
  with ort-cpu:fp32 on fresh random inputs, judged by the project's tolerance policy (`rtpick.comparison`).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from conftest import SRC, needs_torch

import rtpick
from rtpick.comparison.metrics import check_output
from rtpick.comparison.policy import tolerance_for
from rtpick.errors import RtpickError
from rtpick.runtimes import _gpu
from rtpick.runtimes.base import PRECISIONS, Availability, Option, Runtime
from rtpick.runtimes.registry import RUNTIMES, availability, get_runtime

NAMES = list(RUNTIMES)
REFERENCE = ("ort-cpu", "fp32")


@pytest.mark.parametrize("name", NAMES)
def test_runtime_declares_its_facts(name: str) -> None:
    runtime = get_runtime(name)
    assert isinstance(runtime, Runtime) and runtime.name == name
    assert runtime.device in ("cpu", "cuda")
    assert isinstance(runtime.engine, str) and runtime.engine
    assert runtime.needs_source in ("onnx", "torch")
    assert runtime.precisions and len(set(runtime.precisions)) == len(runtime.precisions)
    assert set(runtime.precisions) <= set(PRECISIONS), runtime.precisions
    assert isinstance(runtime.verified, bool)
    described = runtime.describe()
    assert described["name"] == name and described["precisions"] == list(runtime.precisions)
    assert described["options"] == {key: option.default for key, option in runtime.options.items()}


@pytest.mark.parametrize("name", NAMES)
def test_options_have_defaults_that_validate_and_refuse_bad_values(name: str) -> None:
    runtime = get_runtime(name)
    for key, option in runtime.options.items():
        assert isinstance(option, Option) and option.help, f"{name}.{key} needs a help text"
        if option.choices is not None:
            assert option.default in option.choices, f"{name}.{key}: default not among its choices"
    assert runtime.check_options({}) == {key: option.default for key, option in runtime.options.items()}
    with pytest.raises(RtpickError, match=f"{name} has no option 'no_such_option'"):
        runtime.check_options({"no_such_option": 1})
    for key, option in runtime.options.items():
        if option.choices is not None:
            numeric = all(isinstance(c, int | float) for c in option.choices)
            outside = max(option.choices) + 1 if numeric else "not-a-choice"
            with pytest.raises(RtpickError, match="must be one of"):
                runtime.check_options({key: outside})
        elif isinstance(option.default, bool | int | float) and not isinstance(option.default, str):
            with pytest.raises(RtpickError, match=f"option {key}="):
                runtime.check_options({key: "not-a-number"})
        # the default, given back as text (as the command line gives it), is accepted as the same value
        assert runtime.check_options({key: str(option.default)})[key] == option.default, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_precisions_are_refused_before_anything_is_built(name: str) -> None:
    runtime = get_runtime(name)
    for precision in PRECISIONS:
        if precision not in runtime.precisions:
            with pytest.raises(RtpickError, match=f"{name} does not support {precision}"):
                rtpick.load("rtpick:digits", name, precision)


@pytest.mark.parametrize("name", NAMES)
def test_availability_answers_with_a_reason(name: str) -> None:
    state = get_runtime(name).availability()
    assert isinstance(state, Availability)
    assert state == availability(name)
    if not state.ok:
        assert state.reason.strip() and "\n" not in state.reason, f"{name}: {state.reason!r}"


@pytest.mark.parametrize("name", [n for n in NAMES if get_runtime(n).device == "cuda"])
def test_cuda_runtime_without_a_gpu_answers_without_torch(name: str) -> None:
    """The expensive imports happen only where a GPU exists; without one the answer is the driver's."""
    if _gpu.nvidia_gpu_count() > 0:
        pytest.skip("this machine has an NVIDIA GPU")
    code = (
        "import sys\n"
        "from rtpick.runtimes.registry import get_runtime\n"
        f"state = get_runtime({name!r}).availability()\n"
        "assert not state.ok and state.reason, state\n"
        "print(','.join(m for m in ('torch', 'tensorrt') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{name}.availability() imported {result.stdout.strip()} without a GPU"


def test_the_reference_runs_everywhere() -> None:
    assert availability(REFERENCE[0]).ok, availability(REFERENCE[0]).reason


# ------------------------------------------------------------------------------------------ build and run


def _cases() -> list[Any]:
    cases = []
    for name in NAMES:
        runtime = get_runtime(name)
        for precision in runtime.precisions:
            marks = [pytest.mark.slow] if runtime.compiled else []
            cases.append(pytest.param(name, precision, marks=marks, id=f"{name}:{precision}"))
    return cases


def tiny_conv_net():  # type: ignore[no-untyped-def]
    """Two convolutions with batch norm: a feature-map output (not class scores), so every precision is judged
    by its error norm and direction rather than by which of ten random logits wins."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3, padding=1),
    ).eval()


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    from rtpick.sources import load_model

    return load_model(tiny_conv_net(), input_specs={"x": (2, 3, 8, 8)})


@needs_torch
@pytest.mark.parametrize(("name", "precision"), _cases())
def test_outputs_agree_with_the_reference_on_fresh_inputs(name: str, precision: str, tiny_model: Any) -> None:
    state = availability(name)
    if not state.ok:
        pytest.skip(f"{name} is not available here: {state.reason}")
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh each run, printed on failure to replay it
    x = np.random.default_rng(seed).random((2, 3, 8, 8), dtype=np.float32)
    shapes = {"x": x.shape}
    with rtpick.load(tiny_model, *REFERENCE, shapes=shapes) as reference:
        expected = reference.run({"x": x})
    # a runtime that refuses a precision when it measures no speed-up (int8's never-slower rule) is asked to
    # build it anyway: this test is about agreement, and speed on a tiny model is noise
    speed_rules = {key: 0 for key in get_runtime(name).options if key.endswith("_min_speedup")}
    with rtpick.load(tiny_model, name, precision, shapes=shapes, **speed_rules) as session:
        assert (session.runtime, session.precision, session.device) == (name, precision, get_runtime(name).device)
        produced = session.run({"x": x})
    assert set(produced) == set(expected)
    for output, want in expected.items():
        got = produced[output]
        got = got.detach().cpu().numpy() if hasattr(got, "detach") else got
        assert got.shape == want.shape and str(got.dtype) == str(want.dtype), (output, got.shape, got.dtype)
        check = check_output(output, got, want, tolerance_for(precision), scores=False)
        assert check.ok, f"{name}:{precision} (seed {seed}): {check.reason}"
