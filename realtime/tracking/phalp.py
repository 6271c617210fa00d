"""Online 3D tracker the PHALP way (brjathu/PHALP: phalp/external/deep_sort_/, phalp/trackers/PHALP.py).

Each track predicts where it will be (ridge over its last 7 locations), which pose it will have
(pluggable, last pose by default) and how it looks (a confidence-weighted running appearance);
detections are matched to these predictions with EQ_019 and one Hungarian assignment.

Differences from the reference, all deliberate:
- Appearance is an embedding the HMR stage gives (PHALP's texture-map encoder has no weights),
  compared by cosine by default; the running blend ``(1 - a) old + a new, a = 0.1 conf^2`` is PHALP's.
- Predictions are made when a frame arrives, for that frame's index, instead of at the end of the
  previous frame: the same numbers for consecutive frames, and right when frames are dropped.
- No shot-change handling and no back-filling of the first n_init - 1 frames (we are online); the
  detector stage owns PHALP's confidence (0.8) and box-size (50x100) filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lart_stream.realtime.records import POSE_DIM, People, Tracks
from lart_stream.realtime.tracking.base import IdCounter, TrackLifecycle, lifecycle_columns
from lart_stream.realtime.tracking.config import TrackerConfig
from lart_stream.realtime.tracking.costs import (depth_cost, get_appearance_cost, linear_assignment, location_cost,
                                     location_from_cam_t, normalise_location, phalp_cost, pose_cost)
from lart_stream.realtime.tracking.predictors import LocationPrediction, make_location_predictor, make_pose_predictor


@dataclass
class DetectionFeatures:
    """What the cost needs from one frame's People, in PHALP's units (n rows)."""

    location: np.ndarray  # (n, 3) normalised x, y, log depth
    pose: np.ndarray  # (n, 229)
    appearance: np.ndarray | None  # (n, D)
    confidence: np.ndarray  # (n,)
    cam_t: np.ndarray  # (n, 3) camera translation (given, or recovered from the location)

    @classmethod
    def from_people(cls, people: People, cfg: TrackerConfig) -> "DetectionFeatures":
        n = len(people)
        if n and (people.pose_vector is None or (people.location is None and people.cam_t is None)):
            raise ValueError("PhalpTracker needs People.pose_vector and People.location (or cam_t): "
                             "without the HMR stage use build_tracker('iou', cfg)")
        w, h = people.image_size
        if n == 0:
            d = 0 if people.appearance is None else people.appearance.shape[1]
            return cls(np.zeros((0, 3)), np.zeros((0, POSE_DIM)), np.zeros((0, d)) if d else None,
                       np.zeros(0), np.zeros((0, 3)))
        if people.location is not None:
            location = np.asarray(people.location, dtype=np.float64)
        else:
            location = location_from_cam_t(people.cam_t, people.image_size, cfg.focal_length, cfg.render_res)
        if people.cam_t is not None:
            cam_t = np.asarray(people.cam_t, dtype=np.float64)
        else:  # invert the projection: tx = (x - W/2) z / f
            f = cfg.focal_length / cfg.render_res * max(w, h)
            z = np.exp(location[:, 2])
            cam_t = np.stack([(location[:, 0] - w / 2) * z / f, (location[:, 1] - h / 2) * z / f, z], axis=1)
        app = None if people.appearance is None else np.asarray(people.appearance, dtype=np.float64)
        return cls(normalise_location(location, people.image_size), np.asarray(people.pose_vector, np.float64),
                   app, np.asarray(people.confidence, np.float64), cam_t)


class PhalpTrack(TrackLifecycle):
    """One track's bounded state: the last ``history`` observations and a running appearance."""

    def __init__(self, track_id: int, frame_index: int, det: DetectionFeatures, j: int, xyxy: np.ndarray,
                 person_index: int, cfg: TrackerConfig) -> None:
        super().__init__(track_id, xyxy, cfg.n_init)
        h = cfg.history
        # PHALP fills the history with copies of the birth detection (the predictor relies on it).
        self.times = np.full(h, float(frame_index))  # (H,) oldest first
        self.locations = np.repeat(det.location[j][None], h, axis=0)  # (H, 3)
        self.poses = np.repeat(det.pose[j][None], h, axis=0)  # (H, 229)
        self.appearance = None if det.appearance is None else det.appearance[j].copy()  # (D,)
        self.cam_t = det.cam_t[j].copy()
        self.person_index = person_index

    def observe(self, frame_index: int, det: DetectionFeatures, j: int, alpha: float) -> None:
        """Append detection j to the history and blend its appearance in (a = alpha conf^2)."""
        for buf, value in ((self.times, float(frame_index)), (self.locations, det.location[j]), (self.poses, det.pose[j])):
            buf[:-1] = buf[1:]
            buf[-1] = value
        if det.appearance is not None:
            a = alpha * float(det.confidence[j]) ** 2
            self.appearance = det.appearance[j].copy() if self.appearance is None else (1 - a) * self.appearance + a * det.appearance[j]
        self.cam_t = det.cam_t[j].copy()


