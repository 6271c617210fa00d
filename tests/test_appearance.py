"""Appearance stage: the demo's preprocessing against hand-computed values, the clip and keyframe
cadence (causal, lookahead, clamping at the stream start), held features and their age, tracks born
between passes, the worker thread (equal to inline; never waits for a pass)."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

from lart_stream.realtime.appearance import (AppearanceStage, AppearanceStageConfig, clip_boxes, clip_geometry,
                                             clip_steps, crop_resize, keyframe_at, level_table, normalise,
                                             normalise_by_table)
from lart_stream.realtime.records import AppearanceFeatures, Frame, People, Tracks
from mvit_standin import StandInConfig, StandInMViT, decode_frames

MCFG = StandInConfig()  # 4 frames x 3: S = 12, a clip of 13 frames; crop 20
W, H = 48, 40  # aspect 1.2: no crop; short side 40 -> 20, long 48 -> 24: boxes x 0.5


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("w,h,size,want", [
    (768, 576, 312, (38, 0, 692, 576, (374, 312), 374 / 692)),  # pedestrians.mp4: l = int(76.8 // 2) = 38
    (12, 8, 4, (1, 0, 10, 8, (5, 4), 0.5)),  # w - 1.2 h = 2.4 -> l = 1
    (12, 20, 6, (0, 2, 12, 16, (6, 8), 0.5)),  # portrait: h - w / 0.8 = 5 -> t = 2
    (10, 10, 10, (0, 0, 10, 10, (10, 10), None)),  # short side already the size: no resize
    (121, 100, 50, (0, 0, 121, 100, (60, 50), 60 / 121)),  # l = int(1.0 // 2) = 0: the demo's slice is empty
])
def test_clip_geometry_hand_values(w, h, size, want):
    g = clip_geometry(w, h, size)
    assert (g.x0, g.y0, g.width, g.height, g.size, g.box_scale) == want


def test_resize_runs_on_uint8_like_cv2():
    """12x8 -> crop columns 1..10 -> 2x down: every output pixel is its 2x2 block's mean rounded half
    up (cv2's fixed-point uint8 path), not the float mean."""
    img = np.full((8, 12, 3), 255, np.uint8)  # columns 0 and 11 are cropped away
    blocks = [[(1, 2, 1, 2), (0, 0, 0, 1), (3, 4, 4, 4), (10, 11, 11, 10), (7, 7, 7, 7)],
              [(0, 1, 0, 0), (5, 6, 5, 6), (9, 9, 9, 8), (100, 101, 100, 100), (2, 2, 3, 3)]]
    want0 = [[2, 0, 4, 11, 7], [0, 6, 9, 100, 3]]  # means 1.5, .25, 3.75, 10.5, 7 / .25, 5.5, 8.75, 100.25, 2.5
    for bi, row in enumerate(blocks):
        for bj, (a, b, c, d) in enumerate(row):
            y, x = 2 * bi, 1 + 2 * bj
            img[y:y + 2, x:x + 2, 0] = [[a, b], [c, d]]
    img[4:, :, 0] = img[:4, :, 0]  # rows 4..7 repeat rows 0..3
    img[:, 1:11, 1] = 40
    img[:, 1:11, 2] = 200
    out = crop_resize(img, clip_geometry(12, 8, 4))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out[:2, :, 0], want0)
    np.testing.assert_array_equal(out[2:, :, 0], want0)
    assert (out[..., 1] == 40).all() and (out[..., 2] == 200).all()


