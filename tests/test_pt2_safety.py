"""A `.pt2` file never runs code: every way torch.export.load could run it is refused before torch sees the file.

The main case is issue 12's: a real exported module whose archive says one weight is pickled, and whose weight
file is a `torch.save` of an object that writes a marker file when unpickled and returns a valid Parameter.
Before the check, `rtpick inspect`, `compare`, `bench` and `rtpick.load` all ran it and exited 0.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
from conftest import SRC, needs_torch, run_cli

pytestmark = needs_torch


def _export(path: Path, dynamic: bool = False) -> Path:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.linear(x) + y.sum()

    shapes = None
    if dynamic:
        batch = torch.export.Dim("batch", min=2, max=64)
        shapes = ({0: batch}, {0: 2 * batch})
    program = torch.export.export(Net(), (torch.randn(4, 4), torch.randn(8, 4)), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def _rewrite(source: Path, target: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """Copy the archive member by member, `change(name, data)` returning new bytes (or None to keep them)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info.filename)
            replaced = change(info.filename, data)
            new.writestr(info, data if replaced is None else replaced)
    return target


class _Payload:
    """Unpickled, it writes MARKER and hands back a valid Parameter, so the load goes on as if nothing happened."""

    def __init__(self, marker: Path, shape: tuple[int, ...]) -> None:
        self.marker, self.shape = marker, shape

    def __reduce__(self):  # type: ignore[no-untyped-def]
        code = (f"(__import__('pathlib').Path({str(self.marker)!r}).write_text('ran'), "
                f"__import__('torch').nn.Parameter(__import__('torch').zeros{self.shape!r}))[1]")
        return (eval, (code,))


def _pickled_weight(clean: Path, target: Path, marker: Path) -> Path:
    """Issue 12's tampering: ``use_pickle: true`` for one weight, its file a torch.save of the payload."""
    import torch

    buffer = io.BytesIO()
    torch.save(_Payload(marker, (2, 4)), buffer)

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            entry = config["config"]["linear.weight"]
            entry["use_pickle"] = True
            change.weight_file = entry["path_name"]  # type: ignore[attr-defined]
            return json.dumps(config).encode()
        return None

    _rewrite(clean, target.with_suffix(".tmp"), change)
    weight = "data/weights/" + change.weight_file  # type: ignore[attr-defined]
    return _rewrite(target.with_suffix(".tmp"), target,
                    lambda name, data: buffer.getvalue() if name.endswith(weight) else None)


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("pt2") / "net.pt2")


@pytest.fixture(scope="module")
def tampered(clean_pt2: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("evil")
    marker = folder / "PAYLOAD_RAN"
    return _pickled_weight(clean_pt2, folder / "evil.pt2", marker), marker


def test_the_tampered_archive_is_a_working_exploit_for_plain_torch(clean_pt2, tmp_path) -> None:
    """Guards the test itself: without rtpick's check, torch.export.load runs the payload and succeeds."""
    import subprocess
    import sys

    marker = tmp_path / "ran"
    proof = _pickled_weight(clean_pt2, tmp_path / "proof.pt2", marker)
    code = f"import torch; torch.export.load({str(proof)!r})"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=True)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("command", [
    ["inspect"], ["compare", "-r", "ort-cpu:fp32"], ["run"],
    ["bench", "-r", "ort-cpu:fp32", "--quick", "--duration", "0.2"],
    ["bench", "-r", "ort-cpu:fp32", "--quick", "--duration", "0.2", "--no-isolate"],
])
def test_every_command_refuses_a_pickled_weight(tampered, command) -> None:
    evil, marker = tampered
    done = run_cli(command[0], str(evil), *command[1:])
    assert done.returncode == 2, done.stderr
    assert "use_pickle" in done.stderr and "could run code" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not marker.exists()


def test_the_api_refuses_it(tampered) -> None:
    import subprocess
    import sys

    evil, marker = tampered
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r}); import rtpick\n"
            f"try:\n    rtpick.load({str(evil)!r})\n"
            "except rtpick.RtpickError as exc:\n    print('refused:', exc); sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "refused:" in done.stdout, done.stderr
    assert not marker.exists()


