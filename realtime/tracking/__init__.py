"""Tracking stage: People -> Tracks (confirmed tracks only).

    build_tracker("phalp", cfg)  3D, PHALP's EQ_019 cost over pose, location, depth and appearance
    build_tracker("iou", cfg)    2D ByteTrack-style baseline; needs only boxes and confidences
"""

from __future__ import annotations

from lart_stream.realtime.tracking.config import TrackerConfig
from lart_stream.realtime.tracking.iou import IouTracker
from lart_stream.realtime.tracking.phalp import PhalpTracker

TRACKERS = {"phalp": PhalpTracker, "iou": IouTracker}


def build_tracker(kind: str, cfg: TrackerConfig = TrackerConfig()) -> PhalpTracker | IouTracker:
    """A fresh tracker instance (own id counter) implementing realtime.stages.Tracker."""
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker {kind!r}; valid: {', '.join(TRACKERS)}")
    return TRACKERS[kind](cfg)


__all__ = ["TrackerConfig", "PhalpTracker", "IouTracker", "build_tracker", "TRACKERS"]
