"""HMRLifter's fused path (static buffers; CUDA graphs on a GPU, plain calls here) equals the eager path.

Covers: the fixed-shape crop (sharp people bitwise, blurred people to float rounding), the rows a
frame upload may skip, the capture-safe SMPL joints, and the whole stage on frames with 0, 1, 5 and 7
people, boxes partly outside, large boxes that trigger the reference blur, bucket padding, chunks,
new frames over a reused buffer and a change of frame size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lart_stream.models.hmr2_crop import (CropConfig, blur_radius, blur_rows, blur_sigma, crop_people, crop_people_static,
                              image_to_tensor, normalisation, radius_bucket)
from lart_stream.models.smpl import SMPL, load_smpl_pickle
from lart_stream.realtime.lifting import HMR_BUCKETS, HMRLifter, HMRLifterConfig, _ranges, _rows_read, smpl_joints_static
from lart_stream.realtime.records import Detections, Frame, People
from smpl_synthetic import smpl_arrays, write_smpl_pickle

H, W = 480, 640
# ordinary people, one half outside on the left, one tiny, then large ones the reference blurs
# (sides 1200, 853, 1067: radii 3, 1, 2), one of them mostly outside the frame
BOXES = np.array([[100, 60, 220, 400], [300, 20, 600, 470], [-30, 200, 90, 470], [500, 300, 540, 380],
                  [-200, -100, 700, 900], [0, 0, 640, 480], [600, 100, 1400, 1100]], np.float32)
FIELDS = ("pose_vector", "global_orient", "body_pose", "betas", "pred_cam", "cam_t", "location", "appearance",
          "joints_3d", "keypoints_2d")


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _dets(xyxy: np.ndarray) -> Detections:
    n = len(xyxy)
    return Detections(xyxy, np.linspace(0.9, 0.5, n), np.zeros(n))


def _static_inputs(xyxy: np.ndarray, cfg: CropConfig, pad: int = 0, pad_blur: int = 0):
    """Box rows and blur table as the lifter builds them (padding rows and repeated blur rows included)."""
    from lart_stream.models.hmr2_crop import box_center_size

    center, side = box_center_size(xyxy, cfg.aspect)
    n = len(side)
    boxes = np.zeros((n + pad, 3), np.float32)
    boxes[:, 2] = 1.0
    boxes[:n, :2], boxes[:n, 2] = center, side
    sigma = blur_sigma(side, cfg)
    bl = np.flatnonzero(sigma > 0)
    if not len(bl):
        return torch.from_numpy(boxes), None, 0
    R = radius_bucket(int(blur_radius(sigma[bl]).max()))
    tab = np.concatenate([bl[:, None], center[bl], side[bl, None], blur_rows(sigma[bl], R)], 1).astype(np.float32)
    tab = np.concatenate([tab] + [tab[:1]] * pad_blur)
    return torch.from_numpy(boxes), torch.from_numpy(tab), R


def _assert_people_equal(a: People, b: People, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    assert a.image_size == b.image_size
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if y is None:
            assert x is None, f
            continue
        assert x.shape == y.shape and x.dtype == y.dtype == np.float32, f
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f)


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    return write_smpl_pickle(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", smpl_arrays(seed=5))


@pytest.fixture(scope="module")
def lifter(smpl_file):
    return HMRLifter.from_config(HMRLifterConfig(seed=1, fused=True, smpl_path=str(smpl_file)))


# ----------------------------------------------------------------------------------------------
# crops


def test_static_crops_equal_crop_people():
    cfg = CropConfig()
    img = _image(0)
    ref, _, side = crop_people(image_to_tensor(img), BOXES, cfg)
    assert set(blur_radius(blur_sigma(side, cfg))[4:]) == {1, 2, 3}  # three different blurs, bucket 4
    boxes, blur, R = _static_inputs(BOXES, cfg, pad=2, pad_blur=1)
    assert R == 4 and blur.shape == (4, 4 + 9)
    out = torch.full((len(boxes), 3, 256, 192), float("nan"))
    mean, std = normalisation("cpu")
    crop_people_static(torch.from_numpy(img), boxes, blur, out, mean, std, cfg)
    n = len(BOXES)
    sharp = blur_sigma(side, cfg) == 0
    assert torch.equal(out[:n][sharp], ref[sharp])  # same grid, same grid_sample, same rounding
    # Blurred: the same function; the old path's sampling positions round through the patch's [-1, 1]
    # grid (~1e-4 px), which is all that differs (5e-4 normalised = 0.03 of one intensity level).
    torch.testing.assert_close(out[:n][~sharp], ref[~sharp], rtol=0, atol=2e-3)
    assert torch.isfinite(out).all()  # padding rows are crops of a finite 1-px box


def test_static_blur_radius_zero_and_no_antialias():
    img = _image(1)
    box = np.array([[200, 100, 380, 680]], np.float32)  # side 580: f = 1.13, sigma 0.07, radius 0
    for cfg in (CropConfig(), CropConfig(antialias=False)):
        ref, _, side = crop_people(image_to_tensor(img), box, cfg)
        boxes, blur, R = _static_inputs(box, cfg)
        assert (blur is None) == (not cfg.antialias)
        if blur is not None:
            assert blur_radius(blur_sigma(side, cfg))[0] == 0 and R == 1
        out = torch.empty(1, 3, 256, 192)
        crop_people_static(torch.from_numpy(img), boxes, blur, out, *normalisation("cpu"), cfg)
        torch.testing.assert_close(out, ref, rtol=0, atol=2e-3)
        if blur is None:
            assert torch.equal(out, ref)


def test_rows_outside_the_read_band_are_never_used():
    """The upload skips frame rows no crop reads: junk there must not change any crop."""
    cfg = CropConfig()
    img = _image(2)
    rng = np.random.default_rng(3)
    boxes_list = [BOXES[[0, 3]], BOXES[[4]], BOXES[[1, 6]], np.array([[10, 300, 60, 420]], np.float32),
                  np.array([[10, 600, 60, 700]], np.float32)]  # the last one entirely below the frame
    for xyxy in boxes_list:
        boxes, blur, R = _static_inputs(xyxy, cfg)
        lo, hi = _rows_read(boxes[:, :2].numpy(), boxes[:, 2].numpy(), R, H)
        junk = rng.integers(0, 256, img.shape, dtype=np.uint8)
        junk[lo:hi] = img[lo:hi]
        a, b = torch.empty(len(xyxy), 3, 256, 192), torch.empty(len(xyxy), 3, 256, 192)
        crop_people_static(torch.from_numpy(img), boxes, blur, a, *normalisation("cpu"), cfg)
        crop_people_static(torch.from_numpy(junk), boxes, blur, b, *normalisation("cpu"), cfg)
        assert torch.equal(a, b), (xyxy, lo, hi)
    assert _rows_read(np.array([[0.0, 240.0]], np.float32), np.array([100.0], np.float32), 0, H) == (188, 294)


# ----------------------------------------------------------------------------------------------
# SMPL


def test_capture_safe_smpl_joints_equal_smpl(smpl_file):
    gen = torch.Generator().manual_seed(0)
    go = torch.linalg.matrix_exp(torch.randn(4, 3, 3, generator=gen).triu(1) - torch.randn(4, 3, 3, generator=gen).triu(1).mT)
    bp = torch.linalg.matrix_exp(0.3 * (lambda a: a - a.mT)(torch.randn(4, 23, 3, 3, generator=gen)))
    betas = torch.randn(4, 10, generator=gen)
    for extra in (None, np.random.default_rng(1).random((19, 6890)) / 6890):
        smpl = SMPL(load_smpl_pickle(smpl_file), extra)
        _, want = smpl(go, bp, betas)
        got = smpl_joints_static(smpl, smpl.parents.tolist(), go, bp, betas)
        assert got.shape == want.shape == (4, 25 if extra is None else 44, 3)
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # same operations in the same order


# ----------------------------------------------------------------------------------------------
# the stage


def test_default_path_choice():
    assert HMRLifter.from_config(HMRLifterConfig())._fused is None  # CPU default: eager
    fused = HMRLifter.from_config(HMRLifterConfig(fused=True, max_batch=10))
    assert fused._fused.buckets == tuple(range(1, 11)) and "plain calls per batch 1-10" in fused.backend_info
    assert HMRLifter.from_config(HMRLifterConfig(fused=True, max_batch=32))._fused.buckets == HMR_BUCKETS
    assert HMRLifter.from_config(HMRLifterConfig(fused=True, max_batch=40))._fused.buckets[-2:] == (32, 40)
    assert _ranges((1, 2, 3, 4, 8, 12, 13)) == "1-4,8,12,13"


@pytest.mark.parametrize("n", [0, 1, 5, 7])
def test_fused_equals_eager(lifter, n):
    frame = Frame(n, 0.0, _image(10 + n))
    dets = _dets(BOXES[:n])
    fused, eager = lifter(frame, dets), lifter.eager(frame, dets)
    assert len(fused) == n and fused.joints_3d.shape == (n, 25, 3)
    np.testing.assert_array_equal(fused.xyxy, eager.xyxy)
    # Both paths are float32 with other summation orders (batched graphs vs eager kernels, which
    # differ between CPUs). The bound is derived from the computation: each path is within its own
    # float32 rounding error of the float64 result; the eager path's error measures that size, and
    # the fused path gets 8x it (the largest of many elements' errors varies with the order).
    if n == 0:
        _assert_people_equal(fused, eager, rtol=0, atol=0)
        return
    exact = _float64_people(lifter, frame, dets)
    for f in FIELDS:
        x, y = getattr(fused, f), getattr(eager, f)
        if y is None:
            assert x is None, f
            continue
        rounding = np.abs(y.astype(np.float64) - exact[f]).max()
        tol = 8 * rounding + 8 * np.finfo(np.float32).eps * np.abs(exact[f]).max()
        np.testing.assert_allclose(x, exact[f], rtol=0, atol=tol, err_msg=f)
        assert np.abs(x - y).max() <= 2 * tol, f


def _float64_people(lifter, frame, dets) -> dict[str, np.ndarray]:
    """The eager path's network in float64 on the same crops (SMPL runs in float32 by design)."""
    import copy

    from lart_stream.models.hmr2_crop import image_to_tensor
    from lart_stream.realtime.lifting import people_fields

    W, H = frame.size
    crops, center, side = crop_people(image_to_tensor(frame.image, "cpu"), dets.xyxy, lifter.crop_cfg)
    model = copy.deepcopy(lifter.model).double()
    with torch.no_grad():
        out = model(crops.double())
        image_size = torch.tensor([W, H], dtype=torch.float64).expand(len(crops), 2)
        fields = people_fields(out, torch.as_tensor(center, dtype=torch.float64),
                               torch.as_tensor(side, dtype=torch.float64), image_size, lifter.model_cfg, lifter.smpl)
    return {k: v.double().numpy() for k, v in fields.items()}


