"""The files a model is made of, and one hash over all of them, computed without loading the model.

Why: an ONNX model larger than 2 GB keeps its weights in external files next to it. A hash of the ``.onnx`` file
alone does not change when those weights do, so a cache keyed by it (an exported, fp16 or int8 copy) would hand
back a model built from the old weights, and a deploy file's sha256 pin would accept other weights. The hash here
covers the model file and every external data file it names, in the order first named.

Reading the graph (``onnx.load(..., load_external_data=False)``) parses protobuf only: it runs no code, so it is
safe to do before a deploy file's pin is checked. A ``.pt2`` is one file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.files import file_sha256, files_sha256
from rtpick.onnx_graphs import graphs

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


def check_source(text: str, bundled: Any) -> None:
    """Refuse, in one line, a model name rtpick will not open, before anything touches the file.

    `bundled` are the ``rtpick:<name>`` models that exist. A ``.pt``/``.pth`` checkpoint is a pickle and a
    TorchScript archive holds code: loading either can run code, so rtpick asks for a torch.export archive
    instead. Both are told by their bytes as well as by their name.
    """
    if text.startswith("rtpick:") and text not in bundled:
        raise RtpickError(f"there is no bundled model {text!r}; the bundled models are: {', '.join(sorted(bundled))}")
    path = Path(text)
    if any(len(os.fsencode(part)) > 255 for part in path.parts):
        raise RtpickError(f"model file name {text[:60]!r}... is longer than 255 bytes; no file can have that name")
    if not path.is_file() or path.suffix.lower() == ".pt2":
        return
    kind = _torch_archive_kind(path)
    if kind is None and path.suffix.lower() in PICKLE_SUFFIXES:
        kind = "PyTorch pickle"
    if kind is not None:
        raise RtpickError(f"{text} is a {kind}; rtpick does not load those (loading one can run code); save the model "
                          "with torch.export as .pt2 (torch.export.save(torch.export.export(model, example_inputs), "
                          "'model.pt2')) or export it to ONNX")


def _torch_archive_kind(path: Path) -> str | None:
    """What a torch file is, from its bytes, whatever its name: "TorchScript archive", "PyTorch pickle" or None.

    Why by content: TorchScript models ship as ``.jit``, ``.torchscript`` or ``.pt``, and ``torch.save`` writes
    any name; told by the suffix alone, such a file reached the ONNX parser and got "not a readable ONNX model".
    Reads the zip directory or the first two bytes only, never unpickles.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
        if path.suffix.lower() != ".onnx" and len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return "PyTorch pickle"  # a pickle's PROTO opcode, protocols 2-5 (torch.save's legacy format)
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
        return "TorchScript archive"
    if any(name.endswith("data.pkl") for name in names):
        return "PyTorch pickle"
    return None


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of a graph that can hold data: initializers and node attributes, subgraphs included."""
    for each in graphs(graph):
        yield from each.initializer
        for sparse in each.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in each.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors


def external_files(path: str | os.PathLike[str], proto: Any) -> list[Path]:
    """The external data files `proto` (loaded from `path`) names, each once; a missing or escaping one is an error."""
    import onnx

    folder = Path(path).resolve().parent
    found: dict[Path, None] = {}
    tensors = list(_tensors(proto.graph))
    for function in proto.functions:
        for node in function.node:
            tensors.extend(a.t for a in node.attribute if a.HasField("t"))
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise RtpickError(f"{path}: tensor {tensor.name!r} keeps its data at {location!r}, outside the model's "
                              "folder; rtpick reads external weights only from beside the model")
        if not target.is_file():
            raise RtpickError(f"{path}: the external weights file {location!r} (tensor {tensor.name!r}) is missing; "
                              "keep it beside the .onnx file")
        found.setdefault(target)
    return list(found)


def onnx_sha256(path: str | os.PathLike[str], proto: Any) -> str:
    """The hash of an ONNX model: its file and every external weights file it names."""
    return files_sha256([Path(path), *external_files(path, proto)])


def source_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 a loaded model from `path` will carry, computed without loading it (no torch, no runtime)."""
    path = Path(path)
    if path.suffix == ".pt2":
        return file_sha256(path)
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: the plain file hash, which no loadable model will match
        return file_sha256(path)
    return onnx_sha256(path, proto)
