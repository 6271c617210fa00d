"""The tracking stage's frozen config: PHALP's defaults (phalp/configs/base.py, EQ_019) for
``phalp-reference`` and the 2D baseline, and ``LartTrackerConfig`` for the default ``lart`` tracker."""

from __future__ import annotations

from dataclasses import dataclass, field

APPEARANCE_COSTS = ("cosine", "phalp_l2", "none")
POSE_PREDICTORS = ("last", "mean")
LOCATION_PREDICTORS = ("ridge",)


@dataclass(frozen=True)
class LartTrackerConfig:
    """The ``lart`` tracker (realtime/tracking/lart.py). Times are seconds, distances body heights.

    Appearance thresholds are cosine distances (1 - cos) of the HMR stage's embedding; the defaults
    suit an embedding where one person's crops sit ~0.1 apart and strangers ~1 (re-tune for another).
    """

    fps: float = 30.0  # converts frame indices to seconds when update() gets no timestamp
    # Two-stage association (ByteTrack): scores >= high_conf go first and may start tracks (from
    # new_track_conf); [low_conf, high_conf) only extend a confirmed track, through a strict gate.
    high_conf: float = 0.6
    low_conf: float = 0.1
    new_track_conf: float = 0.7
    # Lifecycle in seconds (frame timestamps: dropped frames do not shorten it).
    n_init: int = 3  # hits that confirm a tentative track
    tentative_max_unseen_s: float = 0.07  # a tentative track unseen this long is dropped (~2 frames)
    coast_s: float = 1.0  # confirmed and unseen up to this long: coasting (published, marked)
    max_unseen_s: float = 4.0  # then lost (not published, re-identifiable) until this long
    max_lost: int = 64  # bound of the lost gallery (oldest forgotten first)
    # Motion: weighted ridge line over the last ``history`` observations, extrapolated at most horizon_s.
    history: int = 10
    ridge_alpha_s2: float = 0.02  # slope shrinkage, s^2 (a few frames of evidence before trusting a speed)
    horizon_s: float = 0.5
    velocity_tau_s: float = 0.5  # observations this much older count e times less for the velocity
    # Prediction spread: sigma(dt) = sigma0 + rate * dt (dt = time since last seen).
    xy_sigma0: float = 0.12  # body heights
    xy_sigma_rate: float = 0.6  # body heights per second (turns, stops)
    z_sigma0: float = 0.1  # log depth
    z_sigma_rate: float = 0.3
    gate_sigma: float = 3.0  # location and depth must lie within this many sigmas
    # Appearance: the gate tightens from app_gate_fresh to app_gate_lost over app_tighten_s of coasting.
    appearance_weight: float = 8.0
    app_gate_fresh: float = 0.65
    app_gate_lost: float = 0.4
    app_tighten_s: float = 0.5
    # Low-score stage (LartTracker.low_score_gate): the occluder-discounted appearance must pass
    # min(coasting gate, app_gate_low); or, when the body shape agrees (betas squared distance <=
    # low_shape_gate), only app_gate_low_shape, weighing low_appearance_weight. low_shape_gate suits betas
    # that vary ~0.05 per component per frame (the synthetic scenes); HMR 2.0 on partly hidden people is
    # noisier: re-tune on footage.
    app_gate_low: float = 0.5
    low_shape_gate: float = 0.5
    app_gate_low_shape: float = 0.8
    low_appearance_weight: float = 1.0
    low_max_cost: float = 6.0  # low-score pairs costing more (without the spread term) are not matched
    occluder_share: float = 0.2  # a nearer matched track counts as a low detection's occluder from this cosine
    app_update_max: float = 0.35  # only observations this close update the running appearance
    appearance_alpha: float = 0.1  # running blend weight (times confidence^2), as PHALP
    # Pose: body pose weighed down as coasting grows (the walking cycle moves on); shape (betas) is not.
    pose_weight: float = 2.0
    pose_tau_s: float = 0.3
    betas_weight: float = 1.0
    pose_clip: float = 1.5
    max_cost: float = 14.0  # gated pairs costing more are not matched
    # No history poisoning: low-score or marginal matches enter the motion history with this weight and
    # leave appearance and pose alone.
    weak_weight: float = 0.3
    marginal_cost: float = 8.0  # a match costing more than this is marginal
    focal_length: float = 5000.0  # HMR 2.0's camera, for the body height in normalised units
    render_res: int = 256
    body_height_m: float = 1.7

    def __post_init__(self) -> None:
        if not (0 <= self.low_conf <= self.high_conf <= self.new_track_conf <= 1):
            raise ValueError("LartTrackerConfig: need 0 <= low_conf <= high_conf <= new_track_conf <= 1")
        if self.fps <= 0 or self.n_init < 1 or self.history < 2 or self.max_lost < 0:
            raise ValueError("LartTrackerConfig: need fps > 0, n_init >= 1, history >= 2, max_lost >= 0")
        if not 0 <= self.coast_s <= self.max_unseen_s:
            raise ValueError(f"LartTrackerConfig: need 0 <= coast_s <= max_unseen_s, got {self.coast_s}, {self.max_unseen_s}")


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

    lart: LartTrackerConfig = field(default_factory=LartTrackerConfig)  # the default tracker's own settings

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
