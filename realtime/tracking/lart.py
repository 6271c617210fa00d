"""The default 3D tracker: PHALP's cues (location, depth, appearance, pose) with what live video needs.

What it changes from ``phalp-reference`` (issue 15), each a numbered step of ``update``:
- Two-stage association (ByteTrack): confident detections first; low-score ones (partial occlusions)
  only extend confirmed tracks through a strict gate; they never start a track. A partly hidden person's
  embedding holds some of whoever hides them, so in the low-score stage the appearance distance first
  takes out the share of a nearer track matched this frame (costs.occluded_appearance_cost). Even so
  it stays partly someone else's, so when the body shape (betas) agrees the low-score pair needs only a
  loose appearance gate at a low weight (shape survives occlusion and does not go stale while coasting);
  the low-score cost cut leaves out the spread term, so a lost track can take a partly hidden returner.
- State-aware gates: distances are measured in each track's own spread, which grows with the time it
  has been unseen, and the appearance gate tightens as it coasts, so a false positive beside a hidden
  person's predicted position does not pass on 2D location alone.
- No history poisoning: low-score or marginal matches enter the motion history with a small weight and
  leave the appearance and pose alone.
- Lifecycle in seconds (frame timestamps, so dropped frames do not shorten it): a confirmed track
  coasts (published, ``time_since_update`` > 0) for ``coast_s``, then is lost (not published) until
  ``max_unseen_s``; confident detections are tried against the bounded lost gallery before they start
  a track, so a person who comes back gets the old id.
- Body pose is weighed down as coasting grows (the walking cycle moves on); shape (betas) is not.
"""

from __future__ import annotations

import numpy as np

from lart_stream.realtime.records import POSE_DIM, People, Tracks, TrackState
from lart_stream.realtime.tracking.base import IdCounter, lifecycle_columns
from lart_stream.realtime.tracking.config import LartTrackerConfig, TrackerConfig
from lart_stream.realtime.tracking.costs import (body_height, coasting_gate, coasting_weight, cosine_appearance_cost,
                                                 gated_assignment, lart_cost, lart_gate, occluded_appearance_cost,
                                                 scaled_squared_distance,
                                                 spread, squared_distance)
from lart_stream.realtime.tracking.phalp import DetectionFeatures
from lart_stream.realtime.tracking.predictors import weighted_ridge_line

BODY = slice(0, 216)  # rotation matrices of the pose vector
BETAS = slice(216, 226)


class LartTrack:
    """One track: a weighted motion history (seconds), running appearance and shape, last pose."""

    def __init__(self, track_id: int, t: float, frame_index: int, det: DetectionFeatures, j: int,
                 xyxy: np.ndarray, person_index: int, history: int) -> None:
        self.track_id = track_id
        self.state = TrackState.TENTATIVE
        self.hits = 1
        self.birth_frame = frame_index
        self.age = 1
        self.time_since_update = 0  # frames since last seen (from frame indices: drops count)
        self.last_t = t
        self.last_frame = frame_index
        self.xyxy = np.asarray(xyxy, dtype=np.float32)
        self.person_index = person_index
        self.times = np.full(history, t)  # (H,) oldest first
        self.locations = np.repeat(det.location[j][None], history, axis=0)  # (H, 3)
        self.weights = np.zeros(history)
        self.weights[-1] = 1.0  # empty slots weigh nothing
        self.pose = det.pose[j].copy()
        self.betas = det.pose[j, BETAS].copy()
        self.appearance = None if det.appearance is None else det.appearance[j].copy()
        self.cam_t = det.cam_t[j].copy()

    def observe(self, t: float, frame_index: int, det: DetectionFeatures, j: int, xyxy: np.ndarray,
                person_index: int, strong: bool, d_a: float, cfg: LartTrackerConfig) -> None:
        """Take detection j. A weak observation moves the motion history a little and nothing else."""
        for buf, value in ((self.times, t), (self.locations, det.location[j]),
                           (self.weights, 1.0 if strong else cfg.weak_weight)):
            buf[:-1] = buf[1:]
            buf[-1] = value
        self.hits += 1
        self.last_t, self.last_frame, self.time_since_update = t, frame_index, 0
        self.xyxy = np.asarray(xyxy, dtype=np.float32)
        self.person_index = person_index
        self.cam_t = det.cam_t[j].copy()
        if not strong:
            return
        # Early on, average plainly (1 / hits) so the running value settles fast; later PHALP's blend.
        a = max(cfg.appearance_alpha * float(det.confidence[j]) ** 2, 1.0 / self.hits)
        self.pose = det.pose[j].copy()
        self.betas = (1 - a) * self.betas + a * det.pose[j, BETAS]
        if det.appearance is not None and d_a <= cfg.app_update_max:
            self.appearance = det.appearance[j].copy() if self.appearance is None else (
                (1 - a) * self.appearance + a * det.appearance[j])

    @property
    def is_confirmed(self) -> bool:
        return self.state == TrackState.CONFIRMED


