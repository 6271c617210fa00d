"""ONNX export of the MViT appearance model (tiny config, non-square clip): onnxruntime-CPU outputs
equal PyTorch FP32 at 1 and 7 boxes (a dynamic box count, border-crossing boxes included), through
the same spec/check code as the other models; the export CLI names the model and refuses bad files."""

from __future__ import annotations

import pytest
import torch

from lart_stream.export import onnx_export as ox
from lart_stream.export.check import check_backend, format_report, fp32_copy, reference_outputs
from lart_stream.realtime.backends import BATCH, OnnxRuntimeBackend, io_from_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("mvit_onnx")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        spec = ox.SPEC_BUILDERS["mvit"]("tiny", height=64, width=80)
    entry = ox.export_model(spec, out)
    ox.write_manifest(out, {"mvit": entry})
    return {"dir": out, "spec": spec}


def test_onnxruntime_equals_pytorch_at_1_and_7_boxes(exported: dict) -> None:
    spec = exported["spec"]
    backend = OnnxRuntimeBackend(exported["dir"] / "mvit.onnx", spec.io)
    ref = fp32_copy(spec.module)
    rows = check_backend("mvit", backend, lambda x: reference_outputs(ref, x, spec.io.output_names),
                         lambda b: spec.example(b, seed=b), [1, 7])
    assert len(rows) == 4
    assert all(r.passed for r in rows), format_report(rows)
    assert max(r.max_abs for r in rows) < 1e-5  # FP32 against FP32: rounding only
    assert all(r.ref_scale > 1e-3 for r in rows)  # the comparison is not between zeros
    boxes = spec.example(7, seed=7)[1]
    assert (boxes[:, 1:3] < 0).any()  # some boxes start outside the clip


def test_io_and_manifest(exported: dict) -> None:
    spec = exported["spec"]
    cfg = spec.module.module.config
    man = ox.read_manifest(exported["dir"])["mvit"]
    io = man["model_io"]
    assert io.input_names == ("clip", "boxes") and io.output_names == ("features", "scores")
    assert io.inputs[0].shape == (1, 3, cfg.num_frames, 64, 80) and io.inputs[1].shape == (BATCH, 5)
    assert io.outputs[0].shape == (BATCH, cfg.feature_dim) and io.outputs[1].shape == (BATCH, 80)
    assert man["random_weights"] is True
    assert io_from_onnx(exported["dir"] / "mvit.onnx").inputs[1].shape == (BATCH, 5)


def test_export_cli_takes_an_mvit_checkpoint_and_refuses_garbage(tmp_path, capsys) -> None:
    from lart_stream.export.cli import main
    from lart_stream.models import mvit as M

    model = M.MViT(M.MViTConfig.tiny()).init_random_(1)
    ckpt = M.save_mvit(model, tmp_path / "mvit.pyth")
    assert main(["--out", str(tmp_path / "ok"), "--models", "mvit", "--size", "tiny", "--mvit-checkpoint", str(ckpt),
                 "--check", "--check-backends", "onnxruntime", "--batches", "3"]) == 0
    assert "parity: 2/2 outputs within tolerance" in capsys.readouterr().out
    bad = tmp_path / "bad.pyth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--out", str(tmp_path / "bad"), "--models", "mvit", "--mvit-checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a PyTorch checkpoint" in err and len(err.splitlines()) == 1
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 8, 64, 64), torch.zeros(0, 5))[0].shape == (0, 64)
