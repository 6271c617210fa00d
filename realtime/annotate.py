"""An annotated video of the run: boxes, track ids and top actions drawn on every frame.

A ResultSink beside the publisher, drawing with the same code as `lart-stream view`
(so a file made here and a live view look the same, random-weights banner included).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2

from lart_stream.realtime.protocol import FrameMessage, actions_message, seconds_to_ns
from lart_stream.realtime.records import FrameResult
from lart_stream.realtime.drawing import draw

log = logging.getLogger(__name__)


class AnnotationError(Exception):
    """The output video can't be written (user error)."""


class AnnotatedVideoWriter:
    stage = "annotate"  # timed apart from publishing

    def __init__(self, path: str | Path, fps: float = 10.0, top_k: int = 3):
        self.path = Path(path).expanduser()
        if not self.path.parent.is_dir():
            raise AnnotationError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        self.fps = fps if fps > 0 else 10.0
        self.top_k = top_k
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def send(self, result: FrameResult) -> None:
        frame = result.frame
        if self.writer is None:
            self.size = frame.size
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise AnnotationError(f"cannot write video {self.path}")
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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            log.info("wrote %d annotated frames to %s", self.frames, self.path)
