"""bf16 weights cast once (models/precision.py) instead of autocast: same arithmetic, no fp32 copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lart_stream.models.hmr2 import FP32_READOUTS, HMR2, HMR2Config
from lart_stream.models.precision import MATMUL_MODULES, cast_matmul_weights_, fp32_matmul_weights, parameter_bytes
from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
from lart_stream.realtime.records import Detections, Frame

H, W = 480, 640
BOXES = np.array([[100, 60, 220, 400], [300, 20, 600, 470], [500, 300, 540, 380]], np.float32)
FIELDS = ("pose_vector", "global_orient", "body_pose", "betas", "pred_cam", "cam_t", "location", "appearance")
U_BF16 = 2.0 ** -8  # bf16 unit roundoff (8 significand bits)


def _frame_dets():
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    return Frame(0, 0.0, image), Detections(BOXES, np.ones(len(BOXES), np.float32), np.zeros(len(BOXES), np.int32))


def _lifter(**kw) -> HMRLifter:
    return HMRLifter.from_config(HMRLifterConfig(seed=3, fused=True, **kw))


def test_bf16_weights_within_bf16_rounding_of_fp32(monkeypatch):
    frame, dets = _frame_dets()
    ref = _lifter(precision="fp32")(frame, dets)
    cast = _lifter(precision="bf16")
    autocast = _lifter(precision="bf16", cast_weights=False)(frame, dets)

    def no_autocast(*a, **k):
        raise AssertionError("the bf16-weights path must not enter autocast")

    monkeypatch.setattr(torch, "autocast", no_autocast)
    out = cast(frame, dets)
    # Every cast layer on the path rounds its input and its weight once to bf16: a first-order bound
    # of 2 * layers * u relative to the output's scale.
    layers = sum(isinstance(m, MATMUL_MODULES) for m in cast.model.modules()) - len(FP32_READOUTS)
    for f in FIELDS:
        x, r = getattr(out, f).astype(np.float64), getattr(ref, f).astype(np.float64)
        err = np.abs(x - r).max()
        assert err <= 2 * layers * U_BF16 * np.abs(r).max(), f
    # bf16 really ran (fp32 would be exact here), and the backbone (appearance) does what autocast does
    assert np.abs(out.appearance - ref.appearance).max() > 0
    a = autocast.appearance.astype(np.float64)
    assert np.abs(out.appearance - a).max() <= U_BF16 * np.abs(a).max()
    assert "bf16 weights" in cast.backend_info


def test_no_fp32_weight_copy_on_the_bf16_path():
    lifter = _lifter(precision="bf16")
    assert lifter.weights_cast
    assert fp32_matmul_weights(lifter.model, FP32_READOUTS) == []
    assert fp32_matmul_weights(lifter.model)  # the readouts are the fp32 ones left
    cast_matmul_weights_(lifter.model, torch.bfloat16, keep=FP32_READOUTS)  # idempotent: one hook per layer
    assert all(len(m._forward_pre_hooks) == 1 for m in lifter.model.modules()
               if isinstance(m, MATMUL_MODULES) and m.weight.dtype == torch.bfloat16)
    # autocast path keeps fp32 weights (the comparison point)
    assert not _lifter(precision="bf16", cast_weights=False).weights_cast


def test_official_size_holds_under_half_a_percent_fp32():
    with torch.device("meta"):
        model = HMR2(HMR2Config.official())
    cast_matmul_weights_(model, torch.bfloat16, keep=FP32_READOUTS)
    size = parameter_bytes(model)
    assert size[torch.bfloat16] / 2 > 600e6  # the 630 M ViT-H weights and the head's matmuls
    assert size[torch.float32] < 0.005 * size[torch.bfloat16]
    assert fp32_matmul_weights(model, FP32_READOUTS) == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fp32_and_cpu_default_do_not_cast(precision):
    lifter = _lifter(precision=precision)
    assert lifter.weights_cast == (precision == "bf16")
    assert (lifter.model.backbone.blocks[0].attn.qkv.weight.dtype == torch.bfloat16) == (precision == "bf16")


def test_compiled_network_path_equals_plain_and_uses_the_cache_dir(tmp_path, monkeypatch):
    """The --compile path (here torch.compile with the 'eager' backend: the same call path, nothing
    compiled on a CPU) gives the plain path's numbers, records one first call per bucket, and points
    inductor's cache at the configured folder."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    frame, dets = _frame_dets()
    plain = _lifter(precision="bf16")(frame, dets)
    cache = tmp_path / "inductor"
    compiled = _lifter(precision="bf16", compile=True, compile_backend="eager", compile_cache_dir=str(cache))
    out = compiled(frame, dets)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(out, f), getattr(plain, f), err_msg=f)
    assert [r.what for r in compiled._fused.compile_log] == ["batch 3"]
    assert cache.is_dir() and __import__("os").environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache)
    assert "compiled" in compiled.backend_info
    with pytest.raises(ValueError, match="compile"):
        HMRLifter.from_config(HMRLifterConfig(compile=True))  # CPU default: eager path, not fused


