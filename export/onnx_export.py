"""ONNX export of our models, and inspection of a user's detector ONNX.

We use the classic TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17): it
takes these models as they are (no data-dependent control flow, SDPA maps to opset >= 14 ops) and
keeps the symbolic batch dimension we ask for. The dynamo exporter works too but renames dynamic
dims and tensors, which our ModelIO-by-name contract would then have to undo.

Files written by :func:`export_model` (one per model kind):

- ``hmr2.onnx``        crops (batch, 3, 256, 192) -> HMR2Output fields, dynamic batch of crops
- ``lart_window.onnx`` the LART trailing-window forward, dynamic number of tracks
- ``lart_step.onnx``   the LART causal streaming step with the key/value cache as explicit
                       inputs and outputs, dynamic number of tracks
- ``mvit.onnx``        MViTv2 backbone + AVA head: one clip (fixed T, H, W) and a dynamic number
                       of boxes -> RoI features (LART's appearance input) and 80 AVA scores
- ``*.fp16.onnx``      (optional) FP16 twins for TensorRT >= 11, which builds FP16 only from a
                       typed graph (realtime/tensorrt_engine.py)

``manifest.json`` records, per file, its ModelIO, the fixed sizes of the non-batch symbols, the
SHA-256 of the file, the config and whether the weights are random.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lart_stream.realtime.backends import BATCH, ModelIO, io_from_onnx
from lart_stream.realtime.model_io import LART_CACHE_PAIRS, hmr2_io, lart_step_io, lart_window_io, mvit_io  # noqa: F401
from lart_stream.realtime.manifest import (MANIFEST, io_from_json, io_to_json, onnx_sha256, read_manifest,  # noqa: F401
                                          write_manifest)

OPSET = 17


# ---------------------------------------------------------------------------------------------
# generic export


class TupleOutputs(nn.Module):
    """Calls ``fn(*inputs)`` and returns a plain tuple in ModelIO output order (exporters and CUDA
    graphs want tuples, not NamedTuples or dataclasses)."""

    def __init__(self, module: nn.Module, output_names: Sequence[str], method: str | None = None) -> None:
        super().__init__()
        self.module = module
        self.output_names = tuple(output_names)
        self.method = method

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fn = getattr(self.module, self.method) if self.method else self.module
        out = fn(*args)
        if isinstance(out, torch.Tensor):
            return (out,)
        if isinstance(out, Mapping):
            return tuple(out[n] for n in self.output_names)
        if hasattr(out, "_fields"):  # NamedTuple: pick by name, so order follows ModelIO
            return tuple(getattr(out, n) for n in self.output_names)
        if dataclasses.is_dataclass(out):
            return tuple(getattr(out, n) for n in self.output_names)
        return tuple(out)


class Fp16Twin(nn.Module):
    """The module in half precision with FP32 inputs and outputs (the FP16 ONNX for TensorRT >= 11)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.half()

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(*[a.half() if a.is_floating_point() else a for a in args])
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def export_onnx(module: nn.Module, example: Sequence[torch.Tensor], io: ModelIO, path: str | Path, *,
                opset: int = OPSET) -> Path:
    """Export ``module(*example) -> tuple`` with ``io``'s names and symbolic dims, then check it.

    A graph past protobuf's 2 GB (full-size HMR 2.0 in FP32: 2.5 GB) keeps its weights in one
    ``<name>.onnx.data`` file beside it (the exporter alone would write one file per tensor).
    """
    import shutil
    import tempfile

    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".export-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-as-int are expected and harmless here
            torch.onnx.export(module.eval(), tuple(example), str(tmp / "model.onnx"), input_names=list(io.input_names),
                              output_names=list(io.output_names), dynamic_axes=io.dynamic_axes(),
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(tmp / "model.onnx"))  # pulls any per-tensor external files back in
        weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
        if data.exists():
            data.unlink()
        if weight_bytes > (1 << 31) - (64 << 20):
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data.name, size_threshold=1024)
        else:
            onnx.save_model(model, str(path))
        del model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    onnx.checker.check_model(str(path))  # by path: works with external data
    got = io_from_onnx(path, io.kind)
    if got.input_names != io.input_names or got.output_names != io.output_names:
        raise RuntimeError(f"{path}: exported names {got.input_names} -> {got.output_names} differ from "
                           f"{io.input_names} -> {io.output_names} (an input unused by the graph is dropped)")
    return path