class PhalpTracker:
    """Tracker protocol (realtime.stages.Tracker) with PHALP's prediction, cost and lifecycle."""

    name = "phalp-reference"

    def __init__(self, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.cfg = cfg
        self.pose_predictor = make_pose_predictor(cfg.pose_predictor, cfg)
        self.location_predictor = make_location_predictor(cfg.location_predictor, cfg)
        self.appearance_cost = get_appearance_cost(cfg.appearance_cost)
        self.tracks: list[PhalpTrack] = []
        self.next_id = IdCounter()
        self.last_cost = np.zeros((0, 0))  # (T, D) EQ_019 of the last update, before thresholding

    def reset(self) -> None:
        self.tracks = []
        self.next_id.reset()
        self.last_cost = np.zeros((0, 0))

    def warmup(self) -> None:
        """Import scipy.stats and solve once now: lazily, the first frame with tracks stalls ~1 s."""
        from lart_stream.realtime.tracking.predictors import _t_quantile

        _t_quantile(0.5 + self.cfg.interval_level / 2, self.cfg.history - 2)
        linear_assignment(np.zeros((2, 2)), 1.0)

    def predict(self, frame_index: int) -> tuple[LocationPrediction, np.ndarray, np.ndarray | None]:
        """Every live track's location, pose (T, 229) and appearance (T, D) predicted at ``frame_index``."""
        tracks, h = self.tracks, self.cfg.history
        location = self.location_predictor(np.array([t.times for t in tracks]).reshape(len(tracks), h),
                                           np.array([t.locations for t in tracks]).reshape(len(tracks), h, 3),
                                           frame_index)
        window = self.pose_predictor.window
        poses = np.array([t.poses[-window:] for t in tracks]).reshape(len(tracks), window, POSE_DIM)
        pose = self.pose_predictor(poses)
        has_app = len(tracks) > 0 and all(t.appearance is not None for t in tracks)
        appearance = np.array([t.appearance for t in tracks]) if has_app else None
        return location, pose, appearance

    def cost_matrix(self, location: LocationPrediction, pose: np.ndarray, appearance: np.ndarray | None,
                    det: DetectionFeatures) -> np.ndarray:
        """EQ_019 over tracks x detections, (T, D)."""
        cfg = self.cfg
        t, d = len(pose), len(det.pose)
        if appearance is not None and det.appearance is not None and appearance.shape[1] == det.appearance.shape[1]:
            d_a = self.appearance_cost(appearance, det.appearance)
        else:
            d_a = np.zeros((t, d))
        d_p = pose_cost(pose, det.pose, cfg.pose_dims, cfg.pose_clip)
        d_l = location_cost(location.xy, det.location[:, :2])
        d_n = depth_cost(location.log_z, det.location[:, 2])
        return phalp_cost(d_a, d_p, d_l, d_n, location.c_xy, location.c_n, cfg.betas)

    def update(self, people: People, frame_index: int, timestamp: float | None = None) -> Tracks:
        cfg = self.cfg
        # 1. This frame's confident detections, in PHALP's units (rows[j]: their row in ``people``).
        rows = np.flatnonzero(people.confidence >= cfg.min_confidence)
        det = DetectionFeatures.from_people(people if len(rows) == len(people) else people[rows], cfg)

        # 2. Age every track, then predict its location, pose and appearance at this frame.
        for track in self.tracks:
            track.mark_predicted()
        location, pose, appearance = self.predict(frame_index)

        # 3. EQ_019 cost over tracks x detections; one Hungarian over tentative + confirmed tracks.
        self.last_cost = self.cost_matrix(location, pose, appearance, det)
        matches, unmatched_tracks, unmatched_dets = linear_assignment(self.last_cost, cfg.cost_threshold)

        # 4. Matched tracks take their detection (tentative -> confirmed at n_init hits).
        for i, j in matches:
            track = self.tracks[i]
            track.observe(frame_index, det, j, cfg.appearance_alpha)
            track.mark_hit(people.xyxy[rows[j]], int(rows[j]), cfg.n_init)

        # 5. Unmatched tracks miss (tentative -> deleted; confirmed -> deleted past max_age).
        for i in unmatched_tracks:
            self.tracks[i].mark_missed(cfg.max_age)

        # 6. Unmatched detections start tentative tracks.
        for j in unmatched_dets:
            self.tracks.append(PhalpTrack(self.next_id(), frame_index, det, int(j), people.xyxy[rows[j]], int(rows[j]), cfg))

        # 7. Forget deleted tracks; emit the confirmed ones (unmatched ones with person_index -1).
        self.tracks = [t for t in self.tracks if not t.is_deleted]
        return self._emit([t for t in self.tracks if t.is_confirmed])

    def _emit(self, tracks: list[PhalpTrack]) -> Tracks:
        if not tracks:
            return Tracks.empty()
        has_app = all(t.appearance is not None for t in tracks)
        return Tracks(**lifecycle_columns(tracks),
                      pose_vector=np.array([t.poses[-1] for t in tracks], dtype=np.float32),
                      cam_t=np.array([t.cam_t for t in tracks], dtype=np.float32),
                      appearance=np.array([t.appearance for t in tracks], dtype=np.float32) if has_app else None)
