"""One line, never a traceback: each of issue 12's bad inputs through the real command line (a subprocess)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import TensorProto, helper, numpy_helper

LONG = "a" * 300  # a file name over 255 bytes


def _save(graph, path: Path) -> Path:  # type: ignore[no-untyped-def]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("odd")
    ones = numpy_helper.from_array(np.ones(3, np.float32))
    no_inputs = helper.make_graph([helper.make_node("Constant", [], ["y"], value=ones)], "constant", [],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    no_outputs = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "sink",
                                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])], [])
    bad_reshape = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([4, 4], np.int64), "s")])
    return {"no_inputs": _save(no_inputs, folder / "constant.onnx"),
            "no_outputs": _save(no_outputs, folder / "sink.onnx"),
            "fails": _save(bad_reshape, folder / "reshape.onnx")}


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder this process cannot write: read-only mode, or (root ignores modes) a sysfs folder."""
    if os.geteuid() == 0:
        folder = Path("/sys/fs")
        if not folder.is_dir() or os.access(folder, os.W_OK) and _can_create(folder):
            pytest.skip("running as root with no read-only folder to write into")
        return folder
    folder = tmp_path_factory.mktemp("readonly")
    folder.chmod(0o555)
    return folder


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".rtpick-test").touch()
    except OSError:
        return False
    (folder / ".rtpick-test").unlink()
    return True


def one_line(done, code: int = 2, *words: str) -> None:  # type: ignore[no-untyped-def]
    """Exit status `code`, no traceback, exactly one line on stderr holding every word."""
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtpick: error:"), done.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


def _outputs(tmp_path: Path, unwritable: Path, suffix: str) -> dict[str, tuple[str, str]]:
    """Bad output paths: what to pass, and a word the one line must hold."""
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / f"folder{suffix}").mkdir(exist_ok=True)
    return {
        "read-only folder": (str(unwritable / f"out{suffix}"), "ermi"),  # Permission denied / not permitted
        "a folder": (str(tmp_path / f"folder{suffix}"), "is a directory"),
        "under a file": (str(tmp_path / "a-file" / f"out{suffix}"), "is a file, not a folder"),
        "name over 255 bytes": (str(tmp_path / f"{LONG}{suffix}"), "too long"),
    }


@pytest.mark.parametrize("case", ["read-only folder", "a folder", "under a file", "name over 255 bytes"])
def test_compare_json_and_run_output_to_a_bad_path(small_onnx, tmp_path, unwritable, case) -> None:
    path, word = _outputs(tmp_path, unwritable, ".json")[case]
    one_line(run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32", "--json", path), 2, word)
    path, word = _outputs(tmp_path, unwritable, ".npz")[case]
    one_line(run_cli("run", str(small_onnx), "--output", path), 2, word)
    assert (tmp_path / "a-file").read_text() == "keep me"


@pytest.mark.parametrize("case", ["read-only folder", "a folder", "under a file", "name over 255 bytes"])
def test_bench_json_and_recommend_save_to_a_bad_path(small_onnx, tmp_path, unwritable, case) -> None:
    path, word = _outputs(tmp_path, unwritable, ".json")[case]
    one_line(run_cli("bench", str(small_onnx), "--quick", "--duration", "0.1", "--json", path), 2, word)
    one_line(run_cli("recommend", str(small_onnx), "--quick", "--save", path), 2, word)


def test_run_on_a_model_without_inputs_works(odd_models) -> None:
    done = run_cli("run", str(odd_models["no_inputs"]))
    assert done.returncode == 0, done.stderr
    assert "y" in done.stdout


def test_run_on_a_model_without_outputs_is_one_line(odd_models) -> None:
    one_line(run_cli("run", str(odd_models["no_outputs"])), 2, "no outputs")


def test_an_inference_failure_is_one_line(odd_models) -> None:
    one_line(run_cli("run", str(odd_models["fails"])), 1, "inference failed", "Reshape")


def test_a_shape_too_large_for_memory_is_refused_before_allocating() -> None:
    one_line(run_cli("run", "rtpick:digits", "--shape", "image:99999999x1x32x32"), 2, "GiB", "memory available")


def test_inspect_with_missing_external_weights(tmp_path) -> None:
    weight = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data",
              size_threshold=0)
    (tmp_path / "ext.data").unlink()
    one_line(run_cli("inspect", str(tmp_path / "ext.onnx")), 2, "ext.data", "missing")


