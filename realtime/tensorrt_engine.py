"""TensorRT engines from our ONNX files: optimisation profiles, an engine cache and a runner.

Importable without TensorRT. What needs no TensorRT (profiles, cache keys, I/O binding plans, the
FP16 strategy per TensorRT version) is plain Python and tested on its own; ``build_engine`` and
``TensorRTRunner`` import ``tensorrt`` when called and raise :class:`TensorRTUnavailable` with a
one-line message when it is absent.

FP16: TensorRT 10 builds an FP32 ONNX with ``BuilderFlag.FP16`` (weak typing: TensorRT picks FP16
kernels where it likes). TensorRT 11 removed that flag: every network is strongly typed, so FP16
must be in the graph. For TensorRT >= 11 we therefore build from the FP16 ONNX that
``lart_stream.export.onnx_export`` writes next to the FP32 one (``*.fp16.onnx``: half weights and compute,
FP32 inputs and outputs).

Cache: ``<root>/<kind>-<gpu>-trt<version>-<key>.engine`` where key hashes the ONNX bytes, the GPU
name, the TensorRT version, the precision and the profiles; any change builds a new engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lart_stream.realtime.backends import BATCH, BackendUnavailable, ModelIO

DEFAULT_MAX_BATCH = 32  # crops for HMR 2.0, tracks for LART
DEFAULT_OPT_BATCH = 8


class TensorRTUnavailable(BackendUnavailable):
    """tensorrt (or CUDA) is missing; the message says what to install or use instead."""


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or TensorRTUnavailable with a one-line reason."""
    try:
        import tensorrt as trt  # noqa: PLC0415 (optional, GPU-only dependency)
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: `pip install tensorrt` on a CUDA machine "
            f"(or use --backend onnxruntime/torch) [{type(e).__name__}: {e}]") from e
    return trt


# ---------------------------------------------------------------------------------------------
# optimisation profiles


@dataclass(frozen=True)
class ShapeRange:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        shape = tuple(shape)
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile: a (min, opt, max) shape per input."""

    ranges: tuple[ShapeRange, ...]

    def __getitem__(self, name: str) -> ShapeRange:
        for r in self.ranges:
            if r.name == name:
                return r
        raise KeyError(name)

    def contains(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return all(r.contains(shapes[r.name]) for r in self.ranges)

    def as_dict(self) -> dict[str, list[list[int]]]:
        return {r.name: [list(r.min), list(r.opt), list(r.max)] for r in self.ranges}


def make_profile(io: ModelIO, *, min_batch: int = 1, opt_batch: int = DEFAULT_OPT_BATCH,
                 max_batch: int = DEFAULT_MAX_BATCH, fixed_dims: Mapping[str, int] | None = None) -> Profile:
    """The profile for ``io``: the batch dim ranges min..max (optimised for opt); every other
    symbolic dim must be fixed in ``fixed_dims`` (e.g. the LART window length)."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    fixed = dict(fixed_dims or {})
    missing = sorted({d for s in io.inputs for d in s.shape if isinstance(d, str) and d != BATCH} - set(fixed))
    if missing:
        raise ValueError(f"{io.kind}: give a value for symbolic dims {missing} (fixed_dims)")
    ranges = []
    for s in io.inputs:
        shapes = [s.concrete({**fixed, BATCH: b}) for b in (min_batch, opt_batch, max_batch)]
        ranges.append(ShapeRange(s.name, *shapes))
    return Profile(tuple(ranges))


# ---------------------------------------------------------------------------------------------
# I/O binding plans


@dataclass(frozen=True)
class Binding:
    name: str
    shape: tuple[int, ...]
    dtype: str
    is_input: bool


@dataclass(frozen=True)
class BindingPlan:
    """Which profile runs this call and the exact shape of every input and output buffer."""

    profile_index: int
    dims: Mapping[str, int]
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]


