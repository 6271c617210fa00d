"""Reading checkpoint files safely: tensors and plain data for real, every other pickled class as an
inert stub (yacs CfgNode, Lightning callbacks, optimizer wrappers), so neither those packages nor
arbitrary code are needed. Shared by the HMR2 and MViT loaders."""

from __future__ import annotations

import _compat_pickle
import logging
import pickle
import zipfile
import types
from pathlib import Path
from typing import Any, Mapping

import torch

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint whose keys or shapes do not match the model."""


class _Stub(dict):
    """Stand-in for a class the checkpoint pickles outside its tensors (yacs CfgNode, Lightning callbacks)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def append(self, item: Any) -> None:
        self.__dict__.setdefault("items", []).append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)


# Globals a checkpoint may use for real: tensor/array rebuilders and plain data types. Nothing that
# reads files, imports or runs code; every other global becomes a _Stub.
_REAL_GLOBALS = {
    "builtins": {"set", "frozenset", "slice", "range", "complex", "bytearray", "bytes", "dict", "list", "tuple",
                 "int", "float", "bool", "str", "object"},
    "collections": {"OrderedDict", "defaultdict", "Counter", "deque"},
    "copyreg": {"_reconstructor"},
    "_codecs": {"encode"},
    "torch": {"Size", "device", "dtype", "finfo", "iinfo"},
    "torch._tensor": {"_rebuild_from_type_v2"},
    "torch.nn.parameter": {"Parameter"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"},
}


def _is_real_global(module: str, name: str) -> bool:
    if name in _REAL_GLOBALS.get(module, ()):
        return True
    if module == "torch._utils" and name.startswith("_rebuild"):
        return True
    if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
        return True
    return module == "numpy.dtypes"  # numpy 2 dtype classes


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 pickles name Python 2 modules (__builtin__, copy_reg): map them as pickle itself does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _CheckpointUnpickler(pickle.Unpickler):
    """Resolves tensor/array rebuilders and plain types for real (_REAL_GLOBALS), any other global to a ``_Stub``.

    Lightning checkpoints pickle the training config (a yacs CfgNode) and callback state next to
    the weights; this reads them without importing (or running) yacs, Lightning or anything else.
    """

    stubbed: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        module, name = _py3_name(module, name)
        if _is_real_global(module, name):
            return super().find_class(module, name)
        _CheckpointUnpickler.stubbed.add(f"{module}.{name}")
        return type(name, (_Stub,), {"__module__": "stub." + module})


_checkpoint_pickle = types.ModuleType("lart_stream_checkpoint_pickle")
_checkpoint_pickle.Unpickler = _CheckpointUnpickler  # type: ignore[attr-defined]
_checkpoint_pickle.load = lambda f, **kw: _CheckpointUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def show_keys(keys: list[str], limit: int = 12) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _torch_load(path: Path, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses pickled config/optimizer objects: read them as stubs instead
        _CheckpointUnpickler.stubbed = set()
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=False, pickle_module=_checkpoint_pickle)


# torch.save's legacy (pre-1.6) format pickles this magic number first (protocol 2: b"\x80\x02\x8a\x0a" + it).
_LEGACY_MAGIC = bytes.fromhex("6cfc9c46f9206aa85019")


def is_zip_checkpoint(path: Path) -> bool:
    """True for the zip archive torch.save writes by default (the only format that can be memory-mapped)."""
    return zipfile.is_zipfile(path)


def torch_file_problem(path: Path) -> str | None:
    """None when ``path`` looks like a file torch.save wrote, else why it is not one (for a user message)."""
    if is_zip_checkpoint(path):
        return None
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "the file is empty"
    if head[:1] == b"\x80" and _LEGACY_MAGIC in head:
        return None
    return "not a PyTorch checkpoint (neither a zip archive nor PyTorch's legacy pickle format)"


def load_failure(path: Path, what: str, exc: BaseException) -> str:
    """One line for a torch.load failure: the first line of the reason, without torch's advice to
    re-run with weights_only=False (which would run arbitrary code from the file)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "weights_only" in reason or "Weights only load failed" in reason:
        reason = "its pickled objects are not plain tensors and containers"
    return f"{what} {path}: cannot be read ({reason[:160]})"


def checked_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path when it is a file torch.save wrote; FileNotFoundError or CheckpointError
    (one line, naming ``what``) otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path}")
    problem = torch_file_problem(path)
    if problem is not None:
        raise CheckpointError(f"{what} checkpoint {path}: {problem}")
    return path


def load_pickled(path: str | Path, what: str) -> Any:
    """``torch.load`` of a checkpoint file: memory-mapped when it is a zip-format file (most of a
    training checkpoint is optimizer state we never touch), weights-only first, stubs for foreign
    classes. CheckpointError with one line for bytes that are not a torch checkpoint."""
    path = checked_file(path, what)
    try:
        obj = _torch_load(path, mmap=is_zip_checkpoint(path))  # the legacy format can't be memory-mapped
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise CheckpointError(load_failure(path, f"{what} checkpoint", exc)) from None
    if _CheckpointUnpickler.stubbed:
        log.info("%s checkpoint: non-tensor objects read as stubs: %s", what, sorted(_CheckpointUnpickler.stubbed))
    return obj


def shape_problems(want: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and mis-shaped keys, one phrase per kind (empty when they agree)."""
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shaped = [f"{k}: expected {list(want[k])}, got {list(got[k])}" for k in sorted(set(want) & set(got))
              if tuple(want[k]) != tuple(got[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {show_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {show_keys(unexpected)}")
    if shaped:
        problems.append(f"{len(shaped)} mis-shaped: {show_keys(shaped)}")
    return problems
