"""The pipeline engine: chains the stages, times each one, and runs the frame loop.

    Frame -> detector -> Detections -> lifter -> People -> tracker -> Tracks
          -> actions -> ActionPredictions -> sinks (publisher)

A stage that is not available is None and left out: without a lifter, People
carry 2D boxes only; without a tracker there are no tracks; without 3D people
or an action model there are no action predictions. Nothing is faked.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lart_stream.realtime.records import Detections, FrameResult, Frame, People, Tracks
from lart_stream.realtime.sources import FrameSource
from lart_stream.realtime.stages import ActionRecognizer, Detector, Lifter, ResultSink, Tracker

log = logging.getLogger(__name__)

STAGES = ("detect", "lift", "track", "actions", "publish", "annotate")


class RollingStats:
    """Bounded per-key sample windows (never grows with the stream's length) plus all-time counts."""

    def __init__(self, window: int = 2000):
        self.window = window
        self.samples: dict[str, collections.deque] = {}
        self.count: dict[str, int] = collections.Counter()
        self.total: dict[str, float] = collections.Counter()

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, collections.deque(maxlen=self.window)).append(value)
        self.count[key] += 1
        self.total[key] += value

    def summary(self, key: str) -> dict[str, float]:
        values = np.asarray(self.samples.get(key, ()), dtype=np.float64)
        if values.size == 0:
            return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"mean": self.total[key] / self.count[key], "p50": float(p50), "p95": float(p95),
                "p99": float(p99), "max": float(values.max()), "n": int(self.count[key])}

    def recent_mean(self, key: str, n: int = 30) -> float:
        values = self.samples.get(key)
        if not values:
            return 0.0
        tail = list(values)[-n:]
        return float(sum(tail) / len(tail))


@dataclass
class Pipeline:
    """The chain of stages; ``process`` turns one Frame into one FrameResult."""

    detector: Detector
    lifter: Lifter | None = None
    tracker: Tracker | None = None
    actions: ActionRecognizer | None = None
    sinks: Sequence[ResultSink] = ()
    stats: RollingStats = field(default_factory=RollingStats)

    def describe(self) -> str:
        names = [self.detector.name]
        for stage in (self.lifter, self.tracker, self.actions):
            if stage is not None:
                names.append(stage.name)
        return " -> ".join(names)

    @property
    def random_weights(self) -> bool:
        return any(getattr(s, "random_weights", False) for s in (self.lifter, self.actions) if s is not None)

    def process(self, frame: Frame, detected: tuple[Detections, float] | None = None) -> FrameResult:
        """Run every stage on ``frame``; ``detected`` = (detections, ms) when the detector already ran
        (overlapped in its own thread)."""
        ms: dict[str, float] = {}
        t = time.perf_counter()

        if detected is None:
            detections = self.detector(frame)
            t = _lap(ms, "detect", t)
        else:
            detections, ms["detect"] = detected

        if self.lifter is not None:
            people = self.lifter(frame, detections)
            t = _lap(ms, "lift", t)
        else:
            people = People.from_detections(detections, frame.size)

        if self.tracker is not None:
            tracks = self.tracker.update(people, frame.index)
            t = _lap(ms, "track", t)
        else:
            tracks = Tracks.empty()

        actions = None
        if self.actions is not None and people.has_3d:
            actions = self.actions.update(tracks, people, frame.index)
            t = _lap(ms, "actions", t)

        result = FrameResult(frame, detections, people, tracks, actions, ms, time.monotonic())
        for sink in self.sinks:
            sink.send(result)
            t = _lap(ms, getattr(sink, "stage", "publish"), t)

        for key, value in ms.items():
            self.stats.add(key, value)
        # Capture-to-publish: the publisher is the first sink, so its send is included.
        self.stats.add("latency", (time.monotonic() - frame.t_capture) * 1e3)
        return result

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing must never hide the summary
                log.warning("closing %s failed: %s", type(sink).__name__, exc)


