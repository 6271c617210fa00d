"""Inference backends: one interface over TensorRT, ONNX Runtime and PyTorch.

Every model the runtime calls (detector, HMR 2.0, LART trailing window, LART
streaming step) is described by a :class:`ModelIO`: named inputs and outputs
whose shapes may contain one symbolic *batch* dimension (crops for HMR, tracks
for LART). A :class:`Backend` runs such a model::

    outputs = backend.run({"crops": x})        # dict name -> array, in ModelIO order

Outputs follow the inputs: numpy in, numpy out; torch tensors in, torch
tensors out (on the device of the first input).

Backends:

- ``tensorrt``    FP16 engine built from the exported ONNX (realtime/tensorrt_engine.py), cached per
                  GPU, TensorRT version and ONNX hash. Needs the ``tensorrt`` package and CUDA.
- ``onnxruntime`` the exported ONNX with the best present provider: TensorRT, CUDA, then CPU.
- ``torch``       the PyTorch module itself. Eager on the CPU; on CUDA one CUDA graph per
                  batch-size bucket (inputs padded to the bucket, static buffers), optionally
                  behind ``torch.compile``.

:func:`resolve_backend` turns ``--backend auto|tensorrt|onnxruntime|torch`` into a backend and a
one-line reason; ``auto`` tries tensorrt -> onnxruntime -> torch and says why each was skipped.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

_log = logging.getLogger(__name__)

BACKEND_NAMES = ("tensorrt", "onnxruntime", "torch")
MODEL_KINDS = ("detector", "hmr2", "lart_window", "lart_step", "mvit")
BATCH = "batch"  # the symbolic dimension a backend may pad (crops or tracks)
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32)

Array = np.ndarray | torch.Tensor


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run this model here; the message says why in one line."""


# ---------------------------------------------------------------------------------------------
# I/O description shared by the exporters, the TensorRT builder and the backends


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output. ``shape`` entries are ints or symbol names (e.g. "batch")."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def batch_axis(self) -> int | None:
        return self.shape.index(BATCH) if BATCH in self.shape else None

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """Shape with every symbol replaced from ``dims``; KeyError names a missing symbol."""
        out = []
        for d in self.shape:
            if isinstance(d, str):
                if d not in dims:
                    raise KeyError(f"{self.name}: no value for symbolic dimension {d!r}")
                out.append(int(dims[d]))
            else:
                out.append(int(d))
        return tuple(out)


@dataclass(frozen=True)
class ModelIO:
    """Inputs and outputs of one exported model, in call order."""

    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export`` dynamic_axes: every symbolic dim of every tensor."""
        axes: dict[str, dict[int, str]] = {}
        for spec in (*self.inputs, *self.outputs):
            sym = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
            if sym:
                axes[spec.name] = sym
        return axes

    def infer_dims(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
        """Values of the symbolic dims from actual input shapes; ValueError on rank or size mismatch."""
        dims: dict[str, int] = {}
        for spec in self.inputs:
            if spec.name not in shapes:
                raise ValueError(f"{self.kind}: missing input {spec.name!r} (expected {list(self.input_names)})")
            got = tuple(int(v) for v in shapes[spec.name])
            if len(got) != len(spec.shape):
                raise ValueError(f"{self.kind}.{spec.name}: expected shape {spec.shape}, got {got}")
            for want, g in zip(spec.shape, got):
                if isinstance(want, str):
                    if dims.setdefault(want, g) != g:
                        raise ValueError(f"{self.kind}.{spec.name}: dimension {want!r} is {dims[want]} "
                                         f"in another input, got {g}")
                elif want != g:
                    raise ValueError(f"{self.kind}.{spec.name}: expected shape {spec.shape}, got {got}")
        return dims


def io_from_onnx(path: str | Path, kind: str = "detector") -> ModelIO:
    """ModelIO read from an ONNX file's graph inputs/outputs (symbolic dims kept by name)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    elem = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 11: "float64", 16: "bfloat16"}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                     for d in t.shape.dim)
        return TensorSpec(v.name, dims, elem.get(t.elem_type, str(t.elem_type)))

    return ModelIO(kind, tuple(spec(v) for v in model.graph.input if v.name not in init),
                   tuple(spec(v) for v in model.graph.output))


