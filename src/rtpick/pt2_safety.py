"""Refuse a ``.pt2`` archive that would run code when torch loads it, before torch ever sees it.

Why: ``torch.export.load`` is not a data reader. Inside it, a weight or constant marked ``use_pickle`` is read
with ``torch.load(..., weights_only=False)``, custom and opaque objects with ``pickle.loads``, a member that
``weights_only=True`` refuses is retried with ``weights_only=False``, symbolic shape expressions go through
``sympy.sympify`` (``eval``), the program's guards are ``exec``-ed when the module is built, and an
AOTInductor package loads a shared library. Any of these lets a crafted file run a command on the machine of
whoever opens it.

This module reads the archive with ``zipfile`` and ``json`` only (no torch, no unpickling) and raises
`RtpickError` for anything outside what a plain ``torch.export.save`` of a module with tensor weights writes:

- a weight or constant with ``use_pickle: true``, a custom (torchbind) or opaque object, a legacy weights or
  constants pickle, compiled code (AOTInductor, ``.so``/``.dll``/``.dylib``);
- a pickle (a bare one, or ``data.pkl`` inside a ``torch.save`` archive such as the sample inputs) that names
  any global beyond tensor rebuilding (checked opcode by opcode with ``pickletools.genops``, never loaded);
- a symbolic expression or guard that is not plain arithmetic over symbols, sizes and sympy's integer functions.
"""

from __future__ import annotations

import io
import json
import keyword
import pickletools
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError

# What `torch.load(weights_only=True)` needs for tensors, parameters and containers of them (a subset of
# torch's own allowlist: anything else is refused even where torch would accept it).
_STORAGES = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool", "ComplexFloat",
             "ComplexDouble", "QInt8", "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4", "Untyped")
_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
           "complex64", "complex128", "float", "double", "half", "long", "int", "short", "uint16", "uint32",
           "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "qint8", "quint8",
           "qint32", "cfloat", "cdouble")
SAFE_GLOBALS = frozenset(
    {("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("torch", "strided"),
     ("torch", "sparse_coo"), ("torch", "contiguous_format"), ("torch", "channels_last"),
     ("torch", "preserve_format"), ("torch", "Tensor"), ("torch.nn.parameter", "Parameter"),
     ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
     ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
     ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_meta_tensor_no_storage"),
     ("torch._tensor", "_rebuild_from_type_v2"), ("builtins", "set"), ("builtins", "frozenset"),
     ("builtins", "bytearray"), ("builtins", "complex"), ("builtins", "slice")}
    | {("torch", f"{kind}Storage") for kind in _STORAGES}
    | {("torch", dtype) for dtype in _DTYPES}
    | {("__builtin__", name) for name in ("set", "frozenset", "bytearray", "complex", "slice")}  # protocol <= 2
)
# Opcodes that name a global to import; EXT* look one up in copyreg's registry (never needed for tensors).
_GLOBAL_OPS = {"GLOBAL", "INST"}
_STACK_GLOBAL = "STACK_GLOBAL"
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}

# Names a symbolic expression (sympy's srepr form, torch's FloorDiv & co.) or a guard may use.
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor",
    "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan",
    "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "Piecewise", "ExprCondPair", "oo", "zoo", "nan",
    "Infinity", "NegativeInfinity", "One", "Zero", "NegativeOne", "Half", "BooleanTrue", "BooleanFalse", "true",
    "false", "True", "False", "None",
    # torch.utils._sympy.functions, as torch's deserializer names them
    "CeilDiv", "CeilToInt", "CleanDiv", "FloatPow", "FloatTrueDiv", "FloorDiv", "FloorToInt", "Identity",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "LShift", "ModularIndexing", "PowByNatural", "PythonMod",
    "RShift", "RoundDecimal", "RoundToInt", "ToFloat", "TruncToFloat", "TruncToInt", "Where",
})
_GUARD_NAMES = _SYMPY_NAMES | {"L", "size", "stride", "storage_offset", "dim", "math", "isnan", "inf", "floor",
                               "ceil", "and", "or", "not", "is", "in"}
_COMPILED = (".so", ".dll", ".dylib", ".pyd", ".cubin")
_MAX_PICKLE = 256 << 20  # a pickle larger than this is not tensor metadata