def _lap(ms: dict[str, float], key: str, t0: float) -> float:
    t1 = time.perf_counter()
    ms[key] = (t1 - t0) * 1e3
    return t1


class ActionTally:
    """Per-person mean action scores over the frames each track was scored, for the run summary.

    Bounded: beyond ``keep`` tracks, the ones scored in the fewest frames are forgotten.
    """

    def __init__(self, keep: int = 256):
        self.keep = keep
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}
        self.names: tuple[str, ...] = ()
        self.random_weights = False

    def add(self, actions) -> None:
        if actions is None or len(actions.track_id) == 0:
            return
        self.names = actions.class_names
        self.random_weights = self.random_weights or actions.random_weights
        for track, scores in zip(actions.track_id.tolist(), actions.scores):
            if track in self.sums:
                self.sums[track] += scores
            else:
                self.sums[track] = scores.astype(np.float64)
            self.counts[track] = self.counts.get(track, 0) + 1
        if len(self.sums) > 2 * self.keep:
            for track in sorted(self.counts, key=self.counts.get)[: len(self.sums) - self.keep]:
                del self.sums[track], self.counts[track]

    def top(self, people: int = 8, k: int = 3) -> list[dict]:
        """The ``people`` tracks scored in most frames, each with its ``k`` highest mean scores."""
        rows = []
        for track in sorted(self.counts, key=lambda t: (-self.counts[t], t))[:people]:
            mean = self.sums[track] / self.counts[track]
            best = np.argsort(-mean, kind="stable")[:k]
            rows.append({"track": int(track), "frames": self.counts[track],
                         "actions": [[self.names[i] if i < len(self.names) else str(i), round(float(mean[i]), 3)]
                                     for i in best]})
        return rows


# Summary wording for RunSummary.reason (the JSON keeps the short machine-readable reason).
REASON_TEXT = {"end of input": "ended: end of the input", "max frames": "ended: --max-frames reached",
               "stopped": "stopped on request", "too many errors": "gave up: too many failed frames in a row"}


@dataclass
class RunSummary:
    frames: int
    seconds: float
    dropped: int
    errors: int
    people_max: int
    stages_ms: dict[str, dict[str, float]]
    latency_ms: dict[str, float]
    reason: str  # "end of input", "max frames", "stopped", "too many errors"
    people: list[dict] = field(default_factory=list)  # ActionTally.top(): per-person mean top actions
    random_weights: bool = False  # the action scores come from random weights: not predictions
    stop_signal: str = ""  # SIGINT / SIGTERM when reason is "stopped" by a signal

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"frames": self.frames, "seconds": round(self.seconds, 3), "fps": round(self.fps, 3),
                "dropped": self.dropped, "errors": self.errors, "people_max": self.people_max,
                "stages_ms": self.stages_ms, "latency_ms": self.latency_ms, "reason": self.reason,
                "stop_signal": self.stop_signal, "random_weights": self.random_weights, "people": self.people}

    def format(self) -> str:
        ended = REASON_TEXT.get(self.reason, self.reason)
        if self.reason == "stopped" and self.stop_signal:
            ended = f"stopped by {self.stop_signal}"
        lines = [f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                 f"{self.dropped} dropped, {self.errors} errors; {ended}",
                 f"{'stage':<10}{'mean ms':>9}{'p50':>9}{'p95':>9}{'max':>9}"]
        for key, s in self.stages_ms.items():
            lines.append(f"{key:<10}{s['mean']:9.2f}{s['p50']:9.2f}{s['p95']:9.2f}{s['max']:9.2f}")
        lat = self.latency_ms
        if lat:
            lines.append(f"{'capture->done':<14}p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  max {lat['max']:.1f} ms")
        if self.people:
            lines.append("top actions per person (mean over the frames scored)"
                         + (": RANDOM WEIGHTS, these are NOT predictions" if self.random_weights else ""))
            tag = "RANDOM " if self.random_weights else ""
            for p in self.people:
                acts = "  ".join(f"{name} {score:.2f}" for name, score in p["actions"])
                lines.append(f"  {tag}#{p['track']:<4} {p['frames']:>5} frames  {acts}")
        return "\n".join(lines)


