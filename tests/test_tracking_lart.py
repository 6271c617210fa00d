"""The default ``lart`` tracker: its cost functions on hand-made arrays, and its rules on hand-made frames
(two stages, state-aware gates, no history poisoning, lifecycle in seconds, lost gallery)."""

import math

import numpy as np
import pytest

from lart_stream.realtime.records import People, TrackState
from lart_stream.realtime.stages import Tracker
from lart_stream.realtime.tracking import LartTrackerConfig, TrackerConfig, build_tracker
from lart_stream.realtime.tracking.costs import (body_height, coasting_gate, coasting_weight, gated_assignment, lart_cost,
                                                 lart_gate, linear_assignment, occluded_appearance_cost, scaled_squared_distance, spread)
from lart_stream.realtime.tracking.predictors import weighted_ridge_line

SIZE = (1280, 720)
F = 5000 / 256 * SIZE[0]
RED, BLUE, PURPLE = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0]), np.array([1.0, 0.8, 0, 0])
GREEN = np.array([0, 0, 1.0, 0])


def people(*rows: tuple, z: float = 100.0) -> People:
    """People from (x px, y px, appearance, confidence[, depth]) rows (depth z unless given), 3D fields
    consistent, same pose."""
    n = len(rows)
    rows = [(*r, z) if len(r) == 4 else r for r in rows]
    xyxy = [[x - 0.35 * F / d, y - 0.875 * F / d, x + 0.35 * F / d, y + 0.875 * F / d] for x, y, _, _, d in rows]
    cam_t = [[(x - SIZE[0] / 2) * d / F, (y - SIZE[1] / 2) * d / F, d] for x, y, _, _, d in rows]
    pose = np.zeros((n, 229))
    pose[:, 226:] = np.array(cam_t).reshape(n, 3) * [1, 1, 1 / 200]
    return People(np.array(xyxy).reshape(n, 4), np.array([r[3] for r in rows]), image_size=SIZE, pose_vector=pose,
                  cam_t=np.array(cam_t).reshape(n, 3),
                  location=np.array([[x, y, math.log(d)] for x, y, _, _, d in rows]).reshape(n, 3),
                  appearance=np.array([r[2] for r in rows]).reshape(n, 4))


NOBODY = People.empty(SIZE)


def confirmed(tracker, frames=range(3), x=640.0, app=RED):
    for f in frames:
        out = tracker.update(people((x, 360.0, app, 0.9)), f)
    assert out.track_id.tolist() == [1] and out.state.tolist() == [TrackState.CONFIRMED]
    return out


# --- cost functions ---------------------------------------------------------------------------------

def test_body_height_and_spread_by_hand():
    np.testing.assert_allclose(body_height(np.log([100.0, 50.0])), [1.7 * 5000 / 256 / 100, 1.7 * 5000 / 256 / 50])
    np.testing.assert_allclose(spread(np.array([0.0, 0.5, 2.0, -1.0]), 0.1, 0.6), [0.1, 0.4, 1.3, 0.1])


def test_scaled_squared_distance_by_hand():
    tracks = np.array([[0.0, 0.0], [1.0, 1.0]])
    dets = np.array([[3.0, 4.0], [1.0, 1.0]])
    got = scaled_squared_distance(tracks, np.array([1.0, 2.0]), dets)
    np.testing.assert_allclose(got, [[25.0, 2.0], [(4 + 9) / 4, 0.0]], atol=1e-12)


def test_coasting_gate_tightens_and_weight_fades():
    np.testing.assert_allclose(coasting_gate(np.array([0.0, 0.25, 0.5, 3.0]), 0.6, 0.4, 0.5), [0.6, 0.5, 0.4, 0.4])
    np.testing.assert_allclose(coasting_weight(np.array([0.0, 0.3, -1.0]), 2.0, 0.3), [2.0, 2.0 / math.e, 2.0])


def test_lart_cost_by_hand():
    xy2, z2 = np.array([[4.0, 0.0]]), np.array([[1.0, 9.0]])
    d_a, d_pose, d_betas = np.array([[0.1, 0.5]]), np.array([[1.0, 0.0]]), np.array([[0.2, 0.0]])
    got = lart_cost(xy2, z2, d_a, d_pose, d_betas, pose_weight=np.array([0.5]), appearance_weight=8.0,
                    betas_weight=1.0, log_spread=np.array([0.3]))
    want = [[2.0 + 0.5 + 0.8 + 0.5 + 0.2 + 0.3, 0.0 + 4.5 + 4.0 + 0.0 + 0.0 + 0.3]]
    np.testing.assert_allclose(got, want)


