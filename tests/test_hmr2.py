"""HMR 2.0 model: official checkpoint layout (meta tensors), loader errors, geometry and preprocessing
against hand-computed numbers, batch = single calls, ONNX export with a dynamic batch."""

from __future__ import annotations

import dataclasses
import math
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from hmr2_reference_keys import discriminator_keys, official_network_keys, official_smpl_keys
from lart_stream.models.hmr2 import (HMR2, CheckpointError, HMR2Config, HMR2Output, body_origin_location, cam_crop_to_full,
                         check_state_dict, crop_cam_t, full_frame_focal, load_hmr2, load_hmr2_with_smpl, pose_vector, read_checkpoint,
                         rot6d_to_rotmat, split_state_dict)
from lart_stream.models.hmr2_crop import IMAGE_MEAN, IMAGE_STD, CropConfig, blur_sigma, box_center_size, crop_people, image_to_tensor


def _save_lightning(path, state_dict, with_config_object=True):
    """A Lightning-style checkpoint. The config is an instance of a class from a module that does not
    exist at load time (the official file pickles a yacs CfgNode the same way)."""
    ckpt = {"epoch": 35, "global_step": 1_000_000, "pytorch-lightning_version": "2.0.0", "state_dict": state_dict}
    saved = sys.modules.get("yacs"), sys.modules.get("yacs.config")
    try:
        if with_config_object:
            pkg, mod = types.ModuleType("yacs"), types.ModuleType("yacs.config")
            cfg_node = type("CfgNode", (dict,), {"__module__": "yacs.config"})
            mod.CfgNode = cfg_node
            sys.modules.update({"yacs": pkg, "yacs.config": mod})
            node = cfg_node(MODEL=cfg_node(IMAGE_SIZE=256))
            node.__dict__["frozen"] = True
            ckpt["hyper_parameters"] = {"cfg": node}
        torch.save(ckpt, path)
    finally:
        for name, m in zip(("yacs", "yacs.config"), saved):
            if m is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = m


def _meta(shapes):
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


# ------------------------------------------------------------------------------------------------
# Official layout, strict load


def test_official_checkpoint_loads_strictly_on_meta(tmp_path):
    sd = _meta(official_network_keys())
    sd.update(_meta(discriminator_keys()))
    sd.update({"smpl." + k: v for k, v in _meta(official_smpl_keys()).items()})
    sd["initialized"] = torch.tensor(False)
    path = tmp_path / "epoch=35-step=1000000.ckpt"
    _save_lightning(path, sd)
    with pytest.raises(Exception):  # the pickled config needs yacs: plain weights_only load refuses it
        torch.load(path, weights_only=True)
    model, smpl_sd = load_hmr2_with_smpl(path, HMR2Config.official(), device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_network_keys()
    assert sum(p.numel() for p in model.parameters()) > 600e6
    assert {k: tuple(v.shape) for k, v in smpl_sd.items()} == official_smpl_keys()  # 'smpl.' stripped


def test_split_drops_training_keys_by_name_and_refuses_unknown():
    sd = _meta({"backbone.pos_embed": (1, 193, 1280), "smpl_head.init_cam": (1, 3), "smpl.parents": (24,)})
    sd.update(_meta(discriminator_keys()))
    sd["initialized"] = torch.tensor(True)
    model_sd, smpl_sd = split_state_dict(sd)
    assert sorted(model_sd) == ["backbone.pos_embed", "smpl_head.init_cam"]
    assert sorted(smpl_sd) == ["parents"]
    sd["renderer.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="renderer.weight"):
        split_state_dict(sd)


def test_mismatch_names_missing_unexpected_and_shapes():
    with torch.device("meta"):
        model = HMR2(HMR2Config.official())
    sd = _meta(official_network_keys())
    del sd["smpl_head.deccam.bias"]
    sd["smpl_head.extra.weight"] = torch.empty(3, device="meta")
    sd["backbone.patch_embed.proj.weight"] = torch.empty(1280, 3, 14, 14, device="meta")
    with pytest.raises(CheckpointError) as err:
        check_state_dict(model, sd)
    msg = str(err.value)
    assert "1 missing: smpl_head.deccam.bias" in msg
    assert "1 unexpected: smpl_head.extra.weight" in msg
    assert "backbone.patch_embed.proj.weight: expected [1280, 3, 16, 16], got [1280, 3, 14, 14]" in msg


def test_official_checkpoint_into_tiny_model_is_an_error(tmp_path):
    path = tmp_path / "official.ckpt"
    _save_lightning(path, _meta(official_network_keys()), with_config_object=False)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_hmr2(path, HMR2Config.tiny(), device="meta")


def test_tiny_checkpoint_round_trip(tmp_path):
    model = HMR2(HMR2Config.tiny()).init_random_(seed=3).eval()
    sd = dict(model.state_dict())
    sd.update({k: torch.zeros(s) for k, s in discriminator_keys().items()})
    sd["initialized"] = torch.tensor(True)
    path = tmp_path / "tiny.ckpt"
    _save_lightning(path, sd)
    assert set(read_checkpoint(path)) == set(sd)
    loaded, smpl_sd = load_hmr2_with_smpl(path, HMR2Config.tiny())
    assert smpl_sd == {}
    assert isinstance(load_hmr2(path, HMR2Config.tiny()), HMR2)
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


class _RemovesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os
        return (os.remove, (self.path,))


def test_foreign_globals_in_a_checkpoint_are_not_run(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("still here")
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"smpl_head.init_cam": torch.zeros(1, 3)}, "callbacks": _RemovesFile(canary)}, path)
    assert read_checkpoint(path).keys() == {"smpl_head.init_cam"}
    assert canary.read_text() == "still here"


