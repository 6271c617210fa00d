"""Frame sources: video files, image folders, cameras and network streams.

Files and folders are read in order (optionally paced to their frame rate).
Live sources (cameras, RTSP/HTTP) are read on their own thread that keeps only
the newest frame: a pipeline slower than the source drops frames (counted)
instead of queueing them, so the frame being processed is never old. A live
source that stops, or stalls with its connection open for ``stall_timeout_s``,
is reopened with exponential backoff. ``FrameSource.state`` says which of
SOURCE_STATES the source is in (the publisher's `stats` carry it).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# FFmpeg's and OpenCV's own messages ("[h264 @ 0x...] error while decoding MB", "moov atom not
# found", "[ WARN:0] ... Stream timeout") would sit next to our one-line errors and warnings. FFmpeg's
# level is read when the first capture opens; set either variable to see them again when debugging.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402  (after the environment above)
import numpy as np  # noqa: E402

from lart_stream.realtime.records import Frame  # noqa: E402

log = logging.getLogger(__name__)
if os.environ["OPENCV_LOG_LEVEL"].upper() == "ERROR":  # cv2 may have been imported before this module
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

SOURCE_STATES = ("live", "stalled", "reconnecting", "ended")  # the protocol's stats.source values
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(Exception):
    """A source that cannot be used at all (user error: one-line message, no traceback)."""


ASSUMED_FOLDER_FPS = 30.0  # an image folder's media clock when no --fps is given


@dataclass(frozen=True)
class SourceConfig:
    camera: int | None = None  # camera index (live)
    path: str | None = None  # video file, image folder, or rtsp:// / http(s):// URL
    realtime: bool = False  # pace files to their frame rate
    fps: float = 0.0  # pacing rate for image folders (0: unpaced); overrides a file's rate when > 0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 8.0
    reconnect_give_up_s: float = 0.0  # 0: keep retrying a live source until stopped
    stall_timeout_s: float = 5.0  # a network stream silent this long (connection open) is reopened
    stream_id: str = "0"


class FrameSource:
    """Iterates Frames. ``dropped`` counts frames read but never handed out."""

    name: str = "source"
    live: bool = False
    dropped: int = 0
    ended: bool = False  # the iteration is over: no more frames will come

    @property
    def state(self) -> str:
        """One of SOURCE_STATES: "live" while frames can come, "ended" after the last one."""
        return "ended" if self.ended else "live"

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(cfg: SourceConfig, stop: threading.Event | None = None) -> FrameSource:
    """Build the source a config names; raise SourceError with a clear message if it can't be used."""
    stop = stop or threading.Event()
    if not cfg.stall_timeout_s > 0:
        raise SourceError(f"--stall-timeout must be > 0 seconds, got {cfg.stall_timeout_s}")
    if cfg.camera is not None and cfg.path is not None:
        raise SourceError("give either --camera or --source, not both")
    if cfg.camera is not None:
        return LiveSource(cfg.camera, cfg, stop)
    if cfg.path is None:
        raise SourceError("no input: give --camera N or --source PATH|URL")
    if _URL.match(cfg.path) and not cfg.path.startswith("file://"):
        return LiveSource(cfg.path, cfg, stop)
    path = Path(cfg.path.removeprefix("file://")).expanduser()
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_dir():
        return ImageFolderSource(path, cfg, stop)
    return VideoFileSource(path, cfg, stop)


class _Pacer:
    """Sleeps so that frames leave at ``fps`` (no-op when fps <= 0)."""

    def __init__(self, fps: float, stop: threading.Event):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.stop = stop
        self.t0: float | None = None
        self.n = 0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        due = self.t0 + self.n * self.period
        self.n += 1
        if due > now:
            self.stop.wait(due - now)


class VideoFileSource(FrameSource):
    """A video file read frame by frame, in order."""

    def __init__(self, path: Path, cfg: SourceConfig, stop: threading.Event):
        self.name = str(path)
        self.cfg = cfg
        self.stop = stop
        if not os.access(path, os.R_OK):
            raise SourceError(f"cannot read {path}: permission denied")
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SourceError(f"cannot open video {path}: not a video file OpenCV can decode")
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            raise SourceError(f"cannot decode video {path}: no frame could be read (corrupt or empty file)")
        self._first: np.ndarray | None = first
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.dropped = 0
        self.ended_early = False

    def __iter__(self) -> Iterator[Frame]:
        rate = self.cfg.fps if self.cfg.fps > 0 else self.fps
        pacer = _Pacer(rate if self.cfg.realtime else 0.0, self.stop)
        index = 0
        while not self.stop.is_set():
            if self._first is not None:
                image, self._first = self._first, None
            else:
                ok, image = self.cap.read()
                if not ok or image is None:
                    # Containers often over-report their frame count by one or two.
                    if self.frame_count and index < self.frame_count - 2:
                        self.ended_early = True
                        log.warning("%s: could not decode frame %d of %d; stopping at the last good frame",
                                    self.name, index, self.frame_count)
                    self.ended = True
                    return
            pacer.wait()
            yield Frame(index, time.monotonic(), image, self.cfg.stream_id, media_time=index / rate if rate > 0 else None)
            index += 1

    def close(self) -> None:
        self.cap.release()


