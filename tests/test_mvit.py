"""models/mvit.py: PySlowFast's MViTv2 + AVA head, against an independent float64 computation
(tests/mvit_reference.py: loops over query/key positions, hand-written LayerNorm, rel-pos
interpolation and float32 index arithmetic, torchvision's roi_align kernel one sample at a time),
the folded (SDPA) attention against the materialised one, and strict loading.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch

from lart_stream.models import mvit as M
from lart_stream.models.mvit import MViT, MViTCheckpointError, MViTConfig, block_specs, load_mvit
import mvit_reference as R

EPS32 = float(np.finfo(np.float32).eps)


def _model(cfg: MViTConfig, seed: int = 0, dtype=torch.float64) -> MViT:
    m = MViT(cfg).init_random_(seed).to(dtype).eval()
    # bigger rel-pos tables than init (std 0.02) so their terms visibly move the scores
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".rel_pos_" in name:
                p.mul_(20.0)
    return m


def _clip(cfg: MViTConfig, B: int = 1, H: int = 64, W: int = 80, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, cfg.num_frames, H, W, generator=g).to(dtype)


# ----------------------------------------------------------------------------- one block, by hand


@pytest.mark.parametrize("dim_mul_in_att", [True, False])
@pytest.mark.parametrize("impl", ["reference", "folded"])
def test_width_changing_pooled_block_equals_hand_float64(dim_mul_in_att: bool, impl: str) -> None:
    """The block where q is pooled (stride 1,2,2) and the width changes (block 1 with
    DIM_MUL_IN_ATT, block 0's proj and block 1's pooling without), on a non-square grid."""
    cfg = MViTConfig.tiny(dim_mul_in_att=dim_mul_in_att, attention_impl=impl)
    model = _model(cfg)
    P = R.params64(model)
    g = torch.Generator().manual_seed(5)
    for i in (0, 1):
        spec = block_specs(cfg)[i]
        thw = (4, 16, 20)
        x = torch.randn(1, 1 + 4 * 16 * 20, spec.dim, generator=g, dtype=torch.float64)
        with torch.no_grad():
            got, got_thw = model.blocks[i](x, thw)
        want, want_thw = R.block_forward(P, f"blocks.{i}", x[0].numpy(), thw, heads=spec.num_heads,
                                         dim_out=spec.dim_out, dim_mul_in_att=dim_mul_in_att,
                                         stride_q=spec.stride_q, stride_kv=spec.stride_kv)
        assert tuple(got_thw) == tuple(want_thw) == ((4, 8, 10) if i == 1 else thw)
        np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-10 * np.abs(want).max())
    # the layouts differ where the reference says they do
    has_proj = [i for i, b in enumerate(model.blocks) if hasattr(b, "proj")]
    assert has_proj == ([1, 3] if dim_mul_in_att else [0, 2])


def test_rel_pos_index_keeps_the_reference_float32_rounding() -> None:
    """At MViTv2-L sizes the float32 index is one row below exact arithmetic at many positions;
    the model keeps it (and agrees with the hand float32 formula everywhere)."""
    for q, k in [(78, 10), (39, 10), (94, 12), (47, 12), (20, 10), (10, 10)]:
        idx = M.rel_pos_index(q, k)
        hand = np.array([[R.rel_index(i, j, q, k) for j in range(k)] for i in range(q)])
        np.testing.assert_array_equal(idx.numpy(), hand)
    assert (M.rel_pos_index(16, 6).numpy() != [[int(i - j * Fraction(16, 6) + 5 * Fraction(16, 6)) for j in range(6)]
                                                for i in range(16)]).sum() == 16  # the tiny test's case
    qr, kr = Fraction(1), Fraction(78, 10)
    exact = np.array([[int(i * qr - j * kr + 9 * kr) for j in range(10)] for i in range(78)])
    assert (M.rel_pos_index(78, 10).numpy() != exact).sum() > 50


# ----------------------------------------------------------------------------- whole tiny model


def _hand_model(model: MViT, clip: torch.Tensor, boxes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    cfg = model.config
    P = R.params64(model)
    x = torch.nn.functional.conv3d(clip, torch.from_numpy(P["patch_embed.proj.weight"]),
                                   torch.from_numpy(P["patch_embed.proj.bias"]), stride=cfg.patch_stride,
                                   padding=cfg.patch_padding).numpy()[0]
    thw = x.shape[1:]
    tok = np.concatenate([P["cls_token"][0], x.reshape(x.shape[0], -1).T])
    # the tiny schedule written out: (heads, dim_out, stride_q, stride_kv) per block
    widths = (16, 32, 32, 64) if cfg.dim_mul_in_att else (32, 32, 64, 64)
    kv = {(1, 4, 4): [(1, 4, 4), (1, 2, 2), (1, 2, 2), (1, 1, 1)],
          (1, 3, 3): [(1, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)]}[cfg.pool_kv_stride_adaptive]
    sched = list(zip((1, 2, 2, 4), widths, [(1, 1, 1), (1, 2, 2), (1, 1, 1), (1, 2, 2)], kv))
    for i, (heads, dim_out, sq, skv) in enumerate(sched):
        tok, thw = R.block_forward(P, f"blocks.{i}", tok, thw, heads=heads, dim_out=dim_out,
                                   dim_mul_in_att=cfg.dim_mul_in_att, stride_q=sq, stride_kv=skv)
    tok = R.layer_norm(tok, P["norm.weight"], P["norm.bias"])[1:]
    fmap = tok.T.reshape(-1, *thw).mean(axis=1)  # AvgPool3d over all 4 frames
    rois = R.roi_align_loop(fmap[None], boxes.numpy(), 7, 1 / 16)
    feat = rois.max(axis=(2, 3))
    logits = feat @ P["head.projection.weight"].T + P["head.projection.bias"]
    return feat, 1 / (1 + np.exp(-logits))


BOXES = [[0, 8.0, 6.0, 50.0, 60.0], [0, -20.0, 10.0, 30.0, 90.0], [0, 20.0, 20.0, 20.0, 20.0],
         [0, 60.0, 3.0, 95.0, 40.0]]


@pytest.mark.parametrize("dim_mul_in_att,kv", [(True, (1, 4, 4)), (False, (1, 4, 4)), (True, (1, 3, 3))])
def test_whole_tiny_model_on_non_square_clip_equals_hand_float64(dim_mul_in_att: bool, kv: tuple) -> None:
    """kv stride 3 makes the first blocks' h axis 16 queries x 6 keys, where the reference's
    float32 index differs from exact arithmetic (16 of 96 pairs)."""
    cfg = MViTConfig.tiny(dim_mul_in_att=dim_mul_in_att, pool_kv_stride_adaptive=kv)
    model = _model(cfg, seed=2)
    clip = _clip(cfg)  # 8 x 64 x 80: tokens 4 x 16 x 20, rel-pos w tables interpolated 31 -> 39 rows
    boxes = torch.tensor(BOXES, dtype=torch.float64)
    with torch.no_grad():
        fmap = model.backbone(clip)
        feat, scores = model(clip, boxes)
    assert fmap.shape == (1, 64, 4, 4, 5)
    assert feat.shape == (4, cfg.feature_dim) == (4, 64) and scores.shape == (4, 80)
    want_feat, want_scores = _hand_model(model, clip, boxes)
    np.testing.assert_allclose(feat.numpy(), want_feat, rtol=0, atol=1e-9 * np.abs(want_feat).max())
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=0, atol=1e-9)
    assert np.all(feat[2].numpy() == 0)  # zero-size box: empty RoIAlign grid, feature exactly 0


def test_folded_equals_reference_in_float32_within_rounding() -> None:
    """fp32 folded (SDPA) and fp32 materialised against the float64 forward: both errors are
    float32 rounding (bound: 2^7 eps32 of the output scale: 4 blocks of dot products over a few
    hundred terms; observed ~7 eps32), and they agree with each other to the same bound."""
    cfg = MViTConfig.tiny()
    m64 = _model(cfg, seed=4)
    clip = _clip(cfg, B=2, H=72, W=64, seed=9)
    boxes = torch.tensor([[0, 5.0, 5.0, 60.0, 70.0], [1, -8.0, 20.0, 40.0, 80.0]], dtype=torch.float64)
    with torch.no_grad():
        f64 = m64.backbone(clip)
        m32 = MViT(cfg).eval()
        m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
        fmaps = {impl: m32.set_attention_impl(impl).backbone(clip.float()) for impl in ("folded", "reference")}
        got = {impl: f.double() for impl, f in fmaps.items()}
        feats = {impl: m32.head(f, boxes.float())[0] for impl, f in fmaps.items()}
    bound = 2 ** 7 * EPS32 * float(f64.abs().max())
    for impl, out in got.items():
        err = float((out - f64).abs().max())
        assert 0 < err <= bound, (impl, err, bound)
    assert float((got["folded"] - got["reference"]).abs().max()) <= bound
    torch.testing.assert_close(feats["folded"], feats["reference"], rtol=0,
                               atol=2 ** 7 * EPS32 * float(feats["reference"].abs().max()))


def test_folded_catches_a_missing_rel_pos_term() -> None:
    """The comparison above is not vacuous: dropping the temporal term changes the output far
    beyond the bound."""
    cfg = MViTConfig.tiny()
    m = _model(cfg, seed=4).float()
    clip = _clip(cfg, dtype=torch.float32)
    with torch.no_grad():
        ref = m.backbone(clip)
        for b in m.blocks:
            b.attn.rel_pos_t = None
        changed = m.backbone(clip)
    assert float((changed - ref).abs().max()) > 100 * 2 ** 7 * EPS32 * float(ref.abs().max())


def test_head_refuses_a_clip_of_the_wrong_length() -> None:
    cfg = MViTConfig.tiny()
    m = MViT(cfg).init_random_(0).eval()
    with pytest.raises(ValueError, match="temporal pool"):
        m(torch.zeros(1, 3, 12, 64, 64), torch.tensor([[0, 1.0, 1, 30, 30]]))


# ----------------------------------------------------------------------------- configs and loading


K400_L_YAML = """
DATA:
  NUM_FRAMES: 40
  SAMPLING_RATE: 3
  TRAIN_CROP_SIZE: 312
  TEST_CROP_SIZE: 312
  INPUT_CHANNEL_NUM: [3]
  MEAN: [0.485, 0.456, 0.406]
  STD: [0.229, 0.224, 0.225]
