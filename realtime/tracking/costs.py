"""Cost functions: each takes tracks (T, ...) and detections (D, ...) and returns a (T, D) matrix.

PHALP's EQ_019 (deep_sort_/nn_matching.py ``_pdist``):

    cost = (1 + b0 d_A) (1 + b1 d_P) exp(d_L / ((0.1 + tanh c_xy) b2)) exp(d_N / ((0.1 + tanh c_N) b3))

with d_A appearance, d_P squared pose distance clipped at 1.5, d_L the image distance of the body
origin and d_N the absolute log-depth difference; c_xy and c_N are the track's prediction intervals.

Units. PHALP measures the body origin in a 256-px square holding the frame zero-padded to
``M = max(W, H)`` (centred), divided by 256: ``x_n = (x_px + (M - W) / 2) / M``, likewise y. Its
camera is HMR 2.0's (focal 5000 px for the 256-px square, i.e. ``5000 / 256 * M`` px in the full
frame, principal point at the centre), so ``x_n = 0.5 + 5000 tx / (256 tz)`` and the depth tz is
the same number in both frames. ``normalise_location`` maps our pixel locations to these units, so
EQ_019's location constant (b2) keeps its meaning at any resolution.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from lart_stream.realtime.tracking.config import APPEARANCE_COSTS


def location_from_cam_t(cam_t: np.ndarray, image_size: tuple[int, int], focal_length: float = 5000.0,
                        render_res: int = 256) -> np.ndarray:
    """(n, 3) full-frame camera translation -> (n, 3) body origin x px, y px, log depth.

    Projects the body origin with HMR 2.0's full-frame camera (focal ``focal_length / render_res * M``).
    """
    cam_t = np.asarray(cam_t, dtype=np.float64).reshape(-1, 3)
    w, h = image_size
    f = focal_length / render_res * max(w, h)
    z = cam_t[:, 2]
    return np.stack([f * cam_t[:, 0] / z + w / 2, f * cam_t[:, 1] / z + h / 2, np.log(z)], axis=1)


def normalise_location(location: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(n, 3) x px, y px, log depth -> (n, 3) PHALP units: fractions of the padded square side, log depth."""
    location = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    w, h = image_size
    m = float(max(w, h))
    if m <= 0:
        raise ValueError(f"normalise_location: image_size must be positive, got {image_size}")
    return np.stack([(location[:, 0] - w / 2) / m + 0.5, (location[:, 1] - h / 2) / m + 0.5, location[:, 2]], axis=1)


def inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, K), (D, K) -> (T, D) dot products.

    einsum, not ``a @ b.T``: these products are tiny, and multi-threaded BLAS stalls for milliseconds
    when the other stages keep the cores busy (measured: 50 tracks went from 1 ms to 5-40 ms per frame).
    """
    return np.einsum("ik,jk->ij", a, b)


def squared_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, K), (D, K) -> (T, D) squared euclidean distances, clipped at 0 (deep_sort's _pdist_l2)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    r2 = -2.0 * inner(a, b) + np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :]
    return np.maximum(r2, 0.0)


def pose_cost(track_pose: np.ndarray, det_pose: np.ndarray, dims: int = 226, clip: float = 1.5) -> np.ndarray:
    """d_P: squared distance over the first ``dims`` pose dims (rotmats + betas), clipped at ``clip``."""
    return np.minimum(squared_distance(track_pose[:, :dims], det_pose[:, :dims]), clip)


def location_cost(track_xy: np.ndarray, det_xy: np.ndarray) -> np.ndarray:
    """d_L: euclidean distance of the body origins (normalised units). (T, 2), (D, 2) -> (T, D)."""
    return np.sqrt(squared_distance(track_xy, det_xy))


def depth_cost(track_log_z: np.ndarray, det_log_z: np.ndarray) -> np.ndarray:
    """d_N: |log z_track - log z_det| (PHALP: -log of the depth ratio folded to <= 1). (T,), (D,) -> (T, D)."""
    return np.abs(np.asarray(track_log_z, np.float64)[:, None] - np.asarray(det_log_z, np.float64)[None, :])


def cosine_appearance_cost(track_app: np.ndarray, det_app: np.ndarray) -> np.ndarray:
    """d_A = 1 - cos: scale-free, so any embedding the HMR stage gives works with EQ_019's b0."""
    a = np.asarray(track_app, dtype=np.float64)
    b = np.asarray(det_app, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - inner(a, b), 0.0, 2.0)


