"""What both checkpoint readers (HMR 2.0, LART) share: telling a file torch.save wrote from
anything else, and turning torch.load's failures into one line without its own advice."""

from __future__ import annotations

import zipfile
from pathlib import Path

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
