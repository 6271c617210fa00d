"""ONNX export of HMR 2.0 (tiny config) with a dynamic batch of crops, and the export CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lart_stream.export import onnx_export as ox
from lart_stream.export.check import check_backend, compare, format_report, fp32_copy, reference_outputs
from lart_stream.export.cli import main
from lart_stream.realtime.backends import BATCH, OnnxRuntimeBackend, io_from_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("hmr_onnx")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        spec = ox.hmr2_spec("tiny")
    entry = ox.export_model(spec, out)
    return {"dir": out, "spec": spec, "entry": entry}


def test_onnxruntime_equals_pytorch_at_1_and_7_crops(exported: dict) -> None:
    spec = exported["spec"]
    backend = OnnxRuntimeBackend(exported["dir"] / "hmr2.onnx", spec.io)
    ref = fp32_copy(spec.module)
    rows = check_backend("hmr2", backend, lambda x: reference_outputs(ref, x, spec.io.output_names),
                         lambda b: spec.example(b, seed=b), [1, 7])
    assert {r.output for r in rows} == {"global_orient", "body_pose", "betas", "pred_cam", "pred_cam_t", "appearance"}
    assert all(r.passed for r in rows), format_report(rows)
    assert max(r.max_abs / max(r.ref_scale, 1e-12) for r in rows) < 1e-5
    # rotation outputs are rotations: the comparison is not between zeros
    out = backend.run({"crops": spec.example(7, seed=1)[0].numpy()})
    r = out["body_pose"].reshape(-1, 3, 3)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)


def test_graph_has_a_symbolic_crop_batch(exported: dict) -> None:
    io = io_from_onnx(exported["dir"] / "hmr2.onnx", "hmr2")
    assert io.inputs[0].shape == (BATCH, 3, 256, 192)
    assert all(s.shape[0] == BATCH for s in io.outputs)
    assert exported["entry"]["random_weights"] is True


def test_compare_flags_real_differences() -> None:
    ref = np.array([1.0, -2.0, 0.5])
    assert compare(ref, ref + 1e-6, 1e-4, 1e-3)[4]
    assert not compare(ref, ref + [0, 0.01, 0], 1e-4, 1e-3)[4]
    assert not compare(ref, np.array([1.0, np.nan, 0.5]), 1e-4, 1e-3)[4]
    assert not compare(ref, ref[:2], 1e-4, 1e-3)[4]
    inf = np.array([0.0, -np.inf])
    assert compare(inf, inf.copy(), 1e-4, 1e-3)[4] and not compare(inf, np.array([0.0, -1e3]), 1e-4, 1e-3)[4]


def test_cli_export_check_tiny(tmp_path, capsys) -> None:
    rc = main(["--out", str(tmp_path), "--model-size", "tiny", "--models", "hmr2", "--check", "--batches", "1,3"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "RANDOM weights" in out.err
    assert "parity: 24/24 outputs within tolerance" in out.out
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["hmr2"]["file"] == "hmr2.onnx" and len(man["hmr2"]["sha256"]) == 64


@pytest.mark.parametrize("argv,msg", [
    (["--models", "bogus"], "--models: unknown ['bogus']"),
    (["--hmr-checkpoint", "/nonexistent.ckpt"], "--hmr-checkpoint: no such file"),
    (["--check", "--check-backends", "cuda"], "--check-backends: unknown ['cuda']"),
    (["--batches", "1,x"], "--batches: expected comma-separated integers"),
])
def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, msg) -> None:
    assert main(["--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