def plan_bindings(io: ModelIO, input_shapes: Mapping[str, Sequence[int]], profiles: Sequence[Profile]) -> BindingPlan:
    """Check the input shapes, pick the first profile that covers them, derive the output shapes."""
    dims = io.infer_dims(input_shapes)
    shapes = {k: tuple(int(v) for v in input_shapes[k]) for k in io.input_names}
    for i, p in enumerate(profiles):
        if p.contains(shapes):
            break
    else:
        allowed = "; ".join(f"profile {i}: " + ", ".join(f"{r.name} {r.min}..{r.max}" for r in p.ranges)
                            for i, p in enumerate(profiles))
        raise ValueError(f"{io.kind}: input shapes {shapes} are outside every optimisation profile ({allowed})")
    ins = tuple(Binding(s.name, shapes[s.name], s.dtype, True) for s in io.inputs)
    outs = tuple(Binding(s.name, s.concrete(dims), s.dtype, False) for s in io.outputs)
    return BindingPlan(i, dims, ins, outs)


# ---------------------------------------------------------------------------------------------
# precision per TensorRT version


def trt_major(version: str) -> int:
    m = re.match(r"(\d+)", version)
    if not m:
        raise ValueError(f"cannot read a TensorRT version from {version!r}")
    return int(m.group(1))


def fp16_strategy(trt_version: str) -> str:
    """"builder_flag" (TensorRT < 11: FP32 ONNX + BuilderFlag.FP16) or "strongly_typed"
    (TensorRT >= 11: the flag is gone, the FP16 ONNX is built as typed)."""
    return "builder_flag" if trt_major(trt_version) < 11 else "strongly_typed"


def fp16_onnx_path(onnx_path: str | Path) -> Path:
    """Where export.onnx_export writes the FP16 twin of an FP32 ONNX file."""
    p = Path(onnx_path)
    return p.with_name(p.name[: -len(".onnx")] + ".fp16.onnx") if p.name.endswith(".onnx") else p.with_suffix(".fp16.onnx")


# ---------------------------------------------------------------------------------------------
# engine cache


