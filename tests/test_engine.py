"""The engine on real frames: overlapped detection gives the same results as the sequential loop."""

from __future__ import annotations

import threading

import numpy as np

from lart_stream.realtime.detectors import HOGDetector
from lart_stream.realtime.engine import Pipeline, run
from lart_stream.realtime.sources import SourceConfig, open_source


class Recorder:
    """A sink that keeps what it was sent (frame index, boxes)."""

    stage = "record"

    def __init__(self):
        self.seen: list[tuple[int, np.ndarray]] = []

    def send(self, result) -> None:
        self.seen.append((result.frame.index, result.detections.xyxy.copy()))

    def close(self) -> None:
        pass


def _run(pedestrians, overlap: bool, detector) -> tuple[Recorder, object]:
    sink = Recorder()
    source = open_source(SourceConfig(path=str(pedestrians)), threading.Event())
    try:
        summary = run(source, Pipeline(detector, sinks=[sink]), max_frames=15, overlap=overlap)
    finally:
        source.close()
    return sink, summary


def _rows_sorted(xyxy: np.ndarray) -> np.ndarray:
    return xyxy[np.lexsort(xyxy.T[::-1])] if len(xyxy) else xyxy


def test_overlapped_detection_matches_sequential(pedestrians):
    hog = HOGDetector()
    seq, s1 = _run(pedestrians, False, hog)
    ovl, s2 = _run(pedestrians, True, hog)
    assert s1.frames == s2.frames == 15 and s2.reason == "max frames"
    assert [i for i, _ in ovl.seen] == list(range(15))  # in order, none skipped
    for (i, a), (j, b) in zip(seq.seen, ovl.seen):
        # OpenCV's HOG scans scales in parallel: the same boxes can come back in another order.
        np.testing.assert_array_equal(_rows_sorted(a), _rows_sorted(b))
    assert sum(len(b) for _, b in ovl.seen) > 0  # HOG found the pedestrians
    assert s2.stages_ms["detect"]["n"] == 15


def test_detector_failure_in_the_overlap_thread_is_counted_and_the_stream_goes_on(pedestrians):
    hog = HOGDetector()

    class FailsOnFrame3:
        name = "hog"

        def __call__(self, frame):
            if frame.index == 3:
                raise RuntimeError("boom")
            return hog(frame)

    sink, summary = _run(pedestrians, True, FailsOnFrame3())
    assert summary.errors == 1
    assert [i for i, _ in sink.seen] == [i for i in range(16) if i != 3]


class ClockRecorder:
    """A tracker stand-in that keeps the (frame index, timestamp) the engine hands it."""

    name = "clock"

    def __init__(self):
        self.calls: list[tuple[int, float | None]] = []

    def update(self, people, frame_index, timestamp=None):
        from lart_stream.realtime.records import Tracks

        self.calls.append((frame_index, timestamp))
        return Tracks.empty()


def test_tracker_gets_the_recording_clock_not_the_processing_clock(pedestrians):
    """Track lifetimes count seconds: for a file that is frame index / the file's rate, however fast
    the frames are processed."""
    import cv2

    fps = cv2.VideoCapture(str(pedestrians)).get(cv2.CAP_PROP_FPS)
    tracker = ClockRecorder()
    source = open_source(SourceConfig(path=str(pedestrians)), threading.Event())
    try:
        run(source, Pipeline(HOGDetector(), tracker=tracker), max_frames=5)
    finally:
        source.close()
    assert [i for i, _ in tracker.calls] == list(range(5))
    np.testing.assert_allclose([t for _, t in tracker.calls], np.arange(5) / fps, rtol=0, atol=1e-12)