class ImageFolderSource(FrameSource):
    """Images of a folder in name order; unreadable images are skipped with a warning."""

    def __init__(self, path: Path, cfg: SourceConfig, stop: threading.Event):
        self.name = str(path)
        self.cfg = cfg
        self.stop = stop
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {path}")
        self.dropped = 0
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        pacer = _Pacer(self.cfg.fps if self.cfg.realtime else 0.0, self.stop)
        rate = self.cfg.fps if self.cfg.fps > 0 else ASSUMED_FOLDER_FPS
        index = 0
        for file in self.files:
            if self.stop.is_set():
                return
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped += 1
                log.warning("skipping unreadable image %s", file)
                continue
            pacer.wait()
            yield Frame(index, time.monotonic(), image, self.cfg.stream_id, media_time=index / rate if rate > 0 else None)
            index += 1
        self.ended = True


class LiveSource(FrameSource):
    """A camera or network stream, read on its own thread; only the newest frame is kept.

    The reader overwrites one slot; ``__iter__`` takes whatever is newest. A
    frame overwritten before anyone took it counts as dropped. When the stream
    fails, the reader reopens it with exponential backoff. A network stream that sends
    nothing for ``stall_timeout_s`` with its connection open counts as failed (FFmpeg's
    read timeout; OpenCV's own default would wait 30 s).
    """

    live = True

    def __init__(self, target: int | str, cfg: SourceConfig, stop: threading.Event):
        self.target = target
        self.name = f"camera {target}" if isinstance(target, int) else _redact(str(target))
        self.cfg = cfg
        self.stop = stop
        self.dropped = 0
        self.reconnects = 0
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, float, int] | None = None
        self._read_count = 0  # frames read from the device: a frame's index, so drops show as gaps
        self._ended = False
        self._last_frame_t = time.monotonic()  # last frame read (or the last open)
        self._lost_since: float | None = None  # set while reconnecting
        self.cap = self._open()
        if self.cap is None:
            what = self.name if isinstance(target, int) else f"stream {self.name}"
            raise SourceError(f"cannot open {what}")
        self._thread = threading.Thread(target=self._reader, name="frame-reader", daemon=True)
        self._thread.start()

    @property
    def state(self) -> str:
        if self._ended:
            return "ended"
        if self._lost_since is not None:
            return "reconnecting"
        if time.monotonic() - self._last_frame_t > self.cfg.stall_timeout_s / 2:
            return "stalled"
        return "live"

    def _open(self) -> cv2.VideoCapture | None:
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target)
        else:
            ms = int(self.cfg.stall_timeout_s * 1000)
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        self._last_frame_t = time.monotonic()
        if cap.isOpened():
            # Ask the backend for the smallest buffer it has: we want the newest frame, not a queue.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap
        cap.release()
        return None

    def _reader(self) -> None:
        backoff = self.cfg.reconnect_initial_s
        while not self.stop.is_set():
            ok, image = (False, None) if self.cap is None else self.cap.read()
            if ok and image is not None:
                backoff = self.cfg.reconnect_initial_s
                self._last_frame_t = time.monotonic()
                if self._lost_since is not None:
                    log.warning("%s: reconnected after %.1f s", self.name, time.monotonic() - self._lost_since)
                    self._lost_since = None
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = (image, time.monotonic(), self._read_count)
                    self._read_count += 1
                    self._cond.notify_all()
                continue
            if self._lost_since is None:
                silent = time.monotonic() - self._last_frame_t
                self._lost_since = time.monotonic()
                if self.cap is not None and silent >= self.cfg.stall_timeout_s:
                    log.warning("%s: no frame for %.1f s with the connection open (--stall-timeout); "
                                "reconnecting", self.name, silent)
                else:
                    log.warning("%s: stream stopped; reconnecting", self.name)
            if self.cap is not None:
                self.cap.release()
                self.cap = None
            give_up = self.cfg.reconnect_give_up_s
            if give_up > 0 and time.monotonic() - self._lost_since > give_up:
                log.error("%s: no frames for %.0f s; giving up", self.name, give_up)
                break
            if self.stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)
            self.cap = self._open()
            if self.cap is not None:
                self.reconnects += 1
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while not self.stop.is_set():
            with self._cond:
                while self._slot is None and not self._ended and not self.stop.is_set():
                    self._cond.wait(0.1)
                if self._slot is None:
                    return
                image, t, index = self._slot
                self._slot = None
            yield Frame(index, t, image, self.cfg.stream_id)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5.0)
        if self.cap is not None:
            self.cap.release()


def _redact(url: str) -> str:
    """Hide credentials in rtsp://user:pass@host URLs before they reach a log line."""
    return re.sub(r"//[^/@]+@", "//***@", url)
