"""An annotated video of the run: boxes, track ids and top actions drawn on every frame.

A ResultSink beside the publisher, drawing with the same code as `lart-stream view`
(so a file made here and a live view look the same, random-weights banner included).

The writer is tried when the sink is made (a small probe file next to the output), so a folder
that can't be written or a container OpenCV can't write fails at start-up, not on every frame.
H.264 is used where the OpenCV build can encode it (browsers play it); the opencv-python wheels
ship an FFmpeg without an H.264 encoder, so there it falls back to MPEG-4 Part 2 (mp4v) and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lart_stream.realtime.drawing import draw
from lart_stream.realtime.protocol import FrameMessage, actions_message, seconds_to_ns
from lart_stream.realtime.records import FrameResult

log = logging.getLogger(__name__)

# container -> fourccs to try, best first
CODECS = {".mp4": ("avc1", "mp4v"), ".mov": ("avc1", "mp4v"), ".mkv": ("avc1", "mp4v"), ".avi": ("MJPG",)}
CODEC_NAMES = {"avc1": "H.264", "mp4v": "MPEG-4 Part 2 (mp4v)", "MJPG": "Motion JPEG"}


class AnnotationError(Exception):
    """The output video can't be written (user error)."""


@contextlib.contextmanager
def _native_stderr_quiet():
    """FFmpeg prints its own lines on file descriptor 2 when a codec is missing: hide them while probing."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def pick_codec(path: Path, fps: float) -> str:
    """The first fourcc of ``path``'s container that OpenCV can write there (probed with a tiny file)."""
    suffix = path.suffix.lower()
    if suffix not in CODECS:
        raise AnnotationError(f"cannot write video {path}: unknown container {suffix or '(no suffix)'!r} "
                              f"(use {', '.join(CODECS)})")
    if not path.parent.is_dir():
        raise AnnotationError(f"cannot write {path}: folder {path.parent} does not exist")
    probe = path.with_name(f".{path.stem}.probe{suffix}")
    try:
        for fourcc in CODECS[suffix]:
            with _native_stderr_quiet():
                writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*fourcc), fps, (64, 64))
                ok = writer.isOpened()
                if ok:
                    writer.write(np.zeros((64, 64, 3), np.uint8))
                writer.release()
            if ok:
                return fourcc
    finally:
        probe.unlink(missing_ok=True)
    raise AnnotationError(f"cannot write video {path}: the folder is not writable or OpenCV cannot write "
                          f"{suffix} files here")


class AnnotatedVideoWriter:
    stage = "annotate"  # timed apart from publishing

    def __init__(self, path: str | Path, fps: float = 10.0, top_k: int = 3):
        self.path = Path(path).expanduser()
        self.fps = fps if fps > 0 else 10.0
        self.top_k = top_k
        self.fourcc = pick_codec(self.path, self.fps)
        if self.fourcc != CODECS[self.path.suffix.lower()][0]:
            log.warning("annotated video: this OpenCV build has no H.264 encoder; writing %s, which browsers "
                        "don't play (convert: ffmpeg -i %s -c:v libx264 out.mp4)", CODEC_NAMES[self.fourcc], self.path)
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.failed: str | None = None

    def send(self, result: FrameResult) -> None:
        if self.failed:
            return
        frame = result.frame
        if self.writer is None:
            self.size = (frame.size[0] // 2 * 2, frame.size[1] // 2 * 2)  # even sizes: what video codecs take
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
            if not self.writer.isOpened():  # probed at start-up, so only a disk or size problem gets here
                self.failed = f"cannot write video {self.path} at {self.size[0]}x{self.size[1]}"
                log.error("%s: no annotated video", self.failed)
                return
        image = frame.image
        if frame.size != self.size:  # a video has one size: scale frames that changed size
            image = cv2.resize(image, self.size)
        now = time.monotonic()
        msg = actions_message(result, session=0, seq=self.frames, t_publish_ns=seconds_to_ns(now),
                              t_wall_ns=time.time_ns(), top_k=self.top_k, full_scores=False)
        header = FrameMessage(session=0, seq=self.frames, stream=msg.stream, frame=msg.frame,
                              t_capture_ns=msg.t_capture_ns, t_publish_ns=msg.t_publish_ns, t_wall_ns=msg.t_wall_ns,
                              image_size=frame.size, jpeg_size=self.size)
        self.writer.write(draw(image.copy(), header, msg, self.top_k))
        self.frames += 1

    def written(self) -> str:
        """One line for the end of the run: where the video is (or why there is none)."""
        if self.failed:
            return f"annotated video: none ({self.failed})"
        if not self.frames:
            return "annotated video: none (no frames were processed)"
        return f"annotated video: {self.path} ({self.frames} frames, {CODEC_NAMES[self.fourcc]})"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            log.info("wrote %d annotated frames to %s", self.frames, self.path)