MVIT:
  ZERO_DECAY_POS_CLS: False
  USE_ABS_POS: False
  REL_POS_SPATIAL: True
  REL_POS_TEMPORAL: True
  DEPTH: 48
  NUM_HEADS: 2
  EMBED_DIM: 144
  PATCH_KERNEL: (3, 7, 7)
  PATCH_STRIDE: (2, 4, 4)
  PATCH_PADDING: (1, 3, 3)
  MLP_RATIO: 4.0
  QKV_BIAS: True
  DROPPATH_RATE: 0.75
  NORM: "layernorm"
  MODE: "conv"
  CLS_EMBED_ON: True
  DIM_MUL: [[2, 2.0], [8, 2.0], [44, 2.0]]
  HEAD_MUL: [[2, 2.0], [8, 2.0], [44, 2.0]]
  POOL_KVQ_KERNEL: [3, 3, 3]
  POOL_KV_STRIDE_ADAPTIVE: [1, 8, 8]
  POOL_Q_STRIDE: [%s]
  DROPOUT_RATE: 0.0
  DIM_MUL_IN_ATT: True
  RESIDUAL_POOLING: True
MODEL:
  NUM_CLASSES: 80
  ARCH: mvit
  MODEL_NAME: MViT
  HEAD_ACT: sigmoid
  ACT_CHECKPOINT: True
