"""Track predictors: where each track will be, and which pose it will have, at the next frame.

Location follows PHALP (phalp/trackers/PHALP.py ``forward_for_tracking``, phalp/utils/utils.py
``get_prediction_interval``): per track, three ridge regressions against time over the last
``history`` observations (x and y of the body origin in PHALP's normalised units, log depth), read
``min(misses, 48) + 1`` frames after the last observation, each with a 95% t prediction interval.
Everything here is vectorised over tracks: arrays are (T, H, ...) for T tracks of H observations.

Predictors are chosen by name through ``make_pose_predictor`` / ``make_location_predictor``
(norfair's filter-factory pattern), so a learned pose predictor can replace ``last`` later.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lart_stream.realtime.tracking.config import LOCATION_PREDICTORS, POSE_PREDICTORS, TrackerConfig


@functools.lru_cache(maxsize=16)
def _t_quantile(p: float, dof: int) -> float:
    from scipy import stats  # slow to import; ~0.1 ms per call, so cached: it runs every frame

    return float(stats.t.ppf(p, dof))


def ridge_line(times: np.ndarray, values: np.ndarray, alphas: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``value = intercept + slope * time`` per track and channel, as sklearn's ``Ridge(alpha)``.

    PHALP calls ``Ridge(alpha).fit([1, t], y)`` with the default ``fit_intercept=True``: sklearn
    centres X and y, the constant column centres to zero (so its coefficient is 0), the slope is
    ``S_ty / (S_tt + alpha)`` and the intercept ``mean(y) - slope * mean(t)`` is not penalised.

    times (T, H), values (T, H, C), alphas scalar or (C,) -> slope (T, C), intercept (T, C).
    """
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    t_mean = t.mean(axis=1, keepdims=True)  # (T, 1)
    tc = t - t_mean  # (T, H)
    y_mean = y.mean(axis=1)  # (T, C)
    s_tt = np.einsum("th,th->t", tc, tc)[:, None]  # (T, 1)
    s_ty = np.einsum("th,thc->tc", tc, y - y_mean[:, None, :])  # (T, C)
    slope = s_ty / (s_tt + np.asarray(alphas, dtype=np.float64))  # (T, C)
    return slope, y_mean - slope * t_mean


