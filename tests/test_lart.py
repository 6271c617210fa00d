"""LART model: checkpoint keys and strict loading, parity with a reference-style forward,
masking as the reference does it, and the causal KV-cache step against a full recompute."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lart_stream.models.lart import (MASKED, LART, LARTConfig, config_from_state_dict, load_lart, load_pose_stats, read_checkpoint,
                         sinusoid_table_2d)

torch.set_grad_enabled(False)


def tiny_pose_only(**kw) -> LARTConfig:
    return LARTConfig.tiny(dim=16, pose_en=16, joints_mid=0, joints_en=0, app_dim=0, app_mid=0, app_en=0, **kw)


def make(cfg: LARTConfig, seed: int = 0) -> LART:
    torch.manual_seed(seed)
    m = LART(cfg).double().eval()
    for p in m.parameters():  # larger than init so that every term matters
        p.add_(0.05 * torch.randn_like(p))
    m.pe.copy_(m.pos_embedding)  # one tensor in the reference
    m.set_pose_stats(torch.randn(229).double(), torch.rand(229).double() + 0.5)
    return m


def inputs(cfg: LARTConfig, *lead: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(*lead, 229, generator=g, dtype=torch.float64)
    joints = torch.randn(*lead, 135, generator=g, dtype=torch.float64) if cfg.has_joints else None
    app = torch.randn(*lead, cfg.app_dim, generator=g, dtype=torch.float64) if cfg.has_appearance else None
    return pose, joints, app


# ----------------------------------------------------------------------------- keys and loading


def official_shapes(app_dim: int | None = 1152) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released checkpoints' encoder, written out from the reference facts."""
    d = 512 if app_dim else 128
    s: dict[str, tuple[int, ...]] = {
        "mask_token": (d,), "class_token": (1, 1, d), "pos_embedding": (d, 250, 10), "pe": (d, 250, 10),
        "conv_en.weight": (d, d, 7), "conv_en.bias": (d,), "conv_de.weight": (d, d, 7), "conv_de.bias": (d,),
        "pose_shape_encoder.0.weight": (229, 229), "pose_shape_encoder.0.bias": (229,),
        "pose_shape_encoder.2.weight": (128, 229), "pose_shape_encoder.2.bias": (128,),
        "smpl_head.0.fc1.weight": (1024, d + 144 + 13), "smpl_head.0.fc1.bias": (1024,),
        "smpl_head.0.fc2.weight": (1024, 1024), "smpl_head.0.fc2.bias": (1024,),
        "smpl_head.0.decpose.weight": (144, 1024), "smpl_head.0.decpose.bias": (144,),
        "smpl_head.0.decshape.weight": (10, 1024), "smpl_head.0.decshape.bias": (10,),
        "smpl_head.0.deccam.weight": (3, 1024), "smpl_head.0.deccam.bias": (3,),
        "smpl_head.0.init_body_pose": (1, 144), "smpl_head.0.init_betas": (1, 10), "smpl_head.0.init_cam": (1, 3),
        "loca_head.0.0.weight": (d, d), "loca_head.0.0.bias": (d,), "loca_head.0.2.weight": (d, d),
        "loca_head.0.2.bias": (d,), "loca_head.0.4.weight": (3, d), "loca_head.0.4.bias": (3,),
        "action_head_ava.0.0.weight": (60, d), "action_head_ava.0.0.bias": (60,),
        "action_head_kinetics.0.weight": (d, d), "action_head_kinetics.0.bias": (d,),
        "action_head_kinetics.2.weight": (d, d), "action_head_kinetics.2.bias": (d,),
        "action_head_kinetics.4.weight": (400, d), "action_head_kinetics.4.bias": (400,),
    }
    if app_dim:
        for i, shp in enumerate([(256, 135), (256, 256), (128, 256)]):
            s[f"joint_encoder.{2 * i}.weight"], s[f"joint_encoder.{2 * i}.bias"] = shp, shp[:1]
        for i, shp in enumerate([(512, app_dim), (512, 512), (256, 512)]):
            s[f"apperance_encoder.{2 * i}.weight"], s[f"apperance_encoder.{2 * i}.bias"] = shp, shp[:1]
    for l in range(16):
        p = f"transformer.layers.{l}."
        for n in ("0.norm.weight", "0.norm.bias", "1.norm.weight", "1.norm.bias", "0.fn.to_out.0.bias",
                  "1.fn.net.3.bias"):
            s[p + n] = (d,)
        s[p + "1.fn.net.0.bias"] = (512,)
        s[p + "0.fn.to_qkv.weight"] = (3072, d)
        s[p + "0.fn.to_out.0.weight"] = (d, 1024)
        s[p + "1.fn.net.0.weight"] = (512, d)
        s[p + "1.fn.net.3.weight"] = (d, 512)
    return s