def test_resize_before_channel_swap_is_the_demos_order():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    g = clip_geometry(53, 37, 14)
    left = int((53 - 37 * 1.2) // 2)
    assert g.x0 == left == 4
    demo = cv2.resize(cv2.cvtColor(img[:, left:-left], cv2.COLOR_BGR2RGB), g.size, interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop_resize(img, g)[..., ::-1], demo)


def test_normalise_hand_values_and_reference_ops():
    px = np.array([[[0, 255, 51]]], np.uint8)  # BGR -> RGB (51, 255, 0) -> (0.2, 1, 0)
    mean, std = [0.45, 0.45, 0.45], [0.225, 0.225, 0.225]
    got = normalise(torch.from_numpy(px), torch.tensor(mean), torch.tensor(std))
    assert got.shape == (3, 1, 1) and got.dtype == torch.float32
    np.testing.assert_allclose(got.flatten().numpy(), [-0.25 / 0.225, 0.55 / 0.225, -2.0], rtol=1e-6)
    # bit-equal to SlowFast's process_cv2_inputs + tensor_normalize on the RGB frame
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    ref = (torch.from_numpy(np.array([frame[..., ::-1]])).float() / 255 - torch.tensor(mean)) / torch.tensor(std)
    got = normalise(torch.from_numpy(frame), torch.tensor(mean), torch.tensor(std))
    assert torch.equal(got, ref[0].permute(2, 0, 1))


def test_level_table_equals_the_reference_for_every_level():
    mean, std = (0.45, 0.42, 0.4), (0.225, 0.22, 0.23)
    table = level_table(mean, std)
    levels = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).astype(np.uint8)
    frame = np.concatenate([levels, levels[..., :1]], axis=-1)  # every level in every channel
    ref = (torch.from_numpy(np.array([frame[..., ::-1]])).float() / 255 - torch.tensor(list(mean))) \
        / torch.tensor(list(std))
    assert torch.equal(normalise_by_table(torch.from_numpy(frame), table), ref[0].permute(2, 0, 1))
    assert torch.equal(table[0, :3], (torch.tensor([0.0, 1, 2]) / 255 - mean[0]) / std[0])


def test_clip_boxes_truncate_shift_and_scale_y_by_the_width_factor():
    g = clip_geometry(768, 576, 312)  # crop 38 px each side, 692 x 576 -> 374 x 312
    xyxy = np.array([[100.7, 50.2, 200.9, 300.6],  # int x, y, w, h = 100, 50, 100, 250
                     [10.6, 5.9, 20.5, 9.8]], np.float32)  # w 9.9 -> 9: x2 = 19, not int(20.5) = 20
    got = clip_boxes(xyxy, g)
    f = 374 / 692  # new width / width, for x and y alike (SlowFast scale_boxes)
    want = np.array([[62, 50, 162, 300], [-28, 5, -19, 8]], np.float64) * f  # not clipped to the image
    np.testing.assert_allclose(got, want, rtol=2 ** -22)  # float32 product: two roundings
    assert abs(got[0, 1] - 50 * 312 / 576) > 0.05  # the short-side factor would give y1 = 27.08


# ----------------------------------------------------------------------------- cadence


def test_clip_steps_and_keyframes():
    np.testing.assert_array_equal(clip_steps(20, 4, 3), [8, 12, 16, 20])  # linspace(0, 12, 4) = 0, 4, 8, 12
    np.testing.assert_array_equal(clip_steps(5, 4, 3), [0, 0, 1, 5])  # clamped at the stream start
    np.testing.assert_array_equal(clip_steps(5, 4, 3, first=3), [3, 3, 3, 5])
    off = clip_steps(1000, 40, 3) - 940  # the demo's 40x3 offsets around the keyframe (lookahead 60)
    assert list(off[:3]) == [-60, -57, -54] and list(off[19:21]) == [-2, 1] and list(off[-2:]) == [56, 60]
    assert [t for t in range(20) if keyframe_at(t, 6, 0) is not None] == [0, 6, 12, 18]
    assert [keyframe_at(t, 6, 3) for t in (2, 3, 9, 10)] == [None, 0, 6, None]


# ----------------------------------------------------------------------------- the stage


def frame(step: int) -> Frame:
    return Frame(100 + step, 0.0, np.full((H, W, 3), step, np.uint8))  # every pixel = its step