def test_padding_chunks_new_frames_and_resize(smpl_file):
    """Buckets 1, 2, 4, 8 (5 and 7 people padded to 8), chunks of 3, several frames through the same
    buffers (the upload rows move; rows not uploaded hold the previous frame), then a smaller frame."""
    cases = [(_image(20), BOXES[[0, 3]]), (_image(21), BOXES[[1, 2, 4, 5, 6]]), (_image(22), BOXES),
             (_image(23), BOXES[[3]]), (_image(24, 360, 500), BOXES[[0, 1, 4]])]
    for max_batch, buckets in ((8, (1, 2, 4)), (3, HMR_BUCKETS)):
        lifter = HMRLifter.from_config(HMRLifterConfig(seed=2, fused=True, max_batch=max_batch, buckets=buckets,
                                                       smpl_path=str(smpl_file)))
        for i, (img, xyxy) in enumerate(cases):
            frame = Frame(i, 0.0, img)
            _assert_people_equal(lifter(frame, _dets(xyxy)), lifter.eager(frame, _dets(xyxy)))
        if max_batch == 8:
            assert sorted(lifter._fused.net) == [1, 2, 4, 8]  # 5 -> 8, 7 -> 8, 3 -> 4
            # the resize dropped the crop graphs of the old frame buffer; the network graphs stay
            assert [k[:3] for k in lifter._fused.prep] == [(4, 360, 500)]
            assert lifter._fused.frame_dev.shape == (360, 500, 3)