def test_mean_shape_token_read_from_checkpoint(tmp_path):
    # TRANSFORMER_INPUT 'mean_shape': the decoder takes (pose 144, betas 10, cam 3) instead of a zero token.
    cfg = dataclasses.replace(HMR2Config.tiny(), token_dim=157)
    model = HMR2(cfg).init_random_(seed=5).eval()
    path = tmp_path / "mean_shape.ckpt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = load_hmr2(path, HMR2Config.tiny())
    assert loaded.cfg.token_dim == 157
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).body_pose, model(x).body_pose)
        # the token really is the mean params: changing init_cam moves the output beyond its own offset
        before = model(x).betas
        model.smpl_head.init_cam += 1.0
        assert not torch.allclose(model(x).betas, before)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_checkpoint(tmp_path / "missing.ckpt")
    bad = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], bad)
    with pytest.raises(CheckpointError, match="state_dict"):
        read_checkpoint(bad)


# ------------------------------------------------------------------------------------------------
# Architecture facts


def test_token_grid_and_config_sizes():
    off, tiny = HMR2Config.official(), HMR2Config.tiny()
    assert off.grid == (16, 12) and off.num_patches == 192  # padding 2: 256x192 -> 16x12
    assert tiny.grid == off.grid
    with pytest.raises(ValueError, match="size"):
        HMR2Config.from_size("huge")


def test_pos_embed_cls_slot_is_added_to_every_token():
    model = HMR2(HMR2Config.tiny()).init_random_().eval()
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        base = model(x)
        # A random vector (a constant one would vanish in LayerNorm) in the cls slot: the reference
        # adds that slot to all tokens, so it equals the same shift of every token slot.
        shift = torch.randn(model.cfg.embed_dim)
        model.backbone.pos_embed[:, 0] += shift
        moved = model(x)
        model.backbone.pos_embed[:, 0] -= shift
        model.backbone.pos_embed[:, 1:] += shift
        same = model(x)
    assert not torch.allclose(base.appearance, moved.appearance, atol=1e-3)
    for a, b in zip(moved, same):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_batch_equals_single_calls():
    model = HMR2(HMR2Config.tiny()).init_random_(seed=1).eval()
    x = torch.randn(4, 3, 256, 192)
    with torch.no_grad():
        batch = model(x)
        singles = [model(x[i:i + 1]) for i in range(4)]
    for name, t in batch._asdict().items():
        torch.testing.assert_close(t, torch.cat([getattr(s, name) for s in singles]), rtol=1e-5, atol=1e-5)
    assert batch.global_orient.shape == (4, 3, 3) and batch.body_pose.shape == (4, 23, 3, 3)
    assert batch.appearance.shape == (4, 64)
    torch.testing.assert_close(batch.appearance.norm(dim=1), torch.ones(4))