# ---------------------------------------------------------------------------------------------
# conversions: outputs follow inputs


def _first_tensor(inputs: Mapping[str, Array]) -> torch.Tensor | None:
    for v in inputs.values():
        if isinstance(v, torch.Tensor):
            return v
    return None


def to_numpy(x: Array) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_torch(x: Array, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device=device, dtype=dtype or t.dtype, non_blocking=True)


def _like(outputs: dict[str, Array], like: torch.Tensor | None) -> dict[str, Array]:
    if like is None:
        return {k: to_numpy(v) for k, v in outputs.items()}
    return {k: to_torch(v, like.device) for k, v in outputs.items()}


_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64,
                 "int32": torch.int32, "bool": torch.bool, "float64": torch.float64}


# ---------------------------------------------------------------------------------------------
# the interface


class Backend(abc.ABC):
    """Runs one model. ``name`` is one of BACKEND_NAMES; ``describe()`` is one line for start-up logs."""

    name: str
    io: ModelIO

    @abc.abstractmethod
    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Outputs by name, in ``io.output_names`` order."""

    def __call__(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return self.run(inputs)

    @abc.abstractmethod
    def describe(self) -> str: ...


# ---------------------------------------------------------------------------------------------
# torch


def pick_bucket(n: int, buckets: Sequence[int]) -> int | None:
    """Smallest bucket >= n (n = 0 runs in the smallest); None when n exceeds every bucket."""
    for b in sorted(buckets):
        if b >= max(n, 1):
            return b
    return None


def pad_batch(x: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``axis`` to ``size`` rows (padded rows are computed and then dropped)."""
    n = x.shape[axis]
    if n == size:
        return x
    pad_shape = list(x.shape)
    pad_shape[axis] = size - n
    return torch.cat([x, x.new_zeros(pad_shape)], dim=axis)


def cuda_stream_priority(high: bool) -> int:
    """The highest (most negative) or the lowest stream priority the CUDA device offers."""
    least, greatest = torch.cuda.Stream.priority_range()
    return greatest if high else least


class _Graph:
    """One captured CUDA graph with its static input and output buffers.

    ``axes[i]`` is the batch axis of input i (None: copied whole). Real rows are copied into the
    static buffers and the padding rows zeroed, so a replay sees exactly the padded batch.
    """

    def __init__(self, fn: Callable[..., Any], static_in: list[torch.Tensor], axes: Sequence[int | None],
                 warmup: int = 3, pool: Any = None) -> None:
        self.static_in = static_in
        self.axes = list(axes)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # cuBLAS/cuDNN workspaces and autotuning happen outside capture
                fn(*static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: another thread (the overlapped detector) may use the GPU while we capture.
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):
            self.static_out = fn(*static_in)

    def load(self, args: Sequence[torch.Tensor]) -> None:
        for dst, src, ax in zip(self.static_in, args, self.axes):
            if ax is None or src.shape[ax] == dst.shape[ax]:
                dst.copy_(src, non_blocking=True)
            else:
                n = src.shape[ax]
                dst.narrow(ax, 0, n).copy_(src, non_blocking=True)
                dst.narrow(ax, n, dst.shape[ax] - n).zero_()

    def launch(self) -> None:
        self.graph.replay()

    def replay(self, args: Sequence[torch.Tensor]) -> Any:
        self.load(args)
        self.launch()
        return self.static_out


class UncapturedGraph(_Graph):
    """A ``_Graph`` whose capture is replaced by plain calls: the static-buffer path runs on the CPU
    (parity tests, CPU benchmarks). ``launch`` recomputes into the static outputs."""

    def __init__(self, fn: Callable[..., Any], static_in: list[torch.Tensor], axes: Sequence[int | None],
                 warmup: int = 3, pool: Any = None) -> None:
        self.fn, self.static_in, self.axes = fn, static_in, list(axes)
        self.static_out = fn(*static_in)

    def launch(self) -> None:
        for dst, src in zip(self.static_out, self.fn(*self.static_in)):
            dst.copy_(src)


class SkippedGraph(UncapturedGraph):
    """Like ``UncapturedGraph`` but ``launch`` does nothing: what is left is the host-side cost."""

    def launch(self) -> None:
        pass