def test_an_unusable_cache_folder_is_one_line(small_onnx, tmp_path, unwritable) -> None:
    (tmp_path / "a-file").write_text("")
    for cache in (unwritable / "rtpick-cache", tmp_path / "a-file" / "cache"):
        env = {"RTPICK_CACHE_DIR": str(cache)}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            done = run_cli("run", str(small_onnx), "-r", "ort-cpu:int8")
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        one_line(done, 2, "cache folder", "RTPICK_CACHE_DIR")


def test_threads_are_bounded(small_onnx) -> None:
    one_line(run_cli("run", str(small_onnx), "--option", "threads=100000", timeout=60), 2, "threads must be between 0")


@pytest.mark.parametrize("shape, word", [("x:1x2x3", "has 3 dims"), ("nope:1x8", "not an input"),
                                         ("x:2x9", "fixed dim")])
def test_inspect_shape_mistakes_exit_2(small_onnx, shape, word) -> None:
    one_line(run_cli("inspect", str(small_onnx), "--shape", shape), 2, word)


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_a_torch_checkpoint_says_how_to_save_it(tmp_path, suffix) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x02}q\x00.")  # a pickle, never unpickled
    one_line(run_cli("inspect", str(path)), 2, "save the model with torch.export as .pt2")


@pytest.mark.parametrize("name, kind", [("model.jit", "TorchScript archive"), ("model.onnx", "TorchScript archive"),
                                        ("weights.data", "PyTorch pickle")])
def test_torch_files_are_told_by_their_bytes_whatever_their_name(tmp_path, name, kind) -> None:
    """A TorchScript model ships as .jit/.torchscript/.pt, torch.save writes any name: neither reaches a loader."""
    torch = pytest.importorskip("torch")
    path = tmp_path / name
    if kind == "TorchScript archive":
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    else:
        torch.save({"w": torch.zeros(2)}, str(path))
    one_line(run_cli("inspect", str(path)), 2, f"is a {kind}; rtpick does not load those")


def test_an_unknown_bundled_model_lists_the_bundled_ones() -> None:
    one_line(run_cli("inspect", "rtpick:nope"), 2, "rtpick:digits")


def test_a_model_name_over_255_bytes() -> None:
    one_line(run_cli("inspect", f"{LONG}.onnx"), 2, "255 bytes")


def test_a_link_planted_at_the_probe_name_is_not_written_through(small_onnx, tmp_path) -> None:
    """Item 4 at the command line: the writability probe never opens a predictable name (it used to be
    <out>.rtpick-probe, and a link there to a victim file left the victim empty)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "c.json"
    for name in (f"{out.name}.rtpick-probe", ".rtpick-probe", f".{out.name}.tmp"):
        (tmp_path / name).symlink_to(victim)
    done = run_cli("compare", str(small_onnx), "-r", "ort-cpu:fp32", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious" and out.is_file() and not out.is_symlink()


def test_written_files_keep_the_umask_and_the_old_mode(small_onnx, tmp_path) -> None:
    """Item 11 at the command line: a new file gets 0666 & ~umask (0644 under 022), a replaced one its mode."""
    new, old = tmp_path / "new.npz", tmp_path / "old.npz"
    old.write_bytes(b"")
    old.chmod(0o640)
    mask = os.umask(0o022)
    try:
        for path in (new, old):
            assert run_cli("run", str(small_onnx), "--output", str(path)).returncode == 0
    finally:
        os.umask(mask)
    assert new.stat().st_mode & 0o777 == 0o644
    assert old.stat().st_mode & 0o777 == 0o640 and old.stat().st_size > 0


def test_serve_with_a_wrong_shape_or_an_open_dim_is_one_line(tmp_path) -> None:
    """rtpick serve never binds a port for these: the shape is refused before the server starts."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "open_hw",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    from serve_fixtures import free_port

    path = str(_save(graph, tmp_path / "open.onnx"))
    port = str(free_port())  # loopback, unused: were a shape ever accepted, the timeout ends the server
    one_line(run_cli("serve", path, "--port", port, "--grpc-port", "0", timeout=120), 2, "symbolic dim", "--shape")
    one_line(run_cli("serve", path, "--shape", "x:1x3x16", "--port", port, "--grpc-port", "0", timeout=120), 2,
             "3 dims")


def test_a_model_newer_than_onnxruntime_reads_says_what_to_do(tmp_path) -> None:
    """A newer onnx writes an IR version the installed onnxruntime cannot read; ORT's own message points into
    its source tree."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 99
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    one_line(run_cli("run", str(path), "-r", "ort-cpu:fp32"), 1, "is ONNX IR version 99 and this onnxruntime")
