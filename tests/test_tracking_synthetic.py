"""Synthetic scenes (ground truth consistent with the 3D fields) and metric thresholds for both trackers.

Numbers on these fixed seeds when written (IDSW summed, IDF1 averaged):
  crossing seeds 0-4:     phalp IDSW 1,  IDF1 0.882 | iou IDSW 22, IDF1 0.677
  leave_return seeds 0-1: phalp IDSW 5,  IDF1 0.747 | iou IDSW 8,  IDF1 0.648
  crowd seeds 0-2:        phalp IDSW 7,  IDF1 0.799 | iou IDSW 25, IDF1 0.628
"""

import math

import numpy as np
import pytest

from lart_stream.realtime.tracking import TrackerConfig, build_tracker
from lart_stream.realtime.tracking.costs import location_from_cam_t
from lart_stream.realtime.tracking.metrics import evaluate_tracker
from lart_stream.realtime.tracking.synthetic import focal_px, make_scene

SEEDS = {"crossing": range(5), "leave_return": range(2), "crowd": range(3)}


@pytest.fixture(scope="module")
def results():
    out = {}
    for name, seeds in SEEDS.items():
        for seed in seeds:
            scene = make_scene(name, seed=seed)
            for kind in ("phalp-reference", "iou"):
                out[name, seed, kind] = evaluate_tracker(build_tracker(kind, TrackerConfig()), scene)
    return out


def _total(results, name, kind, field):
    return sum(getattr(results[name, s, kind], field) for s in SEEDS[name])


def _mean(results, name, kind, field):
    return float(np.mean([getattr(results[name, s, kind], field) for s in SEEDS[name]]))


def test_crossings_3d_makes_fewer_id_switches(results):
    phalp, iou = _total(results, "crossing", "phalp-reference", "id_switches"), _total(results, "crossing", "iou", "id_switches")
    assert phalp <= 3 and iou >= 10 and phalp < iou, (phalp, iou)  # 1 vs 22 when written
    assert _mean(results, "crossing", "phalp-reference", "idf1") >= 0.85
    assert _mean(results, "crossing", "phalp-reference", "idf1") > _mean(results, "crossing", "iou", "idf1") + 0.1
    assert _mean(results, "crossing", "phalp-reference", "mota") >= 0.75


def test_leave_and_return(results):
    assert _mean(results, "leave_return", "phalp-reference", "idf1") >= 0.65
    assert _mean(results, "leave_return", "phalp-reference", "mota") >= 0.72
    assert _total(results, "leave_return", "phalp-reference", "id_switches") <= _total(results, "leave_return", "iou", "id_switches")


def test_crowd(results):
    phalp, iou = _total(results, "crowd", "phalp-reference", "id_switches"), _total(results, "crowd", "iou", "id_switches")
    assert phalp < iou, (phalp, iou)  # 7 vs 25 when written
    assert _mean(results, "crowd", "phalp-reference", "idf1") >= 0.7
    assert _mean(results, "crowd", "phalp-reference", "mota") >= 0.6
    assert _mean(results, "crowd", "iou", "mota") >= 0.55  # the baseline is a working tracker too


def test_hota_when_trackeval_is_installed(results):
    pytest.importorskip("trackeval")
    phalp, iou = _mean(results, "crossing", "phalp-reference", "hota"), _mean(results, "crossing", "iou", "hota")
    assert 0.6 <= phalp <= 1.0 and phalp > iou


def test_scene_is_deterministic_and_3d_consistent():
    a, b = make_scene("crossing", seed=3), make_scene("crossing", seed=3)
    assert len(a.frames) == 200 and a.n_identities == 4
    f = focal_px(a.config.image_size)
    n_fp = n_det = n_gt = 0
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.people.xyxy, fb.people.xyxy)
        np.testing.assert_array_equal(fa.det_ids, fb.det_ids)
        p = fa.people
        assert p.has_3d and p.pose_vector.shape[1] == 229 and p.image_size == (1280, 720)
        # location = HMR 2.0's projection of cam_t; pose_vector ends with (tx, ty, tz / 200).
        np.testing.assert_allclose(p.location, location_from_cam_t(p.cam_t, p.image_size), rtol=1e-4, atol=0.05)
        np.testing.assert_allclose(p.pose_vector[:, 226:], p.cam_t * [1, 1, 1 / 200], rtol=1e-5)
        rot = p.pose_vector[:, :216].reshape(-1, 24, 3, 3).astype(np.float64)
        np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
        real = fa.det_ids >= 0
        n_fp += int((~real).sum())
        n_det += int(real.sum())
        n_gt += len(fa.gt_ids)
        assert set(fa.det_ids[real]) <= set(fa.gt_ids)
        for j in np.flatnonzero(real):
            # The box height agrees with the depth (1.6-1.9 m people) within the noise.
            k = list(fa.gt_ids).index(fa.det_ids[j])
            if fa.gt_visibility[k] == 1.0 and 0 < fa.gt_xyxy[k, 1] and fa.gt_xyxy[k, 3] < 720:
                height_m = (p.xyxy[j, 3] - p.xyxy[j, 1]) * p.cam_t[j, 2] / f
                assert 1.3 < height_m < 2.3, height_m
    assert n_fp > 0 and 0.6 * n_gt < n_det < n_gt  # false positives and misses both happen


def test_scene_has_crossings_in_depth_and_occlusion():
    scene = make_scene("crossing", seed=0)
    vis = np.concatenate([f.gt_visibility for f in scene.frames])
    assert (vis < 0.3).sum() > 20 and (vis == 1.0).mean() > 0.5
    depth = {}
    for fr in scene.frames:
        for j, g in enumerate(fr.det_ids):
            if g > 0:
                depth.setdefault(int(g), []).append(float(fr.people.location[j, 2]))
    assert abs(np.median(depth[1]) - math.log(95)) < 0.05 and abs(np.median(depth[2]) - math.log(120)) < 0.05


def test_scene_names_and_steady_counts():
    with pytest.raises(ValueError, match="crossing, leave_return, crowd"):
        make_scene("parade")
    scene = make_scene("steady", n_people=20, n_frames=5, p_miss=0.0, fp_rate=0.0)
    assert all(len(f.people) == 20 and len(f.gt_ids) == 20 for f in scene.frames)