def check_pt2(path: str | Path) -> None:
    """Raise `RtpickError` (one line) unless `path` is a ``.pt2`` archive torch can load without running code."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise RtpickError(f"{path} is not a torch.export archive (not a zip file: {exc}); "
                          "save the program with torch.export.save") from exc
    with archive:
        try:
            _check_archive(path, archive)
        except RtpickError:
            raise
        except (OSError, zipfile.BadZipFile, ValueError, KeyError, RuntimeError, EOFError) as exc:
            raise RtpickError(f"{path} is a damaged torch.export archive ({type(exc).__name__}: {exc})") from exc


def _refuse(path: Path, what: str) -> RtpickError:
    return RtpickError(f"{path} is refused: {what}; loading it could run code. rtpick opens only .pt2 files "
                       "whose weights are plain tensors (or export the model to ONNX)")


def _check_archive(path: Path, archive: zipfile.ZipFile) -> None:
    names = archive.namelist()
    raw_tensor_files: set[str] = set()
    for name in names:
        lowered = name.lower()
        if "/data/aotinductor/" in f"/{lowered}" or lowered.endswith(_COMPILED):
            raise _refuse(path, f"it holds compiled code ({name})")
        stem = name.rsplit("/", 1)[-1]
        if stem.endswith("_config.json") and ("/data/weights/" in f"/{name}" or "/data/constants/" in f"/{name}"):
            raw_tensor_files |= _check_payload_config(path, archive, name)
        elif ("/models/" in f"/{name}" and stem.endswith(".json")) or stem == "serialized_exported_program.json":
            _check_program(path, archive, name)
    for name in names:
        folder, _, stem = name.rpartition("/")
        if name.endswith("/") or f"{folder}/{stem}" in raw_tensor_files:
            continue
        if folder.endswith(("data/weights", "data/constants")) and stem.endswith((".pt", ".pkl")):
            raise _refuse(path, f"its weights or constants are a pickle ({name})")
        _check_member(path, archive, name)


def _check_payload_config(path: Path, archive: zipfile.ZipFile, name: str) -> set[str]:
    """The weights/constants config: every entry a plain tensor; returns the members that hold raw tensor bytes."""
    try:
        config = json.loads(archive.read(name))
    except ValueError as exc:
        raise RtpickError(f"{path}: {name} is not valid JSON ({exc})") from exc
    entries = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise RtpickError(f"{path}: {name} is not a torch.export payload config")
    folder = name.rsplit("/", 1)[0]
    raw = set()
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise RtpickError(f"{path}: {name} has a malformed entry for {fqn!r}")
        if meta.get("use_pickle") is not False:
            raise _refuse(path, f"{fqn!r} is a pickled object (use_pickle in {name.rsplit('/', 1)[-1]})")
        file_name = str(meta.get("path_name", ""))
        if not (file_name.startswith("weight_") or file_name.startswith("tensor_")) or "/" in file_name:
            raise _refuse(path, f"{fqn!r} is not a plain tensor ({file_name or 'no file'}: a custom or opaque "
                                "object is unpickled)")
        raw.add(f"{folder}/{file_name}")
    return raw


def _check_program(path: Path, archive: zipfile.ZipFile, name: str) -> None:
    """Symbolic expressions (``sympify``-ed by torch) and guards (``exec``-ed) must be plain arithmetic."""
    try:
        program = json.loads(archive.read(name))
    except ValueError as exc:
        raise RtpickError(f"{path}: {name} is not valid JSON ({exc})") from exc
    for key, text in _strings_under(program):
        if key == "expr_str":
            _check_expression(path, text, _SYMPY_NAMES, "symbolic expression")
    guards = program.get("guards_code", []) if isinstance(program, dict) else []
    if not isinstance(guards, list):
        raise _refuse(path, "its guards are not a list of expressions")
    for guard in guards:
        _check_expression(path, str(guard), _GUARD_NAMES, "guard")


def _strings_under(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from _strings_under(child, str(child_key))
    elif isinstance(node, list):
        for child in node:
            yield from _strings_under(child, key)
    elif isinstance(node, str):
        yield key, node


def _check_expression(path: Path, text: str, allowed: frozenset[str], what: str) -> None:
    """Python tokens only: allowed names, keyword-argument names, numbers, plain quoted names, operators."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT,
                                    tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise _refuse(path, f"a {what} does not parse ({exc})") from exc
    for index, token in enumerate(tokens):
        after = tokens[index + 1].string if index + 1 < len(tokens) else ""
        if token.type == tokenize.NAME:
            if "__" in token.string or (keyword.iskeyword(token.string) and token.string not in allowed):
                raise _refuse(path, f"a {what} uses {token.string!r}: {text[:80]!r}")
            if token.string in allowed or _is_symbol_name(token.string):
                continue
            if after == "=" and token.string.isidentifier() and token.string.islower():
                continue  # a keyword argument's name: Symbol('s0', positive=True)
            raise _refuse(path, f"a {what} uses {token.string!r}: {text[:80]!r}")
        elif token.type == tokenize.STRING:
            body = token.string
            if body[:1] not in "'\"" or len(body) < 2 or body[-1] != body[0] or not _is_plain(body[1:-1]):
                raise _refuse(path, f"a {what} holds the string {body[:40]!r}: {text[:80]!r}")
        elif token.type not in (tokenize.NUMBER, tokenize.OP):
            raise _refuse(path, f"a {what} holds {token.string[:40]!r}: {text[:80]!r}")


