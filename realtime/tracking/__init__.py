"""Tracking stage: People -> Tracks (confirmed tracks only).

    build_tracker("lart", cfg)             default 3D tracker: two-stage, state-aware gates, lifecycle in
                                           seconds with a lost gallery for re-identification (lart.py)
    build_tracker("phalp-reference", cfg)  PHALP as published: EQ_019 cost, one Hungarian, PHALP's defaults
    build_tracker("iou", cfg)              2D ByteTrack-style baseline; needs only boxes and confidences
"""

from __future__ import annotations

from lart_stream.realtime.tracking.config import LartTrackerConfig, TrackerConfig
from lart_stream.realtime.tracking.iou import IouTracker
from lart_stream.realtime.tracking.lart import LartTracker
from lart_stream.realtime.tracking.phalp import PhalpTracker

TRACKERS = {"lart": LartTracker, "phalp-reference": PhalpTracker, "iou": IouTracker}
ALIASES = {"phalp": "phalp-reference"}  # the name before the lart tracker existed


def build_tracker(kind: str, cfg: TrackerConfig = TrackerConfig()) -> LartTracker | PhalpTracker | IouTracker:
    """A fresh tracker instance (own id counter) implementing realtime.stages.Tracker."""
    kind = ALIASES.get(kind, kind)
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker {kind!r}; valid: {', '.join(TRACKERS)}")
    return TRACKERS[kind](cfg)


__all__ = ["TrackerConfig", "LartTrackerConfig", "LartTracker", "PhalpTracker", "IouTracker", "build_tracker",
           "TRACKERS", "ALIASES"]
