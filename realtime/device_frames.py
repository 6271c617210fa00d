"""Frames on the device, uploaded once per tick and read by every stage that needs pixels.

    numpy frames -> (pinned staging, CUDA) -> (H, W, 3) uint8 device copies -> DeviceFrames
        -> the detector's device letterbox (OnnxDetector.detect_many(..., device_images=...))
        -> the lifter's crops (HMRLifter.lift_many(..., device_images=...))

Without it each stage uploads on its own (the detector the whole frame, the lifter the rows its crops
read): the same bytes over the bus twice a tick. A stage says on which device it takes frames with
``image_device`` (None: it does not); ``frame_uploader`` makes an uploader only when the detector and
the lifter take them on the same device.

Buffers: a staging buffer and a device buffer per (ring slot, stream key), reused. ``depth`` ring slots:
a tick's device frames stay untouched while ``depth - 1`` later ticks upload (the later stages of a
tick in flight may still read them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


class StagedFrame:
    """One frame's way to the device: a pinned staging buffer (CUDA) and a device buffer, reused."""

    def __init__(self) -> None:
        self.host: torch.Tensor | None = None
        self.frame: torch.Tensor | None = None
        self.copied: torch.cuda.Event | None = None  # end of the last staging -> device copy
        self.geometry: tuple[int, int, int, int] | None = None  # DeviceLetterbox: its row's (nh, nw, pad_x, pad_y)

    def upload(self, image: np.ndarray, device: torch.device) -> torch.Tensor:
        """``image`` (H, W, 3) uint8 -> the device buffer (a non_blocking copy on the current stream)."""
        shape = image.shape[:2] + (3,)
        if self.frame is None or tuple(self.frame.shape) != shape:
            self.frame = torch.empty(shape, dtype=torch.uint8, device=device)
            self.host = torch.empty(shape, dtype=torch.uint8).pin_memory() if device.type == "cuda" else None
            self.copied = None
        if self.host is not None:
            if self.copied is not None:  # the staging buffer is free again (done long ago: a later
                self.copied.synchronize()  # tick read results back since)
            np.copyto(self.host.numpy(), image)
            self.frame.copy_(self.host, non_blocking=True)
            self.copied = torch.cuda.Event()
            self.copied.record()
        else:
            self.frame.copy_(torch.from_numpy(np.ascontiguousarray(image)))
        return self.frame


@dataclass
class DeviceFrames:
    """One tick's frames on the device, in the tick's order."""

    images: list[torch.Tensor]  # (H, W, 3) uint8 BGR each
    ready: torch.cuda.Event | None = None  # recorded after the uploads (CUDA)

    def wait(self) -> None:
        """Make the current CUDA stream wait for the uploads (a stage on another thread's stream)."""
        if self.ready is not None:
            torch.cuda.current_stream(self.images[0].device).wait_event(self.ready)


class FrameUploader:
    """Uploads a tick's frames into buffers kept per (ring slot, stream key)."""

    def __init__(self, device: torch.device | str, depth: int = 1):
        self.device = torch.device(device)
        self.slots: list[dict[Any, StagedFrame]] = [{} for _ in range(max(1, depth))]
        self.turn = 0

    def upload(self, images: Sequence[np.ndarray], keys: Sequence[Any] | None = None) -> DeviceFrames:
        """Every image up (keys: which buffers, e.g. stream numbers; default: positions)."""
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        keys = range(len(images)) if keys is None else keys
        out = [slot.setdefault(key, StagedFrame()).upload(im, self.device) for key, im in zip(keys, images)]
        ready = None
        if self.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
        return DeviceFrames(out, ready)


def frame_uploader(detector: object, lifter: object | None, depth: int = 1) -> FrameUploader | None:
    """An uploader for a pipeline whose detector and lifter both take device frames on one device."""
    dev, other = getattr(detector, "image_device", None), getattr(lifter, "image_device", None)
    if dev is None or other is None or _resolved(dev) != _resolved(other):
        return None
    return FrameUploader(_resolved(dev), depth)


def _resolved(device: torch.device | str) -> torch.device:
    """"cuda" -> "cuda:<current>": so that "cuda" and "cuda:0" compare equal."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return d


__all__ = ["DeviceFrames", "FrameUploader", "StagedFrame", "frame_uploader"]