@pytest.mark.parametrize("cfg,app_dim", [(LARTConfig.official_mvit(), 1152), (LARTConfig.official_hiera(), 2048),
                                         (LARTConfig.pose_only(), None)])
def test_official_sizes_on_meta_device(cfg, app_dim):
    with torch.device("meta"):
        model = LART(cfg)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_shapes(app_dim)
    # sizes read back from shapes alone give the same config
    assert config_from_state_dict(model.state_dict(), dim_head=cfg.dim_head) == cfg


class FakeDictConfig:
    """A hyper-parameter object from a package that won't be installed at load time."""

    def __init__(self):
        self.content = {"in_feat": 32}


def write_lightning_ckpt(path, model: LART) -> None:
    mod = types.ModuleType("fake_omegaconf")
    FakeDictConfig.__module__ = "fake_omegaconf"
    mod.FakeDictConfig = FakeDictConfig
    sys.modules["fake_omegaconf"] = mod
    try:
        sd = {"encoder." + k: v.float() for k, v in model.state_dict().items()}
        sd["smpl.faces_tensor"] = torch.zeros(4, 3, dtype=torch.long)
        torch.save({"epoch": 2, "state_dict": sd, "hyper_parameters": {"cfg": FakeDictConfig()}}, path)
    finally:
        del sys.modules["fake_omegaconf"]
        FakeDictConfig.__module__ = __name__


@pytest.mark.parametrize("cfg", [LARTConfig.tiny(), tiny_pose_only()], ids=["mvit-style", "pose-only"])
def test_strict_load_of_written_checkpoint(tmp_path, cfg):
    src = make(cfg).float()
    path = tmp_path / "lart.ckpt"
    write_lightning_ckpt(path, src)
    model, ignored = load_lart(path, dim_head=cfg.dim_head, window=cfg.window, max_people=cfg.max_people)
    assert ignored == ["smpl.faces_tensor"]
    assert model.config == cfg
    assert model.joint_encoder is None if not cfg.has_joints else model.joint_encoder is not None
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    model.set_pose_stats(src.pose_mean, src.pose_std)
    pose, joints, app = inputs(cfg, 2, 5, 3)
    valid = torch.rand(2, 5, 3) > 0.3
    valid[:, 0, 0] = True
    args = (pose.float(), None if joints is None else joints.float(), None if app is None else app.float(), valid)
    assert torch.equal(model.eval().forward_window(*args), src.eval().forward_window(*args))


def test_load_reports_every_mismatch(tmp_path):
    cfg = LARTConfig.tiny()
    sd = {"encoder." + k: v for k, v in LART(cfg).state_dict().items()}
    del sd["encoder.class_token"]
    sd["encoder.extra.weight"] = torch.zeros(2)
    sd["encoder.conv_de.bias"] = torch.zeros(cfg.dim + 1)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError) as err:
        load_lart(tmp_path / "bad.ckpt", dim_head=cfg.dim_head)
    msg = str(err.value)
    assert "missing: class_token expected (1, 1, 32)" in msg
    assert "unexpected: extra.weight got (2,)" in msg
    assert "shape: conv_de.bias expected (32,) got (33,)" in msg


