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


GT_BOXES = ("visible", "full")


def ground_truth(frames: Sequence, boxes: str = "visible") -> list[FrameBoxes]:
    """Ground truth of synthetic frames: every person in view (``gt_ids``), occluded or not.

    ``boxes="visible"`` (default) scores against the box of the unoccluded part (``gt_visible_xyxy``),
    the box a detector like ours (COCO-trained: modal boxes) aims at, and which every tracker publishes
    since a track's box is its detection's; ``"full"`` against the whole-body box (``gt_xyxy``,
    MOTChallenge's amodal annotation). With the full box a correct track on a half-hidden person fails
    IoU >= 0.5 (its box is the visible half), so that convention charges the detector's box extent to
    the tracker and rewards dropping correct partly-occluded detections (benchmarks/results/tracking/).
    """
    if boxes not in GT_BOXES:
        raise ValueError(f"ground_truth: boxes must be one of {', '.join(GT_BOXES)}, got {boxes!r}")
    return [FrameBoxes(f.gt_ids, f.gt_visible_xyxy if boxes == "visible" else f.gt_xyxy) for f in frames]


def evaluate_tracker(tracker: Tracker, scene, boxes: str = "visible") -> TrackingMetrics:
    """Reset ``tracker``, run it over a synthetic scene and score it (``boxes``: see ground_truth)."""
    tracker.reset()
    return evaluate(ground_truth(scene.frames, boxes), run_tracker(tracker, scene.frames))


# Beyond CLEAR/ID metrics, for synthetic scenes (which know who each detection is, ``det_ids``):
# hijacks onto false positives, re-identification after absences, and an oracle tracker.

@dataclass(frozen=True)
class SceneRun:
    """A tracker's per-frame output on a synthetic scene: boxes for the metrics, and who took which row."""

    hyp: list[FrameBoxes]
    taken: list[dict[int, int]]  # per frame: People row -> id of the emitted track that took it


def run_scene(tracker: Tracker, scene) -> SceneRun:
    """Reset ``tracker`` and feed it every frame of ``scene``."""
    if hasattr(tracker, "reset"):
        tracker.reset()
    hyp, taken = [], []
    for frame in scene.frames:
        tracks = tracker.update(frame.people, frame.index)
        hyp.append(hypotheses(tracks))
        seen = tracks.detected
        taken.append(dict(zip(tracks.person_index[seen].tolist(), tracks.track_id[seen].tolist())))
    return SceneRun(hyp, taken)


def hijacks(scene, run: SceneRun) -> int:
    """Frames in which a track that had followed a real person took a false positive."""
    real_before: set[int] = set()
    count = 0
    for frame, taken in zip(scene.frames, run.taken):
        for row, tid in taken.items():
            if frame.det_ids[row] < 0:
                count += tid in real_before
            else:
                real_before.add(tid)
    return count


@dataclass(frozen=True)
class Absence:
    identity: int
    seconds: float  # time without a detection of this person
    before: int  # id of the track that had them before the gap
    after: int  # id of the first track that took them within a second of coming back; -1 none
    reidentified: bool


def absences(scene, run: SceneRun, fps: float = 30.0, min_s: float = 1.0, max_s: float = 4.0,
             settle_s: float = 1.0) -> list[Absence]:
    """Every gap of ``min_s``..``max_s`` seconds between detections of a person whom a confirmed track had
    just before; re-identified when the first track to take them within ``settle_s`` of return has the old id."""
    seen: dict[int, list[tuple[int, int | None]]] = {}  # identity -> [(frame, track id or None)]
    for frame, taken in zip(scene.frames, run.taken):
        for row, ident in enumerate(frame.det_ids.tolist()):
            if ident >= 0:
                seen.setdefault(ident, []).append((frame.index, taken.get(row)))
    out = []
    for ident, obs in seen.items():
        for k in range(1, len(obs)):
            gap = (obs[k][0] - obs[k - 1][0]) / fps
            before = obs[k - 1][1]
            if not (min_s <= gap <= max_s) or before is None:
                continue
            after = next((tid for f, tid in obs[k:] if f - obs[k][0] <= settle_s * fps and tid is not None), -1)
            out.append(Absence(ident, gap, before, after, after == before))
    return out


class OracleTracker:
    """Knows who every detection is (the scene's ``det_ids``; false positives ignored) and goes through the
    ``lart`` lifecycle: confirmed after n_init hits, tentative tracks dropped when unseen, confirmed ones
    kept max_unseen_s. An upper bound for association, not for detection."""

    name = "oracle"

    def __init__(self, scene, cfg=None) -> None:
        from lart_stream.realtime.tracking.config import LartTrackerConfig

        self.cfg = cfg or LartTrackerConfig()
        self.det_ids = {f.index: f.det_ids for f in scene.frames}
        self.reset()

    def reset(self) -> None:
        self.state: dict[int, dict] = {}  # identity -> id, hits, last_t, last_frame, confirmed
        self.next_id = 1

    def update(self, people: People, frame_index: int, timestamp: float | None = None) -> Tracks:
        c = self.cfg
        t = frame_index / c.fps if timestamp is None else timestamp
        for ident in list(self.state):
            s = self.state[ident]
            if t - s["last_t"] > (c.max_unseen_s if s["confirmed"] else c.tentative_max_unseen_s):
                del self.state[ident]
        rows = {}
        for row, ident in enumerate(self.det_ids[frame_index].tolist()):
            conf = float(people.confidence[row])
            if ident < 0 or conf < c.low_conf:
                continue
            s = self.state.get(ident)
            if s is None:
                if conf < c.new_track_conf:
                    continue
                s = self.state[ident] = {"id": self.next_id, "hits": 0, "confirmed": False}
                self.next_id += 1
            s.update(hits=s["hits"] + 1, last_t=t, last_frame=frame_index)
            s["confirmed"] |= s["hits"] >= c.n_init
            rows[ident] = row
        live = [(ident, s) for ident, s in self.state.items() if s["confirmed"] and t - s["last_t"] <= c.coast_s]
        if not live:
            return Tracks.empty()
        n = len(live)
        return Tracks(track_id=[s["id"] for _, s in live],
                      xyxy=[people.xyxy[rows[i]] if i in rows else np.zeros(4) for i, _ in live],
                      state=np.full(n, 2), age=np.ones(n), hits=[s["hits"] for _, s in live],
                      time_since_update=[frame_index - s["last_frame"] for _, s in live],
                      person_index=[rows.get(i, -1) for i, _ in live])


