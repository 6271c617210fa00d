"""Ridge location predictor (numpy, sklearn's Ridge semantics) and pose predictors."""

import math

import numpy as np
import pytest
from scipy import stats

from lart_stream.realtime.tracking import TrackerConfig
from lart_stream.realtime.tracking.predictors import (LastPose, MeanPose, RidgeLocationPredictor, make_location_predictor,
                                          make_pose_predictor, prediction_interval, ridge_line)


def _closed_form_ridge(t: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """sklearn Ridge(alpha, fit_intercept=True) on X = [1, t]: solve (Xc'Xc + aI) b = Xc'yc on centred
    data, intercept = mean(y) - mean(X) b. Returns (slope, intercept)."""
    X = np.stack([np.ones_like(t), t], axis=1)
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(2), Xc.T @ yc)
    return coef[1], y.mean() - X.mean(axis=0) @ coef


def test_ridge_line_matches_closed_form():
    rng = np.random.default_rng(0)
    times = np.sort(rng.integers(0, 40, (5, 7)), axis=1).astype(float) + 1000  # absolute frame indices
    values = rng.normal(size=(5, 7, 3))
    alphas = np.array([1.2, 2.0, 5.0])
    slope, intercept = ridge_line(times, values, alphas)
    for i in range(5):
        for c in range(3):
            s, b = _closed_form_ridge(times[i], values[i, :, c], alphas[c])
            assert slope[i, c] == pytest.approx(s, rel=1e-9, abs=1e-12)
            assert intercept[i, c] == pytest.approx(b, rel=1e-9)
    # alpha -> 0 is least squares.
    s0, b0 = ridge_line(times[:1], values[:1, :, :1], 0.0)
    np.testing.assert_allclose([s0[0, 0], b0[0, 0]], np.polyfit(times[0], values[0, :, 0], 1), rtol=1e-9)


