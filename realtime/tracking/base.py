"""What both trackers share: the track lifecycle and per-instance ids."""

from __future__ import annotations

import numpy as np

from lart_stream.realtime.records import TrackState


class IdCounter:
    """Track ids for one tracker instance (supervision's port of ByteTrack: no class-global counter)."""

    def __init__(self) -> None:
        self._next = 1

    def __call__(self) -> int:
        self._next += 1
        return self._next - 1

    def reset(self) -> None:
        self._next = 1


class TrackLifecycle:
    """One track's lifecycle, as PHALP's deep_sort_/track.py.

    Born TENTATIVE with hits = age = 1. Every frame ``mark_predicted`` ages it; a matched detection
    (``mark_hit``) resets ``time_since_update`` and confirms it at ``n_init`` hits; a miss
    (``mark_missed``) deletes a tentative track at once and a confirmed one past ``max_age`` misses.
    """

    def __init__(self, track_id: int, xyxy: np.ndarray, n_init: int) -> None:
        self.track_id = track_id
        self.xyxy = np.asarray(xyxy, dtype=np.float32)  # last observed box
        self.hits = 1
        self.age = 1
        self.time_since_update = 0
        self.person_index = -1  # row in this frame's People, -1 when not matched
        # n_init == 1: the birth detection is enough (PHALP would wait one match).
        self.state = TrackState.CONFIRMED if n_init <= 1 else TrackState.TENTATIVE

    def mark_predicted(self) -> None:
        self.age += 1
        self.time_since_update += 1
        self.person_index = -1

    def mark_hit(self, xyxy: np.ndarray, person_index: int, n_init: int) -> None:
        self.xyxy = np.asarray(xyxy, dtype=np.float32)
        self.person_index = person_index
        self.hits += 1
        self.time_since_update = 0
        if self.state == TrackState.TENTATIVE and self.hits >= n_init:
            self.state = TrackState.CONFIRMED

    def mark_missed(self, max_age: int) -> None:
        if self.state == TrackState.TENTATIVE or self.time_since_update > max_age:
            self.state = TrackState.DELETED

    @property
    def is_confirmed(self) -> bool:
        return self.state == TrackState.CONFIRMED

    @property
    def is_deleted(self) -> bool:
        return self.state == TrackState.DELETED


def lifecycle_columns(tracks: list[TrackLifecycle]) -> dict[str, np.ndarray]:
    """The Tracks record's lifecycle columns for these tracks (row-aligned)."""
    return {
        "track_id": np.array([t.track_id for t in tracks], dtype=np.int64),
        "xyxy": np.array([t.xyxy for t in tracks], dtype=np.float32).reshape(-1, 4),
        "state": np.array([int(t.state) for t in tracks], dtype=np.int8),
        "age": np.array([t.age for t in tracks], dtype=np.int32),
        "hits": np.array([t.hits for t in tracks], dtype=np.int32),
        "time_since_update": np.array([t.time_since_update for t in tracks], dtype=np.int32),
        "person_index": np.array([t.person_index for t in tracks], dtype=np.int32),
    }
