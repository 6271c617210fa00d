"""Controllable inputs for benchmarks: a source of frames at a set size and a detector
stage that replays a set number of boxes per frame.

The people count must be controllable with random-weight models (a random
detector finds nobody), so the benchmark replays boxes; the real detector is
still run and timed beside it (stage ``detect_real``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from lart_stream.realtime.records import Detections, Frame


def walking_boxes(people: int, frames: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(frames, people, 5) boxes xyxy+conf of people walking across the frame in lanes."""
    w, h = size
    rng = np.random.default_rng(seed)
    height = rng.uniform(0.25, 0.45, people) * h
    width = 0.4 * height
    x0 = rng.uniform(0, w - width)
    y0 = rng.uniform(0.1 * h, h - height - 1)
    speed = rng.uniform(-6, 6, people) * w / 1920
    t = np.arange(frames)[:, None]
    x = np.mod(x0[None] + speed[None] * t, np.maximum(w - width[None], 1))
    y = np.broadcast_to(y0[None], x.shape)
    boxes = np.stack([x, y, x + width[None], y + height[None], np.full(x.shape, 0.9)], axis=-1)
    return boxes.astype(np.float32)


def save_boxes(path: Path, boxes: np.ndarray) -> None:
    path.write_text(json.dumps({"frames": boxes.round(2).tolist()}))


def load_boxes(path: Path) -> np.ndarray:
    frames = json.loads(Path(path).read_text())["frames"]
    return np.asarray(frames, dtype=np.float32).reshape(len(frames), -1, 5)


class ScriptedDetector:
    """Replays boxes (frames, people, 5), looping; optionally runs a real detector beside it for timing."""

    name = "scripted"

    def __init__(self, boxes: np.ndarray, real_detector=None):
        self.boxes = boxes
        self.real = real_detector
        self.real_ms: list[float] = []

    def __call__(self, frame: Frame) -> Detections:
        if self.real is not None:
            t = time.perf_counter()
            self.real(frame)
            self.real_ms.append((time.perf_counter() - t) * 1e3)
        b = self.boxes[frame.index % len(self.boxes)]
        return Detections(b[:, :4], b[:, 4], np.zeros(len(b), np.int32))


class SyntheticSource:
    """``frames`` frames of a set size, from a video (resized, looped) or a textured noise image.

    ``rate`` > 0 paces frames like a camera and, like our live sources, hands out
    only the newest frame (older ones count as dropped); 0 hands out frames as
    fast as the consumer takes them.
    """

    live = False
    name = "synthetic"

    def __init__(self, frames: int, size: tuple[int, int], video: str | None = None, rate: float = 0.0,
                 stream_id: str = "bench", images: list[np.ndarray] | None = None):
        self.count = frames
        self.stream_id = stream_id
        self.size = size
        self.rate = rate
        self.dropped = 0
        self.images = images if images is not None else self._load(video, size)  # shared between streams

    @staticmethod
    def _load(video: str | None, size: tuple[int, int], keep: int = 16) -> list[np.ndarray]:
        images = []
        if video:
            cap = cv2.VideoCapture(video)
            while len(images) < keep:
                ok, image = cap.read()
                if not ok:
                    break
                images.append(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
            cap.release()
        if not images:
            rng = np.random.default_rng(0)
            small = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            images = [cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)]
        return images

    def __iter__(self) -> Iterator[Frame]:
        t0 = time.monotonic()
        last = -1
        for _ in range(self.count):
            if self.rate > 0:
                # The newest frame a camera would have produced by now; the ones skipped are dropped.
                now = time.monotonic()
                index = int((now - t0) * self.rate)
                if index <= last:
                    time.sleep((last + 1) / self.rate - (now - t0))
                    index = last + 1
                self.dropped += index - last - 1
                t_capture = t0 + index / self.rate
            else:
                index = last + 1
                t_capture = time.monotonic()
            last = index
            yield Frame(index, t_capture, self.images[index % len(self.images)], self.stream_id)

    def close(self) -> None:
        pass
