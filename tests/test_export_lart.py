"""ONNX export of LART (tiny config): trailing window and causal streaming step.

onnxruntime-CPU outputs must equal PyTorch FP32 at 1 and 7 tracks, and the step graph, run frame
after frame with its own key/value cache fed back (past one window, so the ring wraps), must
equal the PyTorch streaming step ``LART.step`` on the same frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lart_stream.export import onnx_export as ox
from lart_stream.export.check import check_backend, format_report, fp32_copy, reference_outputs
from lart_stream.realtime.backends import BATCH, OnnxRuntimeBackend, TorchBackend


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lart_onnx")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        specs = {k: ox.SPEC_BUILDERS[k]("tiny") for k in ("lart_window", "lart_step")}
    entries = {k: ox.export_model(s, out) for k, s in specs.items()}
    ox.write_manifest(out, entries)
    return {"dir": out, "specs": specs}


@pytest.mark.parametrize("kind", ["lart_window", "lart_step"])
def test_onnxruntime_equals_pytorch_at_1_and_7_tracks(exported: dict, kind: str) -> None:
    spec = exported["specs"][kind]
    backend = OnnxRuntimeBackend(exported["dir"] / f"{kind}.onnx", spec.io)
    ref = fp32_copy(spec.module)
    rows = check_backend(kind, backend, lambda x: reference_outputs(ref, x, spec.io.output_names),
                         lambda b: spec.example(b, seed=b), [1, 7])
    assert len(rows) == 2 * len(spec.io.outputs)
    assert all(r.passed for r in rows), format_report(rows)
    assert max(r.max_abs for r in rows) < 1e-5  # FP32 against FP32: rounding only
    logits = [r for r in rows if r.output == "logits"]
    assert all(r.ref_scale > 1e-3 for r in logits)  # the comparison is not between zeros


def test_step_graph_streams_with_its_cache_like_the_pytorch_step(exported: dict) -> None:
    spec = exported["specs"]["lart_step"]
    backend = OnnxRuntimeBackend(exported["dir"] / "lart_step.onnx", spec.io)
    window = spec.module.model.config.window
    rows = spec.streaming_check(backend, batch=3)
    assert {r.output for r in rows} == {"logits", "k_cache_out", "v_cache_out", "key_bias_out"}
    assert all(r.batch == window + 3 for r in rows)  # ran past one window: the ring wrapped
    assert all(r.passed for r in rows), format_report(rows)


def test_step_check_catches_a_cache_that_is_not_fed_back(exported: dict) -> None:
    """The streaming check is not vacuous: a backend that forgets its cache every frame fails it."""
    spec = exported["specs"]["lart_step"]
    inner = OnnxRuntimeBackend(exported["dir"] / "lart_step.onnx", spec.io)
    model = spec.module.model

    class Forgetful:
        io = inner.io

        def describe(self) -> str:
            return "forgetful"

        def run(self, inputs: dict) -> dict:
            b = inputs["pose"].shape[0]
            k, v, bias = model.new_cache(b, model.config.window, model.config.max_people)
            return inner.run({**inputs, "k_cache": k.numpy(), "v_cache": v.numpy(), "key_bias": bias.numpy()})

    rows = spec.streaming_check(Forgetful(), batch=2, frames=4)
    assert not all(r.passed for r in rows if r.output == "logits")


def test_io_names_shapes_and_manifest(exported: dict) -> None:
    cfg = exported["specs"]["lart_step"].module.model.config
    man = ox.read_manifest(exported["dir"])
    step = man["lart_step"]["model_io"]
    assert step.input_names == ("pose", "joints", "appearance", "valid", "positions", "k_cache", "v_cache", "key_bias")
    assert step.output_names == ("logits", "k_cache_out", "v_cache_out", "key_bias_out")
    cache = (cfg.depth, BATCH, cfg.heads, cfg.window * cfg.max_people, cfg.dim_head)
    assert step.inputs[5].shape == cache and step.outputs[1].shape == cache
    assert man["lart_step"]["random_weights"] is True
    window = man["lart_window"]["model_io"]
    assert window.inputs[0].shape == (BATCH, cfg.window, cfg.max_people, 229)
    assert window.outputs[0].shape == (BATCH, cfg.window, cfg.ava_classes)
    # the ONNX files carry the same names and the symbolic track dimension
    from lart_stream.realtime.backends import io_from_onnx

    assert io_from_onnx(exported["dir"] / "lart_step.onnx").inputs[5].shape == cache


def test_torch_backend_runs_the_export_wrapper(exported: dict) -> None:
    """The torch backend calls the same wrapper the exporter traced (one forward signature)."""
    spec = exported["specs"]["lart_window"]
    backend = TorchBackend(fp32_copy(spec.module), spec.io, "cpu")
    x = spec.example(2, seed=5)
    out = backend.run({n: t.numpy() for n, t in zip(spec.io.input_names, x)})
    with torch.no_grad():
        want = spec.module.model.forward_window(*x).numpy()
    np.testing.assert_allclose(out["logits"], want, atol=1e-6)


def test_fp16_twin_for_tensorrt_11_runs_close_to_fp32(tmp_path) -> None:
    """The *.fp16.onnx twin (half weights and compute, FP32 I/O) that TensorRT >= 11 builds from."""
    import warnings

    from lart_stream.realtime.tensorrt_engine import fp16_onnx_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = ox.lart_window_spec("tiny")
    entry = ox.export_model(spec, tmp_path, fp16_twin=True)
    path = fp16_onnx_path(tmp_path / entry["file"])
    assert entry["fp16_file"] == path.name == "lart_window.fp16.onnx"
    import onnx

    weights = [t for t in onnx.load(str(path)).graph.initializer if t.data_type in (1, 10)]
    assert sum(t.data_type == 10 for t in weights) > len(weights) // 2  # mostly FP16 weights
    backend = OnnxRuntimeBackend(path, spec.io)
    ref = fp32_copy(spec.module)
    rows = check_backend("lart_window", backend, lambda x: reference_outputs(ref, x, spec.io.output_names),
                         lambda b: spec.example(b, seed=b), [2], precision="fp16")
    assert all(r.passed for r in rows) and rows[0].max_rel > 1e-6  # really computed in half


def test_runtime_resolves_backends_from_the_export_folder(exported: dict) -> None:
    from lart_stream.realtime.backends import describe_backends, resolve_exported

    spec = exported["specs"]["lart_window"]
    backend, reason = resolve_exported("auto", "lart_window", "cpu", exported["dir"], module=spec.module)
    assert backend.name == "onnxruntime" and backend.io == spec.io
    backend, reason = resolve_exported("torch", "lart_window", "cpu", exported["dir"], module=spec.module)
    assert backend.name == "torch" and reason == "requested"
    backend, reason = resolve_exported("auto", "lart_window", "cpu", None, module=spec.module, io=spec.io)
    assert backend.name == "torch" and "onnxruntime: no ONNX file" in reason
    assert describe_backends({"lart_window": (backend, reason)})[0].startswith("lart_window: torch (cpu, eager, fp32) [auto;")
