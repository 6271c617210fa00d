"""Issue 12 §5: the tracker is warm before the first frame, and coasting tracks are drawn as such."""

import sys

import numpy as np
import pytest

from lart_stream.realtime.config import AppConfig, TrackerSection
from lart_stream.realtime.protocol import ActionsMessage, FrameMessage, TrackPrediction
from lart_stream.realtime.tracking.predictors import _t_quantile


def test_built_tracker_is_warm():
    """phalp-reference's prediction interval needs scipy.stats (~1 s to import): it is primed when the
    pipeline builds the tracker, not on the first frame with tracks."""
    from lart_stream.realtime.build import _build_tracker

    _t_quantile.cache_clear()
    tracker = _build_tracker(AppConfig(tracker=TrackerSection(kind="phalp-reference")), lifter=None)
    assert tracker.name == "phalp-reference"
    assert _t_quantile.cache_info().currsize == 1 and "scipy.stats" in sys.modules
    for kind in ("lart", "iou", "auto"):
        assert _build_tracker(AppConfig(tracker=TrackerSection(kind=kind)), lifter=None) is not None


def test_unknown_tracker_in_a_config_is_a_build_error():
    from lart_stream.realtime.build import BuildError, _build_tracker

    with pytest.raises(BuildError, match="unknown tracker 'sort'"):
        _build_tracker(AppConfig(tracker=TrackerSection(kind="sort")), lifter=None)


def test_coasting_track_is_drawn_dashed_grey_with_lost_frames(monkeypatch):
    cv2 = pytest.importorskip("cv2")
    from lart_stream.realtime import drawing

    texts = []
    put_text = cv2.putText
    monkeypatch.setattr(cv2, "putText", lambda img, text, *a, **k: (texts.append(text), put_text(img, text, *a, **k))[1])
    live = TrackPrediction(id=3, box=(10.0, 40.0, 60.0, 120.0), cam_t=None, state="confirmed", age=9, hits=9,
                           time_since_update=0, action=None)
    coasting = TrackPrediction(id=4, box=(100.0, 40.0, 180.0, 120.0), cam_t=None, state="confirmed", age=9, hits=5,
                               time_since_update=7, action=None)
    msg = ActionsMessage(session=1, seq=0, stream="0", frame=10, t_capture_ns=0, t_publish_ns=0, t_wall_ns=0,
                         image_size=(200, 160), weights="none", class_ids=(), class_names=(), stage_ms={},
                         tracks=(live, coasting))
    frame = FrameMessage(session=1, seq=0, stream="0", frame=10, t_capture_ns=0, t_publish_ns=0, t_wall_ns=0,
                         image_size=(200, 160), jpeg_size=(200, 160))
    image = drawing.draw(np.zeros((160, 200, 3), np.uint8), frame, msg)
    assert "#3" in texts and "#4 lost 7f" in texts
    bottom = image[120, 100:181]  # the coasting box's bottom edge: grey dashes with gaps
    grey = np.all(bottom == drawing.LOST_COLOR, axis=1)
    assert 0.3 < grey.mean() < 0.8
    assert np.all(image[120, 12:58] == drawing._color(3), axis=1).all()  # the live box: solid, its own colour