def test_lart_gate_needs_location_depth_and_appearance():
    xy2 = np.array([[1.0, 10.0, 1.0, 1.0]])
    z2 = np.array([[1.0, 1.0, 10.0, 1.0]])
    d_a = np.array([[0.3, 0.3, 0.3, 0.5]])
    assert lart_gate(xy2, z2, d_a, np.array([0.4]), gate_sigma=3.0).tolist() == [[True, False, False, False]]
    # The same pair passes for a fresh track and fails for a coasting one (tighter appearance gate).
    two = lart_gate(np.ones((2, 1)), np.ones((2, 1)), np.full((2, 1), 0.5), np.array([0.65, 0.4]), 3.0)
    assert two[:, 0].tolist() == [True, False]


def test_gated_assignment_respects_the_gate_and_maps_indices_back():
    cost = np.array([[1.0, 2.0, 9.0],
                     [1.5, 8.0, 3.0],
                     [0.1, 0.1, 0.1]])
    allowed = np.ones_like(cost, bool)
    allowed[0, 0] = False  # the cheapest pair is gated out
    m = gated_assignment(cost, allowed, rows=np.array([0, 1]), cols=np.array([0, 1, 2]), max_cost=5.0)
    assert sorted(map(tuple, m.tolist())) == [(0, 1), (1, 0)]
    m = gated_assignment(cost, allowed, rows=np.array([1]), cols=np.array([1]), max_cost=5.0)
    assert m.shape == (0, 2)  # 8 > max_cost
    assert gated_assignment(cost, allowed, np.array([], int), np.array([0]), 5.0).shape == (0, 2)


def test_gated_assignment_fast_path_agrees_with_the_solver():
    """Sparse gates (one admissible pair per row and column: the solver is skipped) and dense ones give the
    solver's answer on the gated matrix."""
    rng = np.random.default_rng(0)
    for density in (0.05, 0.15, 0.5, 1.0):
        for _ in range(50):
            cost = rng.uniform(0, 10, (6, 7))
            allowed = rng.random(cost.shape) < density
            got = gated_assignment(cost, allowed, np.arange(6), np.arange(7), max_cost=8.0)
            want, _, _ = linear_assignment(np.where(allowed, cost, np.inf), 8.0)
            assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))


def test_weighted_ridge_line_against_weighted_least_squares():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(-1, 0, (3, 6)), axis=1)
    y = rng.normal(size=(3, 6, 2))
    w = rng.uniform(0.1, 1.0, (3, 6))
    w[1, :3] = 0.0  # ignored observations
    slope, intercept = weighted_ridge_line(t, y, w, alpha=0.0)
    for k in range(3):
        keep = w[k] > 0
        for c in range(2):
            b, a = np.polyfit(t[k, keep], y[k, keep, c], 1, w=np.sqrt(w[k, keep]))
            assert slope[k, c] == pytest.approx(b, rel=1e-9, abs=1e-9)
            assert intercept[k, c] == pytest.approx(a, rel=1e-9, abs=1e-9)
    # Shrinkage: slope = S_ty / (S_tt + alpha), by hand for equal weights on (0, 0), (1, 2).
    s, i = weighted_ridge_line(np.array([[0.0, 1.0]]), np.array([[[0.0], [2.0]]]), np.ones((1, 2)), alpha=0.5)
    assert s[0, 0] == pytest.approx(1.0 / (0.5 + 0.5)) and i[0, 0] == pytest.approx(1.0 - s[0, 0] * 0.5)
    # One observation: no slope, the observation itself.
    s, i = weighted_ridge_line(np.array([[0.0, 0.0]]), np.array([[[5.0], [7.0]]]), np.array([[0.0, 1.0]]), alpha=0.02)
    assert s[0, 0] == 0.0 and i[0, 0] == 7.0


# --- tracker rules --------------------------------------------------------------------------------

def test_is_a_tracker_and_confirms_at_three_hits():
    tracker = build_tracker("lart")
    assert isinstance(tracker, Tracker) and tracker.name == "lart"
    tracker.warmup()
    assert len(tracker.update(people((640.0, 360.0, RED, 0.9)), 0)) == 0
    assert len(tracker.update(people((641.0, 360.0, RED, 0.9)), 1)) == 0
    confirmed(tracker, frames=[2])


def test_low_score_detections_never_start_tracks_but_extend_confirmed_ones():
    tracker = build_tracker("lart")
    for f in range(5):
        assert len(tracker.update(people((300.0, 360.0, RED, 0.5)), f)) == 0
    assert tracker.tracks == []
    tracker = build_tracker("lart")
    confirmed(tracker)
    out = tracker.update(people((642.0, 360.0, RED, 0.5)), 3)  # partly occluded: low score, same person
    assert out.time_since_update.tolist() == [0] and out.person_index.tolist() == [0]


