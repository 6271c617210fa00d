"""What each pipeline stage takes and returns.

The engine (realtime/engine.py) chains these; each stage's real implementation
lives in its own module and is built from its own small frozen config. A stage
whose implementation is not available is left out of the chain (None), never
replaced by a fake.

    detector : Frame                      -> Detections
    lifter   : Frame, Detections          -> People        (HMR 2.0, batched crops)
    tracker  : People, frame index        -> Tracks        (confirmed tracks only)
    appearance: Frame, Tracks, People     -> AppearanceStep (frame t - lookahead, with MViT features)
    actions  : Tracks, People, frame index [, AppearanceFeatures] -> ActionPredictions
    publisher: FrameResult                -> None           (never blocks)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lart_stream.realtime.records import (ActionPredictions, AppearanceStep, Detections, Frame, FrameResult, People,
                                          Tracks)


@runtime_checkable
class Detector(Protocol):
    name: str

    def __call__(self, frame: Frame) -> Detections: ...


@runtime_checkable
class Lifter(Protocol):
    name: str
    random_weights: bool

    def __call__(self, frame: Frame, detections: Detections) -> People: ...


@runtime_checkable
class Tracker(Protocol):
    name: str

    def update(self, people: People, frame_index: int, timestamp: float | None = None) -> Tracks: ...


@runtime_checkable
class AppearanceExtractor(Protocol):
    name: str
    random_weights: bool

    def update(self, frame: Frame, tracks: Tracks, people: People) -> AppearanceStep | None: ...

    def close(self) -> None: ...


@runtime_checkable
class ActionRecognizer(Protocol):
    name: str
    random_weights: bool

    def update(self, tracks: Tracks, people: People, frame_index: int) -> ActionPredictions: ...


@runtime_checkable
class ResultSink(Protocol):
    def send(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...