def prediction_interval(times: np.ndarray, values: np.ndarray, slope: np.ndarray, intercept: np.ndarray,
                        t_query: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Half-width of the t prediction interval at ``t_query`` (PHALP's ``get_prediction_interval``).

    ``q * s_err * sqrt(1 + 1/n + (t* - mean t)^2 / S_tt)`` with ``s_err`` from the fit residuals on
    n - 2 degrees of freedom. Rows whose times are all equal (S_tt = 0) give NaN: callers mask them.

    times (T, H), values (T, H, C), slope/intercept (T, C), t_query (T,) -> (T, C).
    """
    t = np.asarray(times, dtype=np.float64)
    n = t.shape[1]
    fitted = intercept[:, None, :] + slope[:, None, :] * t[:, :, None]  # (T, H, C)
    s_err = np.sqrt(np.sum((np.asarray(values, dtype=np.float64) - fitted) ** 2, axis=1) / (n - 2))  # (T, C)
    q = _t_quantile(0.5 + level / 2, n - 2)
    t_mean = t.mean(axis=1)
    s_tt = np.sum((t - t_mean[:, None]) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lever = np.sqrt(1 + 1 / n + (np.asarray(t_query, dtype=np.float64) - t_mean) ** 2 / s_tt)  # (T,)
        return q * s_err * lever[:, None]


@dataclass
class LocationPrediction:
    """Predicted location of T tracks, in PHALP's normalised units (see costs.normalise_location)."""

    xy: np.ndarray  # (T, 2) body origin, fraction of the padded square frame's side
    log_z: np.ndarray  # (T,) log depth
    c_xy: np.ndarray  # (T,) interval of the image position (PHALP's c_xy, before tanh)
    c_n: np.ndarray  # (T,) interval of the log depth (PHALP's c_N, before tanh)


class LocationPredictor(Protocol):
    def __call__(self, times: np.ndarray, locations: np.ndarray, frame_index: int) -> LocationPrediction: ...


class RidgeLocationPredictor:
    """PHALP's 'L' predictor, vectorised over tracks.

    Two quirks of the reference are kept on purpose, because EQ_019's constants were fitted with them:
    - A track's history starts as ``history`` copies of its first observation. Intervals are divided
      by ``k`` = 1 + the number of repeated times in the history (k = history at birth, 1 once the
      history holds distinct frames); the depth interval is ``|log(exp(pi_z) / k)|``.
    - A newborn track (one observation) is not regressed: its prediction is the observation and its
      "intervals" are the camera translation, c_xy = hypot(tx, ty) and c_N = |log tz| (PHALP stores
      ``pred_cam`` where intervals go). tx, ty are recovered from the normalised location and depth.
    """

    def __init__(self, cfg: TrackerConfig) -> None:
        self.alphas = np.asarray(cfg.ridge_alpha, dtype=np.float64)
        self.max_horizon = cfg.max_horizon
        self.level = cfg.interval_level
        self.cam_scale = cfg.render_res / cfg.focal_length

    def __call__(self, times: np.ndarray, locations: np.ndarray, frame_index: int) -> LocationPrediction:
        """times (T, H) frame indices, oldest first; locations (T, H, 3) normalised x, y, log z."""
        times = np.asarray(times, dtype=np.float64)
        locations = np.asarray(locations, dtype=np.float64)
        t_last = times[:, -1]
        # PHALP reads at t_last + min(misses, 48) + 1; with one update per frame that is this frame.
        t_query = t_last + np.clip(frame_index - t_last, 1, self.max_horizon + 1)  # (T,)
        slope, intercept = ridge_line(times, locations, self.alphas)  # (T, 3)
        mean = intercept + slope * t_query[:, None]  # (T, 3)
        half = prediction_interval(times, locations, slope, intercept, t_query, self.level)  # (T, 3)
        k = 1 + np.sum(np.diff(times, axis=1) == 0, axis=1)  # (T,)
        c_xy = np.hypot(half[:, 0], half[:, 1]) / k
        c_n = np.abs(half[:, 2] - np.log(k))

        newborn = k == times.shape[1]  # every observation is the birth one
        last = locations[:, -1]  # (T, 3)
        depth = np.exp(last[:, 2])
        cam_xy = (last[:, :2] - 0.5) * depth[:, None] * self.cam_scale  # (T, 2) tx, ty in metres
        mean = np.where(newborn[:, None], last, mean)
        c_xy = np.where(newborn, np.hypot(cam_xy[:, 0], cam_xy[:, 1]), c_xy)
        c_n = np.where(newborn, np.abs(last[:, 2]), c_n)
        return LocationPrediction(xy=mean[:, :2], log_z=mean[:, 2], c_xy=c_xy, c_n=c_n)


class PosePredictor(Protocol):
    window: int  # how many past poses it reads (the tracker stacks only these)

    def __call__(self, poses: np.ndarray) -> np.ndarray: ...


class LastPose:
    """PHALP without its pose transformer: the prediction is the last observed pose."""

    window = 1

    def __call__(self, poses: np.ndarray) -> np.ndarray:
        return poses[:, -1]  # (T, W, P) -> (T, P)


class MeanPose:
    """Mean of the bounded pose history: smoother, lags behind fast motion."""

    def __init__(self, window: int) -> None:
        self.window = window

    def __call__(self, poses: np.ndarray) -> np.ndarray:
        return poses.mean(axis=1)  # (T, W, P) -> (T, P)


def make_pose_predictor(name: str, cfg: TrackerConfig) -> PosePredictor:
    if name == "last":
        return LastPose()
    if name == "mean":
        return MeanPose(cfg.history)
    raise ValueError(f"unknown pose predictor {name!r}; valid: {', '.join(POSE_PREDICTORS)}")


def make_location_predictor(name: str, cfg: TrackerConfig) -> LocationPredictor:
    if name == "ridge":
        return RidgeLocationPredictor(cfg)
    raise ValueError(f"unknown location predictor {name!r}; valid: {', '.join(LOCATION_PREDICTORS)}")


def weighted_ridge_line(times: np.ndarray, values: np.ndarray, weights: np.ndarray,
                        alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ``value = intercept + slope * time`` per track and channel, slope shrunk by ``alpha``.

    Minimises ``sum_h w_h (y_h - a - b t_h)^2 + alpha b^2``: slope ``S_ty / (S_tt + alpha)`` with
    weighted centring. A weak observation (small w) moves the line less; w = 0 is ignored. Rows need
    at least one positive weight. times (T, H), values (T, H, C), weights (T, H) -> slope, intercept (T, C).
    """
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w_sum = w.sum(axis=1, keepdims=True)  # (T, 1)
    t_mean = np.einsum("th,th->t", w, t)[:, None] / w_sum  # (T, 1)
    y_mean = np.einsum("th,thc->tc", w, y) / w_sum  # (T, C)
    tc = t - t_mean
    s_tt = np.einsum("th,th,th->t", w, tc, tc)[:, None]
    s_ty = np.einsum("th,th,thc->tc", w, tc, y - y_mean[:, None, :])
    slope = s_ty / (s_tt + alpha)
    return slope, y_mean - slope * t_mean