@pytest.mark.parametrize("score", [0.5, 0.9])
def test_a_false_positive_beside_a_hidden_person_is_not_taken(score):
    """PHALP's reference takes a differently dressed detection next to a coasting track; lart does not."""
    lart, ref = build_tracker("lart"), build_tracker("phalp-reference")
    for f in range(5):
        lart.update(people((640.0, 360.0, RED, 0.9)), f)
        ref.update(people((640.0, 360.0, RED, 0.9)), f)
    for f in range(5, 15):  # hidden for a third of a second
        lart.update(NOBODY, f)
        ref.update(NOBODY, f)
    fp = people((655.0, 360.0, BLUE, score))
    assert ref.update(fp, 15).time_since_update.tolist() == [0]  # the reference is hijacked
    out = lart.update(fp, 15)
    assert out.track_id.tolist() == [1] and out.time_since_update.tolist() == [11]  # still coasting
    assert lart.tracks[0].person_index == -1


def test_occluded_appearance_cost_by_hand():
    e = np.eye(4)
    tracks = np.stack([e[0], e[2]])  # the hidden person, a stranger
    det = np.array([[0.4, 0.6, 0, 0], [0.4, 0.1, 0, 0.3]])  # 40% hidden person + 60% occluder; little occluder
    got = occluded_appearance_cost(tracks, det, e[1:2], np.ones((2, 1), bool), min_share=0.2)
    plain = 1 - det / np.linalg.norm(det, axis=1, keepdims=True)  # cos with e0 and e2 are columns 0 and 2
    # Row 0: the occluder's part (e1) is taken out of both, the rest is pure e0 -> 0; the stranger stays at 1.
    # Row 1: the occluder makes up 0.1 / 0.51 < 0.2 of it: plain distances.
    want = np.array([[0.0, plain[1, 0]], [1.0, plain[1, 2]]])
    np.testing.assert_allclose(got, want, atol=1e-12)
    not_nearer = occluded_appearance_cost(tracks, det, e[1:2], np.zeros((2, 1), bool))
    np.testing.assert_allclose(not_nearer[0], plain[:, 0], atol=1e-12)  # track e0 x both detections


def test_a_partly_hidden_person_keeps_the_track_but_a_false_positive_does_not_take_it():
    """A low-score detection whose embedding is 65% the nearer occluder's is this person once the occluder's
    share is discounted; one that is half occluder and half a stranger is not."""
    def run(hidden_app):
        tracker = build_tracker("lart")
        for f in range(3):
            tracker.update(people((640.0, 360.0, RED, 0.9, 110.0), (700.0, 360.0, BLUE, 0.9, 100.0)), f)
        return tracker.update(people((700.0, 360.0, BLUE, 0.9, 100.0), (641.0, 360.0, hidden_app, 0.5, 110.0)), 3)

    mixed = 0.35 * RED + 0.65 * BLUE  # plain d_A to RED 0.53: over the low-score gate 0.5
    out = run(mixed)
    assert dict(zip(out.track_id.tolist(), out.person_index.tolist())) == {1: 1, 2: 0}
    out = run(0.5 * GREEN + 0.5 * BLUE)
    assert dict(zip(out.track_id.tolist(), out.person_index.tolist())) == {1: -1, 2: 0}


@pytest.mark.parametrize("same_shape", [True, False])
def test_a_returner_partly_hidden_keeps_the_old_id_when_the_body_shape_agrees(same_shape):
    """Back after 2.5 s (lost, not coasting) as a low-score detection whose embedding is mostly someone
    else's (d_A 0.53 to the track, over the strict low gate and the lost gate 0.4; no matched occluder to
    discount): the old track takes it when the body shape (betas) agrees, not when it does not. The lost
    track's spread term (~7 here) is left out of the low-score cost cut, which it would exceed alone."""
    cfg = LartTrackerConfig()
    tracker = build_tracker("lart")
    confirmed(tracker)
    back = people((650.0, 360.0, 0.35 * RED + 0.65 * BLUE, 0.5))
    if not same_shape:
        back.pose_vector[:, 216:226] = 0.5  # betas squared distance 2.5 > low_shape_gate
    out = tracker.update(back, 2 + int(2.5 * cfg.fps))
    if same_shape:
        assert out.track_id.tolist() == [1] and out.person_index.tolist() == [0]
        assert tracker.tracks[0].weights[-1] == pytest.approx(cfg.weak_weight)  # a weak observation
    else:
        assert len(out) == 0 and tracker.tracks[0].person_index == -1