# Where IDF1 goes: every IDFN (a ground-truth box without its identity's track) and IDFP (a published box
# not on its track's identity) charged to one cause, in IDF1 points: 1 - IDF1 = (IDFN + IDFP) / (GT + hyp).

LOSS_CAUSES = {
    "undetected_hidden": "no detection: person mostly hidden (visibility < 0.3)",
    "undetected_visible": "no detection: person visible (detection gaps, misses)",
    "unpublished_confident": "confident detection not on a published track (tentative at birth or return, refused)",
    "unpublished_low": "low-score detection not on a published track (partial occlusion refused, or no track yet)",
    "box": "on a published track, but its box misses the GT box (IoU < 0.5): charged twice (IDFN + IDFP)",
    "wrong_id": "wrong association: a detection on another identity's track, or a track on a false positive",
}


def id_assignment(gt: Sequence[FrameBoxes], hyp: Sequence[FrameBoxes], iou_threshold: float = 0.5) -> dict[int, int]:
    """IDF1's global one-to-one identity map (ground-truth id -> hypothesis id) maximising the frames
    where the pair overlaps by ``iou_threshold`` (motmetrics' and TrackEval's Identity rule)."""
    from scipy.optimize import linear_sum_assignment

    gids = np.unique(np.concatenate([np.asarray(g.ids, np.int64) for g in gt] + [np.zeros(0, np.int64)]))
    hids = np.unique(np.concatenate([np.asarray(h.ids, np.int64) for h in hyp] + [np.zeros(0, np.int64)]))
    overlap = np.zeros((len(gids), len(hids)))
    for g, h in zip(gt, hyp):
        a, b = np.nonzero(box_iou(g.xyxy, h.xyxy) >= iou_threshold)
        np.add.at(overlap, (np.searchsorted(gids, np.asarray(g.ids)[a]), np.searchsorted(hids, np.asarray(h.ids)[b])), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return {int(gids[r]): int(hids[c]) for r, c in zip(rows, cols) if overlap[r, c] > 0}


def idf1_losses(scene, run: SceneRun, boxes: str = "visible", low_score: float = 0.6,
                iou_threshold: float = 0.5) -> tuple[float, dict[str, float]]:
    """IDF1 of ``run`` on ``scene`` and its loss by cause (LOSS_CAUSES): IDF1 + sum(losses) == 1."""
    gt = ground_truth(scene.frames, boxes)
    mapping = id_assignment(gt, run.hyp, iou_threshold)
    counts = dict.fromkeys(LOSS_CAUSES, 0)
    idtp = 0
    for frame, g, h, taken in zip(scene.frames, gt, run.hyp, run.taken):
        iou = box_iou(g.xyxy, h.xyxy)
        col = {int(t): k for k, t in enumerate(np.asarray(h.ids).tolist())}
        gt_row = {int(i): k for k, i in enumerate(np.asarray(g.ids).tolist())}
        det_row = {int(i): r for r, i in enumerate(frame.det_ids.tolist()) if i >= 0}
        row_of_track = {t: r for r, t in taken.items()}

        def box_ok(ident: int, row: int) -> bool:
            k = gt_row[ident]
            return box_iou(g.xyxy[k:k + 1], np.asarray(frame.people.xyxy[row])[None])[0, 0] >= iou_threshold

        true_hyps = set()
        for ident, k in gt_row.items():
            mine = mapping.get(ident)
            if mine in col and iou[k, col[mine]] >= iou_threshold:
                idtp += 1
                true_hyps.add(mine)
                continue
            row = det_row.get(ident)
            if row is None:
                cause = "undetected_hidden" if frame.gt_visibility[k] < 0.3 else "undetected_visible"
            elif row not in taken:
                cause = "unpublished_low" if frame.people.confidence[row] < low_score else "unpublished_confident"
            else:
                cause = "wrong_id" if box_ok(ident, row) else "box"
            counts[cause] += 1
        for track in col:
            if track in true_hyps:
                continue
            ident = int(frame.det_ids[row_of_track[track]])
            counts["wrong_id" if ident < 0 or ident not in gt_row or box_ok(ident, row_of_track[track]) else "box"] += 1
    total = sum(len(g.ids) for g in gt) + sum(len(h.ids) for h in run.hyp)
    if total == 0:
        return 1.0, {k: 0.0 for k in counts}
    return 2 * idtp / total, {k: v / total for k, v in counts.items()}
