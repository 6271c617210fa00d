"""Tracking metrics (motmetrics; HOTA from trackeval) on hand-made cases, and agreement of the two packages."""

import numpy as np
import pytest

from lart_stream.realtime.records import Tracks
from lart_stream.realtime.tracking import build_tracker
from lart_stream.realtime.tracking.iou import box_iou
from lart_stream.realtime.tracking.metrics import FrameBoxes, evaluate, ground_truth, hypotheses, run_tracker, trackeval_data
from lart_stream.realtime.tracking.synthetic import make_scene

A = np.array([0.0, 0.0, 10.0, 20.0])
B = np.array([50.0, 0.0, 60.0, 20.0])


def frames(*rows):
    return [FrameBoxes(np.array(ids), np.array(boxes).reshape(-1, 4)) for ids, boxes in rows]


def test_perfect_tracking():
    gt = frames(([1, 2], [A, B]), ([1, 2], [A + 1, B + 1]), ([1], [A + 2]))
    hyp = frames(([7, 9], [A, B]), ([7, 9], [A + 1, B + 1]), ([7], [A + 2]))
    m = evaluate(gt, hyp)
    assert (m.idf1, m.mota, m.id_switches, m.num_gt, m.false_positives, m.misses) == (1.0, 1.0, 0, 5, 0, 0)
    if m.hota is not None:
        assert m.hota == pytest.approx(1.0)


def test_swap_counts_two_switches():
    # Hypotheses swap identities after frame 2 of 4: each object switches once.
    gt = frames(*[([1, 2], [A, B])] * 4)
    hyp = frames(([5, 6], [A, B]), ([5, 6], [A, B]), ([6, 5], [A, B]), ([6, 5], [A, B]))
    m = evaluate(gt, hyp)
    assert m.id_switches == 2
    assert m.mota == pytest.approx(1 - 2 / 8)
    assert m.idf1 == pytest.approx(0.5)  # best global id mapping covers 2 of 4 frames per object


def test_false_positive_miss_and_iou_threshold():
    shifted = A + np.array([6.0, 0.0, 6.0, 0.0])  # IoU 4/16 = 0.25 < 0.5: not a match
    gt = frames(([1, 2], [A, B]), ([1, 2], [A, B]))
    hyp = frames(([5], [A]), ([5, 8], [A, shifted]))
    m = evaluate(gt, hyp)
    assert (m.misses, m.false_positives, m.id_switches) == (2, 1, 0)
    assert m.mota == pytest.approx(1 - 3 / 4)


def test_hypotheses_drop_coasting_tracks():
    tracks = Tracks(track_id=[3, 4], xyxy=[A, B], state=[2, 2], age=[9, 9], hits=[9, 8],
                    time_since_update=[0, 2], person_index=[0, -1])
    h = hypotheses(tracks)
    assert h.ids.tolist() == [3]
    np.testing.assert_array_equal(h.xyxy, [A])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 ground-truth frames but 1"):
        evaluate(frames(([1], [A]), ([1], [A])), frames(([1], [A])))


def test_motmetrics_and_trackeval_agree():
    te = pytest.importorskip("trackeval.metrics")
    scene = make_scene("crowd", seed=1)
    gt = ground_truth(scene.frames)
    hyp = run_tracker(build_tracker("iou"), scene.frames)
    m = evaluate(gt, hyp)
    data = trackeval_data(gt, hyp, [box_iou(g.xyxy, h.xyxy) for g, h in zip(gt, hyp)])
    clear = te.CLEAR({"PRINT_CONFIG": False}).eval_sequence(data)
    ident = te.Identity({"PRINT_CONFIG": False}).eval_sequence(data)
    assert m.id_switches == clear["IDSW"] > 0
    assert m.mota == pytest.approx(clear["MOTA"])
    assert m.idf1 == pytest.approx(ident["IDF1"])
    assert (m.false_positives, m.misses) == (clear["CLR_FP"], clear["CLR_FN"])
