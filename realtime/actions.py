"""Action stage: LART (models/lart.py) on live tracks -> per-track AVA action scores.

    Tracks, People, frame index -> ActionPredictions

One ``update`` call is one time step. Every track gets its own sequence: the track of interest
in person slot 0 and up to N-1 other current tracks as context in slots 1..N-1; a person-frame
without a detection (or an empty slot) is a masked token, as in the reference.

mode "window" (reference computation, official weights): every ``stride`` steps, for all tracks
at once (batched), the last T steps of each track (from its first step, left-aligned at table
column 0 as the reference's evaluation window) go through a bidirectional forward. Context
tracks are the other current tracks in track-id order. The prediction for step t-k (``lookahead``
k, 0 = lowest latency) is published at step t: the mean sigmoid over the window's frames
[c-6, c+6) of the track that have been seen (the reference's ``avg.6`` pooling, clipped to the
track's frames in the window and to step t; ``lookahead`` 5 or more gives the full 12 frames).

mode "causal" (KV-cache step, ``LART.step``): every step adds the newest frame's N tokens of
each sequence and attends to the cached keys/values of the last T frames: O(new tokens x window)
per step. A frame keeps the table column (t - t_start) mod T for its whole life in the cache
(see models/lart.py). A context track keeps its slot while it lives; a freed slot is reused,
longest-free first. A sequence starts when its track first appears. The released checkpoints
were trained bidirectionally: with them this mode's accuracy is UNKNOWN. Predictions are
published every ``stride`` steps, pooled like the window mode over the causal scores of the last
T steps kept per sequence.

Inputs per detected person-frame: People.pose_vector (normalised inside the model with mean_std),
joints_3D = 45 joints (44 are padded with the zero joint) + cam_t when the checkpoint has a joint
encoder, and the appearance feature when it has one (see ``people_appearance``; zeros otherwise).

A prediction is published for a track only when it was detected at the frame it refers to (the
reference scores detected key frames only). Buffers are fixed-length rings (T steps per track);
state of tracks that vanish is dropped at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from models.ava import AVA_EVAL_IDS, AVA_EVAL_NAMES
from models.lart import JOINTS_DIM, LART, LARTConfig, POSE_DIM, load_lart, load_pose_stats
from realtime.records import ActionPredictions, People, Tracks

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ActionStageConfig:
    checkpoint: str | None = None  # LART .ckpt; None = random weights (loud warning)
    mean_std: str | None = None  # mean_std.npy pose statistics; None = identity (warned)
    size: str = "tiny"  # tiny | official: only without a checkpoint (a checkpoint's shapes decide)
    mode: str = "causal"  # causal (KV-cache step) | window (trailing window, reference computation)
    window: int = 0  # T frames (0: model default, 125 official / 16 tiny)
    max_people: int = 0  # N person slots incl. the track of interest (0: model default, 5 / 3)
    stride: int = 1  # window: run every `stride` steps; causal: publish every `stride` steps
    lookahead: int = 0  # publish the prediction for step t-k at step t
    device: str = "cpu"
    top_k: int = 5
    backend: str = "auto"  # only PyTorch runs this stage; others fall back with a warning
    max_tracks: int = 16  # tracks followed at once; more are ignored (warned)
    pool_half: int = 6  # pooling over frames [c-6, c+6) as the reference's avg.6
    attention: str = "sdpa"  # sdpa | exact (explicit scores with the reference's -1e3 replacement)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    # People.appearance is fed to LART only when it IS the ROI feature the checkpoint was trained on
    # (MViTv2 1152-d / Hiera 2048-d); otherwise zeros are fed (warned): a tracking embedding of the
    # same width would be silently wrong.
    people_appearance: bool = False
    seed: int = 0  # random-weight initialisation
    pose_only: bool = False  # without a checkpoint: build the pose-only variant (no joints/appearance inputs)

    def __post_init__(self) -> None:
        checks = [
            (self.size in ("tiny", "official"), f"size must be tiny or official, got {self.size!r}"),
            (self.mode in ("window", "causal"), f"mode must be window or causal, got {self.mode!r}"),
            (self.attention in ("sdpa", "exact"), f"attention must be sdpa or exact, got {self.attention!r}"),
            (self.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}"),
            (self.window >= 0 and self.max_people >= 0, "window and max_people must be >= 0"),
            (self.stride >= 1, f"stride must be >= 1, got {self.stride}"),
            (self.lookahead >= 0 and self.pool_half >= 1, "lookahead must be >= 0 and pool_half >= 1"),
            (self.max_tracks >= 1 and self.top_k >= 1, "max_tracks and top_k must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"ActionStageConfig: {msg}")


class ActionStage:
    """LART action recogniser (realtime.stages.ActionRecognizer)."""

    name = "lart"

    def __init__(self, model: LART, cfg: ActionStageConfig, random_weights: bool):
        c = model.config
        self.model, self.cfg, self.random_weights = model, cfg, random_weights
        self.T = cfg.window or c.window
        self.N = cfg.max_people or c.max_people
        if not 1 <= self.T <= c.pos_frames:
            raise ValueError(f"window T={self.T} outside 1..{c.pos_frames} (the positional table's frames)")
        if not 1 <= self.N <= c.pos_slots:
            raise ValueError(f"max_people N={self.N} outside 1..{c.pos_slots} (the positional table's slots)")
        if cfg.lookahead >= self.T:
            raise ValueError(f"lookahead ({cfg.lookahead}) must be < window T={self.T}")
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.exact = cfg.attention == "exact"
        self.class_ids: tuple[int, ...] = AVA_EVAL_IDS
        self.class_names: tuple[str, ...] = AVA_EVAL_NAMES
        self._warned: set[str] = set()
        self.reset()

    @classmethod
    def from_config(cls, cfg: ActionStageConfig) -> "ActionStage":
        if cfg.backend not in ("auto", "torch"):
            log.warning("action stage: backend %r is not available for LART; running it in PyTorch", cfg.backend)
        if cfg.checkpoint:
            if cfg.size == "tiny":
                raise ValueError("size 'tiny' with a checkpoint: a checkpoint's tensor shapes set the size")
            model, _ = load_lart(cfg.checkpoint)
            random_weights = False
        else:
            torch.manual_seed(cfg.seed)
            no_extra = dict(joints_mid=0, joints_en=0, app_dim=0, app_mid=0, app_en=0)
            if cfg.size == "official":
                model = LART(LARTConfig.pose_only() if cfg.pose_only else LARTConfig.official_mvit())
            else:
                model = LART(LARTConfig.tiny(dim=16, **no_extra) if cfg.pose_only else LARTConfig.tiny())
            random_weights = True
            log.warning("=" * 72 + "\nLART: NO CHECKPOINT - RANDOM WEIGHTS (%s size). Action scores are "
                        "meaningless and must not be shown as predictions.\n" + "=" * 72, cfg.size)
        mean, std, _ = load_pose_stats(cfg.mean_std)
        model.set_pose_stats(mean, std)
        model = model.to(device=cfg.device, dtype=_DTYPES[cfg.dtype]).eval()
        if cfg.mode == "causal" and not random_weights:
            log.warning("LART causal mode with released (bidirectionally trained) weights: accuracy unknown")
        return cls(model, cfg, random_weights)

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every track (e.g. on a scene cut or a new stream)."""
        c, T, P = self.model.config, self.T, self.cfg.max_tracks
        self._tau = 0  # steps seen
        self._frame_at = np.full(T, -1, np.int64)  # frame index of step tau, at tau % T
        # per-track rings, row = track slot in the pool, column = step % T
        self._row_of: dict[int, int] = {}  # track id -> pool row
        self._start = np.zeros(P, np.int64)  # step the track first appeared
        self._free_rows = list(range(P - 1, -1, -1))
        self._step_of = np.full((P, T), -1, np.int64)
        self._det = np.zeros((P, T), bool)
        kw = dict(device=self.device, dtype=self.dtype)
        self._pose = torch.zeros(P, T, POSE_DIM, **kw)
        self._joints = torch.zeros(P, T, JOINTS_DIM, **kw) if c.has_joints else None
        self._app = torch.zeros(P, T, c.app_dim, **kw) if c.has_appearance else None
        # causal sequences, compact: sequence b in [0, B)
        self._seq_ids: list[int] = []
        self._seq_start = np.zeros(P, np.int64)
        self._ctx = np.full((P, self.N - 1), -1, np.int64)  # context track ids per slot 1..N-1
        self._ctx_free = np.full((P, self.N - 1), np.iinfo(np.int64).min, np.int64)  # step freed
        self._cap = 0
        self._k = self._v = self._kb = None
        self._probs = torch.zeros(P, T, len(self.class_ids), device=self.device, dtype=torch.float32)

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg)

    def _empty(self) -> ActionPredictions:
        return ActionPredictions.empty(self.class_ids, self.class_names, self.random_weights)

    def top_k(self, preds: ActionPredictions) -> list[list[tuple[int, str, float]]]:
        return preds.top_k(self.cfg.top_k)

    # ------------------------------------------------------------------ update

    @torch.inference_mode()
    def update(self, tracks: Tracks, people: People, frame_index: int) -> ActionPredictions:
        if people.pose_vector is None:
            return self._empty()
        tau = self._tau
        self._tau += 1
        self._frame_at[tau % self.T] = frame_index
        # 1. drop the state of tracks that vanished
        present = set(int(t) for t in tracks.track_id)
        for tid in [t for t in self._row_of if t not in present]:
            row = self._row_of.pop(tid)
            self._step_of[row] = -1
            self._det[row] = False
            self._free_rows.append(row)
        # 2. admit new tracks
        for tid in tracks.track_id.tolist():
            if tid not in self._row_of:
                if not self._free_rows:
                    self._warn_once(f"full{tid}", f"action stage follows at most {self.cfg.max_tracks} tracks: "
                                                  f"track {tid} gets no predictions (raise max_tracks)")
                    continue
                self._row_of[tid] = row = self._free_rows.pop()
                self._start[row] = tau
        # 3. this step's observations
        self._write(tracks, people, tau)
        # 4. run
        if self.cfg.mode == "causal":
            return self._causal(tracks, tau)
        if tau % self.cfg.stride:
            return self._empty()
        return self._window(tracks, tau)

    def _write(self, tracks: Tracks, people: People, tau: int) -> None:
        ring = tau % self.T
        keep = np.array([int(t) in self._row_of for t in tracks.track_id], bool)
        if not keep.any():
            return
        rows = np.array([self._row_of[int(t)] for t in tracks.track_id[keep]], np.int64)
        pi = tracks.person_index[keep]
        if (pi >= len(people)).any():
            raise ValueError(f"Tracks.person_index {pi.max()} out of range for {len(people)} people")
        det = (tracks.time_since_update[keep] == 0) & (pi >= 0)
        self._step_of[rows, ring] = tau
        self._det[rows, ring] = det
        if not det.any():
            return
        rows_d, pi_d = torch.from_numpy(rows[det]).to(self.device), pi[det]

        def put(buf: torch.Tensor, values: np.ndarray) -> None:
            buf[rows_d, ring] = torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(buf.device, buf.dtype)

        put(self._pose, people.pose_vector[pi_d])
        if self._joints is not None:
            put(self._joints, self._joint_features(people, pi_d))
        if self._app is not None:
            app, d = people.appearance, self._app.shape[2]
            if not self.cfg.people_appearance or app is None or app.shape[1] != d:
                got = "not used" if not self.cfg.people_appearance else (None if app is None else app.shape[1])
                self._warn_once("app", f"LART needs {d}-d appearance features (the MViT/Hiera ROI feature it was "
                                       f"trained on); People.appearance: {got}. Feeding zeros: predictions degraded")
                app = np.zeros((len(people), d), np.float32)
            put(self._app, app[pi_d])

    def _joint_features(self, people: People, idx: np.ndarray) -> np.ndarray:
        """135-d joints_3D: 45 joints + camera translation (the reference adds `camera` to each)."""
        j = people.joints_3d
        if j is None or j.shape[1] not in (44, 45):
            got = None if j is None else j.shape[1]
            self._warn_once("joints", f"LART needs 45 3D joints (People.joints_3d has {got}; an SMPL file gives "
                                      "them): feeding zeros, predictions degraded")
            return np.zeros((len(idx), JOINTS_DIM), np.float32)
        j = j[idx].astype(np.float32)
        if j.shape[1] == 44:  # PHALP's 45th joint is all zeros
            j = np.concatenate([j, np.zeros((len(j), 1, 3), np.float32)], axis=1)
        if people.cam_t is not None:
            j = j + people.cam_t[idx, None, :].astype(np.float32)
        return j.reshape(len(idx), JOINTS_DIM)

    def _gather(self, rows: np.ndarray, ring: np.ndarray) -> tuple:
        """Features at pool rows x ring columns (same shapes, indices >= 0)."""
        r = torch.from_numpy(rows).to(self.device)
        c = torch.from_numpy(ring).to(self.device)
        return tuple(None if b is None else b[r, c] for b in (self._pose, self._joints, self._app))

    def _context(self, poi: int, candidates: list[int]) -> list[int]:
        return [t for t in candidates if t != poi][: self.N - 1]

    def _observed(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """bool: pool row `rows` (-1 = none) was detected at step `steps` (broadcast shapes)."""
        rs, ring = np.maximum(rows, 0), steps % self.T
        return (rows >= 0) & (steps >= 0) & (self._step_of[rs, ring] == steps) & self._det[rs, ring]

    def _publish(self, ids: list[int], probs: torch.Tensor, weight: np.ndarray, ok: np.ndarray,
                 c: int) -> ActionPredictions:
        """Mean of probs (B, T, C) over weight (B, T) for rows where ok."""
        if not ok.any():
            return self._empty()
        w = torch.from_numpy(weight[ok].astype(np.float32)).to(probs.device)
        rows = torch.from_numpy(np.flatnonzero(ok)).to(probs.device)
        pooled = (probs[rows] * w[:, :, None]).sum(1) / w.sum(1, keepdim=True)  # (n, C)
        n = int(ok.sum())
        return ActionPredictions(np.asarray(ids, np.int64)[ok], np.full(n, self._frame_at[c % self.T], np.int64),
                                 pooled.float().cpu().numpy(), self.class_ids, self.class_names, self.random_weights)

    # ------------------------------------------------------------------ window mode

    def window_inputs(self, tracks: Tracks, tau: int) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """(track ids, slot rows (B,N), window frames (B,T) as steps, valid (B,T,N)) at step tau."""
        T, N = self.T, self.N
        ids = [int(t) for t in tracks.track_id if int(t) in self._row_of]
        order = sorted(ids)
        slots = np.full((len(ids), N), -1, np.int64)
        for b, tid in enumerate(ids):
            row_ids = [tid] + self._context(tid, order)
            slots[b, : len(row_ids)] = [self._row_of[t] for t in row_ids]
        start = self._start[slots[:, 0]]
        length = np.minimum(T, tau - start + 1)
        steps = (tau - length + 1)[:, None] + np.arange(T)  # (B, T); >= tau+1 past the track's length
        in_win = np.arange(T)[None, :] < length[:, None]
        valid = in_win[:, :, None] & self._observed(slots[:, None, :], steps[:, :, None])
        return ids, slots, steps, valid

    def _window(self, tracks: Tracks, tau: int) -> ActionPredictions:
        ids, slots, steps, valid = self.window_inputs(tracks, tau)
        if not ids:
            return self._empty()
        T, N, B = self.T, self.N, len(ids)
        rows = np.broadcast_to(np.maximum(slots, 0)[:, None, :], (B, T, N)).copy()
        ring = np.broadcast_to((steps % T)[:, :, None], (B, T, N)).copy()
        pose, joints, app = self._gather(rows, ring)
        logits = self.model.forward_window(pose, joints, app, torch.from_numpy(valid).to(self.device), self.exact)
        probs = torch.sigmoid(logits.float())  # (B, T, C)
        # publish step c = tau - k, pooled over window positions [pc-h, min(pc+h, length))
        c, h = tau - self.cfg.lookahead, self.cfg.pool_half
        pc = c - steps[:, 0]
        length = (steps <= tau).sum(1)
        p = np.arange(T)[None, :]
        weight = (p >= pc[:, None] - h) & (p < np.minimum(pc + h, length)[:, None])
        ok = (pc >= 0) & self._observed(slots[:, 0], np.full(B, c))
        return self._publish(ids, probs, weight, ok, c)

    # ------------------------------------------------------------------ causal mode

    def _ensure_cache(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = min(max(n, 2 * self._cap, 4), self.cfg.max_tracks)
        k, v, kb = self.model.new_cache(cap, self.T, self.N)
        if self._cap:
            k[:, : self._cap] = self._k
            v[:, : self._cap] = self._v
            kb[: self._cap] = self._kb
        self._k, self._v, self._kb, self._cap = k, v, kb, cap

    def _drop_sequence(self, b: int) -> None:
        last = len(self._seq_ids) - 1
        if b != last:  # swap-remove keeps sequences compact in [0, B)
            self._seq_ids[b] = self._seq_ids[last]
            for a in (self._seq_start, self._ctx, self._ctx_free):
                a[b] = a[last]
            for t in (self._k, self._v):
                t[:, b] = t[:, last]
            self._kb[b] = self._kb[last]
            self._probs[b] = self._probs[last]
        self._seq_ids.pop()

    def causal_inputs(self, tracks: Tracks, tau: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Update sequences and their context slots; (track ids, slot rows (B,N), positions (B,))."""
        # sequences of vanished tracks go; context slots of vanished tracks are freed
        for b in range(len(self._seq_ids) - 1, -1, -1):
            if self._seq_ids[b] not in self._row_of:
                self._drop_sequence(b)
        B = len(self._seq_ids)
        gone = (self._ctx[:B] >= 0) & ~np.isin(self._ctx[:B], list(self._row_of))
        self._ctx[:B][gone] = -1
        self._ctx_free[:B][gone] = tau
        # new sequences
        for tid in [int(t) for t in tracks.track_id if int(t) in self._row_of]:
            if tid not in self._seq_ids:
                b = len(self._seq_ids)
                self._ensure_cache(b + 1)
                self._seq_ids.append(tid)
                self._seq_start[b] = self._start[self._row_of[tid]]
                self._ctx[b] = -1
                self._ctx_free[b] = np.iinfo(np.int64).min
                self._kb[b] = float("-inf")
                self._k[:, b] = 0
                self._v[:, b] = 0
        B = len(self._seq_ids)
        order = sorted(self._row_of)
        slots = np.full((B, self.N), -1, np.int64)
        for b, tid in enumerate(self._seq_ids):
            have = set(self._ctx[b].tolist())
            free = [s for s in np.argsort(self._ctx_free[b], kind="stable") if self._ctx[b, s] < 0]
            for tid2, s in zip([t for t in order if t != tid and t not in have], free):
                self._ctx[b, s] = tid2
            slots[b] = [self._row_of[tid]] + [self._row_of[t] if t >= 0 else -1 for t in self._ctx[b]]
        positions = (tau - self._seq_start[:B]) % self.T
        return list(self._seq_ids), slots, positions

    def _causal(self, tracks: Tracks, tau: int) -> ActionPredictions:
        ids, slots, positions = self.causal_inputs(tracks, tau)
        B, T = len(ids), self.T
        if B == 0:
            return self._empty()
        ring = np.full_like(slots, tau % T)
        pose, joints, app = self._gather(np.maximum(slots, 0), ring)
        valid = torch.from_numpy(self._observed(slots, np.full_like(slots, tau))).to(self.device)
        logits, *_ = self.model.step(pose, joints, app, valid, torch.from_numpy(positions).to(self.device),
                                     self._k[:, :B], self._v[:, :B], self._kb[:B], self.exact, inplace=True)
        self._probs[:B, tau % T] = torch.sigmoid(logits.float())
        if tau % self.cfg.stride:
            return self._empty()
        # publish step c = tau - k, pooled over the kept steps [max(c-h, start, tau-T+1), min(c+h, tau+1))
        c, h = tau - self.cfg.lookahead, self.cfg.pool_half
        start = self._seq_start[:B]
        step_at = tau - ((tau - np.arange(T)) % T)  # step held in each ring row
        lo, hi = np.maximum(np.maximum(c - h, start), tau - T + 1), min(c + h, tau + 1)
        weight = (step_at[None, :] >= lo[:, None]) & (step_at[None, :] < hi)
        ok = (c >= start) & self._observed(slots[:, 0], np.full(B, c))
        return self._publish(ids, self._probs[:B], weight, ok, c)
