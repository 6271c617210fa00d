"""PHALP's EQ_019 cost, its pieces and the thresholded Hungarian assignment, against hand-computed values."""

import math

import numpy as np
import pytest

from lart_stream.realtime.records import People
from lart_stream.realtime.tracking import TrackerConfig, build_tracker
from lart_stream.realtime.tracking.costs import (cosine_appearance_cost, depth_cost, get_appearance_cost, linear_assignment,
                                     location_cost, location_from_cam_t, normalise_location, phalp_cost,
                                     phalp_l2_appearance_cost, pose_cost)
from lart_stream.realtime.tracking.iou import box_iou

B0, B1, B2, B3 = 4.0536, 1.3070, 0.3792, 4.1658


def test_normalise_location_pads_to_the_long_side():
    # 640x480: M = 640, the frame sits 80 px down in the padded square.
    loc = normalise_location(np.array([[320.0, 240.0, 2.0], [0.0, 0.0, 3.0], [640.0, 480.0, 1.0]]), (640, 480))
    np.testing.assert_allclose(loc, [[0.5, 0.5, 2.0], [0.0, 0.125, 3.0], [1.0, 0.875, 1.0]])
    # Portrait: the padding is horizontal.
    np.testing.assert_allclose(normalise_location(np.array([[0.0, 0.0, 0.0]]), (480, 640)), [[0.125, 0.0, 0.0]])


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280), (256, 256)])
def test_location_units_match_phalp_projection(size):
    # PHALP: x_n = 0.5 + 5000 tx / (256 tz) (joint 44 projected in the 256-px square, divided by 256).
    cam_t = np.array([[1.0, 0.5, 50.0], [-0.3, 0.2, 120.0]])
    loc = location_from_cam_t(cam_t, size)
    f = 5000 / 256 * max(size)
    np.testing.assert_allclose(loc[0], [f * 1.0 / 50 + size[0] / 2, f * 0.5 / 50 + size[1] / 2, math.log(50)])
    norm = normalise_location(loc, size)
    np.testing.assert_allclose(norm[:, 0], 0.5 + 5000 * cam_t[:, 0] / (256 * cam_t[:, 2]))
    np.testing.assert_allclose(norm[:, 1], 0.5 + 5000 * cam_t[:, 1] / (256 * cam_t[:, 2]))


def test_pose_cost_uses_226_dims_and_clips():
    a = np.zeros((1, 229))
    b = np.zeros((3, 229))
    b[0, 0] = 0.3  # 0.09
    b[1, 226:] = 50.0  # camera dims: ignored
    b[2, 5] = 2.0  # 4 -> clipped to 1.5
    np.testing.assert_allclose(pose_cost(a, b), [[0.09, 0.0, 1.5]], atol=1e-12)


def test_location_and_depth_costs():
    np.testing.assert_allclose(location_cost(np.array([[0.0, 0.0]]), np.array([[0.3, 0.4], [0.0, 0.0]])), [[0.5, 0.0]])
    d = depth_cost(np.log([100.0, 50.0]), np.log([104.0]))
    np.testing.assert_allclose(d, [[math.log(1.04)], [math.log(104 / 50)]])


def test_appearance_costs():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [0.0, -1.0], [math.cos(0.3), math.sin(0.3)]])
    np.testing.assert_allclose(cosine_appearance_cost(a, b), [[0, 1, 1 - math.cos(0.3)], [1, 2, 1 - math.sin(0.3)]], atol=1e-12)
    # PHALP: 100 * ||a/1e3 - b/1e3||^2.
    np.testing.assert_allclose(phalp_l2_appearance_cost(np.array([[1000.0, 0.0]]), np.array([[0.0, 0.0], [1000.0, 2000.0]])),
                               [[100.0, 400.0]])
    assert get_appearance_cost("none")(a, b).shape == (2, 3)
    with pytest.raises(ValueError, match="cosine, phalp_l2, none"):
        get_appearance_cost("euclid")


def test_phalp_cost_formula_by_hand():
    d_a = np.array([[0.2, 1.0]])
    d_p = np.array([[0.5, 1.5]])
    d_l = np.array([[0.01, 0.2]])
    d_n = np.array([[0.05, 0.3]])
    c_xy, c_n = np.array([0.02]), np.array([0.15])
    got = phalp_cost(d_a, d_p, d_l, d_n, c_xy, c_n)
    want = [(1 + B0 * a) * (1 + B1 * p) * math.exp(l / ((0.1 + math.tanh(0.02)) * B2))
            * math.exp(n / ((0.1 + math.tanh(0.15)) * B3)) for a, p, l, n in ((0.2, 0.5, 0.01, 0.05), (1.0, 1.5, 0.2, 0.3))]
    np.testing.assert_allclose(got[0], want, rtol=1e-12)
    assert 3.0 < got[0, 0] < 5.0 and got[0, 1] > 100  # near pair accepted, far one rejected


