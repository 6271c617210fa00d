"""2D baseline: ByteTrack-style IoU association (ifzhang/ByteTrack yolox/tracker/byte_tracker.py).

Needs only People.xyxy and People.confidence, so it is also the tracker when the HMR weights are
random. Differences from ByteTrack: boxes are predicted with the same ridge line as PHALP's
location (centre x, y over the last observations; size kept) instead of a Kalman filter, and the
lifecycle is PHALP's (n_init, max_age), so both trackers are compared on association alone.
"""

from __future__ import annotations

import numpy as np

from lart_stream.realtime.records import People, Tracks
from lart_stream.realtime.tracking.base import IdCounter, TrackLifecycle, lifecycle_columns
from lart_stream.realtime.tracking.config import TrackerConfig
from lart_stream.realtime.tracking.costs import linear_assignment
from lart_stream.realtime.tracking.predictors import ridge_line


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, 4), (D, 4) xyxy -> (T, D) intersection over union (0 where both boxes are empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (T, D, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class IouTrack(TrackLifecycle):
    """Bounded history of box centres for the motion prediction."""

    def __init__(self, track_id: int, frame_index: int, xyxy: np.ndarray, person_index: int, cfg: TrackerConfig) -> None:
        super().__init__(track_id, xyxy, cfg.n_init)
        self.times = np.full(cfg.history, float(frame_index))  # (H,)
        self.centres = np.repeat(_centre(xyxy)[None], cfg.history, axis=0)  # (H, 2)
        self.person_index = person_index

    def observe(self, frame_index: int, xyxy: np.ndarray) -> None:
        for buf, value in ((self.times, float(frame_index)), (self.centres, _centre(xyxy))):
            buf[:-1] = buf[1:]
            buf[-1] = value


def _centre(xyxy: np.ndarray) -> np.ndarray:
    xyxy = np.asarray(xyxy, dtype=np.float64)
    return (xyxy[..., :2] + xyxy[..., 2:]) / 2


class IouTracker:
    """Tracker protocol (realtime.stages.Tracker) associating boxes by IoU in two rounds (ByteTrack)."""

    name = "iou"

    def __init__(self, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.cfg = cfg
        self.tracks: list[IouTrack] = []
        self.next_id = IdCounter()

    def reset(self) -> None:
        self.tracks = []
        self.next_id.reset()

    def warmup(self) -> None:
        """Solve once now (scipy's import), not on the first frame with tracks."""
        linear_assignment(np.zeros((2, 2)), 1.0)

    def predict(self, frame_index: int) -> np.ndarray:
        """(T, 4) every track's box at ``frame_index``: ridge-line centre, last size."""
        n = len(self.tracks)
        h = self.cfg.history
        times = np.array([t.times for t in self.tracks]).reshape(n, h)
        centres = np.array([t.centres for t in self.tracks]).reshape(n, h, 2)
        last = np.array([t.xyxy for t in self.tracks], dtype=np.float64).reshape(n, 4)
        slope, intercept = ridge_line(times, centres, np.asarray(self.cfg.ridge_alpha[:2]))
        t_query = times[:, -1] + np.clip(frame_index - times[:, -1], 1, self.cfg.max_horizon + 1)
        centre = intercept + slope * t_query[:, None]  # (T, 2)
        half = (last[:, 2:] - last[:, :2]) / 2
        return np.concatenate([centre - half, centre + half], axis=1)

    def update(self, people: People, frame_index: int, timestamp: float | None = None) -> Tracks:
        cfg = self.cfg
        boxes = people.xyxy
        conf = people.confidence
        # 1. Split detections by confidence: high ones start and keep tracks, low ones only keep them.
        high = np.flatnonzero(conf >= cfg.iou_high_conf)
        low = np.flatnonzero((conf >= cfg.iou_low_conf) & (conf < cfg.iou_high_conf))

        # 2. Age every track and predict its box at this frame.
        for track in self.tracks:
            track.mark_predicted()
        predicted = self.predict(frame_index)

        # 3. First association: every track against the high-confidence detections.
        iou = box_iou(predicted, boxes[high])
        m1, left, free_high = linear_assignment(1.0 - iou, 1.0 - cfg.iou_match_first)
        matches = [(i, high[j]) for i, j in m1]

        # 4. Second association: tracks seen last frame, still unmatched, against low-confidence ones.
        recent = np.array([i for i in left if self.tracks[i].time_since_update == 1], dtype=np.int64)
        if len(recent) and len(low):
            iou = box_iou(predicted[recent], boxes[low])
            m2, _, _ = linear_assignment(1.0 - iou, 1.0 - cfg.iou_match_second)
            matches += [(recent[i], low[j]) for i, j in m2]

        matched = set()
        for i, j in matches:
            self.tracks[i].observe(frame_index, boxes[j])
            self.tracks[i].mark_hit(boxes[j], int(j), cfg.n_init)
            matched.add(int(i))

        # 5. Unmatched tracks miss (tentative -> deleted; confirmed -> deleted past max_age).
        for i, track in enumerate(self.tracks):
            if i not in matched:
                track.mark_missed(cfg.max_age)

        # 6. Unmatched confident high detections start tentative tracks.
        for j in high[free_high]:
            if conf[j] >= cfg.iou_new_track_conf:
                self.tracks.append(IouTrack(self.next_id(), frame_index, boxes[j], int(j), cfg))

        # 7. Forget deleted tracks; emit the confirmed ones.
        self.tracks = [t for t in self.tracks if not t.is_deleted]
        confirmed = [t for t in self.tracks if t.is_confirmed]
        return Tracks(**lifecycle_columns(confirmed)) if confirmed else Tracks.empty()