def occluded_appearance_cost(track_app: np.ndarray, det_app: np.ndarray, occluder_app: np.ndarray,
                             may_occlude: np.ndarray, min_share: float = 0.2) -> np.ndarray:
    """d_A of partly hidden detections: 1 - cos after taking out the occluder's part, the smallest over occluders.

    The embedding of a partly hidden person's crop holds some of whoever hides them. For each candidate
    occluder m (unit direction o_m) that ``may_occlude`` (D, M) detection j and makes up at least
    ``min_share`` of it (cos >= min_share), both vectors lose their o_m component and the cosine of the
    rests is compared; the plain d_A is kept when it is smaller. Closed form in the (T, D, M) dot
    products, no per-pair loop. (T, K), (D, K), (M, K), (D, M) -> (T, D).
    """
    a = np.asarray(track_app, dtype=np.float64)
    b = np.asarray(det_app, dtype=np.float64)
    o = np.asarray(occluder_app, dtype=np.float64)
    a, b, o = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (a, b, o))
    ab = inner(a, b)  # (T, D)
    plain = np.clip(1.0 - ab, 0.0, 2.0)
    if len(o) == 0 or len(a) == 0 or len(b) == 0:
        return plain
    ao, bo = inner(a, o), inner(b, o)  # (T, M), (D, M)
    rest = ab[:, :, None] - ao[:, None, :] * bo[None, :, :]  # (T, D, M): dot product of the rests
    norms = np.sqrt(np.maximum(1.0 - ao * ao, 1e-12))[:, None, :] * np.sqrt(np.maximum(1.0 - bo * bo, 1e-12))[None, :, :]
    use = np.asarray(may_occlude, bool) & (bo >= min_share)  # (D, M)
    discounted = np.where(use[None], 1.0 - rest / norms, np.inf).min(axis=2)
    return np.clip(np.minimum(plain, discounted), 0.0, 2.0)


def phalp_l2_appearance_cost(track_app: np.ndarray, det_app: np.ndarray) -> np.ndarray:
    """d_A = 100 * ||a / 1e3 - b / 1e3||^2: PHALP's formula for its 4096-d texture-map encoding."""
    return 100.0 * squared_distance(np.asarray(track_app) / 1e3, np.asarray(det_app) / 1e3)


def no_appearance_cost(track_app: np.ndarray | None, det_app: np.ndarray | None) -> np.ndarray:
    return np.zeros((len(track_app), len(det_app)))