def example_inputs(io: ModelIO, dims: Mapping[str, int], *, seed: int = 0,
                   makers: Mapping[str, Callable[[tuple[int, ...], torch.Generator], torch.Tensor]] | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Random inputs with ``io``'s shapes (``makers`` override per input, e.g. masks or indices)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in io.inputs:
        shape = s.concrete(dims)
        if makers and s.name in makers:
            out.append(makers[s.name](shape, g))
        elif s.dtype == "bool":
            out.append(torch.rand(shape, generator=g) > 0.3)
        elif s.dtype.startswith("int"):
            out.append(torch.randint(0, 2, shape, generator=g, dtype=torch.int64))
        else:
            out.append(torch.randn(shape, generator=g))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# model kinds


@dataclass
class ExportSpec:
    """Everything export/check need for one model kind."""

    kind: str
    module: nn.Module  # called as module(*inputs) -> tuple in io.outputs order
    io: ModelIO
    fixed_dims: dict[str, int]  # values of the non-batch symbols (window length, cache length, ...)
    random_weights: bool
    config: dict[str, Any]
    input_makers: dict[str, Callable[[tuple[int, ...], torch.Generator], torch.Tensor]] = dataclasses.field(
        default_factory=dict)
    batch_independent: bool = True  # rows never mix: padding to a bucket is safe
    streaming_check: Callable[..., list] | None = None  # backend -> parity rows over several frames

    def example(self, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        return example_inputs(self.io, {**self.fixed_dims, BATCH: batch}, seed=seed, makers=self.input_makers)


def hmr2_spec(size: str = "tiny", checkpoint: str | Path | None = None, seed: int = 0) -> ExportSpec:
    """HMR 2.0 from models/hmr2.py: the official checkpoint when given, else random weights (loudly)."""
    from lart_stream.models import hmr2 as H

    cfg = H.HMR2Config.from_size(size)
    if checkpoint is not None:
        model = H.load_hmr2(checkpoint, cfg)
        random = False
    else:
        model = H.HMR2(cfg).init_random_(seed)
        random = True
        warnings.warn("hmr2: no checkpoint given, exporting RANDOM weights (outputs are meaningless)",
                      stacklevel=2)
    fields = list(H.HMR2Output._fields)
    io = hmr2_io(cfg, fields)
    return ExportSpec("hmr2", TupleOutputs(model.eval(), fields), io, {}, random,
                      {"size": size, **dataclasses.asdict(cfg)})


class LARTWindowExport(nn.Module):
    """``LART.forward_window`` with only the inputs the config has, positional, tuple out."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor]:
        d = dict(zip(self.input_names, args))
        return (self.model.forward_window(d["pose"], d.get("joints"), d.get("appearance"), d["valid"]),)


class LARTStepExport(nn.Module):
    """``LART.step`` with the key/value cache and the key bias as explicit inputs and outputs
    (``inplace=False``: the graph returns new caches instead of writing its inputs)."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d = dict(zip(self.input_names, args))
        return tuple(self.model.step(d["pose"], d.get("joints"), d.get("appearance"), d["valid"], d["positions"],
                                     d["k_cache"], d["v_cache"], d["key_bias"], inplace=False))


# the step's cache outputs and the inputs they feed on the next frame
def _lart_model(size: str, checkpoint: str | Path | None, seed: int) -> tuple[nn.Module, bool]:
    from lart_stream.models import lart as L

    if checkpoint is not None:
        model, _ = L.load_lart(checkpoint)
        return model.eval(), False
    if size not in ("official", "tiny"):
        raise ValueError(f"LART size must be 'official' or 'tiny', got {size!r}")
    torch.manual_seed(seed)  # LART initialises with torch's global generator
    cfg = L.LARTConfig.official_mvit() if size == "official" else L.LARTConfig.tiny()
    warnings.warn("lart: no checkpoint given, exporting RANDOM weights (outputs are meaningless)", stacklevel=3)
    return L.LART(cfg).eval(), True


def _positions(shape: tuple[int, ...], g: torch.Generator, window: int) -> torch.Tensor:
    return torch.randint(0, window, shape, generator=g, dtype=torch.int64)


def _key_bias(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Written-valid (0), masked (-1e3) and never-written (-inf) cache rows, mixed."""
    choice = torch.randint(0, 3, shape, generator=g)
    return torch.where(choice == 0, 0.0, torch.where(choice == 1, -1e3, float("-inf")))


def _given_or_built(model: nn.Module | None, size: str, checkpoint: str | Path | None,
                    seed: int) -> tuple[nn.Module, bool]:
    """The model passed in (its weights are the caller's: not flagged random), else one loaded or built."""
    if model is not None:
        return model, False
    return _lart_model(size, checkpoint, seed)


def lart_window_spec(size: str = "tiny", checkpoint: str | Path | None = None, seed: int = 0,
                     model: nn.Module | None = None) -> ExportSpec:
    model, random = _given_or_built(model, size, checkpoint, seed)
    cfg = model.config
    io = lart_window_io(cfg)
    return ExportSpec("lart_window", LARTWindowExport(model, io.input_names), io, {}, random,
                      {"size": size, **dataclasses.asdict(cfg)})


def lart_step_spec(size: str = "tiny", checkpoint: str | Path | None = None, seed: int = 0,
                   model: nn.Module | None = None) -> ExportSpec:
    model, random = _given_or_built(model, size, checkpoint, seed)
    cfg = model.config
    io = lart_step_io(cfg)
    makers = {"positions": lambda shape, g: _positions(shape, g, cfg.window), "key_bias": _key_bias}
    spec = ExportSpec("lart_step", LARTStepExport(model, io.input_names), io, {}, random,
                      {"size": size, **dataclasses.asdict(cfg)}, makers)
    spec.streaming_check = lambda backend, **kw: lart_streaming_rows(spec, backend, **kw)
    return spec


def lart_streaming_frames(spec: ExportSpec, frames: int, batch: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per-frame step inputs of ``batch`` tracks; frame t takes ring row t % window (it wraps)."""
    cfg = spec.module.model.config
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(frames):
        frame = {}
        for s in spec.io.inputs:
            if s.name in LART_CACHE_PAIRS.values():
                continue
            shape = s.concrete({BATCH: batch})
            if s.name == "positions":
                frame[s.name] = torch.full(shape, t % cfg.window, dtype=torch.int64)
            elif s.name == "valid":
                frame[s.name] = torch.rand(shape, generator=g) > 0.3
            else:
                frame[s.name] = torch.randn(shape, generator=g)
        out.append(frame)
    return out


def lart_streaming_rows(spec: ExportSpec, backend: Any, *, frames: int | None = None, batch: int = 3,
                        seed: int = 0, precision: str = "fp32") -> list:
    """The step backend run frame after frame with its own cache outputs fed back, against the
    PyTorch streaming step (``LART.step``, in place on its own cache) on the same frames. Runs
    past one window so the ring wraps around."""
    import copy

    from lart_stream.export.check import check_streaming

    model = copy.deepcopy(spec.module.model).float().cpu().eval()
    cfg = model.config
    frames = frames if frames is not None else cfg.window + 3
    k, v, bias = model.new_cache(batch, cfg.window, cfg.max_people)
    state = {"k": k, "v": v, "bias": bias}

    def reference(frame: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            logits, state["k"], state["v"], state["bias"] = model.step(
                frame["pose"], frame.get("joints"), frame.get("appearance"), frame["valid"], frame["positions"],
                state["k"], state["v"], state["bias"])
        return {"logits": logits.numpy(), "k_cache_out": state["k"].numpy().copy(),
                "v_cache_out": state["v"].numpy().copy(), "key_bias_out": state["bias"].numpy().copy()}

    init = {"k_cache": k.numpy().copy(), "v_cache": v.numpy().copy(), "key_bias": bias.numpy().copy()}
    return check_streaming("lart_step", backend, reference, lart_streaming_frames(spec, frames, batch, seed),
                           LART_CACHE_PAIRS, init, precision=precision)


def mvit_boxes(shape: tuple[int, ...], g: torch.Generator, height: int, width: int) -> torch.Tensor:
    """(n, 5) boxes on clip 0 in clip pixels: sizes up to 0.8 of the frame, a fifth of them
    starting outside it, so some cross the border."""
    n = shape[0]
    size = torch.tensor([width, height], dtype=torch.float32)
    xy = (torch.rand(n, 2, generator=g) * 1.2 - 0.2) * size
    wh = torch.rand(n, 2, generator=g) * 0.8 * size
    return torch.cat([torch.zeros(n, 1), xy, xy + wh], dim=1)


def mvit_spec(size: str = "tiny", checkpoint: str | Path | None = None, seed: int = 0,
              config: str | Path | None = None, height: int | None = None, width: int | None = None,
              model: nn.Module | None = None) -> ExportSpec:
    """MViT backbone + head (models/mvit.py): a PySlowFast mvit.pyth (+ mvit.yaml) when given, else
    random weights (loudly) of the tiny or the official MViTv2-L 40x3 config."""
    from lart_stream.models import mvit as MV

    random = False
    if model is None and checkpoint is not None:
        model, _ = MV.load_mvit(checkpoint, config)
    elif model is None:
        if size not in ("official", "tiny"):
            raise ValueError(f"MViT size must be 'official' or 'tiny', got {size!r}")
        cfg = MV.MViTConfig.official_l_40x3() if size == "official" else MV.MViTConfig.tiny()
        model = MV.MViT(cfg).init_random_(seed)
        random = True
        warnings.warn("mvit: no checkpoint given, exporting RANDOM weights (outputs are meaningless)", stacklevel=2)
    cfg = model.config
    io = mvit_io(cfg, height, width)
    h, w = io.inputs[0].shape[3], io.inputs[0].shape[4]
    makers = {"boxes": lambda shape, g: mvit_boxes(shape, g, h, w)}
    return ExportSpec("mvit", TupleOutputs(model.eval(), io.output_names), io, {}, random,
                      {"size": size, "height": h, "width": w, **dataclasses.asdict(cfg)}, makers)


SPEC_BUILDERS: dict[str, Callable[..., ExportSpec]] = {
    "hmr2": hmr2_spec, "lart_window": lart_window_spec, "lart_step": lart_step_spec, "mvit": mvit_spec}


# ---------------------------------------------------------------------------------------------
# files and manifest


def export_model(spec: ExportSpec, out_dir: str | Path, *, fp16_twin: bool = False, batch: int = 2) -> dict[str, Any]:
    """Write ``<kind>.onnx`` (and ``<kind>.fp16.onnx``); return its manifest entry."""
    out_dir = Path(out_dir)
    path = export_onnx(spec.module, spec.example(batch), spec.io, out_dir / f"{spec.kind}.onnx")
    entry: dict[str, Any] = {"file": path.name, "sha256": onnx_sha256(path), "io": io_to_json(spec.io),
                             "fixed_dims": spec.fixed_dims, "random_weights": spec.random_weights,
                             "config": spec.config}
    if fp16_twin:
        import copy

        from lart_stream.realtime.tensorrt_engine import fp16_onnx_path

        twin = Fp16Twin(copy.deepcopy(spec.module))
        p16 = export_onnx(twin, spec.example(batch), spec.io, fp16_onnx_path(path))
        entry["fp16_file"] = p16.name
    return entry


# ---------------------------------------------------------------------------------------------
# a user's detector ONNX


@dataclass(frozen=True)
class DetectorInfo:
    path: str
    input_name: str
    input_shape: tuple[Any, ...]
    output_name: str
    output_shape: tuple[Any, ...]
    output_format: str  # "yolo" or "nms" (or "" when the shape is dynamic)
    class_names: dict[int, str]
    license: str

    def summary(self) -> str:
        names = ", ".join(f"{k}={v}" for k, v in sorted(self.class_names.items())) or "unknown"
        lic = f"; license {self.license}" if self.license else ""
        return (f"{Path(self.path).name}: input {self.input_name} {list(self.input_shape)}, output "
                f"{self.output_name} {list(self.output_shape)} ({self.output_format or 'format decided at run time'}); "
                f"classes {names}{lic}")


def inspect_detector(path: str | Path) -> DetectorInfo:
    """Read a detector ONNX's I/O, output layout and (Ultralytics) metadata; ValueError if unusable."""
    import ast

    import onnx

    from lart_stream.realtime.onnx_detector import detect_format

    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    io = io_from_onnx(path, "detector")
    if len(io.inputs) != 1 or len(io.inputs[0].shape) != 4:
        raise ValueError(f"{path}: a detector needs one [1, 3, H, W] input, got "
                         f"{[(s.name, s.shape) for s in io.inputs]}")
    meta = {p.key: p.value for p in model.metadata_props}
    names: dict[int, str] = {}
    if "names" in meta:
        try:
            names = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        except (ValueError, SyntaxError, AttributeError):
            names = {}
    out = io.outputs[0]
    fmt = detect_format(tuple(out.shape)) if all(isinstance(d, int) for d in out.shape) else ""
    return DetectorInfo(str(path), io.inputs[0].name, io.inputs[0].shape, out.name, out.shape, fmt, names,
                        meta.get("license", ""))


def numpy_inputs(example: Sequence[torch.Tensor], io: ModelIO) -> dict[str, np.ndarray]:
    return {s.name: t.detach().cpu().numpy() for s, t in zip(io.inputs, example)}


__all__ = ["DetectorInfo", "ExportSpec", "Fp16Twin", "LARTStepExport", "LARTWindowExport", "LART_CACHE_PAIRS",
           "MANIFEST", "OPSET", "SPEC_BUILDERS", "TupleOutputs", "example_inputs", "lart_step_io", "lart_step_spec",
           "lart_window_io", "lart_window_spec", "onnx_sha256", "export_model", "export_onnx", "hmr2_io", "hmr2_spec", "inspect_detector",
           "io_from_json", "io_to_json", "mvit_boxes", "mvit_io", "mvit_spec", "numpy_inputs", "read_manifest",
           "write_manifest"]
