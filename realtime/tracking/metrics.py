"""Tracking metrics from established packages.

IDF1, ID switches and MOTA come from motmetrics (py-motmetrics, already in the ``test`` extra);
HOTA from TrackEval (PyPI ``trackeval``, the HOTA authors' code) when it is installed, else None.
Both get the same per-frame IoU matrices (computed here: motmetrics 1.4.0's own ``iou_matrix`` calls
``np.asfarray``, which NumPy 2 removed). A ground-truth box and a hypothesis box can match when
their IoU is at least 0.5 (the MOTChallenge rule).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from lart_stream.realtime.records import People, Tracks
from lart_stream.realtime.stages import Tracker
from lart_stream.realtime.tracking.iou import box_iou

try:  # optional: HOTA
    from trackeval.metrics import HOTA as _TrackEvalHOTA
except ImportError:  # pragma: no cover - depends on the environment
    _TrackEvalHOTA = None


@dataclass(frozen=True)
class FrameBoxes:
    """Identities and boxes of one frame (ground truth or tracker output)."""

    ids: np.ndarray  # (n,) int
    xyxy: np.ndarray  # (n, 4)


@dataclass(frozen=True)
class TrackingMetrics:
    idf1: float
    mota: float
    id_switches: int
    hota: float | None  # None without trackeval
    num_frames: int
    num_gt: int  # ground-truth boxes
    false_positives: int
    misses: int

    def as_dict(self) -> dict:
        return asdict(self)


def hypotheses(tracks: Tracks) -> FrameBoxes:
    """A tracker's output for one frame: tracks matched in this frame (coasting tracks have no box)."""
    seen = tracks.detected
    return FrameBoxes(tracks.track_id[seen], tracks.xyxy[seen])


def evaluate(gt: Sequence[FrameBoxes], hyp: Sequence[FrameBoxes], iou_threshold: float = 0.5) -> TrackingMetrics:
    """CLEAR-MOT, ID and HOTA metrics of ``hyp`` against ``gt`` (one entry per frame, same length)."""
    import motmetrics as mm  # test/bench dependency only

    if len(gt) != len(hyp):
        raise ValueError(f"evaluate: {len(gt)} ground-truth frames but {len(hyp)} hypothesis frames")
    acc = mm.MOTAccumulator(auto_id=True)
    sims = []
    for g, h in zip(gt, hyp):
        iou = box_iou(g.xyxy, h.xyxy)  # (m, n)
        sims.append(iou)
        dist = np.where(iou >= iou_threshold, 1.0 - iou, np.nan)
        acc.update(np.asarray(g.ids).tolist(), np.asarray(h.ids).tolist(), dist)
    summary = mm.metrics.create().compute(
        acc, metrics=["idf1", "mota", "num_switches", "num_objects", "num_false_positives", "num_misses"], name="s")
    row = summary.loc["s"]
    return TrackingMetrics(
        idf1=float(row["idf1"]), mota=float(row["mota"]), id_switches=int(row["num_switches"]),
        hota=hota(gt, hyp, sims), num_frames=len(gt), num_gt=int(row["num_objects"]),
        false_positives=int(row["num_false_positives"]), misses=int(row["num_misses"]))


def trackeval_data(gt: Sequence[FrameBoxes], hyp: Sequence[FrameBoxes], sims: Sequence[np.ndarray]) -> dict:
    """TrackEval's per-sequence ``data`` dict (ids relabelled 0..n-1, similarity = IoU)."""
    gt_all = np.unique(np.concatenate([np.asarray(g.ids, np.int64) for g in gt] + [np.zeros(0, np.int64)]))
    hyp_all = np.unique(np.concatenate([np.asarray(h.ids, np.int64) for h in hyp] + [np.zeros(0, np.int64)]))
    return {
        "num_timesteps": len(gt),
        "num_gt_ids": len(gt_all), "num_tracker_ids": len(hyp_all),
        "num_gt_dets": int(sum(len(g.ids) for g in gt)), "num_tracker_dets": int(sum(len(h.ids) for h in hyp)),
        "gt_ids": [np.searchsorted(gt_all, np.asarray(g.ids, np.int64)) for g in gt],
        "tracker_ids": [np.searchsorted(hyp_all, np.asarray(h.ids, np.int64)) for h in hyp],
        "similarity_scores": [np.asarray(s, dtype=np.float64) for s in sims],
    }


def hota(gt: Sequence[FrameBoxes], hyp: Sequence[FrameBoxes], sims: Sequence[np.ndarray]) -> float | None:
    """HOTA averaged over TrackEval's IoU thresholds 0.05..0.95; None when trackeval is missing."""
    if _TrackEvalHOTA is None:
        return None
    res = _TrackEvalHOTA().eval_sequence(trackeval_data(gt, hyp, sims))
    return float(np.mean(res["HOTA"]))


def run_tracker(tracker: Tracker, frames: Sequence) -> list[FrameBoxes]:
    """Feed a tracker every frame (objects with ``.people: People`` and ``.index``); its per-frame output."""
    out = []
    for frame in frames:
        people: People = frame.people
        out.append(hypotheses(tracker.update(people, frame.index)))
    return out


def ground_truth(frames: Sequence) -> list[FrameBoxes]:
    """Ground truth of synthetic frames (``gt_ids``, ``gt_xyxy``)."""
    return [FrameBoxes(f.gt_ids, f.gt_xyxy) for f in frames]


def evaluate_tracker(tracker: Tracker, scene) -> TrackingMetrics:
    """Reset ``tracker``, run it over a synthetic scene and score it."""
    tracker.reset()
    return evaluate(ground_truth(scene.frames), run_tracker(tracker, scene.frames))