def get_appearance_cost(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Appearance cost by name (norfair's get_distance_by_name): one of APPEARANCE_COSTS."""
    costs = {"cosine": cosine_appearance_cost, "phalp_l2": phalp_l2_appearance_cost, "none": no_appearance_cost}
    if name not in costs:
        raise ValueError(f"unknown appearance cost {name!r}; valid: {', '.join(APPEARANCE_COSTS)}")
    return costs[name]


def phalp_cost(d_a: np.ndarray, d_p: np.ndarray, d_l: np.ndarray, d_n: np.ndarray, c_xy: np.ndarray,
               c_n: np.ndarray, betas: tuple[float, float, float, float] = (4.0536, 1.3070, 0.3792, 4.1658)) -> np.ndarray:
    """EQ_019 from its four (T, D) distances and the tracks' (T,) intervals -> (T, D) cost.

    NaN becomes 0 and overflow the largest float, as PHALP's ``np.nan_to_num``; the threshold then rejects.
    """
    b0, b1, b2, b3 = betas
    c_xy = np.asarray(c_xy, dtype=np.float64)[:, None]
    c_n = np.asarray(c_n, dtype=np.float64)[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        cost = ((1 + b0 * d_a) * (1 + b1 * d_p) * np.exp(d_l / ((0.1 + np.tanh(c_xy)) * b2))
                * np.exp(d_n / ((0.1 + np.tanh(c_n)) * b3)))
    return _nan_to_num(cost)


def _nan_to_num(x: np.ndarray) -> np.ndarray:
    """np.nan_to_num of a fresh float array (NaN -> 0, +-inf -> +-max of its dtype), in place with plain
    ufuncs: its wrapper costs ~10x the work on a few tracks."""
    if not isinstance(x, np.ndarray) or x.ndim == 0 or x.dtype.kind != "f":
        return np.nan_to_num(x)
    big = np.finfo(x.dtype).max
    np.minimum(x, big, out=x)
    np.maximum(x, -big, out=x)
    x[np.isnan(x)] = 0
    return x


def linear_assignment(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Hungarian assignment; pairs costing more than ``threshold`` are rejected.

    As PHALP's ``min_cost_matching``: costs above the threshold are clipped to threshold + 1e-5
    before solving (so all impossible pairs cost the same), then assigned pairs above it are dropped.
    Returns matches (k, 2) [row, col], unmatched rows, unmatched cols (sorted int arrays).
    """
    cost = np.asarray(cost, dtype=np.float64)
    n_rows, n_cols = cost.shape
    if n_rows == 0 or n_cols == 0:
        return np.zeros((0, 2), np.int64), np.arange(n_rows), np.arange(n_cols)
    clipped = np.minimum(cost, threshold + 1e-5)
    rows, cols = linear_sum_assignment(clipped)
    keep = clipped[rows, cols] <= threshold
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    return matches, _unmatched(n_rows, matches[:, 0]), _unmatched(n_cols, matches[:, 1])


def _unmatched(n: int, matched: np.ndarray) -> np.ndarray:
    """Sorted indices in [0, n) not in ``matched`` (np.setdiff1d's answer, without its sort: 7x faster)."""
    free = np.ones(n, bool)
    free[matched] = False
    return np.flatnonzero(free)


# The ``lart`` tracker's pieces (realtime/tracking/lart.py): distances in units of each track's own
# uncertainty, per-track gates that tighten as a track coasts, and an additive cost.

def body_height(log_z: np.ndarray, focal_length: float = 5000.0, render_res: int = 256,
                height_m: float = 1.7) -> np.ndarray:
    """(T,) log depth -> (T,) height of a ``height_m`` person in normalised units (see normalise_location)."""
    return height_m * focal_length / render_res / np.exp(np.asarray(log_z, dtype=np.float64))


def spread(dt: np.ndarray, sigma0: float, rate: float) -> np.ndarray:
    """(T,) seconds since last seen -> (T,) prediction spread ``sigma0 + rate * dt``: grows while coasting."""
    return sigma0 + rate * np.maximum(np.asarray(dt, dtype=np.float64), 0.0)


def scaled_squared_distance(track_xy: np.ndarray, sigma: np.ndarray, det_xy: np.ndarray) -> np.ndarray:
    """(T, K) predictions with (T,) spreads, (D, K) detections -> (T, D) ``||track - det||^2 / sigma^2``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return squared_distance(track_xy, det_xy) / (sigma * sigma)[:, None]


def coasting_gate(dt: np.ndarray, fresh: float, lost: float, tighten_s: float) -> np.ndarray:
    """(T,) seconds unseen -> (T,) appearance threshold, from ``fresh`` (just seen) to ``lost`` after ``tighten_s``."""
    a = np.clip(np.asarray(dt, dtype=np.float64) / max(tighten_s, 1e-9), 0.0, 1.0)
    return fresh + (lost - fresh) * a


def coasting_weight(dt: np.ndarray, weight: float, tau_s: float) -> np.ndarray:
    """(T,) seconds unseen -> (T,) ``weight * exp(-dt / tau_s)``: a cue that goes stale (body pose) fades."""
    return weight * np.exp(-np.maximum(np.asarray(dt, dtype=np.float64), 0.0) / max(tau_s, 1e-9))


def lart_cost(xy2: np.ndarray, z2: np.ndarray, d_a: np.ndarray, d_pose: np.ndarray, d_betas: np.ndarray,
              pose_weight: np.ndarray, appearance_weight: float, betas_weight: float,
              log_spread: np.ndarray) -> np.ndarray:
    """Additive cost (a negative log-likelihood up to constants), all (T, D) but ``pose_weight``/``log_spread`` (T,).

    ``0.5 xy2 + 0.5 z2`` are the location and depth terms in sigmas; ``log_spread`` (log of the spreads
    relative to a fresh track's) makes a vague prediction pay for its vagueness, so a coasting track
    does not win a detection that a fresh one explains as well.
    """
    return (0.5 * xy2 + 0.5 * z2 + appearance_weight * d_a + np.asarray(pose_weight)[:, None] * d_pose
            + betas_weight * d_betas + np.asarray(log_spread)[:, None])


def lart_gate(xy2: np.ndarray, z2: np.ndarray, d_a: np.ndarray, app_gate: np.ndarray, gate_sigma: float) -> np.ndarray:
    """(T, D) bool: location and depth within ``gate_sigma`` sigmas and appearance under each track's (T,) gate."""
    g2 = gate_sigma * gate_sigma
    return (xy2 <= g2) & (z2 <= g2) & (d_a <= np.asarray(app_gate)[:, None])


def gated_assignment(cost: np.ndarray, allowed: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     max_cost: float) -> np.ndarray:
    """Hungarian over the sub-matrix ``rows`` x ``cols`` where only ``allowed`` pairs costing <= max_cost may match.

    Returns (k, 2) matches as indices into the full matrix. When no row and no column has two admissible
    pairs (the usual frame: people apart), every admissible pair is the assignment and the solver is skipped.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if len(rows) == 0 or len(cols) == 0:
        return np.zeros((0, 2), np.int64)
    sub_cost = cost[rows][:, cols]
    ok = allowed[rows][:, cols] & (sub_cost <= max_cost)
    if ok.sum(axis=0).max() <= 1 and ok.sum(axis=1).max() <= 1:
        r, k = np.nonzero(ok)
        return np.stack([rows[r], cols[k]], axis=1)
    matches, _, _ = linear_assignment(np.where(ok, sub_cost, np.inf), max_cost)
    return np.stack([rows[matches[:, 0]], cols[matches[:, 1]]], axis=1)