def _as_output_tuple(out: Any, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        out = (out,)
    elif isinstance(out, Mapping):
        out = tuple(out[n] for n in names)
    elif dataclasses.is_dataclass(out):
        out = tuple(getattr(out, n) for n in names)
    out = tuple(out)
    if len(out) != len(names):
        raise ValueError(f"module returned {len(out)} outputs, ModelIO names {len(names)}: {list(names)}")
    return out


class TorchBackend(Backend):
    """A PyTorch module called as ``module(*inputs in io order) -> outputs in io order``.

    On CUDA with ``cuda_graphs`` (the default there) each distinct padded input shape gets one
    captured graph: the batch dim is padded with zeros up to the next bucket, so at most
    ``len(buckets)`` graphs exist per model. Every row must be independent of the others (true for
    HMR crops and for LART tracks, which attend only within their own track), so padded rows never
    change real rows. Batches above the largest bucket run eagerly. ``precision`` "fp16"/"bf16" runs
    the module under autocast; inputs and outputs stay FP32.
    """

    name = "torch"
    _graph_cls: Callable[..., Any]  # set below; tests swap in an eager stand-in to check padding on CPU

    def __init__(self, module: nn.Module, io: ModelIO, device: str | torch.device = "cpu", *,
                 cuda_graphs: bool | None = None, compile: bool = False,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, precision: str = "fp32") -> None:
        self.io = io
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        keep_on_host(self.module)  # shape constants read with .tolist(): a device copy would break capture
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and not on_cuda:
            raise BackendUnavailable(f"torch: CUDA graphs need a CUDA device, got {self.device}")
        self.compiled = bool(compile)
        self.buckets = tuple(sorted(buckets))
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
        self.precision = precision
        self._fn: Callable[..., Any] = torch.compile(self.module, dynamic=False) if compile else self.module
        self._graphs: dict[tuple[tuple[int, ...], ...], _Graph] = {}
        self._pool: Any = None
        self._batch_axes = [s.batch_axis for s in io.inputs]
        self._out_axes = [s.batch_axis for s in io.outputs]

    def _forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            if self.precision == "fp32":
                out = self._fn(*args)
            else:
                dt = torch.float16 if self.precision == "fp16" else torch.bfloat16
                # cache_enabled=False: autocast's weight cast cache must not outlive a graph capture
                with torch.autocast(self.device.type, dtype=dt, cache_enabled=False):
                    out = self._fn(*args)
        return tuple(o.float() if o.is_floating_point() else o
                     for o in _as_output_tuple(out, self.io.output_names))

    def warmup(self, batch_sizes: Sequence[int], example: Mapping[str, Array]) -> None:
        """Capture graphs for these batch sizes now (start-up), using ``example`` for non-batch dims."""
        for n in batch_sizes:
            ex = {}
            for spec in self.io.inputs:
                t = to_torch(example[spec.name], self.device)
                ax = spec.batch_axis
                if ax is not None:
                    idx = torch.arange(n, device=self.device) % max(t.shape[ax], 1)
                    t = t.index_select(ax, idx) if t.shape[ax] else pad_batch(t, ax, n)
                ex[spec.name] = t
            self.run(ex)

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        like = _first_tensor(inputs)
        dims = self.io.infer_dims({k: tuple(v.shape) for k, v in inputs.items()})
        n = dims.get(BATCH)
        args = [to_torch(inputs[s.name], self.device, _TORCH_DTYPES.get(s.dtype)) for s in self.io.inputs]
        bucket = None
        if self.cuda_graphs:  # static shapes (no batch dim) get one graph per shape, unpadded
            bucket = pick_bucket(n, self.buckets) if n is not None else 0
        if bucket is None:
            if n == 0:  # run one zero row so outputs get their shapes, then drop it
                outs = self._forward(*[a if ax is None else pad_batch(a, ax, 1)
                                       for a, ax in zip(args, self._batch_axes)])
            else:
                outs = self._forward(*args)
        else:
            shapes = [a.shape if ax is None or n is None else (*a.shape[:ax], bucket, *a.shape[ax + 1:])
                      for a, ax in zip(args, self._batch_axes)]
            key = tuple(tuple(sh) for sh in shapes)
            graph = self._graphs.get(key)
            if graph is None:
                static = [pad_batch(a, ax, bucket).clone() if ax is not None and n is not None else a.clone()
                          for a, ax in zip(args, self._batch_axes)]
                if self._pool is None and self.device.type == "cuda":
                    # One memory pool for all of this model's graphs: they never replay concurrently,
                    # and outputs are cloned right after each replay.
                    self._pool = torch.cuda.graph_pool_handle()
                try:
                    graph = self._graphs[key] = self._graph_cls(self._forward, static, self._batch_axes,
                                                                pool=self._pool)
                except RuntimeError as exc:
                    # Some graphs can't be captured (e.g. onnx2torch's Split reads sizes back to the
                    # host): keep the model running eagerly rather than failing the stream.
                    _log.warning("torch backend: CUDA-graph capture failed (%s); running eagerly",
                                 _one_line(exc))
                    torch.cuda.synchronize(self.device)
                    self.cuda_graphs = False
                    return self.run(inputs)
            outs = graph.replay(args)
        result: dict[str, Array] = {}
        for spec, o, ax in zip(self.io.outputs, outs, self._out_axes):
            if ax is not None and n is not None and o.shape[ax] != n:
                o = o.narrow(ax, 0, n)
            result[spec.name] = o.clone() if bucket is not None else o  # graph buffers are reused
        return _like(result, like) if like is None or like.device != self.device else result

    def describe(self) -> str:
        if self.cuda_graphs:
            mode = f"CUDA graphs per batch bucket {list(self.buckets)}"
        else:
            mode = "eager"
        if self.compiled:
            mode = "torch.compile + " + mode
        return f"torch ({self.device}, {mode}, {self.precision})"


TorchBackend._graph_cls = _Graph


# ---------------------------------------------------------------------------------------------
# onnxruntime


def onnxruntime_providers() -> list[str]:
    """Providers this onnxruntime build offers ([] when onnxruntime is absent)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def choose_ort_providers(available: Sequence[str], device: str) -> list[str]:
    """Preferred provider order for ``device``: TensorRT, CUDA, then CPU (CPU only on a CPU device)."""
    want = ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        want = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in want if p in available]


def ort_trt_options(io: ModelIO, cache_dir: str | Path, min_batch: int = 1, opt_batch: int = 8,
                    max_batch: int = 32) -> dict[str, Any]:
    """TensorrtExecutionProvider options: FP16, engine cache, and the same 1..32 profile as our own
    TensorRT build (without explicit profiles the provider rebuilds an engine per new batch size)."""
    def shapes(b: int) -> str:
        return ",".join(f"{s.name}:{'x'.join(str(d) for d in s.concrete({BATCH: b}))}" for s in io.inputs)

    opts: dict[str, Any] = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache_dir)}
    if any(s.batch_axis is not None for s in io.inputs):
        opts.update(trt_profile_min_shapes=shapes(min_batch), trt_profile_opt_shapes=shapes(opt_batch),
                    trt_profile_max_shapes=shapes(max_batch))
    return opts


class OnnxRuntimeBackend(Backend):
    """An ONNX file run by onnxruntime with the best present provider for ``device``."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, io: ModelIO | None = None, device: str = "cpu",
                 providers: Sequence[str] | None = None, threads: int = 0,
                 engine_cache_dir: str | Path | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.io = io or io_from_onnx(self.path)
        self.providers = list(providers) if providers else choose_ort_providers(ort.get_available_providers(), device)
        if not self.providers:
            raise BackendUnavailable(f"onnxruntime: no usable provider for {device}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Idle ORT workers spin by default: fine alone, but in our pipeline they steal the cores the
        # detector, tracker and LART run on between calls (measured: HOG 34 -> 44 ms a frame).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        provider_args: list[Any] = list(self.providers)
        if "TensorrtExecutionProvider" in self.providers:
            cache = engine_cache_dir or self.path.parent / "engines" / "ort_trt"
            i = self.providers.index("TensorrtExecutionProvider")
            provider_args[i] = ("TensorrtExecutionProvider", ort_trt_options(self.io, cache))
        self.session = ort.InferenceSession(str(self.path), opts, providers=provider_args)
        names = [i.name for i in self.session.get_inputs()]
        if set(names) != set(self.io.input_names):
            raise ValueError(f"{self.path}: graph inputs {names} differ from ModelIO {list(self.io.input_names)}")
        self._dtypes = {s.name: np.dtype(s.dtype) if s.dtype in _TORCH_DTYPES else None for s in self.io.inputs}

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        like = _first_tensor(inputs)
        feed = {}
        for name in self.io.input_names:
            a = to_numpy(inputs[name])
            dt = self._dtypes.get(name)
            feed[name] = np.ascontiguousarray(a if dt is None else a.astype(dt, copy=False))
        outs = self.session.run(list(self.io.output_names), feed)
        return _like(dict(zip(self.io.output_names, outs)), like)

    def describe(self) -> str:
        return f"onnxruntime ({self.providers[0]}, {self.path.name})"


# ---------------------------------------------------------------------------------------------
# tensorrt


def tensorrt_status() -> tuple[bool, str]:
    """(available, why not). Looks for the package without importing CUDA libraries twice."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt not installed (pip install tensorrt, GPU machines only)"
    return True, ""


class TensorRTBackend(Backend):
    """An engine from the cache (built from the ONNX on first use), run on the current CUDA device."""

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, io: ModelIO, device: str = "cuda", *,
                 cache_dir: str | Path | None = None, max_batch: int = 32, opt_batch: int = 8,
                 fixed_dims: Mapping[str, int] | None = None) -> None:
        from lart_stream.realtime import tensorrt_engine as tb  # lazy: needs tensorrt at build/run time only

        if not str(device).startswith("cuda"):
            raise BackendUnavailable(f"tensorrt: needs a CUDA device, got {device}")
        self.io = io
        profile = tb.make_profile(io, min_batch=1, opt_batch=opt_batch, max_batch=max_batch,
                                  fixed_dims=dict(fixed_dims or {}))
        cache = tb.EngineCache(cache_dir or Path(onnx_path).parent / "engines")
        self.engine_path = tb.get_or_build_engine(onnx_path, io, cache, [profile])
        self.runner = tb.TensorRTRunner(self.engine_path, io, [profile])

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        like = _first_tensor(inputs)
        outs = self.runner.run({k: to_torch(v, "cuda") for k, v in inputs.items()})
        return _like(outs, like) if like is None or like.device.type != "cuda" else outs

    def describe(self) -> str:
        return f"tensorrt (FP16 engine {self.engine_path.name})"


# ---------------------------------------------------------------------------------------------
# a user's detector ONNX under torch (onnx2torch)

_HOST_ARG_MODULES = ("OnnxReshape", "OnnxResize", "OnnxSplit13", "OnnxSlice", "OnnxExpand", "OnnxTile")


def onnx2torch_status() -> tuple[bool, str]:
    if importlib.util.find_spec("onnx2torch") is None:
        return False, "onnx2torch not installed (pip install onnx2torch; it needs torchvision)"
    return True, ""


def load_onnx_as_torch(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Convert an ONNX graph to an ``nn.Module`` with onnx2torch (optional dependency).

    onnx2torch reads shape-like arguments (Split sizes, Reshape shapes, Resize scales, Slice
    bounds) back to the host with ``.tolist()``. Those are graph constants, so we keep their
    buffers on the CPU: the host read then never syncs the GPU and the module can be captured in
    a CUDA graph.
    """
    ok, why = onnx2torch_status()
    if not ok:
        raise BackendUnavailable(f"torch backend for an ONNX detector: {why}")
    try:
        import onnx2torch
    except ImportError as e:  # e.g. torchvision missing or broken
        raise BackendUnavailable(f"torch backend for an ONNX detector: onnx2torch failed to import ({e})") from e
    import onnx

    gm = onnx2torch.convert(onnx.load(str(path))).eval()
    gm.host_buffers = tuple(host_constant_buffers(gm))  # TorchBackend keeps these on the host too
    gm = gm.to(device)
    keep_on_host(gm)
    return gm


def keep_on_host(module: nn.Module) -> None:
    """Move the buffers named in ``module.host_buffers`` back to the CPU (after a ``.to(device)``)."""
    for name in getattr(module, "host_buffers", ()):
        set_buffer(module, name, get_buffer(module, name).cpu())


def host_constant_buffers(gm: Any) -> list[str]:
    """Buffers of an onnx2torch GraphModule used only as shape-like (non-first) arguments."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        users = list(node.users)
        ok = bool(users)
        for u in users:
            mod = gm.get_submodule(u.target) if u.op == "call_module" else None
            if mod is None or type(mod).__name__ not in _HOST_ARG_MODULES or (u.args and u.args[0] is node):
                ok = False
                break
        if ok:
            out.append(node.target)
    return out


def get_buffer(m: nn.Module, dotted: str) -> torch.Tensor:
    mod_name, _, attr = dotted.rpartition(".")
    return getattr(m.get_submodule(mod_name) if mod_name else m, attr)


def set_buffer(m: nn.Module, dotted: str, value: torch.Tensor) -> None:
    mod_name, _, attr = dotted.rpartition(".")
    owner = m.get_submodule(mod_name) if mod_name else m
    owner.register_buffer(attr, value)


# ---------------------------------------------------------------------------------------------
# choosing a backend


@dataclass(frozen=True)
class Availability:
    """What this process can run; ``probe()`` fills it, tests build it by hand."""

    tensorrt: tuple[bool, str]
    ort_providers: tuple[str, ...]
    onnx2torch: tuple[bool, str]
    cuda: bool

    @classmethod
    def probe(cls) -> "Availability":
        return cls(tensorrt_status(), tuple(onnxruntime_providers()), onnx2torch_status(),
                   torch.cuda.is_available())


def plan_backends(requested: str, model_kind: str, device: str, *, have_onnx: bool, have_module: bool,
                  avail: Availability) -> tuple[list[str], list[str]]:
    """Backends to try in order, and the reasons the others were skipped ("name: why").

    Pure logic (no imports, no GPU): ``resolve_backend`` walks the list and constructs.
    """
    if requested not in ("auto", *BACKEND_NAMES):
        raise ValueError(f"backend must be one of auto, {', '.join(BACKEND_NAMES)}; got {requested!r}")
    cuda = str(device).startswith("cuda")
    why: dict[str, str] = {}
    if not cuda:
        why["tensorrt"] = f"needs a CUDA device (device is {device})"
    elif not avail.tensorrt[0]:
        why["tensorrt"] = avail.tensorrt[1]
    elif not have_onnx:
        why["tensorrt"] = "no ONNX file (run `lart-stream export`)"
    if not avail.ort_providers:
        why["onnxruntime"] = "onnxruntime not installed"
    elif not have_onnx:
        why["onnxruntime"] = "no ONNX file (run `lart-stream export`)"
    elif not choose_ort_providers(avail.ort_providers, device):
        why["onnxruntime"] = f"no provider for {device}"
    elif cuda and requested == "auto" and choose_ort_providers(avail.ort_providers, device)[0] == "CPUExecutionProvider":
        # on a GPU a CPU session is slower than torch on the GPU: auto skips it, an explicit request gets it
        why["onnxruntime"] = "only CPUExecutionProvider (no CUDA/TensorRT provider) on a CUDA device"
    if not have_module:
        if model_kind != "detector":
            why["torch"] = "no PyTorch module given"
        elif not have_onnx:
            why["torch"] = "no detector ONNX file"
        elif not avail.onnx2torch[0]:
            why["torch"] = avail.onnx2torch[1]
    if "torch" not in why and cuda and not avail.cuda:
        why["torch"] = "CUDA is not available to torch"
    order = list(BACKEND_NAMES) if requested == "auto" else [requested]
    return [b for b in order if b not in why], [f"{b}: {why[b]}" for b in order if b in why]


def resolve_backend(requested: str, model_kind: str, device: str, *, onnx_path: str | Path | None = None,
                    module: nn.Module | Callable[[], nn.Module] | None = None, io: ModelIO | None = None,
                    engine_cache_dir: str | Path | None = None, cuda_graphs: bool | None = None,
                    compile: bool = False, precision: str = "fp32",
                    avail: Availability | None = None) -> tuple[Backend, str]:
    """Build the backend for one model and say why it was chosen.

    ``module`` is the PyTorch model (or a zero-argument factory, so no model is built when an engine
    is used); ``onnx_path`` its exported ONNX. For a user's detector ONNX the torch backend converts
    the file with onnx2torch. Explicit requests that cannot run raise BackendUnavailable with the
    reason; ``auto`` falls through tensorrt -> onnxruntime -> torch, also when construction fails.
    """
    if model_kind not in MODEL_KINDS:
        raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {model_kind!r}")
    avail = avail or Availability.probe()
    have_onnx = onnx_path is not None and Path(onnx_path).is_file()
    order, skipped = plan_backends(requested, model_kind, device, have_onnx=have_onnx,
                                   have_module=module is not None, avail=avail)
    if onnx_path is not None and not have_onnx:
        skipped = [s.replace("no ONNX file", f"no ONNX file at {onnx_path}") for s in skipped]
    for name in order:
        try:
            backend = _construct(name, model_kind, device, onnx_path, module, io, engine_cache_dir,
                                 cuda_graphs, compile, precision)
        except (BackendUnavailable, ImportError, RuntimeError, OSError, ValueError) as e:
            if requested != "auto":
                raise BackendUnavailable(f"{model_kind}: backend {name} failed: {_one_line(e)}") from e
            skipped.append(f"{name}: failed ({_one_line(e)})")
            continue
        how = "requested" if requested != "auto" else "auto"
        reason = how if not skipped else f"{how}; skipped {'; '.join(skipped)}"
        return backend, reason
    raise BackendUnavailable(f"{model_kind}: no backend can run it ({'; '.join(skipped)})")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _construct(name: str, model_kind: str, device: str, onnx_path: Any, module: Any, io: ModelIO | None,
               engine_cache_dir: Any, cuda_graphs: bool | None, compile: bool, precision: str) -> Backend:
    if name == "tensorrt":
        return TensorRTBackend(onnx_path, io or io_from_onnx(onnx_path, model_kind), device,
                               cache_dir=engine_cache_dir)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, io or io_from_onnx(onnx_path, model_kind), device,
                                  engine_cache_dir=engine_cache_dir)
    if module is None:  # only a detector ONNX gets here (plan_backends checked)
        mod = load_onnx_as_torch(onnx_path, device)
        io = io or io_from_onnx(onnx_path, model_kind)
    else:
        mod = module if isinstance(module, nn.Module) else module()
    if io is None:
        raise ValueError(f"{model_kind}: the torch backend needs a ModelIO")
    return TorchBackend(mod, io, device, cuda_graphs=cuda_graphs, compile=compile, precision=precision)


def resolve_exported(requested: str, model_kind: str, device: str, export_dir: str | Path | None, *,
                     module: nn.Module | Callable[[], nn.Module] | None = None,
                     **kw: Any) -> tuple[Backend, str]:
    """``resolve_backend`` for a model written by ``lart-stream export --out export_dir``: the ONNX
    path and ModelIO come from its manifest.json (no export dir or no entry: torch only)."""
    onnx_path, io = None, kw.pop("io", None)
    if export_dir is not None and (Path(export_dir) / "manifest.json").is_file():
        from lart_stream.realtime.manifest import read_manifest

        entry = read_manifest(export_dir).get(model_kind)
        if entry is not None:
            onnx_path, io = entry["path"], entry.get("model_io", io)
    return resolve_backend(requested, model_kind, device, onnx_path=onnx_path, module=module, io=io, **kw)


def describe_backends(resolved: Mapping[str, tuple[Backend, str]]) -> list[str]:
    """One start-up line per model: ``hmr2: torch (cuda, CUDA graphs ...) [auto; skipped tensorrt: ...]``."""
    return [f"{kind}: {b.describe()} [{reason}]" for kind, (b, reason) in resolved.items()]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


__all__ = [
    "Availability", "Backend", "BackendUnavailable", "BACKEND_NAMES", "DEFAULT_BUCKETS", "MODEL_KINDS",
    "ModelIO", "OnnxRuntimeBackend", "ort_trt_options", "TensorRTBackend", "TensorSpec", "TorchBackend", "describe_backends",
    "file_sha256", "host_constant_buffers", "io_from_onnx", "load_onnx_as_torch", "onnx2torch_status", "pick_bucket", "plan_backends",
    "resolve_backend", "resolve_exported", "tensorrt_status",
]