def engine_cache_key(onnx_sha256: str, gpu_name: str, trt_version: str, precision: str,
                     profiles: Sequence[Profile]) -> str:
    """16 hex chars identifying an engine; any input that changes the engine changes the key."""
    blob = json.dumps({"onnx": onnx_sha256, "gpu": gpu_name, "trt": trt_version, "precision": precision,
                       "profiles": [p.as_dict() for p in profiles]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


class EngineCache:
    """Serialized engines in one folder, named ``<kind>-<gpu>-trt<ver>-<key>.engine``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, gpu_name: str, trt_version: str, key: str) -> Path:
        return self.root / f"{_slug(kind)}-{_slug(gpu_name)}-trt{_slug(trt_version)}-{key}.engine"

    def lookup(self, kind: str, gpu_name: str, trt_version: str, key: str) -> Path | None:
        p = self.path(kind, gpu_name, trt_version, key)
        return p if p.is_file() and p.stat().st_size > 0 else None

    def store(self, kind: str, gpu_name: str, trt_version: str, key: str, engine: bytes) -> Path:
        """Write atomically (temp file + rename) so a crashed build never leaves a half engine."""
        p = self.path(kind, gpu_name, trt_version, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(engine)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return p


# ---------------------------------------------------------------------------------------------
# build (needs tensorrt)


def build_engine(onnx_path: str | Path, profiles: Sequence[Profile], *, precision: str = "fp16",
                 workspace_gib: float = 8.0) -> bytes:
    """Serialized engine for ``onnx_path``. For TensorRT >= 11 with fp16, pass the FP16 ONNX."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = precision == "fp16" and fp16_strategy(trt.__version__) == "strongly_typed"
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    for p in profiles:
        prof = builder.create_optimization_profile()
        for r in p.ranges:
            prof.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(prof)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    return bytes(engine)


def get_or_build_engine(onnx_path: str | Path, io: ModelIO, cache: EngineCache, profiles: Sequence[Profile], *,
                        precision: str = "fp16", gpu_name: str | None = None) -> Path:
    """Path of the cached engine for this ONNX, GPU, TensorRT version and profiles (built if absent)."""
    trt = require_tensorrt()
    import torch

    if gpu_name is None:
        if not torch.cuda.is_available():
            raise TensorRTUnavailable("TensorRT needs a CUDA GPU; torch sees none")
        gpu_name = torch.cuda.get_device_name()
    source = Path(onnx_path)
    if precision == "fp16" and fp16_strategy(trt.__version__) == "strongly_typed":
        source = fp16_onnx_path(onnx_path)
        if not source.is_file():
            raise TensorRTUnavailable(f"TensorRT {trt.__version__} builds FP16 only from an FP16 ONNX; "
                                      f"{source} is missing (run `lart-stream export --fp16-onnx`)")
    from lart_stream.realtime.manifest import onnx_sha256

    key = engine_cache_key(onnx_sha256(source), gpu_name, trt.__version__, precision, profiles)
    hit = cache.lookup(io.kind, gpu_name, trt.__version__, key)
    if hit is not None:
        return hit
    return cache.store(io.kind, gpu_name, trt.__version__, key, build_engine(source, profiles, precision=precision))


# ---------------------------------------------------------------------------------------------
# runner (needs tensorrt)


class TensorRTRunner:
    """Runs a serialized engine on torch CUDA tensors: inputs by name -> outputs by name.

    Output buffers are allocated per call from the binding plan (their shapes follow the batch).
    """

    def __init__(self, engine_path: str | Path, io: ModelIO, profiles: Sequence[Profile]) -> None:
        trt = require_tensorrt()
        import torch

        self._torch = torch
        self.io = io
        self.profiles = list(profiles)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {engine_path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        want = set(io.input_names) | set(io.output_names)
        if names != want:
            raise ValueError(f"{engine_path}: engine tensors {sorted(names)} differ from ModelIO {sorted(want)}")
        self._profile = 0
        self.stream = torch.cuda.Stream()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        plan = plan_bindings(self.io, {k: tuple(v.shape) for k, v in inputs.items()}, self.profiles)
        if plan.profile_index != self._profile:
            self.context.set_optimization_profile_async(plan.profile_index, self.stream.cuda_stream)
            self._profile = plan.profile_index
        dtypes = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64,
                  "int32": torch.int32, "bool": torch.bool}
        keep = []  # the contiguous inputs must live until the stream has run
        for b in plan.inputs:
            t = inputs[b.name].to(device="cuda", dtype=dtypes[b.dtype]).contiguous()
            keep.append(t)
            self.context.set_input_shape(b.name, b.shape)
            self.context.set_tensor_address(b.name, t.data_ptr())
        outs = {}
        for b in plan.outputs:
            got = tuple(self.context.get_tensor_shape(b.name))
            if got != b.shape:  # the plan and TensorRT's own shape inference must agree
                raise RuntimeError(f"{self.io.kind}.{b.name}: TensorRT says shape {got}, plan says {b.shape}")
            out = torch.empty(b.shape, dtype=dtypes[b.dtype], device="cuda")
            self.context.set_tensor_address(b.name, out.data_ptr())
            outs[b.name] = out
        self.stream.wait_stream(torch.cuda.current_stream())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.io.kind}: TensorRT execution failed")
        torch.cuda.current_stream().wait_stream(self.stream)
        return {name: outs[name] for name in self.io.output_names}


__all__ = [
    "Binding", "BindingPlan", "EngineCache", "Profile", "ShapeRange", "TensorRTRunner", "TensorRTUnavailable",
    "build_engine", "engine_cache_key", "fp16_onnx_path", "fp16_strategy", "get_or_build_engine",
    "make_profile", "plan_bindings", "require_tensorrt", "trt_major",
]