def test_differing_pe_buffer_wins_as_in_the_reference(tmp_path, caplog):
    cfg = LARTConfig.tiny()
    sd = {k: v.clone() for k, v in make(cfg).float().state_dict().items()}
    sd["pe"] += 1.0  # the reference copies `pe` last into the tensor it shares with pos_embedding
    torch.save(sd, tmp_path / "plain.pt")  # a plain state dict without the encoder. prefix
    model, ignored = load_lart(tmp_path / "plain.pt", dim_head=cfg.dim_head)
    assert ignored == [] and torch.equal(model.pos_embedding, sd["pe"])
    assert "differs from `pos_embedding`" in caplog.text


def test_read_checkpoint_rejects_non_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="no tensor state_dict"):
        read_checkpoint(tmp_path / "x.ckpt")


def test_pose_stats_padding_and_identity(tmp_path):
    mean, std = np.arange(226, dtype=np.float64)[None], np.full((1, 226), 2.0)
    np.save(tmp_path / "mean_std.npy", np.stack([mean, std]))
    m, s, found = load_pose_stats(tmp_path / "mean_std.npy")
    assert found and m.shape == s.shape == (229,)
    np.testing.assert_array_equal(m, np.r_[np.arange(226), 0, 0, 0])
    np.testing.assert_array_equal(s, np.r_[np.full(226, 2.0), 1, 1, 1])
    m, s, found = load_pose_stats(None)
    assert not found and (m == 0).all() and (s == 1).all()