def _is_symbol_name(name: str) -> bool:
    """torch's shape symbols: s0, s77, u3, zuf0, ps1 (letters then digits)."""
    letters = name.rstrip("0123456789")
    return letters != name and 0 < len(letters) <= 4 and letters.isalpha() and letters.islower()


def _is_plain(text: str) -> bool:
    return all(ch.isalnum() or ch in "_." for ch in text)


def _check_member(path: Path, archive: zipfile.ZipFile, name: str) -> None:
    """A member torch may unpickle: a ``torch.save`` zip (its ``.pkl`` members) or a bare pickle."""
    with archive.open(name) as handle:
        head = handle.read(4)
    if head.startswith(b"PK\x03\x04"):
        data = archive.read(name)
        try:
            inner = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            return  # not an archive torch could load either
        with inner:
            for member in inner.namelist():
                if member.endswith(".pkl"):
                    _check_pickle(path, f"{name}:{member}", _read_bounded(inner, member, path))
                elif member.lower().endswith(_COMPILED):
                    raise _refuse(path, f"it holds compiled code ({name}:{member})")
    elif head[:1] == b"\x80" or name.endswith((".pkl", ".pt", ".pth")):
        _check_pickle(path, name, _read_bounded(archive, name, path))


def _read_bounded(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    if archive.getinfo(name).file_size > _MAX_PICKLE:
        raise _refuse(path, f"{name} is a pickle of {archive.getinfo(name).file_size} bytes")
    return archive.read(name)


def _check_pickle(path: Path, name: str, data: bytes) -> None:
    """Every global a pickle names must rebuild tensors; walked with genops, never unpickled.

    The stream is checked opcode by opcode in order, so even when it turns out malformed further on, nothing an
    unpickler would have run before that point was let through. A bare member may hold several pickles back to
    back (the legacy ``torch.save`` format): each is checked until the bytes stop being a pickle.
    """
    stream = io.BytesIO(data)
    first = True
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            _check_one_pickle(path, name, stream)
        except ValueError:
            if first:
                return  # not a pickle at all: torch's unpickler stops at the same byte
            break
        first = False
        if stream.tell() == start:
            break


def _check_one_pickle(path: Path, name: str, stream: io.BytesIO) -> None:
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values pushed lately, enough to resolve STACK_GLOBAL's two strings
    for opcode, arg, _ in pickletools.genops(stream):
        op = opcode.name
        if op in _REFUSED_OPS:
            raise _refuse(path, f"{name} is a pickle using the copyreg extension registry ({op})")
        if op in _GLOBAL_OPS:
            module, _, attr = str(arg).partition(" ")
            _check_global(path, name, module, attr)
            recent.append(None)
        elif op == _STACK_GLOBAL:
            if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                raise _refuse(path, f"{name} is a pickle that imports a name it computes")
            _check_global(path, name, recent[-2], recent[-1])
            recent[-2:] = [None]
        elif op in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes) else None)
        elif op in _MEMO_PUT:
            memo[int(arg)] = recent[-1] if recent else None
        elif op == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif op in _MEMO_GET:
            recent.append(memo.get(int(arg)))
        elif op != "PROTO" and op != "FRAME":
            recent.append(None)
        del recent[:-4]


def _check_global(path: Path, name: str, module: str, attr: str) -> None:
    if (module, attr) not in SAFE_GLOBALS:
        raise _refuse(path, f"{name} is a pickle that imports {module}.{attr}, which torch.load(weights_only=True) "
                            "does not allow for tensors")
