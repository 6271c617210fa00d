"""Every lifecycle transition, for both trackers: tentative, confirmed at 5 hits, tentative miss deletes,
confirmed coasts (emitted with person_index -1) and dies on the 51st consecutive miss."""

import math

import numpy as np
import pytest

from lart_stream.realtime.records import People, Tracks, TrackState
from lart_stream.realtime.stages import Tracker
from lart_stream.realtime.tracking import TrackerConfig, build_tracker

KINDS = ["phalp-reference", "iou"]  # PHALP's frame-count lifecycle (lart: test_tracking_lart.py)
SIZE = (1280, 720)


def people(*rows: tuple[float, float, float, float], dim: int = 4) -> People:
    """People from (x px, y px, depth, confidence) rows, all 3D fields consistent; appearance = one-hot by x."""
    n = len(rows)
    f = 5000 / 256 * SIZE[0]
    xyxy, conf, cam_t, loc, app = [], [], [], [], []
    for x, y, z, c in rows:
        h = 1.75 * f / z
        xyxy.append([x - 0.2 * h, y - 0.5 * h, x + 0.2 * h, y + 0.5 * h])
        conf.append(c)
        cam_t.append([(x - SIZE[0] / 2) * z / f, (y - SIZE[1] / 2) * z / f, z])
        loc.append([x, y, math.log(z)])
        a = np.zeros(dim)
        a[int(x) % dim] = 1.0
        app.append(a)
    pose = np.zeros((n, 229))
    pose[:, 226:] = np.array(cam_t).reshape(n, 3) * [1, 1, 1 / 200]
    return People(np.array(xyxy).reshape(n, 4), np.array(conf), image_size=SIZE, pose_vector=pose,
                  cam_t=np.array(cam_t).reshape(n, 3), location=np.array(loc).reshape(n, 3),
                  appearance=np.array(app).reshape(n, dim))


ONE = people((640.0, 360.0, 100.0, 0.9))
NOBODY = People.empty(SIZE)


@pytest.mark.parametrize("kind", KINDS)
def test_tentative_then_confirmed_at_five_hits(kind):
    tracker = build_tracker(kind, TrackerConfig())
    assert isinstance(tracker, Tracker) and tracker.name == kind
    for frame in range(4):
        out = tracker.update(ONE, frame)
        assert len(out) == 0  # tentative tracks are not emitted
        assert [t.state for t in tracker.tracks] == [TrackState.TENTATIVE]
        assert tracker.tracks[0].hits == frame + 1
    out = tracker.update(ONE, 4)
    assert out.track_id.tolist() == [1]
    assert out.state.tolist() == [TrackState.CONFIRMED]
    assert out.hits.tolist() == [5] and out.age.tolist() == [5]
    assert out.time_since_update.tolist() == [0] and out.person_index.tolist() == [0]
    np.testing.assert_allclose(out.xyxy, ONE.xyxy)


@pytest.mark.parametrize("kind", KINDS)
def test_tentative_miss_deletes(kind):
    tracker = build_tracker(kind, TrackerConfig())
    tracker.update(ONE, 0)
    tracker.update(ONE, 1)
    out = tracker.update(NOBODY, 2)
    assert len(out) == 0 and tracker.tracks == []
    tracker.update(ONE, 3)
    assert [t.track_id for t in tracker.tracks] == [2]  # a new track, a new id


@pytest.mark.parametrize("kind", KINDS)
def test_confirmed_track_coasts_then_dies_after_max_age_misses(kind):
    tracker = build_tracker(kind, TrackerConfig())
    for frame in range(5):
        tracker.update(ONE, frame)
    for miss in range(1, 51):
        out = tracker.update(NOBODY, 4 + miss)
        assert out.track_id.tolist() == [1], miss  # still alive and emitted
        assert out.time_since_update.tolist() == [miss]
        assert out.person_index.tolist() == [-1]
        assert out.state.tolist() == [TrackState.CONFIRMED]
        assert not out.detected.any()
    out = tracker.update(NOBODY, 55)  # the 51st consecutive miss
    assert len(out) == 0 and tracker.tracks == []