def test_phalp_cost_nan_and_overflow_are_rejectable():
    got = phalp_cost(np.array([[np.nan, 0.0]]), np.zeros((1, 2)), np.array([[0.0, 1e4]]), np.zeros((1, 2)),
                     np.array([0.0]), np.array([0.0]))
    assert got[0, 0] == 0.0  # PHALP's nan_to_num
    assert np.isfinite(got[0, 1]) and got[0, 1] > 1e300


def test_linear_assignment_rejects_above_threshold():
    cost = np.array([[1.0, 200.0, 50.0], [200.0, 300.0, 101.0]])
    matches, rows, cols = linear_assignment(cost, 100.0)
    assert matches.tolist() == [[0, 0]]
    assert rows.tolist() == [1] and cols.tolist() == [1, 2]
    # Minimum total cost, not greedy: row 0 gives up its best column.
    matches, _, _ = linear_assignment(np.array([[1.0, 2.0], [3.0, 90.0]]), 100.0)
    assert sorted(matches.tolist()) == [[0, 1], [1, 0]]
    matches, rows, cols = linear_assignment(np.zeros((0, 3)), 100.0)
    assert matches.shape == (0, 2) and rows.size == 0 and cols.tolist() == [0, 1, 2]


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10], [0, 0, 0, 0]]), np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[25 / 175, 1.0, 0.0], [0.0, 0.0, 0.0]])


def _person(x: float, y: float, z: float, pose: np.ndarray, app: np.ndarray, conf: float = 0.9) -> People:
    size = (1280, 720)
    f = 5000 / 256 * 1280
    cam_t = np.array([[(x - 640) * z / f, (y - 360) * z / f, z]])
    return People(xyxy=np.array([[x - 50, y - 125, x + 50, y + 125]]), confidence=np.array([conf]), image_size=size,
                  pose_vector=pose[None].astype(np.float32), cam_t=cam_t.astype(np.float32),
                  location=np.array([[x, y, math.log(z)]], np.float32), appearance=app[None].astype(np.float32))


def test_tracker_cost_for_a_newborn_track_by_hand():
    """The second frame's cost of a track born in the first: PHALP predicts the birth detection and uses
    its camera translation (tx, ty, tz) as the intervals."""
    pose0 = np.zeros(229)
    pose1 = pose0.copy()
    pose1[0] = 0.3  # d_P = 0.09
    pose1[227] = 5.0  # camera dims: ignored
    tracker = build_tracker("phalp-reference", TrackerConfig())
    tracker.update(_person(700, 400, 100, pose0, np.array([1.0, 0.0])), 0)
    tracker.update(_person(712, 396, 104, pose1, np.array([math.cos(0.3), math.sin(0.3)])), 1)
    # Normalised by M = 1280: dx = 12/1280, dy = -4/1280. tx = 60 * 100 / 25000 = 0.24, ty = 40 * 100 / 25000 = 0.16.
    d_l = math.hypot(12 / 1280, 4 / 1280)
    c_xy = math.hypot(0.24, 0.16)
    c_n = math.log(100)
    d_n = math.log(104 / 100)
    d_a = 1 - math.cos(0.3)
    want = ((1 + B0 * d_a) * (1 + B1 * 0.09) * math.exp(d_l / ((0.1 + math.tanh(c_xy)) * B2))
            * math.exp(d_n / ((0.1 + math.tanh(c_n)) * B3)))
    assert tracker.last_cost.shape == (1, 1)
    assert tracker.last_cost[0, 0] == pytest.approx(want, rel=1e-5)  # float32 inputs
    assert len(tracker.tracks) == 1 and tracker.tracks[0].hits == 2


def test_tracker_cost_is_phalp_l2_when_asked():
    tracker = build_tracker("phalp-reference", TrackerConfig(appearance_cost="phalp_l2"))
    pose = np.zeros(229)
    tracker.update(_person(700, 400, 100, pose, np.array([1000.0, 0.0])), 0)
    tracker.update(_person(700, 400, 100, pose, np.array([0.0, 0.0])), 1)
    # Only the appearance differs: (1 + B0 * 100 * 1^2) = 406.36 > 100 -> rejected, a second track starts.
    assert tracker.last_cost[0, 0] == pytest.approx(1 + B0 * 100.0, rel=1e-6)
    assert [t.hits for t in tracker.tracks] == [1]  # the first (tentative) track missed and was deleted