class StatusLine:
    """A one-line live status on a TTY (stderr), refreshed a few times a second."""

    def __init__(self, stream=sys.stderr, period_s: float = 0.25, enabled: bool | None = None):
        self.stream = stream
        self.period_s = period_s
        self.enabled = stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False

    def update(self, text: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.period_s:
            return
        self._last = now
        self._shown = True  # before writing: a signal handler may break the line as soon as it is out
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()

    def break_line(self) -> None:
        """End the status line where it is (the terminal's ^C echo stays on it), so the next message
        starts on a line of its own; the next update starts a new status line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False


_END = object()


class _DetectAhead:
    """Runs the detector on the next frame in its own thread while the main thread runs the rest.

    Raises throughput to about 1 / max(detect, rest) instead of 1 / (detect + rest), at the cost of
    up to one frame's wait in a one-slot hand-off (the queue never grows). On CUDA the thread uses
    its own stream, so detector kernels can overlap HMR and LART.
    """

    def __init__(self, source: Iterable[Frame], detector: Detector, stop: threading.Event):
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.free = threading.Semaphore(1)  # one frame in the detector or the hand-off at a time
        self.stop = stop
        self.source, self.detector = source, detector
        self.thread = threading.Thread(target=self._work, name="detect-ahead", daemon=True)
        self.thread.start()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        frames = iter(self.source)
        with _own_cuda_stream():
            try:
                while not self.stop.is_set():
                    # Take the next frame only once the main thread has taken the last one: a frame
                    # is read as late as possible, so it does not age in the hand-off.
                    if not self.free.acquire(timeout=0.1):
                        continue
                    frame = next(frames, None)
                    if frame is None:
                        break
                    t = time.perf_counter()
                    try:
                        item = (frame, (self.detector(frame), (time.perf_counter() - t) * 1e3))
                    except Exception as exc:  # reported by the main loop, which counts errors
                        item = (frame, exc)
                    if not self._put(item):
                        break
            finally:
                self._put(_END)

    def __iter__(self) -> Iterator[tuple[Frame, tuple[Detections, float] | Exception]]:
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set() and not self.thread.is_alive():
                    return
                continue
            if item is _END:
                return
            self.free.release()
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5.0)


def _own_cuda_stream():
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.stream(torch.cuda.Stream())
    except Exception:
        pass
    return contextlib.nullcontext()


def run(source: FrameSource | Iterable[Frame], pipeline: Pipeline, *, max_frames: int = 0,
        stop: threading.Event | None = None, status: StatusLine | None = None,
        on_stats: Callable[[dict], None] | None = None, stats_period_s: float = 1.0,
        max_consecutive_errors: int = 25, overlap: bool = False) -> RunSummary:
    """Process frames until the source ends, ``max_frames`` is reached or ``stop`` is set.

    ``overlap``: detect frame t+1 in a second thread while frame t goes through the other stages.
    """
    stop = stop or threading.Event()
    # Models and buffers are built: move them out of the collector's way, so a full collection
    # doesn't walk millions of long-lived objects in the middle of a frame (tail latency).
    gc.collect()
    gc.freeze()
    frames = errors = consecutive = people_max = 0
    size: tuple[int, int] | None = None
    reason = "end of input"
    t0 = time.monotonic()
    t_stats = t0
    frames_at_stats = 0
    done: collections.deque = collections.deque(maxlen=30)  # completion times: the status line's fps
    tally = ActionTally()
    total = expected_frames(source, max_frames)
    ahead = _DetectAhead(source, pipeline.detector, threading.Event()) if overlap else None
    items = iter(ahead) if ahead is not None else ((f, None) for f in source)
    # With overlap the main thread leaves the legacy default stream too: that stream would otherwise
    # serialise with the detector's stream and no GPU work could overlap.
    main_stream = _own_cuda_stream() if overlap else contextlib.nullcontext()
    try:
        main_stream.__enter__()
        for frame, detected in items:
            if stop.is_set():
                reason = "stopped"
                break
            if size is not None and frame.size != size:
                log.warning("frame size changed from %dx%d to %dx%d at frame %d", *size, *frame.size, frame.index)
            size = frame.size
            try:
                if isinstance(detected, Exception):
                    raise detected
                result = pipeline.process(frame, detected)
            except Exception:
                errors += 1
                consecutive += 1
                log.exception("frame %d failed; continuing with the next frame", frame.index)
                if consecutive >= max_consecutive_errors:
                    reason = "too many errors"
                    break
                continue
            consecutive = 0
            frames += 1
            people_max = max(people_max, len(result.people))
            tally.add(result.actions)
            now = time.monotonic()
            done.append(now)
            dropped = getattr(source, "dropped", 0)
            if status is not None:
                fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
                status.update(_status_text(pipeline, result, fps, dropped, frames, total))
            if on_stats is not None and now - t_stats >= stats_period_s:
                on_stats(_stats_dict(pipeline, frames - frames_at_stats, now - t_stats, dropped, len(result.tracks)))
                t_stats, frames_at_stats = now, frames
            if max_frames and frames >= max_frames:
                reason = "max frames"
                break
        else:
            if stop.is_set():
                reason = "stopped"
    finally:
        main_stream.__exit__(None, None, None)
        if ahead is not None:
            ahead.close()
    if stop.is_set() and reason == "end of input":
        reason = "stopped"
    if status is not None:
        status.clear()
    keys = [k for k in STAGES if pipeline.stats.count.get(k)]
    return RunSummary(frames, time.monotonic() - t0, getattr(source, "dropped", 0), errors, people_max,
                      {k: _rounded(pipeline.stats.summary(k)) for k in keys},
                      _rounded(pipeline.stats.summary("latency")), reason, people=tally.top(),
                      random_weights=tally.random_weights or pipeline.random_weights)


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def expected_frames(source: object, max_frames: int = 0) -> int:
    """Frames a file or folder source will give (0: unknown, e.g. a live stream)."""
    if getattr(source, "live", False):
        return 0
    total = int(getattr(source, "frame_count", 0) or len(getattr(source, "files", ()) or ()))
    return min(total, max_frames) if max_frames and total else (max_frames or total)


def _status_text(pipeline: Pipeline, result: FrameResult, fps: float, dropped: int, done: int = 0,
                 total: int = 0) -> str:
    stages = " ".join(f"{k} {pipeline.stats.recent_mean(k):.0f}" for k in STAGES if k in result.stage_ms)
    if total:
        eta = f" ETA {_clock((total - done) / fps)}" if fps > 0 and total > done else ""
        where = f"frame {done}/{total}{eta}"
    else:
        where = f"frame {result.frame.index}"
    marker = " | RANDOM WEIGHTS" if pipeline.random_weights else ""
    return (f"{where} | {fps:5.1f} fps | latency {pipeline.stats.recent_mean('latency'):.0f} ms"
            f" | people {len(result.people)} tracks {len(result.tracks)} | ms: {stages} | dropped {dropped}{marker}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _stats_dict(pipeline: Pipeline, frames: int, seconds: float, dropped: int, tracks: int) -> dict:
    return {"fps": frames / seconds if seconds > 0 else 0.0,
            "stage_ms": {k: pipeline.stats.recent_mean(k) for k in STAGES if pipeline.stats.count.get(k)},
            "latency_ms": pipeline.stats.recent_mean("latency"),
            "dropped_frames": dropped, "tracks": tracks}
