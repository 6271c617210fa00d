"""Annotated frames: labels that stay inside the frame and off each other, coasting tracks drawn
apart from live ones, and videos that can't be written refused before any frame."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lart_stream.realtime.annotate import AnnotatedVideoWriter, AnnotationError
from lart_stream.realtime.drawing import LOST_COLOR, _color, draw, place_labels


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_crowded_labels_stay_inside_and_apart():
    width, height, top = 640, 360, 20
    rng = np.random.default_rng(0)
    # eight people shoulder to shoulder, some at the edges, one box partly outside the frame
    boxes = [(int(x), int(y), int(x) + 40, int(y) + 110) for x, y in zip(np.linspace(-20, 620, 8), rng.integers(0, 260, 8))]
    sizes = [(150, 48)] * 8
    rects = place_labels(boxes, sizes, (width, height), top=top)
    for (x1, y1, x2, y2), (w, h) in zip(rects, sizes):
        assert 0 <= x1 and x2 <= width and top <= y1 and y2 <= height
        assert (x2 - x1, y2 - y1) == (w, h)
    assert all(_overlap(a, b) == 0 for i, a in enumerate(rects) for b in rects[i + 1:]), rects


def test_identical_boxes_get_separate_labels():
    rects = place_labels([(300, 150, 340, 260)] * 3, [(90, 30)] * 3, (640, 360))
    assert all(_overlap(a, b) == 0 for i, a in enumerate(rects) for b in rects[i + 1:]), rects


def test_a_label_that_fits_nowhere_still_stays_in_the_frame():
    rects = place_labels([(0, 0, 10, 10)] * 2, [(200, 100)] * 2, (120, 60))
    for x1, y1, x2, y2 in rects:
        assert 0 <= x1 and x2 <= 120 and 0 <= y1 and y2 <= 60


def _message(tracks, random_weights=False):
    frame = SimpleNamespace(jpeg_size=(320, 240), image_size=(320, 240), frame=7)
    actions = SimpleNamespace(tracks=tracks, random_weights=random_weights, weights="checkpoint")
    return frame, actions


def _track(track_id, box, time_since_update=0):
    top = [SimpleNamespace(name="walk", score=0.5), SimpleNamespace(name="open (e.g., a window, a car door)", score=0.25)]
    return SimpleNamespace(id=track_id, box=box, time_since_update=time_since_update,
                           action=SimpleNamespace(top=top) if time_since_update == 0 else None)


def _has_color(image, color) -> bool:
    return bool((image == np.array(color, np.uint8)).all(axis=2).any())


def test_coasting_tracks_are_grey_and_live_ones_in_their_colour():
    image = np.zeros((240, 320, 3), np.uint8)
    frame, actions = _message([_track(4, (40, 60, 100, 200), time_since_update=3)])
    draw(image, frame, actions)
    assert _has_color(image, LOST_COLOR) and not _has_color(image, _color(4))
    image = np.zeros((240, 320, 3), np.uint8)
    frame, actions = _message([_track(4, (40, 60, 100, 200))])
    draw(image, frame, actions)
    assert _has_color(image, _color(4)) and not _has_color(image, LOST_COLOR)


def test_label_at_the_right_edge_has_its_background_inside_the_frame():
    image = np.zeros((240, 320, 3), np.uint8)
    frame, actions = _message([_track(9, (290, 100, 319, 200))])
    draw(image, frame, actions)
    color = np.array(_color(9), np.uint8)
    cols = np.nonzero((image == color).all(axis=2).any(axis=0))[0]
    # the filled label is wider than the box: it was moved left to fit, not cut at the edge
    assert cols.min() < 290 - 20


@pytest.mark.parametrize("name, message", [("out.gif", "unknown container '.gif'"), ("out", "unknown container"),
                                           ("missing/out.mp4", "does not exist")])
def test_video_writer_refuses_what_it_cannot_write(tmp_path, name, message):
    with pytest.raises(AnnotationError, match=message):
        AnnotatedVideoWriter(tmp_path / name)


def test_video_writer_probe_leaves_nothing_behind(tmp_path):
    writer = AnnotatedVideoWriter(tmp_path / "a.mp4")
    assert writer.fourcc in ("avc1", "mp4v") and list(tmp_path.iterdir()) == []
    assert "none" in writer.written()