def test_a_worker_refuses_it_too(tampered) -> None:
    """Bench workers load through the same function: a job naming the file records the refusal."""
    from rtpick.perf.job import Job
    from rtpick.perf.worker import run_job

    evil, marker = tampered
    job = Job.from_dict({"model": str(evil), "runtime": "ort-cpu", "precision": "fp32", "batch": 1,
                         "scenario": "single-stream", "params": {"duration_s": 0.1}})
    record = run_job(job)
    assert record.status == "failed" and "use_pickle" in (record.error or "")
    assert not marker.exists()


# ------------------------------------------------------------------------------- the check itself, case by case


def test_plain_exports_pass(clean_pt2, tmp_path) -> None:
    from rtpick.pt2_safety import check_pt2

    check_pt2(clean_pt2)
    check_pt2(_export(tmp_path / "dynamic.pt2", dynamic=True))  # symbolic expressions and a guard


def _refused(path: Path, words: str) -> None:
    from rtpick.errors import RtpickError
    from rtpick.pt2_safety import check_pt2

    with pytest.raises(RtpickError, match=words):
        check_pt2(path)


def test_a_guard_that_is_code_is_refused(tmp_path) -> None:
    """torch exec()s the guards when the module is built."""
    base = _export(tmp_path / "d.pt2", dynamic=True)

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            program["guards_code"] = ["__import__('os').system('true') or True"]
            return json.dumps(program).encode()
        return None

    _refused(_rewrite(base, tmp_path / "guard.pt2", change), "guard uses '__import__'")


def test_a_symbolic_expression_that_is_code_is_refused(tmp_path) -> None:
    """torch sympify()s (evals) every expr_str."""
    base = _export(tmp_path / "d.pt2", dynamic=True)

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("models/model.json"):
            text = data.decode()
            assert "Symbol('s" in text
            return text.replace("Symbol(", "eval(chr(49)) or Symbol(", 1).encode()
        return None

    _refused(_rewrite(base, tmp_path / "sym.pt2", change), "symbolic expression uses 'eval'")


def test_sample_inputs_with_a_malicious_pickle_are_refused(clean_pt2, tmp_path) -> None:
    """torch retries weights_only=False when weights_only=True refuses the sample inputs."""
    import torch

    buffer = io.BytesIO()
    torch.save(_Payload(tmp_path / "x", (1,)), buffer)
    evil = _rewrite(clean_pt2, tmp_path / "inputs.pt2",
                    lambda name, data: buffer.getvalue() if name.endswith("sample_inputs/model.pt") else None)
    _refused(evil, "imports (__builtin__|builtins).eval")


def test_custom_objects_and_compiled_code_are_refused(clean_pt2, tmp_path) -> None:
    def custom(name: str, data: bytes) -> bytes | None:
        if name.endswith("model_constants_config.json"):
            return json.dumps({"config": {"obj": {"path_name": "custom_obj_0", "is_param": False,
                                                  "use_pickle": False, "tensor_meta": None}}}).encode()
        return None

    _refused(_rewrite(clean_pt2, tmp_path / "custom.pt2", custom), "custom or opaque")
    with zipfile.ZipFile(clean_pt2) as old, zipfile.ZipFile(tmp_path / "aoti.pt2", "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info.filename))
        new.writestr("net/data/aotinductor/model/model.so", b"\x7fELF")
    _refused(tmp_path / "aoti.pt2", "compiled code")


def test_bare_pickles_are_walked_not_loaded(tmp_path) -> None:
    """STACK_GLOBAL (protocol 4) and GLOBAL (protocol 0-2) both name what they import; neither is unpickled."""
    from rtpick.pt2_safety import _check_pickle

    marker = tmp_path / "never"

    class Boom:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.write_text, (marker, "ran"))

    from rtpick.errors import RtpickError

    for protocol in (0, 2, 4, 5):
        with pytest.raises(RtpickError, match="is a pickle that imports"):
            _check_pickle(tmp_path, "m", pickle.dumps(Boom(), protocol=protocol))
    _check_pickle(tmp_path, "m", pickle.dumps({"a": [1, 2.0, "x"], "b": (None, True)}, protocol=4))
    _check_pickle(tmp_path, "m", b"\x80\x02not really a pickle")  # raw bytes that only start like one
    assert not marker.exists()


def test_not_a_zip_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"hello")
    _refused(bad, "not a torch.export archive")
