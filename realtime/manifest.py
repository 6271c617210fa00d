"""The export folder's format, shared by the exporter (writes it) and the runtime (reads it).

``manifest.json`` maps a model kind to its entry: the ONNX file, its SHA-256 (with the ``.data``
weights), its I/O spec, fixed dims and whether its weights are random. The runtime reads this
module only; it never imports the exporter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from lart_stream.realtime.backends import ModelIO, TensorSpec, file_sha256

MANIFEST = "manifest.json"


def onnx_sha256(path: str | Path) -> str:
    """SHA-256 of an ONNX file and, when present, its ``.data`` weights (engine cache key input)."""
    path = Path(path)
    h = hashlib.sha256(file_sha256(path).encode())
    data = path.with_name(path.name + ".data")
    if data.is_file():
        h.update(file_sha256(data).encode())
    return h.hexdigest()


def io_to_json(io: ModelIO) -> dict[str, Any]:
    return {"kind": io.kind,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in io.inputs],
            "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in io.outputs]}


def io_from_json(d: Mapping[str, Any]) -> ModelIO:
    def spec(e: Mapping[str, Any]) -> TensorSpec:
        return TensorSpec(e["name"], tuple(e["shape"]), e.get("dtype", "float32"))

    return ModelIO(d["kind"], tuple(spec(e) for e in d["inputs"]), tuple(spec(e) for e in d["outputs"]))


def write_manifest(out_dir: str | Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    p = Path(out_dir) / MANIFEST
    old = json.loads(p.read_text()) if p.is_file() else {}
    old.update(entries)
    p.write_text(json.dumps(old, indent=2, default=str) + "\n")
    return p


def read_manifest(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{kind: entry}`` with ``entry["path"]`` (Path) and ``entry["model_io"]`` (ModelIO) added."""
    p = Path(out_dir) / MANIFEST
    if not p.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {out_dir}: run `lart-stream export --out {out_dir}` first")
    entries = json.loads(p.read_text())
    for kind, e in entries.items():
        e["path"] = Path(out_dir) / e["file"]
        if "io" in e:
            e["model_io"] = io_from_json(e["io"])
    return entries
