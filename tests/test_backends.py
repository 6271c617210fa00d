"""realtime/backends.py: I/O specs, backend choice, torch bucketing, onnxruntime parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lart_stream.realtime import backends as B
from lart_stream.realtime.backends import BATCH, Availability, ModelIO, TensorSpec


IO = ModelIO("lart_step", (TensorSpec("x", (BATCH, 6)), TensorSpec("cache", (2, 3, BATCH))),
             (TensorSpec("y", (BATCH, 5)), TensorSpec("cache_out", (2, 3, BATCH))))


class Mod(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(6, 5, generator=g))
        self.v = nn.Parameter(torch.randn(6, 3, generator=g))

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tanh(x @ self.w)  # (B, 5)
        c = 0.5 * cache + (x @ self.v).T[None]  # (2, 3, B): rows stay independent
        return y, c


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {"x": r.standard_normal((n, 6)).astype(np.float32), "cache": r.standard_normal((2, 3, n)).astype(np.float32)}


def _eager(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        y, c = Mod()(torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["cache"]))
    return y.numpy(), c.numpy()


# ---------------------------------------------------------------------------------------------
# ModelIO


def test_model_io_dims_and_errors() -> None:
    assert IO.dynamic_axes() == {"x": {0: BATCH}, "cache": {2: BATCH}, "y": {0: BATCH}, "cache_out": {2: BATCH}}
    assert IO.infer_dims({"x": (7, 6), "cache": (2, 3, 7)}) == {BATCH: 7}
    with pytest.raises(ValueError, match="dimension 'batch' is 7"):
        IO.infer_dims({"x": (7, 6), "cache": (2, 3, 5)})
    with pytest.raises(ValueError, match=r"expected shape \('batch', 6\), got \(7, 5\)"):
        IO.infer_dims({"x": (7, 5), "cache": (2, 3, 7)})
    with pytest.raises(ValueError, match="missing input 'cache'"):
        IO.infer_dims({"x": (7, 6)})
    assert IO.outputs[1].concrete({BATCH: 4}) == (2, 3, 4)


@pytest.mark.parametrize("n,want", [(0, 1), (1, 1), (3, 4), (8, 8), (9, 16), (32, 32), (33, None)])
def test_pick_bucket(n: int, want: int | None) -> None:
    assert B.pick_bucket(n, B.DEFAULT_BUCKETS) == want


# ---------------------------------------------------------------------------------------------
# choosing a backend

NO_TRT = (False, "tensorrt not installed")
CPU_ORT = ("AzureExecutionProvider", "CPUExecutionProvider")


def test_plan_auto_on_gpu_without_trt_or_ort_gpu_picks_torch_and_says_why() -> None:
    av = Availability(NO_TRT, CPU_ORT, (False, "onnx2torch not installed"), cuda=True)
    order, skipped = B.plan_backends("auto", "hmr2", "cuda", have_onnx=True, have_module=True, avail=av)
    assert order == ["torch"]
    assert skipped == ["tensorrt: tensorrt not installed",
                       "onnxruntime: only CPUExecutionProvider (no CUDA/TensorRT provider) on a CUDA device"]
    # asked for explicitly, onnxruntime on CPU is allowed even with a GPU present
    order, _ = B.plan_backends("onnxruntime", "hmr2", "cuda", have_onnx=True, have_module=True, avail=av)
    assert order == ["onnxruntime"]


def test_plan_prefers_tensorrt_then_ort_gpu() -> None:
    av = Availability((True, ""), ("CUDAExecutionProvider", "CPUExecutionProvider"), (True, ""), cuda=True)
    order, skipped = B.plan_backends("auto", "lart_step", "cuda", have_onnx=True, have_module=True, avail=av)
    assert order == ["tensorrt", "onnxruntime", "torch"] and skipped == []
    order, skipped = B.plan_backends("auto", "lart_step", "cuda", have_onnx=False, have_module=True, avail=av)
    assert order == ["torch"]
    assert all("no ONNX file" in s for s in skipped) and len(skipped) == 2


def test_plan_cpu_and_detector_cases() -> None:
    av = Availability(NO_TRT, CPU_ORT, (False, "onnx2torch not installed"), cuda=False)
    order, skipped = B.plan_backends("auto", "hmr2", "cpu", have_onnx=True, have_module=True, avail=av)
    assert order == ["onnxruntime", "torch"]
    assert skipped == ["tensorrt: needs a CUDA device (device is cpu)"]
    # a detector exists only as ONNX: torch needs onnx2torch
    order, skipped = B.plan_backends("auto", "detector", "cpu", have_onnx=True, have_module=False, avail=av)
    assert order == ["onnxruntime"] and skipped[-1] == "torch: onnx2torch not installed"
    order, skipped = B.plan_backends("torch", "hmr2", "cuda", have_onnx=False, have_module=True, avail=av)
    assert order == [] and skipped == ["torch: CUDA is not available to torch"]
    with pytest.raises(ValueError, match="backend must be one of"):
        B.plan_backends("tensorrtx", "hmr2", "cpu", have_onnx=True, have_module=True, avail=av)


def test_resolve_explicit_unavailable_raises_one_line(tmp_path) -> None:
    av = Availability(NO_TRT, CPU_ORT, (False, "x"), cuda=False)
    with pytest.raises(B.BackendUnavailable, match="tensorrt: needs a CUDA device"):
        B.resolve_backend("tensorrt", "hmr2", "cpu", onnx_path=tmp_path / "none.onnx", module=Mod(), io=IO, avail=av)


def _export(path) -> None:
    from lart_stream.export.onnx_export import export_onnx

    x = _inputs(2)
    export_onnx(Mod(), (torch.from_numpy(x["x"]), torch.from_numpy(x["cache"])), IO, path)


def test_resolve_auto_cpu_uses_onnxruntime_and_matches_torch(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    _export(path)
    backend, reason = B.resolve_backend("auto", "lart_step", "cpu", onnx_path=path, module=Mod, io=IO)
    assert backend.name == "onnxruntime"
    assert reason.startswith("auto; skipped tensorrt: needs a CUDA device")
    line = B.describe_backends({"lart_step": (backend, reason)})[0]
    assert line.startswith("lart_step: onnxruntime (CPUExecutionProvider, m.onnx) [auto; skipped tensorrt")
    for n in (1, 7):
        x = _inputs(n, seed=n)
        out = backend.run(x)
        assert isinstance(out["y"], np.ndarray) and list(out) == ["y", "cache_out"]
        y, c = _eager(x)
        np.testing.assert_allclose(out["y"], y, atol=1e-5)
        np.testing.assert_allclose(out["cache_out"], c, atol=1e-5)
    # torch tensors in -> torch tensors out
    tin = {k: torch.from_numpy(v) for k, v in _inputs(3).items()}
    assert isinstance(backend.run(tin)["y"], torch.Tensor)
    # without an ONNX file auto falls back to torch and says so
    backend, reason = B.resolve_backend("auto", "lart_step", "cpu", onnx_path=tmp_path / "missing.onnx",
                                        module=Mod, io=IO)
    assert backend.name == "torch" and f"no ONNX file at {tmp_path / 'missing.onnx'}" in reason


# ---------------------------------------------------------------------------------------------
# torch backend: bucketed static buffers (the CUDA-graph path with the capture swapped for eager)


class EagerGraph(B._Graph):
    """The real static-buffer loading of B._Graph, launched eagerly instead of replaying a capture."""

    instances = 0

    def __init__(self, fn, static_in, axes, pool=None) -> None:  # noqa: ANN001
        self.fn, self.static_in, self.axes = fn, static_in, list(axes)
        self.static_out = fn(*static_in)
        EagerGraph.instances += 1

    def launch(self) -> None:
        for dst, src in zip(self.static_out, self.fn(*self.static_in)):
            dst.copy_(src)  # a replay writes into the same output buffers


def test_torch_backend_buckets_pad_and_slice(monkeypatch) -> None:
    backend = B.TorchBackend(Mod(), IO, "cpu", cuda_graphs=False, buckets=(1, 4, 8))
    monkeypatch.setattr(backend, "cuda_graphs", True)
    monkeypatch.setattr(backend, "_graph_cls", EagerGraph)
    EagerGraph.instances = 0
    first = None
    for n in (3, 1, 4, 2, 0, 7, 9):
        x = _inputs(n, seed=10 + n)
        out = backend.run(x)
        y, c = _eager(x)
        assert out["y"].shape == (n, 5) and out["cache_out"].shape == (2, 3, n)
        np.testing.assert_allclose(out["y"], y, atol=1e-6)
        np.testing.assert_allclose(out["cache_out"], c, atol=1e-6)
        if n == 3:
            first = out["y"].copy()
    # buckets 4 (n=3,4,2), 1 (n=1,0), 8 (n=7); n=9 exceeds the buckets and ran eagerly
    assert EagerGraph.instances == 3 and len(backend._graphs) == 3
    # outputs are copies: later replays did not overwrite the first result
    np.testing.assert_allclose(first, _eager(_inputs(3, seed=13))[0], atol=1e-6)


def test_torch_backend_eager_cpu_describe_and_zero_rows() -> None:
    backend = B.TorchBackend(Mod(), IO, "cpu")
    assert backend.describe() == "torch (cpu, eager, fp32)"
    out = backend.run(_inputs(0))
    assert out["y"].shape == (0, 5) and out["cache_out"].shape == (2, 3, 0)
    with pytest.raises(B.BackendUnavailable, match="CUDA graphs need a CUDA device"):
        B.TorchBackend(Mod(), IO, "cpu", cuda_graphs=True)


# ---------------------------------------------------------------------------------------------
# onnx2torch constant handling (the selection logic, on a hand-built fx graph)


class OnnxReshape(nn.Module):  # same class names as onnx2torch's converters
    def forward(self, x, shape):  # noqa: ANN001
        return x.reshape(shape.tolist())


class OnnxBinaryMathOperation(nn.Module):
    def forward(self, a, b):  # noqa: ANN001
        return a * b


def test_host_constant_buffers_keeps_only_shape_arguments() -> None:
    import torch.fx as fx

    root = nn.Module()
    root.add_module("initializers", nn.Module())
    root.initializers.register_buffer("shape", torch.tensor([2, 3]))
    root.initializers.register_buffer("scale", torch.tensor(2.0))
    root.add_module("reshape", OnnxReshape())
    root.add_module("mul", OnnxBinaryMathOperation())
    g = fx.Graph()
    x = g.placeholder("x")
    shape = g.get_attr("initializers.shape")
    scale = g.get_attr("initializers.scale")
    r = g.call_module("reshape", (x, shape))
    g.output(g.call_module("mul", (r, scale)))
    gm = fx.GraphModule(root, g)
    assert B.host_constant_buffers(gm) == ["initializers.shape"]


def test_ort_tensorrt_provider_gets_our_profile_and_fp16(tmp_path) -> None:
    opts = B.ort_trt_options(IO, tmp_path)
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_profile_min_shapes"] == "x:1x6,cache:2x3x1"
    assert opts["trt_profile_opt_shapes"] == "x:8x6,cache:2x3x8"
    assert opts["trt_profile_max_shapes"] == "x:32x6,cache:2x3x32"
    static = ModelIO("detector", (TensorSpec("images", (1, 3, 640, 640)),), (TensorSpec("out", (1, 6, 8400)),))
    assert "trt_profile_min_shapes" not in B.ort_trt_options(static, tmp_path)


def test_host_buffers_stay_on_the_host_after_the_backend_moves_the_module(monkeypatch):
    from torch import nn

    from lart_stream.realtime.backends import ModelIO, TensorSpec, TorchBackend, keep_on_host

    class Reshaper(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("shape", torch.tensor([2, 3]))
            self.register_buffer("scale", torch.tensor(2.0))
            self.host_buffers = ("shape",)

        def forward(self, x):
            return (x * self.scale).reshape(self.shape.tolist())

    # No GPU here to watch .to("cuda") move the buffer, so check that the backend asks for it to move back.
    import lart_stream.realtime.backends as rb

    asked = []
    monkeypatch.setattr(rb, "keep_on_host", lambda module: asked.append(module) or keep_on_host(module))
    m = Reshaper()
    io = ModelIO("detector", (TensorSpec("x", (6,), "float32"),), (TensorSpec("y", (2, 3), "float32"),))
    backend = TorchBackend(m, io, "cpu", cuda_graphs=False)
    assert asked == [backend.module] and backend.module.shape.device.type == "cpu"
    out = backend.run({"x": np.arange(6, dtype=np.float32)})["y"]
    np.testing.assert_array_equal(out, (2 * np.arange(6, dtype=np.float32)).reshape(2, 3))