class LartTracker:
    """Tracker protocol (realtime.stages.Tracker); settings in ``TrackerConfig.lart``."""

    name = "lart"

    def __init__(self, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.cfg = cfg
        self.lcfg = cfg.lart
        self.tracks: list[LartTrack] = []
        self.next_id = IdCounter()
        self.last_cost = np.zeros((0, 0))  # (T, D) cost of the last update (all tracks x all detections)
        self._track_app: np.ndarray | None = None  # (T, K) running appearances, stacked once per update

    def reset(self) -> None:
        self.tracks = []
        self.next_id.reset()
        self.last_cost = np.zeros((0, 0))

    def warmup(self) -> None:
        """Import and run scipy's assignment solver now, so the first frame with people does not stall."""
        from lart_stream.realtime.tracking.costs import linear_assignment

        linear_assignment(np.zeros((2, 2)), 1.0)

    def predict(self, t: float) -> dict[str, np.ndarray]:
        """Every track's predicted location and spreads at time ``t`` (seconds), vectorised."""
        c = self.lcfg
        n, h = len(self.tracks), c.history
        times = np.array([tr.times for tr in self.tracks]).reshape(n, h) - t  # relative: well conditioned
        locations = np.array([tr.locations for tr in self.tracks]).reshape(n, h, 3)
        weights = np.array([tr.weights for tr in self.tracks]).reshape(n, h)
        dt = -times[:, -1]  # seconds since last seen
        # Velocity from a weighted ridge line, recent observations counting more (people turn and stop);
        # the prediction starts at the last observation and extrapolates at most horizon_s.
        recency = np.exp((times - times[:, -1:]) / c.velocity_tau_s)
        slope, _ = weighted_ridge_line(times, locations, weights * recency, c.ridge_alpha_s2)
        mean = locations[:, -1] + slope * np.minimum(dt, c.horizon_s)[:, None]  # (T, 3)
        height = body_height(mean[:, 2], c.focal_length, c.render_res, c.body_height_m)
        xy_sigma = spread(dt, c.xy_sigma0, c.xy_sigma_rate)  # body heights
        z_sigma = spread(dt, c.z_sigma0, c.z_sigma_rate)
        return {"xy": mean[:, :2], "log_z": mean[:, 2], "dt": dt, "xy_sigma": xy_sigma * height, "z_sigma": z_sigma,
                "log_spread": 2 * np.log(xy_sigma / c.xy_sigma0) + np.log(z_sigma / c.z_sigma0)}

    def cost_matrix(self, pred: dict[str, np.ndarray], det: DetectionFeatures
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(T, D) cost, appearance distance, location/depth gate, (T,) appearance gate (before the per-stage
        rules) and (T, D) body-shape (betas) distance."""
        c = self.lcfg
        n, d = len(self.tracks), len(det.pose)
        xy2 = scaled_squared_distance(pred["xy"], pred["xy_sigma"], det.location[:, :2])
        z2 = ((pred["log_z"][:, None] - det.location[None, :, 2]) / pred["z_sigma"][:, None]) ** 2
        has_app = det.appearance is not None and all(tr.appearance is not None for tr in self.tracks)
        self._track_app = np.array([tr.appearance for tr in self.tracks]).reshape(n, -1) if has_app and n else None
        d_a = cosine_appearance_cost(self._track_app, det.appearance) if self._track_app is not None else np.zeros((n, d))
        poses = np.array([tr.pose for tr in self.tracks]).reshape(n, POSE_DIM)
        betas = np.array([tr.betas for tr in self.tracks]).reshape(n, BETAS.stop - BETAS.start)
        d_pose = np.minimum(squared_distance(poses[:, BODY], det.pose[:, BODY]), c.pose_clip)
        d_betas = np.minimum(squared_distance(betas, det.pose[:, BETAS]), c.pose_clip)
        pose_w = coasting_weight(pred["dt"], c.pose_weight, c.pose_tau_s)
        cost = lart_cost(xy2, z2, d_a, d_pose, d_betas, pose_w, c.appearance_weight, c.betas_weight, pred["log_spread"])
        near = lart_gate(xy2, z2, d_a, np.full(n, np.inf), c.gate_sigma)
        return cost, d_a, near, coasting_gate(pred["dt"], c.app_gate_fresh, c.app_gate_lost, c.app_tighten_s), d_betas

    def low_score_appearance(self, d_a: np.ndarray, det: DetectionFeatures, matches: list[tuple[int, int]],
                             tracks: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(T, D) appearance distance for the low-score stage: pairs ``tracks`` x ``cols`` (the ones still
        free) get the occlusion-discounted distance (costs.occluded_appearance_cost) against the tracks
        matched so far that stand nearer than the detection; other pairs keep ``d_a``."""
        track_app = self._track_app  # stacked by cost_matrix this frame; None without appearance
        if not matches or len(cols) == 0 or len(tracks) == 0 or track_app is None:
            return d_a
        occ_tracks, occ_dets = np.array(matches).T
        nearer = det.location[occ_dets, 2][None, :] < det.location[cols, 2][:, None]  # (D_low, M): occluder nearer
        low_d_a = d_a.copy()
        low_d_a[np.ix_(tracks, cols)] = occluded_appearance_cost(
            track_app[tracks], det.appearance[cols], track_app[occ_tracks], nearer, self.lcfg.occluder_share)
        return low_d_a

    def low_score_gate(self, cost: np.ndarray, d_a: np.ndarray, low_d_a: np.ndarray, near: np.ndarray,
                       app_gate: np.ndarray, d_betas: np.ndarray, log_spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, D) cost and gate of the low-score stage (``low_d_a``: occluder-discounted appearance;
        ``log_spread``: (T,) the cost's vagueness term, left out of the ``low_max_cost`` cut).

        Location and depth must lie in the track's prediction interval (``near``). Then either the
        appearance agrees under the strict low gate (``min(app_gate, app_gate_low)``), or the body shape
        agrees (``d_betas <= low_shape_gate``) and the appearance only under ``app_gate_low_shape`` at the
        lower weight ``low_appearance_weight``: a partly hidden person's embedding is partly the occluder's
        even after the discount, while shape survives partial occlusion and does not go stale while
        coasting, and a false positive or a stranger beside a hidden person's prediction rarely shares it."""
        c = self.lcfg
        shape_ok = d_betas <= c.low_shape_gate
        weight = np.where(shape_ok, c.low_appearance_weight, c.appearance_weight)
        low_cost = cost + weight * low_d_a - c.appearance_weight * d_a
        app_ok = low_d_a <= np.where(shape_ok, c.app_gate_low_shape, np.minimum(app_gate, c.app_gate_low)[:, None])
        # The absolute cut is on the fit alone: log_spread ranks a vague prediction below a sharp one in
        # the assignment, but as part of the cut it would refuse every lost track (~8 after 3 s).
        fit = low_cost - log_spread[:, None]
        return low_cost, near & app_ok & (fit <= c.low_max_cost)

    def update(self, people: People, frame_index: int, timestamp: float | None = None) -> Tracks:
        c = self.lcfg
        t = frame_index / c.fps if timestamp is None else float(timestamp)
        # 1. Detections worth tracking, in PHALP's units; high ones may start tracks, low ones only extend.
        rows = np.flatnonzero(people.confidence >= c.low_conf)
        det = DetectionFeatures.from_people(people if len(rows) == len(people) else people[rows], self.cfg)
        high = det.confidence >= c.high_conf

        # 2. Predict every track at t; one cost matrix and gate for all tracks x detections.
        pred = self.predict(t)
        cost, d_a, near, app_gate, d_betas = self.cost_matrix(pred, det)
        gate = near & (d_a <= app_gate[:, None])
        self.last_cost = cost
        dt = pred["dt"]
        confirmed = np.array([tr.is_confirmed for tr in self.tracks], dtype=bool)
        coasting = confirmed & (dt <= c.coast_s)
        lost = confirmed & (dt > c.coast_s)
        tentative = ~confirmed

        # 3. Staged assignment, each stage on what the earlier ones left:
        #    a) confirmed, recently seen tracks x high detections;
        #    b) lost tracks x high detections (re-identification: the appearance gate is already the tightest);
        #    c) tentative tracks x high detections;
        #    d) confirmed tracks (coasting or lost) x low detections, under the strict low-score gate: a person
        #       partly hidden when they come back keeps their id (the lost ones' appearance gate is tightest).
        #       A low detection is usually a partly hidden person whose embedding holds some of the occluder,
        #       so its appearance distance discounts the tracks matched in a-c that are nearer (3e).
        free_det = np.ones(len(rows), bool)
        free_track = np.ones(len(self.tracks), bool)
        matches: list[tuple[int, int]] = []

        def assign(track_mask: np.ndarray, det_mask: np.ndarray, allowed: np.ndarray, cost_: np.ndarray) -> None:
            m = gated_assignment(cost_, allowed, np.flatnonzero(track_mask & free_track),
                                 np.flatnonzero(det_mask & free_det), c.max_cost)
            free_track[m[:, 0]] = False
            free_det[m[:, 1]] = False
            matches.extend((int(i), int(j)) for i, j in m)

        for track_mask in (coasting, lost, tentative):
            assign(track_mask, high, gate, cost)
        low_d_a = self.low_score_appearance(d_a, det, matches, np.flatnonzero(confirmed & free_track),
                                            np.flatnonzero(~high & free_det))
        low_cost, low_gate = self.low_score_gate(cost, d_a, low_d_a, near, app_gate, d_betas, pred["log_spread"])
        assign(confirmed, ~high, low_gate, low_cost)

        # 4. Matched tracks take their detection; weak (low score or marginal cost) ones only move a little.
        for i, j in matches:
            tr = self.tracks[i]
            strong = bool(high[j]) and cost[i, j] <= c.marginal_cost
            tr.observe(t, frame_index, det, j, people.xyxy[rows[j]], int(rows[j]), strong, float(d_a[i, j]), c)
            if tr.state == TrackState.TENTATIVE and tr.hits >= c.n_init:
                tr.state = TrackState.CONFIRMED

        # 5. Everyone else ages; tentative tracks die quickly, confirmed ones after max_unseen_s.
        for tr in self.tracks:
            tr.age = frame_index - tr.birth_frame + 1
            if tr.last_frame != frame_index:
                tr.time_since_update = frame_index - tr.last_frame
                tr.person_index = -1
                unseen = t - tr.last_t
                if (tr.state == TrackState.TENTATIVE and unseen > c.tentative_max_unseen_s) or unseen > c.max_unseen_s:
                    tr.state = TrackState.DELETED

        # 6. Unmatched confident detections start tentative tracks (low ones never do).
        for j in np.flatnonzero(free_det & (det.confidence >= c.new_track_conf)):
            self.tracks.append(LartTrack(self.next_id(), t, frame_index, det, int(j), people.xyxy[rows[j]],
                                         int(rows[j]), c.history))
            if c.n_init <= 1:
                self.tracks[-1].state = TrackState.CONFIRMED

        # 7. Forget deleted tracks and the oldest lost ones beyond the gallery bound; emit confirmed
        #    tracks seen within coast_s (coasting ones with time_since_update > 0, person_index -1).
        self.tracks = [tr for tr in self.tracks if tr.state != TrackState.DELETED]
        gallery = sorted((tr for tr in self.tracks if tr.is_confirmed and t - tr.last_t > c.coast_s),
                         key=lambda tr: tr.last_t)
        if len(gallery) > c.max_lost:
            drop = {id(tr) for tr in gallery[:len(gallery) - c.max_lost]}
            self.tracks = [tr for tr in self.tracks if id(tr) not in drop]
        return self._emit([tr for tr in self.tracks if tr.is_confirmed and t - tr.last_t <= c.coast_s])

    def _emit(self, tracks: list[LartTrack]) -> Tracks:
        if not tracks:
            return Tracks.empty()
        has_app = all(tr.appearance is not None for tr in tracks)
        return Tracks(**lifecycle_columns(tracks),
                      pose_vector=np.array([tr.pose for tr in tracks], dtype=np.float32),
                      cam_t=np.array([tr.cam_t for tr in tracks], dtype=np.float32),
                      appearance=np.array([tr.appearance for tr in tracks], dtype=np.float32) if has_app else None)