def test_prediction_interval_matches_formula():
    rng = np.random.default_rng(1)
    times = np.arange(7.0)[None].repeat(3, 0) + np.array([[0.0], [10.0], [3.0]])
    values = rng.normal(size=(3, 7, 1))
    slope, intercept = ridge_line(times, values, 1.2)
    t_query = times[:, -1] + np.array([1.0, 5.0, 49.0])
    got = prediction_interval(times, values, slope, intercept, t_query)
    for i in range(3):
        x, y = times[i], values[i, :, 0]
        resid = y - (intercept[i, 0] + slope[i, 0] * x)
        s_err = math.sqrt(np.sum(resid ** 2) / 5)
        want = stats.t.ppf(0.975, 5) * s_err * math.sqrt(1 + 1 / 7 + (t_query[i] - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
        assert got[i, 0] == pytest.approx(want, rel=1e-10)


def test_ridge_predictor_after_one_match_by_hand():
    """History = 6 copies of the birth observation at t=0 and one at t=1, as PHALP fills it."""
    x0, x1, z0, z1 = 0.50, 0.53, math.log(100), math.log(110)
    times = np.array([[0, 0, 0, 0, 0, 0, 1.0]])
    loc = np.array([[[x0, 0.4, z0]] * 6 + [[x1, 0.4, z1]]])
    pred = RidgeLocationPredictor(TrackerConfig())(times, loc, frame_index=2)
    # mean t = 1/7, S_tt = 6/7, S_ty = 6/7 * dx: slope = (6/7) dx / (6/7 + alpha); read at t = 2.
    dx = x1 - x0
    slope = (6 / 7) * dx / (6 / 7 + 1.2)
    mean_y = x0 + dx / 7
    assert pred.xy[0, 0] == pytest.approx(mean_y + slope * (2 - 1 / 7), rel=1e-12)
    assert pred.xy[0, 1] == pytest.approx(0.4)  # constant: no residual, no interval
    r0 = (x0 - mean_y) + slope / 7  # residual at t=0 (six of them) and at t=1
    r1 = (x1 - mean_y) - slope * 6 / 7
    pi_x = stats.t.ppf(0.975, 5) * math.sqrt((6 * r0 ** 2 + r1 ** 2) / 5) * math.sqrt(1 + 1 / 7 + (2 - 1 / 7) ** 2 / (6 / 7))
    k = 6  # 1 + five repeated times: PHALP divides the intervals by it
    assert pred.c_xy[0] == pytest.approx(pi_x / k, rel=1e-9)
    dz = z1 - z0
    slope_z = (6 / 7) * dz / (6 / 7 + 5.0)
    assert pred.log_z[0] == pytest.approx(z0 + dz / 7 + slope_z * (2 - 1 / 7), rel=1e-12)
    rz0, rz1 = -dz / 7 + slope_z / 7, 6 * dz / 7 - slope_z * 6 / 7
    pi_z = stats.t.ppf(0.975, 5) * math.sqrt((6 * rz0 ** 2 + rz1 ** 2) / 5) * math.sqrt(1 + 1 / 7 + (2 - 1 / 7) ** 2 / (6 / 7))
    assert pred.c_n[0] == pytest.approx(abs(math.log(math.exp(pi_z) / k)), rel=1e-9)


def test_ridge_predictor_newborn_uses_camera_translation():
    times = np.zeros((1, 7))
    loc = np.array([[[0.546875, 0.53125, math.log(100)]] * 7])
    pred = RidgeLocationPredictor(TrackerConfig())(times, loc, frame_index=1)
    np.testing.assert_allclose(pred.xy[0], [0.546875, 0.53125])
    assert pred.log_z[0] == pytest.approx(math.log(100))
    # tx = (x_n - 0.5) tz 256 / 5000 = 0.24, ty = 0.16.
    assert pred.c_xy[0] == pytest.approx(math.hypot(0.24, 0.16))
    assert pred.c_n[0] == pytest.approx(math.log(100))


def test_ridge_predictor_horizon_is_capped_and_vectorised():
    cfg = TrackerConfig()
    predictor = RidgeLocationPredictor(cfg)
    times = np.arange(7.0)[None].repeat(2, 0)
    loc = np.zeros((2, 7, 3))
    loc[:, :, 0] = 0.01 * times  # moving right
    far = predictor(times[:1], loc[:1], frame_index=1000)
    capped = predictor(times[:1], loc[:1], frame_index=6 + 49)  # min(misses, 48) + 1 = 49 frames ahead
    assert far.xy[0, 0] == pytest.approx(capped.xy[0, 0])
    assert predictor(times[:1], loc[:1], frame_index=54).xy[0, 0] < capped.xy[0, 0]
    both = predictor(times, loc, frame_index=7)
    one = predictor(times[1:], loc[1:], frame_index=7)
    np.testing.assert_allclose(both.xy[1], one.xy[0])
    np.testing.assert_allclose(both.c_xy[1], one.c_xy[0])


def test_pose_predictors_and_factories():
    poses = np.arange(2 * 3 * 229, dtype=float).reshape(2, 3, 229)
    np.testing.assert_array_equal(LastPose()(poses), poses[:, -1])
    np.testing.assert_allclose(MeanPose(3)(poses), poses.mean(1))
    cfg = TrackerConfig()
    assert make_pose_predictor("last", cfg).window == 1
    assert make_pose_predictor("mean", cfg).window == cfg.history
    assert isinstance(make_location_predictor("ridge", cfg), RidgeLocationPredictor)
    with pytest.raises(ValueError, match="last, mean"):
        make_pose_predictor("transformer", cfg)
    with pytest.raises(ValueError, match="ridge"):
        make_location_predictor("kalman", cfg)


def test_config_validates_names_and_sizes():
    with pytest.raises(ValueError, match="appearance_cost"):
        TrackerConfig(appearance_cost="hist")
    with pytest.raises(ValueError, match="history"):
        TrackerConfig(history=2)
    with pytest.raises(ValueError, match="n_init"):
        TrackerConfig(n_init=0)