def test_bf16_autocast_equals_eager():
    lifter = HMRLifter.from_config(HMRLifterConfig(seed=3, fused=True, precision="bf16"))
    # unblurred people only: their crops are bitwise equal, so bf16 rounds the same way in both paths
    # (a blurred crop's 5e-4 difference can flip a bf16 rounding)
    frame, dets = Frame(0, 0.0, _image(30)), _dets(BOXES[:4])
    _assert_people_equal(lifter(frame, dets), lifter.eager(frame, dets), rtol=1e-6, atol=1e-6)


def test_warmup_builds_graphs_lazily_and_up_front():
    lifter = HMRLifter.from_config(HMRLifterConfig(seed=4, fused=True, max_batch=8))
    fused = lifter._fused
    lifter.warmup(batch_sizes=(3, 5, 100), frame_size=(W, H))
    assert sorted(fused.net) == [3, 5, 8] and sorted(fused.prep) == [(3, H, W, 0, 0), (5, H, W, 0, 0), (8, H, W, 0, 0)]
    lifter(Frame(0, 0.0, _image(40)), _dets(BOXES[[0, 4]]))  # 2 people, one blurred (radius 3 -> 4)
    assert 2 in fused.net and (2, H, W, 1, 4) in fused.prep
    lifter.warmup()  # every bucket up to max_batch
    assert sorted(fused.net) == list(range(1, 9))


def test_profile_parts():
    lifter = HMRLifter.from_config(HMRLifterConfig(seed=5, fused=True))
    lifter.profile()
    lifter(Frame(0, 0.0, _image(50)), _dets(BOXES[:3]))
    parts = lifter.last_parts()
    assert set(parts) == {"upload", "crops", "network+post", "d2h"} and all(v >= 0 for v in parts.values())
    assert lifter.sync_ms == 0.0  # the fused path's one device wait: none on the CPU
    assert HMRLifter.from_config(HMRLifterConfig()).sync_ms is None  # eager: its waits are inside torch calls
    with pytest.raises(ValueError, match="fused"):
        HMRLifter.from_config(HMRLifterConfig()).profile()


def test_non_uint8_frame_takes_the_eager_path():
    lifter = HMRLifter.from_config(HMRLifterConfig(seed=6, fused=True))
    img = _image(60)
    dets = _dets(BOXES[:2])
    a = lifter(Frame(0, 0.0, img.astype(np.float32)), dets)
    _assert_people_equal(a, lifter(Frame(0, 0.0, img), dets))