def test_onnx_export_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = HMR2(HMR2Config.tiny()).init_random_(seed=2).eval()
    path = tmp_path / "hmr2_tiny.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 256, 192),), str(path), dynamo=True, input_names=["crops"],
                      output_names=list(HMR2Output._fields),
                      dynamic_shapes={"crops": {0: torch.export.Dim("batch", min=1, max=64)}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = torch.randn(b, 3, 256, 192)
        got = sess.run(None, {"crops": x.numpy()})
        with torch.no_grad():
            want = model(x)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Geometry, hand-computed


def test_rot6d_to_rotmat_hand_values():
    x = torch.tensor([[1.0, 0, 0, 0, 1, 0],  # identity
                      [0.0, 1, 0, -1, 0, 0],  # 90 deg about z: columns (0,1,0), (-1,0,0), (0,0,1)
                      [2.0, 0, 0, 1, 1, 0]])  # not orthonormal: Gram-Schmidt gives identity
    R = rot6d_to_rotmat(x)
    torch.testing.assert_close(R[0], torch.eye(3))
    torch.testing.assert_close(R[1], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]))
    torch.testing.assert_close(R[2], torch.eye(3))
    Rr = rot6d_to_rotmat(torch.randn(50, 6))
    torch.testing.assert_close(Rr @ Rr.transpose(1, 2), torch.eye(3).expand(50, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(Rr), torch.ones(50), atol=1e-5, rtol=0)


def test_camera_formulas_hand_values():
    pred_cam = torch.tensor([[0.5, 0.1, -0.2]])
    # Crop camera: tz = 2 * 5000 / (256 * 0.5) = 78.125
    torch.testing.assert_close(crop_cam_t(pred_cam, 5000.0, 256), torch.tensor([[0.1, -0.2, 78.125]]))
    image_size = torch.tensor([[1280.0, 720.0]])
    focal = full_frame_focal(image_size)  # 5000 / 256 * 1280 = 25000
    torch.testing.assert_close(focal, torch.tensor([25000.0]))
    # b s = 400 * 0.5 = 200; tz = 2 * 25000 / 200 = 250; tx = 2 (700 - 640) / 200 + 0.1 = 0.7;
    # ty = 2 (300 - 360) / 200 - 0.2 = -0.8
    cam_t = cam_crop_to_full(pred_cam, torch.tensor([[700.0, 300.0]]), torch.tensor([400.0]), image_size, focal)
    torch.testing.assert_close(cam_t, torch.tensor([[0.7, -0.8, 250.0]]))
    # Body origin on screen: x = 25000 * 0.7 / 250 + 640 = 710, y = 25000 * -0.8 / 250 + 360 = 280
    loc = body_origin_location(cam_t, focal, image_size)
    torch.testing.assert_close(loc, torch.tensor([[710.0, 280.0, math.log(250.0)]]))


def test_pose_vector_order():
    go = torch.arange(9.0).reshape(1, 3, 3)
    bp = 100 + torch.arange(207.0).reshape(1, 23, 3, 3)
    betas = -torch.arange(1.0, 11.0)[None]
    v = pose_vector(go, bp, betas, torch.tensor([[0.7, -0.8, 250.0]]))
    assert v.shape == (1, 229)
    torch.testing.assert_close(v[0, :9], torch.arange(9.0))  # row-major rotation matrix
    torch.testing.assert_close(v[0, 9:216], 100 + torch.arange(207.0))
    torch.testing.assert_close(v[0, 216:226], -torch.arange(1.0, 11.0))
    torch.testing.assert_close(v[0, 226:], torch.tensor([0.7, -0.8, 1.25]))  # tz / 200


# ------------------------------------------------------------------------------------------------
# Preprocessing


def test_box_side_and_blur_rule_hand_values():
    boxes = np.array([[20, 10, 60, 90],  # w 40 h 80: taller than 4:3 -> side h = 80
                      [0, 0, 90, 60],  # w 90 h 60: grow h to 120 -> 120
                      [0, 0, 30, 40],  # exactly 3:4 -> 40
                      [10, 20, 610, 1220]], np.float32)  # h 1200 -> 1200
    center, side = box_center_size(boxes)
    np.testing.assert_allclose(side, [80, 120, 40, 1200])
    np.testing.assert_allclose(center, [[40, 50], [45, 30], [15, 20], [310, 620]])
    # f = side / 512: blur only above 1.1 (563.2 px), sigma = (f - 1) / 2
    np.testing.assert_allclose(blur_sigma(np.array([563.0, 600.0, 1024.0])), [0.0, (600 / 512 - 1) / 2, 0.5])
    assert blur_sigma(np.array([1024.0]), CropConfig(antialias=False))[0] == 0.0


def _gradient_frame(h=100, w=80):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x, y, x + y], axis=-1).astype(np.uint8)  # BGR: B = x, G = y, R = x + y