DETECTION:
  ENABLE: True
""" % ", ".join(f"[{i}, 1, {2 if i in (2, 8, 44) else 1}, {2 if i in (2, 8, 44) else 1}]" for i in range(48))


@pytest.mark.parametrize("dim_mul_in_att", [True, False])
def test_official_l_from_yaml_builds_on_meta_with_the_reference_shapes(dim_mul_in_att: bool) -> None:
    text = K400_L_YAML.replace("DIM_MUL_IN_ATT: True", f"DIM_MUL_IN_ATT: {dim_mul_in_att}")
    cfg = MViTConfig.from_slowfast_yaml(text)
    assert cfg == MViTConfig.official_l_40x3(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                             dim_mul_in_att=dim_mul_in_att)
    with torch.device("meta"):
        model = MViT(cfg)
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # exactly PySlowFast's module names (shared/reference/appearance_backbone.md section 2), no others
    import re

    pattern = re.compile(r"(patch_embed\.proj\.(weight|bias)|cls_token|norm\.(weight|bias)|head\.projection\.(weight|bias)"
                         r"|blocks\.\d+\.((norm1|norm2|proj|mlp\.fc1|mlp\.fc2|attn\.qkv|attn\.proj|attn\.norm_[qkv])\.(weight|bias)"
                         r"|attn\.pool_[qkv]\.weight|attn\.rel_pos_[hwt]))")
    assert [k for k in sd if not pattern.fullmatch(k)] == []
    assert len(sd) == 7 + 48 * (2 * 9 + 3 + 3) + 3 * 2  # 9 weight+bias modules, 3 pools, 3 tables; 3 projs
    assert cfg.feature_dim == 1152 and sd["head.projection.weight"] == (80, 1152)
    assert sd["patch_embed.proj.weight"] == (144, 3, 3, 7, 7) and sd["cls_token"] == (1, 1, 144)
    rows = {i: sd[f"blocks.{i}.attn.rel_pos_h"][0] for i in (0, 1, 2, 7, 8, 44, 45, 47)}
    assert rows == {0: 155, 1: 155, 2: 77, 7: 77, 8: 37, 44: 37, 45: 17, 47: 17}
    assert all(sd[f"blocks.{i}.attn.rel_pos_t"] == (39, 72) for i in range(48))
    assert all(sd[f"blocks.{i}.attn.pool_{n}.weight"] == (72, 1, 3, 3, 3) for i in range(48) for n in "qkv")
    projs = sorted(int(k.split(".")[1]) for k in sd if k.endswith(".proj.weight") and k.count(".") == 3)
    assert projs == ([2, 8, 44] if dim_mul_in_att else [1, 7, 43])
    first = projs[0]
    assert sd[f"blocks.{first}.proj.weight"] == (288, 144)
    assert sd["blocks.2.attn.qkv.weight"] == ((3 * 288, 144) if dim_mul_in_att else (3 * 288, 288))
    # the other layout's weights are refused, naming the layout and the key that tells
    with torch.device("meta"):
        other = MViT(dataclasses.replace(cfg, dim_mul_in_att=not dim_mul_in_att))
    with pytest.raises(MViTCheckpointError, match=rf"DIM_MUL_IN_ATT={not dim_mul_in_att}.*blocks\.{1 if dim_mul_in_att else 2}\.proj\.weight present"):
        M.check_mvit_state(model, other.state_dict(), "test")
    blocks = {(i, s.num_heads, s.stride_kv) for i, s in enumerate(block_specs(cfg)) if i in (0, 2, 8, 44)}
    assert blocks == {(0, 2, (1, 8, 8)), (2, 4, (1, 4, 4)), (8, 8, (1, 2, 2)), (44, 16, (1, 1, 1))}


def test_yaml_defaults_are_pyslowfasts_and_unsupported_options_are_named() -> None:
    text = K400_L_YAML.replace("  USE_ABS_POS: False\n", "").replace("  DIM_MUL_IN_ATT: True\n", "")
    with pytest.raises(MViTCheckpointError, match=r"MVIT\.USE_ABS_POS=True"):
        MViTConfig.from_slowfast_yaml(text)
    cfg = MViTConfig.from_slowfast_yaml(text.replace("MVIT:\n", "MVIT:\n  USE_ABS_POS: False\n"))
    assert cfg.dim_mul_in_att is False  # PySlowFast's default, not this class's
    with pytest.raises(MViTCheckpointError, match=r"DETECTION\.ENABLE=False"):
        MViTConfig.from_slowfast_yaml(K400_L_YAML.replace("DETECTION:\n  ENABLE: True", "DETECTION:\n  ENABLE: False"))


def test_tiny_checkpoint_round_trips_and_bad_files_are_refused(tmp_path) -> None:
    cfg = MViTConfig.tiny()
    model = MViT(cfg).init_random_(3).eval()
    path = M.save_mvit(model, tmp_path / "mvit.pyth")
    loaded, got_cfg = load_mvit(path)
    assert got_cfg == cfg
    clip, boxes = _clip(cfg, dtype=torch.float32), torch.tensor(BOXES)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip, boxes), model(clip, boxes), rtol=0, atol=0)
    # a given yaml wins over the embedded one (the demo passes mvit.yaml), _BASE_ resolved
    (tmp_path / "base.yaml").write_text(M.slowfast_yaml(cfg))
    (tmp_path / "mvit.yaml").write_text("_BASE_: base.yaml\nDETECTION:\n  SPATIAL_SCALE_FACTOR: 32\n")
    _, cfg32 = load_mvit(path, tmp_path / "mvit.yaml")
    assert cfg32 == dataclasses.replace(cfg, spatial_scale_factor=32)
    # the other block layout, under the config of this one
    other = MViT(dataclasses.replace(cfg, dim_mul_in_att=False)).init_random_(0)
    M.save_mvit(other, tmp_path / "other.pyth", cfg_yaml=M.slowfast_yaml(cfg))
    with pytest.raises(MViTCheckpointError, match=r"DIM_MUL_IN_ATT=False.*blocks\.0\.proj\.weight present"):
        load_mvit(tmp_path / "other.pyth")
    # a missing and an extra key, named
    sd = dict(model.state_dict())
    sd.pop("blocks.3.attn.rel_pos_t")
    sd["blocks.9.norm1.weight"] = torch.ones(3)
    torch.save({"model_state": sd, "cfg": M.slowfast_yaml(cfg)}, tmp_path / "keys.pyth")
    with pytest.raises(MViTCheckpointError, match=r"1 missing: blocks\.3\.attn\.rel_pos_t.*1 unexpected: blocks\.9\.norm1\.weight"):
        load_mvit(tmp_path / "keys.pyth")
    # a config / shape disagreement (table built for another crop size)
    M.save_mvit(model, tmp_path / "crop.pyth", cfg_yaml=M.slowfast_yaml(dataclasses.replace(cfg, crop_size=96)))
    with pytest.raises(MViTCheckpointError, match=r"mis-shaped: blocks\.0\.attn\.rel_pos_h: expected \[47, 16\], got \[31, 16\]"):
        load_mvit(tmp_path / "crop.pyth")
    # no config anywhere; garbage bytes; a plain state dict
    torch.save({"model_state": model.state_dict()}, tmp_path / "nocfg.pyth")
    with pytest.raises(MViTCheckpointError, match="no embedded 'cfg'"):
        load_mvit(tmp_path / "nocfg.pyth")
    (tmp_path / "junk.pyth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError) as err:
        load_mvit(tmp_path / "junk.pyth")
    assert "not a PyTorch checkpoint" in str(err.value) and "\n" not in str(err.value)
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(MViTCheckpointError, match="no 'model_state'"):
        load_mvit(tmp_path / "bare.pth")
    with pytest.raises(FileNotFoundError):
        load_mvit(tmp_path / "absent.pyth")