def test_weak_matches_do_not_poison_appearance_or_pose():
    tracker = build_tracker("lart")
    confirmed(tracker)
    before = tracker.tracks[0].appearance.copy()
    weak = people((641.0, 360.0, PURPLE, 0.5))  # low score, appearance half the occluder's (d_a ~ 0.22)
    weak.pose_vector[:, :9] = 0.3
    out = tracker.update(weak, 3)
    assert out.time_since_update.tolist() == [0]
    np.testing.assert_array_equal(tracker.tracks[0].appearance, before)
    assert np.all(tracker.tracks[0].pose[:9] == 0.0)
    assert tracker.tracks[0].weights[-1] == pytest.approx(LartTrackerConfig().weak_weight)
    tracker.update(people((641.0, 360.0, PURPLE, 0.9)), 4)  # confident: updates
    assert not np.array_equal(tracker.tracks[0].appearance, before)


def test_lifecycle_in_seconds_coasting_then_lost_then_reidentified_with_the_old_id():
    cfg = LartTrackerConfig()
    tracker = build_tracker("lart")
    confirmed(tracker)
    out = tracker.update(NOBODY, 2 + 30)  # 1 s unseen: still coasting, published, marked
    assert out.track_id.tolist() == [1] and out.time_since_update.tolist() == [30] and out.person_index.tolist() == [-1]
    assert len(tracker.update(NOBODY, 2 + 31)) == 0  # lost: not published ...
    assert len(tracker.tracks) == 1  # ... but kept for re-identification
    back = 2 + int(2.5 * cfg.fps)  # 2.5 s later, a little to the side
    out = tracker.update(people((700.0, 360.0, RED, 0.9)), back)
    assert out.track_id.tolist() == [1] and out.time_since_update.tolist() == [0]
    # Someone else coming back is not given the old id.
    tracker = build_tracker("lart")
    confirmed(tracker)
    tracker.update(people((700.0, 360.0, BLUE, 0.9)), 2 + 75)
    assert [t.track_id for t in tracker.tracks] == [1, 2]


def test_lifetime_counts_time_not_updates():
    """Frames dropped upstream show as index gaps (or timestamps): a lost track dies after max_unseen_s of
    time however few updates that took, and not before."""
    cfg = LartTrackerConfig()
    tracker = build_tracker("lart")
    confirmed(tracker)
    for f in (40, 80, 2 + int(cfg.max_unseen_s * cfg.fps) - 1):  # three updates over ~4 s
        tracker.update(NOBODY, f)
    assert len(tracker.tracks) == 1
    tracker.update(NOBODY, 2 + int(cfg.max_unseen_s * cfg.fps) + 1)
    assert tracker.tracks == []
    # Explicit timestamps win over frame indices (a 10 fps source).
    tracker = build_tracker("lart")
    for f in range(3):
        tracker.update(people((640.0, 360.0, RED, 0.9)), f, timestamp=f / 10)
    tracker.update(NOBODY, 3, timestamp=0.2 + cfg.max_unseen_s - 0.05)
    assert len(tracker.tracks) == 1
    tracker.update(NOBODY, 4, timestamp=0.2 + cfg.max_unseen_s + 0.05)
    assert tracker.tracks == []


def test_tentative_tracks_die_quickly_and_the_lost_gallery_is_bounded():
    tracker = build_tracker("lart")
    tracker.update(people((640.0, 360.0, RED, 0.9)), 0)
    tracker.update(NOBODY, 1)
    assert len(tracker.tracks) == 1  # one missed frame is forgiven
    tracker.update(NOBODY, 3)
    assert tracker.tracks == []
    tracker = build_tracker("lart", TrackerConfig(lart=LartTrackerConfig(max_lost=1)))
    for f in range(3):
        tracker.update(people((300.0, 360.0, RED, 0.9), (1000.0, 360.0, BLUE, 0.9)), f)
    for f in range(3, 20):
        tracker.update(people((1000.0, 360.0, BLUE, 0.9)), f)  # red leaves first
    tracker.update(NOBODY, 60)  # both lost; only the most recently seen stays
    assert [t.track_id for t in tracker.tracks] == [2]


def test_config_is_checked():
    with pytest.raises(ValueError, match="low_conf"):
        LartTrackerConfig(high_conf=0.8, new_track_conf=0.7)
    with pytest.raises(ValueError, match="coast_s"):
        LartTrackerConfig(coast_s=5.0, max_unseen_s=4.0)