def test_sinusoid_table_values():
    pe = sinusoid_table_2d(8, 5, 4)  # half = 4: slot channels 0..3, frame channels 4..7
    f1 = math.exp(-2 * math.log(1e4) / 4)  # second frequency
    t, s = 3, 2
    want = [math.sin(s), math.cos(s), math.sin(s * f1), math.cos(s * f1),
            math.sin(t), math.cos(t), math.sin(t * f1), math.cos(t * f1)]
    np.testing.assert_allclose(pe[:, t, s].numpy(), want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- reference-style forward


def reference_forward(model: LART, pose, joints, app, has_detection):
    """The reference computation written out from its description, on the state dict:
    'zero' masking, boolean assignment of mask_token, table added as pe[:, :T, :P] flattened in
    token order t*P + p, explicit attention with masked scores *replaced* by -1e3."""
    sd, c = model.state_dict(), model.config

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    pose = (pose - model.pose_mean) / (model.pose_std + 1e-10)
    mask_detection = (has_detection == 0).double()  # test-time 'zero' masking
    pair = torch.ones_like(has_detection)  # has_detection is set to all ones afterwards
    parts = [lin(torch.relu(lin(pose, "pose_shape_encoder.0")), "pose_shape_encoder.2")]
    if joints is not None:
        h = torch.relu(lin(torch.relu(lin(joints, "joint_encoder.0")), "joint_encoder.2"))
        parts.append(lin(h, "joint_encoder.4"))
    if app is not None:
        h = torch.relu(lin(torch.relu(lin(app, "apperance_encoder.0")), "apperance_encoder.2"))
        parts.append(lin(h, "apperance_encoder.4"))
    x = torch.cat(parts, -1)
    x[mask_detection[..., 0] == 1] = sd["mask_token"]
    B, T, P, dim = x.shape
    x = x.view(B, T * P, dim) + sd["pos_embedding"][None, :, :T, :P].reshape(1, dim, T * P).permute(0, 2, 1)
    H = c.heads
    for l in range(c.depth):
        p = f"transformer.layers.{l}."
        h = F.layer_norm(x, (dim,), sd[p + "0.norm.weight"], sd[p + "0.norm.bias"])
        q, k, v = (h @ sd[p + "0.fn.to_qkv.weight"].T).chunk(3, dim=-1)
        q, k, v = (t.view(B, T * P, H, -1).transpose(1, 2) for t in (q, k, v))
        dots = q @ k.transpose(-1, -2) * c.dim_head ** -0.5
        mnp = pair.view(B, -1)
        mnp = (mnp[:, None, :, None] * mnp[:, None, None, :]).repeat(1, H, 1, 1)
        mb = mask_detection.view(B, -1)[:, None, None, :].repeat(1, H, T * P, 1)
        dots[mnp == 0] = MASKED
        dots[mb == 1] = MASKED
        out = (dots.softmax(-1) @ v).transpose(1, 2).reshape(B, T * P, -1)
        x = x + lin(out, p + "0.fn.to_out.0")
        h = F.layer_norm(x, (dim,), sd[p + "1.norm.weight"], sd[p + "1.norm.bias"])
        x = x + lin(F.gelu(lin(h, p + "1.fn.net.0")), p + "1.fn.net.3")
    return lin(x, "action_head_ava.0.0").view(B, T, P, -1)


@pytest.mark.parametrize("cfg", [LARTConfig.tiny(), tiny_pose_only()], ids=["mvit-style", "pose-only"])
def test_window_forward_equals_reference_computation(cfg):
    model = make(cfg)
    B, T, N = 3, 7, 3
    pose, joints, app = inputs(cfg, B, T, N)
    valid = torch.rand(B, T, N, generator=torch.Generator().manual_seed(3)) > 0.4
    valid[:, 2, 0] = True
    ref = reference_forward(model, pose, joints, app, valid[..., None].double())[:, :, 0]
    torch.testing.assert_close(model.forward_window(pose, joints, app, valid, exact=True), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.forward_window(pose, joints, app, valid, exact=False), ref, rtol=0, atol=1e-10)


def test_masking_of_missing_detections():
    cfg = LARTConfig.tiny()
    model = make(cfg)
    B, T, N = 2, 6, 3
    pose, joints, app = inputs(cfg, B, T, N)
    valid = torch.ones(B, T, N, dtype=torch.bool)
    valid[0, 1, 0] = valid[0, 3, 2] = valid[1, :, 1] = False
    out = model.forward_window(pose, joints, app, valid, exact=True)
    # the features of a missing detection are never read: it is the mask token
    pose2, joints2, app2 = pose.clone(), joints.clone(), app.clone()
    for t in (pose2, joints2, app2):
        t[~valid] = 1e3 * torch.randn_like(t[~valid])
    torch.testing.assert_close(model.forward_window(pose2, joints2, app2, valid, exact=True), out, rtol=0, atol=0)
    # a masked token is not a key, so the mask token's value does not reach detected tokens ...
    model2 = make(cfg)
    model2.load_state_dict(model.state_dict())
    model2.set_pose_stats(model.pose_mean, model.pose_std)
    model2.mask_token.add_(1.0)
    out2 = model2.forward_window(pose, joints, app, valid, exact=True)
    torch.testing.assert_close(out2[valid[..., 0]], out[valid[..., 0]], rtol=0, atol=1e-12)
    # ... but masked tokens are still queries with outputs of their own
    assert (out2[0, 1] - out[0, 1]).abs().max() > 1e-3
    # a detected token is a key: changing one detected input changes every other output
    pose3 = pose.clone()
    pose3[0, 4, 1] += 1.0
    out3 = model.forward_window(pose3, joints, app, valid, exact=True)
    assert ((out3[0] - out[0]).abs().amax(-1) > 1e-6).all()
    torch.testing.assert_close(out3[1], out[1], rtol=0, atol=0)


def test_fully_masked_sequence_averages_values_like_the_reference():
    cfg = LARTConfig.tiny()
    model = make(cfg)
    pose, joints, app = inputs(cfg, 1, 4, 2)
    valid = torch.zeros(1, 4, 2, dtype=torch.bool)  # every score replaced by -1e3 -> uniform attention
    ref = reference_forward(model, pose, joints, app, valid[..., None].double())[:, :, 0]
    exact = model.forward_window(pose, joints, app, valid, exact=True)
    torch.testing.assert_close(exact, ref, rtol=0, atol=1e-12)
    # the SDPA path adds -1e3 instead of replacing: documented to differ only here
    assert (model.forward_window(pose, joints, app, valid) - ref).abs().max() > 1e-6


# ----------------------------------------------------------------------------- causal step


def causal_stream(cfg: LARTConfig, B: int, S: int, N: int, seed: int = 5):
    """Features and validity for S frames of B sequences with context tracks that come and go."""
    pose, joints, app = inputs(cfg, B, S, N, seed=seed)
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(B, S, N, generator=g) > 0.25
    valid[:, 0, 0] = True  # a sequence starts at a detection of its track
    valid[0, 4:9, 1:] = False  # context slots empty for a stretch
    valid[-1, S // 2:, 2] = False  # a context track vanished
    if B > 2:
        valid[2, 3:12, :] = False  # nobody detected for longer than the window
    return pose, joints, app, valid


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "sdpa"])
def test_step_equals_full_causal_recompute_frame_by_frame(exact):
    cfg = LARTConfig.tiny()
    model = make(cfg)
    B, S, N, T = 3, 20, 3, 5
    pose, joints, app, valid = causal_stream(cfg, B, S, N)
    offset = torch.tensor([0, 2, 4])  # sequences at different ring phases
    positions = (torch.arange(S)[None] + offset[:, None]) % T
    k, v, kb = model.new_cache(B, T, N)
    for t in range(S):
        logits, k, v, kb = model.step(pose[:, t], joints[:, t], app[:, t], valid[:, t], positions[:, t], k, v, kb,
                                      exact=exact)
        full = model.forward_causal(pose[:, :t + 1], joints[:, :t + 1], app[:, :t + 1], valid[:, :t + 1],
                                    positions[:, :t + 1], T, exact=exact)
        torch.testing.assert_close(logits, full[:, t], rtol=0, atol=1e-10, msg=f"frame {t}")
        # the cache holds exactly the last T frames, in their ring rows
        written = kb.view(B, T, N).isfinite().all(-1)
        assert written.sum(1).tolist() == [min(t + 1, T)] * B
    # after the window slid, the step is NOT a causal forward over only the last T frames
    last = model.forward_causal(pose[:, -T:], joints[:, -T:], app[:, -T:], valid[:, -T:], positions[:, -T:], T,
                                exact=exact)
    assert (last[:, -1] - logits).abs().max() > 1e-6


