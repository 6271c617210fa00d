"""The tracking stage's one frozen config (defaults = PHALP's phalp/configs/base.py, EQ_019)."""

from __future__ import annotations

from dataclasses import dataclass

APPEARANCE_COSTS = ("cosine", "phalp_l2", "none")
POSE_PREDICTORS = ("last", "mean")
LOCATION_PREDICTORS = ("ridge",)


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of both trackers. Lifecycle fields are shared; ``iou_*`` only affect the 2D baseline."""

    # Lifecycle (PHALP deep_sort_/track.py).
    n_init: int = 5  # hits (birth included) that confirm a tentative track
    max_age: int = 50  # a confirmed track dies on its (max_age + 1)-th consecutive miss

    # PHALP association (deep_sort_/nn_matching.py, linear_assignment.py).
    # PHALP tracks only confident detections (ViTDet at 0.5, then low_th_c 0.8). Our detectors' scores
    # are not ViTDet's, so the cut is ByteTrack's track_thresh; 0 hands every detection to the tracker.
    min_confidence: float = 0.5
    cost_threshold: float = 100.0  # hungarian_th: larger costs are clipped to it + 1e-5 and rejected
    betas: tuple[float, float, float, float] = (4.0536, 1.3070, 0.3792, 4.1658)  # EQ_019: appearance, pose, location, depth
    pose_dims: int = 226  # pose distance over rotmats + betas: the 3 camera dims are left out
    pose_clip: float = 1.5  # EQ_019 clips the squared pose distance here
    appearance_cost: str = "cosine"  # one of APPEARANCE_COSTS; cosine: our HMR embedding has no fixed scale
    appearance_alpha: float = 0.1  # running blend weight a = alpha * confidence**2

    # PHALP prediction (phalp/trackers/PHALP.py forward_for_tracking).
    history: int = 7  # track_history: observations kept per track (>= 3: the interval needs n - 2 > 0)
    ridge_alpha: tuple[float, float, float] = (1.2, 2.0, 5.0)  # Ridge alpha for x, y, log z
    max_horizon: int = 48  # frames ahead = min(misses, 48) + 1
    interval_level: float = 0.95  # two-sided t prediction interval
    pose_predictor: str = "last"  # one of POSE_PREDICTORS
    location_predictor: str = "ridge"  # one of LOCATION_PREDICTORS
    # PHALP's camera: focal 5000 px in a 256-px square (HMR 2.0's convention). Only the newborn-track
    # interval uses it (PHALP takes the camera translation tx, ty there); see predictors.py.
    focal_length: float = 5000.0
    render_res: int = 256

    # 2D baseline (ByteTrack's byte_tracker.py defaults, minus the Kalman filter).
    iou_high_conf: float = 0.5  # track_thresh: detections at or above go to the first association
    iou_low_conf: float = 0.1  # detections below are dropped; [low, high) go to the second association
    iou_new_track_conf: float = 0.6  # det_thresh = track_thresh + 0.1: start a track
    iou_match_first: float = 0.2  # min IoU, first association (ByteTrack match_thresh 0.8 as a cost)
    iou_match_second: float = 0.5  # min IoU, second association (ByteTrack 0.5 as a cost)

    def __post_init__(self) -> None:
        for name, value, valid in (("appearance_cost", self.appearance_cost, APPEARANCE_COSTS),
                                   ("pose_predictor", self.pose_predictor, POSE_PREDICTORS),
                                   ("location_predictor", self.location_predictor, LOCATION_PREDICTORS)):
            if value not in valid:
                raise ValueError(f"TrackerConfig.{name}: {value!r} is not one of {', '.join(valid)}")
        if self.n_init < 1 or self.max_age < 0:
            raise ValueError(f"TrackerConfig: need n_init >= 1 and max_age >= 0, got {self.n_init}, {self.max_age}")
        if self.history < 3:
            raise ValueError(f"TrackerConfig.history: need >= 3 for a prediction interval, got {self.history}")
        if len(self.betas) != 4 or len(self.ridge_alpha) != 3:
            raise ValueError("TrackerConfig: betas needs 4 values and ridge_alpha 3")