def tracks(rows: list[tuple[int, tuple[float, float, float, float], bool]]) -> Tracks:
    """[(id, box, detected)]"""
    n = len(rows)
    return Tracks(np.array([r[0] for r in rows]), np.array([r[1] for r in rows], np.float32).reshape(n, 4),
                  np.full(n, 2), np.zeros(n), np.zeros(n), np.array([0 if r[2] else 1 for r in rows]),
                  np.arange(n))


def people(n: int) -> People:
    return People(np.zeros((n, 4)), np.ones(n))


def stage(threaded: str = "off", every: int = 6, lookahead: int = 0, gate=None) -> AppearanceStage:
    model = StandInMViT(MCFG, gate)
    return AppearanceStage(model, MCFG, AppearanceStageConfig(every=every, lookahead=lookahead, threaded=threaded),
                           random_weights=True)


def scripted(step: int):
    """Track 1 from step 0 (box moves 2 px a step; not detected at step 12); track 2 born at step 2."""
    rows = [(1, (2.0 * step, 4.0, 2.0 * step + 10.6, 30.0), step != 12)]
    if step >= 2:
        rows.append((2, (20.0, 6.0, 40.0, 36.0), True))
    return tracks(rows)


def run(st: AppearanceStage, steps: int, flush_each: bool = False):
    out = []
    for t in range(steps):
        tr = scripted(t)
        out.append(st.update(frame(t), tr, people(len(tr))))
        if flush_each:
            st.flush()
    return out


def test_causal_cadence_ages_and_born_between_passes():
    st = stage()
    st.warmup()  # a pass on a blank clip: no state
    assert len(st.model.calls) == 1 and st.model.calls[0][0].shape == (1, 3, 4, 20, 20)
    out = run(st, 20)
    assert st.passes == 4  # keyframes 0, 6, 12, 18
    for t, step in enumerate(out):
        f = step.features
        assert isinstance(f, AppearanceFeatures) and step.frame_index == f.frame_index == 100 + t
        assert list(f.track_id) == list(step.tracks.track_id)
        ages = dict(zip(f.track_id.tolist(), f.age.tolist()))
        # track 1: keyframes 0, 6, 18 (not detected at 12: keeps the feature of 6)
        assert ages[1] == (t % 6 if t < 12 or t >= 18 else t - 6), t
        if t >= 2:  # track 2, born at step 2: nothing before the pass at 6
            assert ages[2] == (-1 if t < 6 else t % 6 if t < 12 or t >= 18 else t - 12), t
            row = list(f.track_id).index(2)
            assert f.valid[row] == (t >= 6) and (t >= 6 or not f.feature[row].any())
    # which frames each pass sampled (causal: the clip ends at the keyframe), and its boxes
    f6 = out[6].features
    assert decode_frames(f6.feature[0], MCFG) == [0, 0, 2, 6]  # steps -6, -2, 2, 6 clamped at 0
    assert decode_frames(out[18].features.feature[0], MCFG) == [6, 10, 14, 18]
    # track 1 at step 6: box (12, 4, 22.6, 30) -> int x, y, w, h = 12, 4, 10, 26 -> x 0.5
    np.testing.assert_array_equal(f6.feature[0, 4:], [6, 2, 11, 15])
    np.testing.assert_array_equal(out[9].features.feature[0], f6.feature[0])  # held until the next pass


def test_lookahead_delays_and_uses_the_keyframes_box():
    st = stage(lookahead=3)
    out = run(st, 14)
    assert out[:3] == [None, None, None]
    for t in range(3, 14):
        assert out[t].frame_index == 100 + t - 3 and out[t].tracks.track_id[0] == 1
    f0 = out[3].features  # keyframe 0: pass at step 3, clip ends at step 3
    assert f0.age[0] == 0 and decode_frames(f0.feature[0], MCFG) == [0, 0, 0, 3]
    np.testing.assert_array_equal(f0.feature[0, 4:], [0, 2, 5, 15])  # track 1's box at step 0, not 3
    f6 = out[9].features  # keyframe 6, clip [-3 .. 9] -> steps 0 (clamped), 1, 5, 9
    assert decode_frames(f6.feature[0], MCFG) == [0, 1, 5, 9]
    ages = [o.features.age[0] for o in out[3:]]
    assert ages == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]