def test_step_out_of_place_equals_in_place():
    cfg = LARTConfig.tiny()
    model = make(cfg)
    B, S, N, T = 2, 8, 3, 4
    pose, joints, app, valid = causal_stream(cfg, B, S, N)
    a = model.new_cache(B, T, N)
    b = tuple(x.clone() for x in a)
    for t in range(S):
        pos = torch.full((B,), t % T)
        la, *a = model.step(pose[:, t], joints[:, t], app[:, t], valid[:, t], pos, *a)
        lb, *b_new = model.step(pose[:, t], joints[:, t], app[:, t], valid[:, t], pos, *b, inplace=False)
        for old, new in zip(b, b_new):
            assert new is not old
        b = tuple(b_new)
        torch.testing.assert_close(la, lb, rtol=0, atol=0)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_first_window_of_causal_mode_uses_reference_positions():
    """For the first T frames the ring columns are 0..T-1 as in the reference's left-aligned window:
    the causal forward equals the window forward restricted to the past at the last frame."""
    cfg = LARTConfig.tiny(depth=1)  # one layer: the last frame then sees the same keys in both
    model = make(cfg)
    B, T, N = 2, 6, 3
    pose, joints, app, valid = causal_stream(cfg, B, T, N)
    causal = model.forward_causal(pose, joints, app, valid, torch.arange(T).expand(B, T), T, exact=True)
    window = model.forward_window(pose, joints, app, valid, exact=True)
    torch.testing.assert_close(causal[:, -1], window[:, -1], rtol=0, atol=1e-12)
    assert (causal[:, 0] - window[:, 0]).abs().max() > 1e-6  # earlier frames do not see the future