def test_fp8_vit_linears_within_e4m3_rounding_of_bf16():
    """--fp8 (emulated on the CPU with the same quantised numbers): every ViT linear is e4m3 (no bf16
    copy left), outputs within a first-order e4m3 bound of the bf16 path, and not equal to it."""
    from lart_stream.models.precision import Fp8Linear

    frame, dets = _frame_dets()
    bf16 = _lifter(precision="bf16")(frame, dets)
    lifter = _lifter(precision="bf16", fp8=True)
    out = lifter(frame, dets)
    blocks = lifter.model.backbone.blocks
    fp8 = [m for m in blocks.modules() if isinstance(m, Fp8Linear)]
    assert len(fp8) == 4 * len(blocks) and not any(isinstance(m, torch.nn.Linear) for m in blocks.modules())
    assert all(m.weight_fp8.dtype == torch.float8_e4m3fn for m in fp8)
    u_e4m3 = 2.0 ** -4  # 3 mantissa bits
    layers = len(fp8)
    for f in FIELDS:
        x, r = getattr(out, f).astype(np.float64), getattr(bf16, f).astype(np.float64)
        assert np.abs(x - r).max() <= 2 * layers * u_e4m3 * np.abs(r).max(), f
    assert np.abs(out.appearance - bf16.appearance).max() > 0
    assert "fp8" in lifter.backend_info
    with pytest.raises(ValueError, match="fp8"):
        _lifter(precision="fp32", fp8=True)


def test_rowwise_quantisation_error_is_bounded():
    from lart_stream.models.precision import FP8_MAX, quantize_rowwise

    x = torch.randn(64, 96, dtype=torch.float64) * torch.logspace(-3, 3, 64, dtype=torch.float64)[:, None]
    q, scale = quantize_rowwise(x)
    back = q.double() * scale.double()
    # e4m3 rounds to 3 mantissa bits (relative 2^-4) above its normal range, absolute 2^-10 * scale below
    bound = 2.0 ** -4 * x.abs() + 2.0 ** -9 * scale.double()
    assert bool(((back - x).abs() <= bound).all())
    assert torch.allclose(q.double().abs().amax(dim=1), torch.full((64,), FP8_MAX, dtype=torch.float64))


def test_compile_record_says_warm_only_when_nothing_was_generated():
    from lart_stream.realtime.compiled import CompileRecord

    assert CompileRecord("batch 5", 1.0, fx_hits=0, fx_misses=0, aot_hits=1, aot_misses=0).warm
    assert CompileRecord("batch 5", 1.0, fx_hits=1, fx_misses=0, aot_hits=0, aot_misses=1).warm
    assert not CompileRecord("batch 5", 200.0, fx_hits=0, fx_misses=1, aot_hits=0, aot_misses=1).warm
    assert not CompileRecord("batch 5", 0.1, fx_hits=0, fx_misses=0, aot_hits=0, aot_misses=0).warm


def test_compile_batches_parse_and_only_those_buckets_compile():
    from lart_stream.realtime.compiled import parse_batches

    assert parse_batches("1-4,8") == (1, 2, 3, 4, 8) and parse_batches("") == () and parse_batches("5") == (5,)
    for bad in ("x", "4-2", "0"):
        with pytest.raises(ValueError, match="compile batches"):
            parse_batches(bad)
    frame, dets = _frame_dets()
    lifter = _lifter(precision="bf16", compile=True, compile_backend="eager", compile_batches=(1,))
    lifter(frame, dets)  # 3 people: bucket 3 runs uncompiled
    lifter(frame, dets[:1])  # 1 person: compiled
    assert [r.what for r in lifter._fused.compile_log] == ["batch 1"]


def test_whole_backbone_in_bf16_is_within_bf16_rounding_of_fp32():
    frame, dets = _frame_dets()
    ref = _lifter(precision="fp32")(frame, dets)
    lifter = _lifter(precision="bf16", backbone_bf16=True)
    out = lifter(frame, dets)
    assert all(p.dtype == torch.bfloat16 for p in lifter.model.backbone.parameters())
    assert lifter.model.smpl_head.decpose.weight.dtype == torch.float32
    # every module of the backbone now rounds (LayerNorms and residual adds too): count them all
    roundings = sum(1 for _ in lifter.model.modules())
    for f in FIELDS:
        x, r = getattr(out, f).astype(np.float64), getattr(ref, f).astype(np.float64)
        assert np.abs(x - r).max() <= 2 * roundings * U_BF16 * np.abs(r).max(), f
    assert "ViT residual bf16" in lifter.backend_info
    with pytest.raises(ValueError, match="backbone_bf16"):
        _lifter(precision="bf16", cast_weights=False, backbone_bf16=True)