def test_lookahead_at_most_half_the_clip():
    with pytest.raises(ValueError, match="half the clip"):
        stage(lookahead=7)
    stage(lookahead=6)


def test_no_detected_track_no_pass_and_empty_frames():
    st = stage()
    empty = st.update(frame(0), Tracks.empty(), People.empty())
    assert len(empty.features) == 0 and empty.features.dim == MCFG.feature_dim and st.passes == 0
    st.update(frame(1), tracks([(5, (1, 1, 9, 9), False)]), people(1))
    assert st.passes == 0


def test_frame_size_change_restarts_the_clip():
    st = stage(every=1)
    for t in range(3):
        st.update(frame(t), scripted(t), people(len(scripted(t))))
    big = Frame(200, 0.0, np.full((2 * H, 2 * W, 3), 50, np.uint8))
    out = st.update(big, scripted(3), people(2))
    assert decode_frames(out.features.feature[0], MCFG) == [50, 50, 50, 50]  # no frame of the old size


def test_worker_thread_equals_inline():
    """Flushed after each frame, the worker's features equal the inline ones one frame later: a pass
    queued at frame t is not waited for, so frame t still shows the previous feature, one frame older."""
    inline = run(stage(), 20)
    st = stage(threaded="on")
    try:
        threaded = run(st, 20, flush_each=True)
    finally:
        st.close()
    for t, (a, b) in enumerate(zip(inline, threaded)):
        if t % 6:
            np.testing.assert_array_equal(a.features.feature, b.features.feature)
            np.testing.assert_array_equal(a.features.age, b.features.age)
        elif t:  # keyframe: the previous frame's features, aged by one (tracks are the same at these steps)
            prev = inline[t - 1].features
            np.testing.assert_array_equal(b.features.feature[:len(prev)], prev.feature)
            np.testing.assert_array_equal(b.features.age[:len(prev)], np.where(prev.valid, prev.age + 1, -1))


def test_per_frame_path_does_not_wait_for_a_pass_and_skips_stale_passes():
    gate = threading.Event()
    st = stage(threaded="on", every=2, gate=gate)
    try:
        st.update(frame(0), scripted(0), people(1))  # pass 0 starts and blocks in the model
        assert st._worker is not None and st.model.entered.wait(timeout=60)
        for t in range(1, 5):  # passes 2 and 4 queue behind it
            out = st.update(frame(t), scripted(t), people(len(scripted(t))))
            assert not out.features.valid.any()  # nothing finished: no feature, not a zero one
        gate.set()
        st.flush()
        out = st.update(frame(5), scripted(5), people(2))
        assert st.skipped_passes == 1  # pass 2 was stale once 4 was queued
        assert list(out.features.age) == [1, 1]  # keyframe 4 for both tracks
    finally:
        gate.set()
        st.close()


def test_worker_error_reaches_the_caller():
    st = stage(threaded="on")
    st.model.forward = None  # the pass raises TypeError in the worker
    try:
        st.update(frame(0), scripted(0), people(1))
        st.flush()
        with pytest.raises(RuntimeError, match="appearance pass failed"):
            st.update(frame(1), scripted(1), people(1))
    finally:
        st.close()


# ----------------------------------------------------------------------------- the real (tiny) MViT