def test_crop_of_known_boxes_hand_computed():
    img = _gradient_frame()
    boxes = np.array([[20, 10, 60, 90], [60, 0, 80, 40]], np.float32)
    # Unrounded here: exact .5 values would sit on float32's knife edge. Rounding is checked below.
    crops, center, side = crop_people(image_to_tensor(img), boxes, CropConfig(round_like_uint8=False))
    assert crops.shape == (2, 3, 256, 192)
    mean = 255 * np.array(IMAGE_MEAN)[:, None, None]
    std = 255 * np.array(IMAGE_STD)[:, None, None]
    raw = crops.numpy() * std + mean  # back to pixel values, RGB
    rounded = crop_people(image_to_tensor(img), boxes)[0].numpy() * std + mean
    np.testing.assert_allclose(rounded, np.round(rounded), atol=1e-3)  # uint8-like levels
    assert np.abs(rounded - raw).max() <= 0.5 + 1e-3
    u = np.arange(32, 224)[None, :]  # output columns 32:-32 of the 256 square
    v = np.arange(256)[:, None]
    # Box 0: centre (40, 50), side 80: pixel (v, u) reads source (40 + (u-128) 80/256, 50 + (v-128) 80/256),
    # all inside the frame, where bilinear of a linear image is exact.
    sx, sy = 40 + (u - 128) * 0.3125, 50 + (v - 128) * 0.3125
    for ch, val in enumerate([sx + sy, sy + 0 * sx, sx + 0 * sy]):  # R, G, B
        np.testing.assert_allclose(raw[0, ch], val, atol=1e-3)
    # Box 1: centre (70, 20), side 40, runs off the right and top edges: zeros there, and between the
    # last column (x = 79) and outside, bilinear mixes with zero.
    sx, sy = 70 + (u - 128) * 0.15625, 20 + (v - 128) * 0.15625
    b_channel = np.where((sx <= 79) & (sy >= 0) & (sy <= 99), sx, 0.0)
    edge = (sx > 79) & (sx < 80) & (sy >= 0)
    b_channel = np.where(edge, 79 * (80 - sx), b_channel)
    top = (sy < 0) & (sy > -1) & (sx <= 79)
    b_channel = np.where(top, sx * (1 + sy), b_channel)
    np.testing.assert_allclose(raw[1, 2], b_channel, atol=1e-3)


def _reference_crop(img, box):
    """The reference pipeline with public libraries: scipy blur + OpenCV warp, then slice/RGB/normalise."""
    (cx, cy), b = (box[:2] + box[2:]) / 2, box_center_size(box[None])[1][0]
    f = b / 512
    src = img.astype(np.float64) if f > 1.1 else img
    if f > 1.1:
        src = gaussian_filter(src, sigma=((f - 1) / 2, (f - 1) / 2, 0), mode="nearest", truncate=4.0)
    M = np.array([[256 / b, 0, 128 - cx * 256 / b], [0, 256 / b, 128 - cy * 256 / b]])
    patch = cv2.warpAffine(src, M, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    patch = patch[:, 32:-32, ::-1].astype(np.float64).transpose(2, 0, 1)
    return (patch - 255 * np.array(IMAGE_MEAN)[:, None, None]) / (255 * np.array(IMAGE_STD)[:, None, None])


def test_crops_match_opencv_reference_including_blur():
    rng = np.random.default_rng(0)
    H, W = 480, 640
    img = cv2.resize(rng.uniform(0, 255, (H // 8, W // 8, 3)).astype(np.float32), (W, H),
                     interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    boxes = np.array([[100, 50, 250, 400],  # plain
                      [150, -80, 600, 560],  # side 640 > 563: blurred, sigma 0.125 (radius 1)
                      [-100, -300, 700, 700],  # side 800 * 4/3: sigma 0.54 (radius 2), mostly off-frame
                      [420, 100, 500, 260]], np.float32)
    crops, _, side = crop_people(image_to_tensor(img), boxes)
    np.testing.assert_allclose(blur_sigma(side), [0, 0.125, (800 * 4 / 3 / 512 - 1) / 2, 0], rtol=1e-5)
    center, side = box_center_size(boxes)
    for i, box in enumerate(boxes):
        ref = _reference_crop(img, box)
        # In pixel levels: OpenCV quantises positions to 1/32 px and rounds uint8 output, which shows
        # most at the frame edge (a step to the zero border): compare those samples loosely.
        diff = (np.abs(crops[i].numpy() - ref) * 255 * np.array(IMAGE_STD)[:, None, None]).max(0)
        sx = center[i, 0] + (np.arange(32, 224)[None, :] - 128) * side[i] / 256
        sy = center[i, 1] + (np.arange(256)[:, None] - 128) * side[i] / 256
        edge = (np.abs(sx) < 1.5) | (np.abs(sx - (W - 1)) < 1.5) | (np.abs(sy) < 1.5) | (np.abs(sy - (H - 1)) < 1.5)
        assert diff[~edge].max() < 1.05, (i, diff[~edge].max())
        assert diff.max() < 6.0 and diff.mean() < 0.35, (i, diff.max(), diff.mean())
        if i == 2:  # the blur matters here: without it the crop is off by several levels
            sharp = crop_people(image_to_tensor(img), boxes[i:i + 1], CropConfig(antialias=False))[0][0]
            assert (np.abs(sharp.numpy() - ref) * 255 * 0.225).max() > 3.0


def test_crop_batch_equals_single_crops():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 100, 250], [150, -20, 390, 310], [300, 100, 330, 140]], np.float32)
    t = image_to_tensor(img)
    batch = crop_people(t, boxes)[0]
    for i in range(len(boxes)):
        torch.testing.assert_close(batch[i:i + 1], crop_people(t, boxes[i:i + 1])[0], rtol=0, atol=1e-5)
    assert crop_people(t, np.zeros((0, 4), np.float32))[0].shape == (0, 3, 256, 192)
