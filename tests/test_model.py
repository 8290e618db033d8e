"""Model specs, shape resolution and model sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_torch, small_cnn

import rtpick
from rtpick.errors import RtpickError
from rtpick.model import TensorSpec, resolve_shapes, with_batch
from rtpick.sources import load_model

IMAGE = TensorSpec("image", "float32", ("batch", 3, "height", "width"))
IDS = TensorSpec("ids", "int64", ("batch", "sequence"))
MASK = TensorSpec("mask", "int64", ("batch", "sequence"))


def test_batch_fills_the_leading_symbolic_dim() -> None:
    spec = TensorSpec("x", "float32", ("batch", 3, 224, 224))
    assert resolve_shapes([spec], batch=8) == {"x": (8, 3, 224, 224)}
    assert resolve_shapes([spec]) == {"x": (1, 3, 224, 224)}


def test_unset_symbolic_dim_names_the_fix() -> None:
    with pytest.raises(RtpickError, match=r"--shape image:Nx3xNxN"):
        resolve_shapes([IMAGE], batch=1)


def test_a_symbol_set_once_applies_to_every_input() -> None:
    shapes = resolve_shapes([IDS, MASK], {"ids": (2, 128)})
    assert shapes == {"ids": (2, 128), "mask": (2, 128)}


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"image": (1, 4, 8, 8)}, "fixed dim of 3"),
        ({"image": (1, 3, 8)}, "has 3 dims"),
        ({"nope": (1,)}, "not an input"),
        ({"image": (1, 3, 0, 8)}, "positive"),
    ],
)
def test_bad_shapes_are_user_errors(shapes: dict, message: str) -> None:
    with pytest.raises(RtpickError, match=message):
        resolve_shapes([IMAGE], shapes)


def test_with_batch() -> None:
    inputs = [TensorSpec("x", "float32", ("n", 3, 8, 8)), TensorSpec("state", "float32", (2, "n", 4)),
              TensorSpec("sr", "int64", ())]
    shapes = {"x": (1, 3, 8, 8), "state": (2, 1, 4), "sr": ()}
    # only inputs with an open leading dim carry the batch: state's fixed 2 and the scalar stay as they are
    assert with_batch(shapes, 4, inputs) == {"x": (4, 3, 8, 8), "state": (2, 1, 4), "sr": ()}


def test_onnx_spec_reads_symbolic_dims(small_onnx: Path) -> None:
    model = load_model(small_onnx)
    assert model.spec.inputs == (TensorSpec("x", "float32", ("batch", 8)),)
    assert model.spec.outputs == (TensorSpec("y", "float32", ("batch", 4)),)
    assert len(model.spec.sha256) == 64 and model.spec.source == "onnx"


def test_missing_and_corrupt_files_are_user_errors(tmp_path: Path, small_onnx: Path) -> None:
    with pytest.raises(RtpickError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(RtpickError, match="not a readable ONNX model"):
        load_model(bad)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(small_onnx.read_bytes()[:200])
    with pytest.raises(RtpickError):
        load_model(truncated)
    with pytest.raises(RtpickError, match="directory"):
        load_model(tmp_path)
    with pytest.raises(RtpickError, match="cannot load a model"):
        load_model(42)


def test_loading_never_modifies_the_file(small_onnx: Path) -> None:
    before = small_onnx.read_bytes()
    with rtpick.load(small_onnx, "ort-cpu") as session:
        session.run({"x": np.ones((3, 8), np.float32)})
    assert small_onnx.read_bytes() == before



@needs_torch
def test_torch_module_source_leaves_the_users_module_alone() -> None:
    import torch

    module = small_cnn().train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    model = load_model(module, input_specs={"image": (1, 3, 16, 16)})
    assert model.spec.inputs[0] == TensorSpec("image", "float32", ("batch", 3, 16, 16))
    assert model.spec.outputs[0].shape == ("batch", 10)
    with rtpick.load(model, "torch-cpu", "bf16") as session:
        session.run({"image": np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)})
    assert module.training
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert next(module.parameters()).dtype == torch.float32


@needs_torch
def test_torch_source_needs_input_specs() -> None:
    with pytest.raises(RtpickError, match="example inputs or input specs"):
        load_model(small_cnn())


@needs_torch
def test_export_to_onnx_is_cached_by_content_hash() -> None:
    model = load_model(small_cnn(), input_specs={"image": (1, 3, 16, 16)})
    first = model.onnx_path()
    again = load_model(small_cnn(), input_specs={"image": (1, 3, 16, 16)}).onnx_path()
    assert first == again and first.exists()
    from rtpick.sources import onnx_spec

    exported = onnx_spec(first)
    assert exported.inputs[0].shape[0] == "batch"  # dynamic batch axis survives the export


@needs_torch
def test_pt2_source(tmp_path: Path) -> None:
    import torch

    module = small_cnn().eval()
    example = (torch.rand(2, 3, 16, 16),)
    program = torch.export.export(module, example)
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, str(path))
    model = load_model(path)
    assert model.spec.source == "pt2"
    assert model.spec.inputs[0].dtype == "float32"
    x = np.random.default_rng(2).random((2, 3, 16, 16), dtype=np.float32)
    with rtpick.load(model, "torch-cpu", shapes={model.spec.inputs[0].name: (2, 3, 16, 16)}) as session:
        out = session.run({model.spec.inputs[0].name: x})
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(next(iter(out.values())), expected, rtol=1e-5, atol=1e-5)


@needs_torch
def test_a_pt2_with_guarded_sizes_is_read_not_probed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program exported for H, W = 4k with k in 8..512 fails its guards at rtpick's probe sizes (8): the outputs
    are read from the graph, the allowed sizes are told, and export and runs use sizes it accepts."""
    import torch
    from torch.export import Dim

    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path / "cache"))
    module = small_cnn().eval()
    side = Dim("side", min=8, max=512)
    program = torch.export.export(module, (torch.rand(2, 3, 32, 32),),
                                  dynamic_shapes=({0: Dim("batch", max=64), 2: 4 * side, 3: 4 * side},))
    path = tmp_path / "guarded.pt2"
    torch.export.save(program, str(path))
    model = load_model(path)
    image = model.spec.inputs[0]
    assert isinstance(image.shape[0], str) and isinstance(image.shape[2], str) and image.shape[2] == image.shape[3]
    assert model.spec.outputs[0].shape[0] == image.shape[0]  # the output's batch is the input's symbol
    assert any("sizes the program allows" in note and "32..2048" in note for note in model.notes)
    x = np.random.default_rng(3).random((3, 3, 40, 40), dtype=np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    for runtime in ("torch-cpu", "ort-cpu"):
        with rtpick.load(model, runtime, shapes={image.name: x.shape}) as session:
            np.testing.assert_allclose(next(iter(session.run({image.name: x}).values())), expected,
                                       rtol=1e-4, atol=1e-4)


@needs_torch
def test_an_onnx_export_that_froze_an_open_size_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TorchScript exporter bakes a torch.export'ed TransformerEncoder's sequence length into a Reshape; the
    export is checked at other sizes and the dynamo exporter's used instead (or the build says why)."""
    import torch
    from torch.export import Dim

    pytest.importorskip("onnxscript")
    monkeypatch.setenv("RTPICK_CACHE_DIR", str(tmp_path / "cache"))

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
            self.encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)

    torch.manual_seed(0)
    module = Encoder().eval()
    seq = Dim("seq", min=2, max=64)
    with torch.no_grad():
        program = torch.export.export(module, (torch.rand(2, 8, 16),),
                                      dynamic_shapes={"x": {0: Dim("batch", max=16), 1: seq}})
    path = tmp_path / "encoder.pt2"
    torch.export.save(program, str(path))
    model = load_model(path)
    x = np.random.default_rng(4).random((3, 11, 16), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    name = model.spec.inputs[0].name
    with rtpick.load(model, "ort-cpu", shapes={name: x.shape}) as session:
        np.testing.assert_allclose(next(iter(session.run({name: x}).values())), expected, rtol=1e-4, atol=1e-4)


def test_torchvision_without_torchvision_is_a_clear_error() -> None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    with pytest.raises(RtpickError, match="torchvision|torch"):
        load_model("torchvision:resnet18")


@needs_torch
def test_a_torchvision_name_is_the_same_model_in_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights come from a fixed seed (the caller's generator untouched): bench's workers, a later
    --from and serve must all load the model whose sha256 the results name. torchvision is faked here (a
    module with `models.get_model`) so the test runs where torchvision is not installed."""
    import importlib.machinery
    import sys
    import types

    import torch

    def get_model(name: str, weights: object = None) -> torch.nn.Module:
        assert weights is None
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                   torch.nn.Linear(4, 10))

    fake = types.ModuleType("torchvision")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    fake.models = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = load_model("torchvision:tiny")
    assert torch.rand(1) == before  # the caller's generator did not move
    second = load_model("torchvision:tiny")
    assert first.spec.sha256 == second.spec.sha256
    assert any("seed" in note for note in first.notes)


@needs_torch
def test_torch_module_with_a_symbolic_sequence_dim() -> None:
    """Specs with symbolic dims beyond the batch (a transformer's sequence) load, export and run."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(100, 16)
            self.proj = torch.nn.Linear(16, 4)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.proj(self.embed(ids) * mask.unsqueeze(-1).float())

    specs = [TensorSpec("ids", "int64", ("batch", "sequence")), TensorSpec("mask", "int64", ("batch", "sequence"))]
    model = load_model(Encoder(), input_specs=specs)
    assert model.spec.outputs[0].shape == ("batch", "output_dim1", 4)
    feeds = {"ids": np.arange(12, dtype=np.int64).reshape(2, 6), "mask": np.ones((2, 6), np.int64)}
    with rtpick.load(model, "torch-cpu", shapes={"ids": (2, 6)}) as eager, \
            rtpick.load(model, "ort-cpu", shapes={"ids": (2, 6)}) as exported:
        np.testing.assert_allclose(exported.run(feeds)["output"], eager.run(feeds)["output"], rtol=1e-5, atol=1e-6)