def _demo_clip(images: list[np.ndarray], box_xywh: np.ndarray, mcfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo's computation, step by step as LART's SlowFastWrapper and SlowFast's Predictor write it:
    crop each frame, BGR->RGB, short-side scale (float32 after resize), stack, /255, normalise, sample
    with linspace; the box cast to int32 x, y, w, h, shifted, scaled by new_width / width."""
    box = box_xywh.reshape(1, 4).astype(np.int32)
    box = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:4]], 1)
    frames = []
    for c, img in enumerate(images):
        h, w = img.shape[:2]
        if w / h > 1.2 and w > h:
            left = int((w - h * 1.2) // 2)
            img = img[:, left:-left, ::]
            if c == 0:
                box = np.array([[box[0][0] - left, box[0][1], box[0][2] - left, box[0][3]]])
        frames.append(img)
    height, width = frames[0].shape[:2]
    size = mcfg.crop_size
    new_w = int(np.floor((float(width) / height) * size))  # landscape
    boxes = torch.from_numpy(box).float()
    boxes *= float(new_w) / width
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    frames = [cv2.resize(f, (new_w, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) for f in frames]
    x = torch.from_numpy(np.array(frames)).float() / 255
    x = (x - torch.tensor(list(mcfg.mean))) / torch.tensor(list(mcfg.std))
    x = x.permute(3, 0, 1, 2)
    x = torch.index_select(x, 1, torch.linspace(0, x.shape[1] - 1, mcfg.num_frames).long())
    return x.unsqueeze(0), torch.cat([torch.zeros(1, 1), boxes], dim=1)


@pytest.mark.parametrize("graphs", ["off", "on"], ids=["eager", "graph-path"])
def test_stage_equals_the_demos_computation_with_the_tiny_mvit(pedestrians, graphs, monkeypatch):
    """Also through the CUDA-graph path (backbone replayed from static buffers, captures replaced by
    plain calls on the CPU)."""
    from conftest import read_frames
    from lart_stream.models.mvit import MViT, MViTConfig
    from lart_stream.realtime.appearance import _ClipRing
    from lart_stream.realtime.backends import UncapturedGraph

    monkeypatch.setattr(_ClipRing, "graph_cls", UncapturedGraph)

    mcfg = MViTConfig.tiny(mean=(0.45, 0.42, 0.4), std=(0.225, 0.22, 0.23))
    model = MViT(mcfg).init_random_(3).eval()
    st = AppearanceStage(model, mcfg, AppearanceStageConfig(every=6, lookahead=4, graphs=graphs), random_weights=True)
    images = read_frames(pedestrians)[:30]  # 768 x 576: the 1.2 crop applies
    box = np.array([130.6, 101.3, 191.9, 260.4], np.float32)  # x1, y1, x2, y2; moves 3 px a frame below
    out = []
    for t, img in enumerate(images):
        b = box + np.float32(3 * t) * np.array([1, 0, 1, 0], np.float32)
        out.append(st.update(Frame(t, 0.0, img), tracks([(9, tuple(b), True)]), people(1)))
    span = mcfg.num_frames * mcfg.sampling_rate  # 16: a clip of 17 frames
    with torch.inference_mode():
        for c in (0, 6, 12, 18, 24):
            t = c + 4  # the pass for keyframe c runs once frame c + 4 arrived
            clip_frames = [images[max(0, t - span + j)] for j in range(span + 1)]
            b = box + np.float32(3 * c) * np.array([1, 0, 1, 0], np.float32)
            xywh = np.concatenate([b[:2], b[2:] - b[:2]])
            clip, rois = _demo_clip(clip_frames, xywh, mcfg)
            want, _ = model(clip, rois)
            got = out[t].features
            assert got.frame_index == c and got.age[0] == 0
            assert torch.equal(torch.from_numpy(got.feature), want), c
    assert st._ring.graphs == (graphs == "on") and len(st._ring._captured) == (graphs == "on")


def test_latency_note_and_description():
    assert stage().latency_note(30.0) is None
    st = stage(lookahead=3)
    assert st.latency_note(30.0) == "appearance lookahead: actions are published 3 frames late = 0.10 s at 30 fps"
    assert st.latency_note(0.0) == "appearance lookahead: actions are published 3 frames late"
    assert "lookahead 3 frames" in st.describe() and "inline" in st.describe()
