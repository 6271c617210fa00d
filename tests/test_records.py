"""Records validate at the boundary, select rows consistently, and treat empty as normal."""

from __future__ import annotations

import numpy as np
import pytest

from lart_stream.realtime.engine import RollingStats
from lart_stream.realtime.records import ActionPredictions, Detections, People, Tracks


def test_detections_shape_errors_name_the_field():
    with pytest.raises(ValueError, match=r"Detections.confidence: expected shape \(2,\), got \(3,\)"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))


def test_people_rows_select_together():
    n = 3
    people = People(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0.1, 0.2, 0.3]), (640, 480),
                    pose_vector=np.arange(n * 229, dtype=np.float32).reshape(n, 229),
                    appearance=np.eye(3, 8, dtype=np.float32))
    picked = people[np.array([False, True, True])]
    assert len(picked) == 2 and picked.image_size == (640, 480)
    np.testing.assert_array_equal(picked.pose_vector[0], people.pose_vector[1])
    np.testing.assert_array_equal(picked.appearance, people.appearance[1:])
    with pytest.raises(ValueError, match=r"People.pose_vector: expected shape \(3, 229\)"):
        People(people.xyxy, people.confidence, pose_vector=np.zeros((3, 228), np.float32))


def test_empty_records_flow():
    assert len(Detections.empty()) == 0 and len(People.empty()) == 0 and len(Tracks.empty()) == 0
    assert not People.empty().has_3d
    empty = ActionPredictions.empty((1, 3), ("bend/bow", "crouch/kneel"))
    assert empty.scores.shape == (0, 2) and empty.top_k(3) == []


def test_top_k_orders_by_score_with_names():
    preds = ActionPredictions([7], [41], [[0.1, 0.9, 0.5]], (11, 12, 14), ("sit", "stand", "walk"), False)
    assert preds.top_k(2) == [[(12, "stand", pytest.approx(0.9)), (14, "walk", pytest.approx(0.5))]]
    with pytest.raises(ValueError, match="3 class ids but 2 names"):
        ActionPredictions([7], [41], [[0.1, 0.9, 0.5]], (11, 12, 14), ("sit", "stand"))


def test_rolling_stats_are_bounded_but_count_everything():
    stats = RollingStats(window=10)
    for v in range(100):
        stats.add("detect", float(v))
    s = stats.summary("detect")
    assert s["n"] == 100 and s["mean"] == pytest.approx(49.5)  # all-time mean
    assert s["p50"] == pytest.approx(94.5) and s["max"] == 99  # window of the last 10
    assert len(stats.samples["detect"]) == 10