@pytest.mark.parametrize("kind", KINDS)
def test_confirmed_track_is_found_again_after_misses(kind):
    tracker = build_tracker(kind, TrackerConfig())
    for frame in range(5):
        tracker.update(ONE, frame)
    for frame in range(5, 35):
        tracker.update(NOBODY, frame)
    out = tracker.update(ONE, 35)
    assert out.track_id.tolist() == [1]
    assert out.time_since_update.tolist() == [0] and out.person_index.tolist() == [0]
    assert out.hits.tolist() == [6] and out.age.tolist() == [36]


@pytest.mark.parametrize("kind", KINDS)
def test_ids_are_per_instance_and_reset(kind):
    a, b = build_tracker(kind), build_tracker(kind)
    two = people((300.0, 360.0, 100.0, 0.9), (1000.0, 360.0, 120.0, 0.9))
    for frame in range(5):
        out = a.update(two, frame)
    assert sorted(out.track_id.tolist()) == [1, 2]
    out = b.update(ONE, 0)
    assert [t.track_id for t in b.tracks] == [1]  # b's counter is its own
    a.reset()
    assert a.tracks == []
    a.update(ONE, 0)
    assert [t.track_id for t in a.tracks] == [1]


@pytest.mark.parametrize("kind", KINDS)
def test_empty_frames_flow_through(kind):
    tracker = build_tracker(kind)
    out = tracker.update(NOBODY, 0)
    assert isinstance(out, Tracks) and len(out) == 0
    out = tracker.update(People.empty(), 1)  # 2D-only empty record, no image size
    assert len(out) == 0


def test_n_init_one_confirms_at_birth():
    tracker = build_tracker("phalp-reference", TrackerConfig(n_init=1))
    out = tracker.update(ONE, 0)
    assert out.track_id.tolist() == [1] and out.person_index.tolist() == [0]


def test_phalp_emits_3d_fields_and_blends_appearance():
    tracker = build_tracker("phalp-reference", TrackerConfig())
    first = people((640.0, 360.0, 100.0, 0.9))
    second = people((641.0, 360.0, 100.0, 0.8))  # appearance one-hot moves to the next slot
    tracker.update(first, 0)
    for frame in range(1, 5):
        out = tracker.update(second, frame)
    a = 0.1 * 0.8 ** 2  # PHALP: (1 - a) old + a new, a = alpha * conf^2
    want = first.appearance[0].astype(float)
    for _ in range(4):
        want = (1 - a) * want + a * second.appearance[0]
    np.testing.assert_allclose(out.appearance[0], want, rtol=1e-6)
    np.testing.assert_allclose(out.pose_vector[0], second.pose_vector[0])
    np.testing.assert_allclose(out.cam_t[0], second.cam_t[0])


def test_phalp_ignores_low_confidence_rows_but_reports_original_rows():
    tracker = build_tracker("phalp-reference", TrackerConfig())
    frame = people((200.0, 360.0, 100.0, 0.3), (640.0, 360.0, 100.0, 0.9))  # row 0 below min_confidence
    for i in range(5):
        out = tracker.update(frame, i)
    assert out.person_index.tolist() == [1]
    assert len(tracker.tracks) == 1


def test_phalp_needs_3d_people():
    tracker = build_tracker("phalp-reference")
    boxes_only = People(ONE.xyxy, ONE.confidence, image_size=SIZE)
    with pytest.raises(ValueError, match="iou"):
        tracker.update(boxes_only, 0)
    assert len(build_tracker("iou").update(boxes_only, 0)) == 0  # the 2D baseline takes it


def test_iou_low_confidence_only_keeps_tracks():
    tracker = build_tracker("iou")
    low = people((640.0, 360.0, 100.0, 0.3))
    tracker.update(low, 0)
    assert tracker.tracks == []  # a low-confidence box starts nothing
    for frame in range(5):
        tracker.update(ONE, frame)
    out = tracker.update(low, 5)  # second association keeps the track
    assert out.track_id.tolist() == [1] and out.time_since_update.tolist() == [0]


def test_build_tracker_rejects_unknown_kind():
    with pytest.raises(ValueError, match="lart, phalp-reference, iou"):
        build_tracker("sort")
