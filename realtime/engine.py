"""The pipeline engine: chains the stages, times each one, and runs the frame loop.

    Frame -> detector -> Detections -> lifter -> People -> tracker -> Tracks
          -> [appearance -> AppearanceStep] -> actions -> ActionPredictions -> sinks (publisher)

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from lart_stream.realtime.records import Detections, FrameResult, Frame, People, Tracks
from lart_stream.realtime.sources import FrameSource
from lart_stream.realtime.stages import ActionRecognizer, AppearanceExtractor, Detector, Lifter, ResultSink, Tracker

if TYPE_CHECKING:
    from lart_stream.realtime.gpu_clock import StageClock

log = logging.getLogger(__name__)

STAGES = ("detect", "lift", "track", "appearance", "actions", "publish", "annotate")
CPU_PREFIX = "cpu_"  # RollingStats key of a stage's thread CPU time: cpu_<stage>
SYNC_PREFIX = "sync_"  # ... of the wall time a stage waited in its device syncs: sync_<stage>
GPU_STAGES = ("detect", "lift", "appearance", "actions")  # stages with GPU work (timed by a StageClock)


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
class Work:
    """One frame on its way through the stages (what the frames-in-flight hand-offs carry)."""

    frame: Frame
    ms: dict[str, float] = field(default_factory=dict)
    # host CPU time of each stage's thread over the same span as ``ms`` (time.thread_time): wall
    # minus CPU is time the thread waited (for the GIL, the GPU when a sync blocks, a lock)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    # wall ms a stage waited for the device in its own syncs (stages with a ``sync_ms``): a sync that
    # spins counts as CPU time, so CPU minus this is the host work proper
    sync_ms: dict[str, float] = field(default_factory=dict)
    detections: Detections | None = None
    people: People | None = None
    result: FrameResult | None = None
    error: Exception | None = None  # a stage failed: later stages pass the item on untouched


@dataclass
class Pipeline:
    """The chain of stages; ``process`` turns one Frame into one FrameResult.

    The chain is three steps on a ``Work`` item, so the frames-in-flight runner (``run(inflight=)``)
    can put each in its own thread: ``detect_step`` -> ``lift_step`` -> ``finish_step`` (tracking,
    actions, sinks, statistics: always in the consumer's thread, in frame order).
    ``clock`` (realtime/gpu_clock.py, CUDA only): GPU time of each stage's work, as stats ``gpu_<stage>``.
    Every stage's thread CPU time goes to stats ``cpu_<stage>`` beside its wall time ``<stage>``.
    """

    detector: Detector
    lifter: Lifter | None = None
    tracker: Tracker | None = None
    actions: ActionRecognizer | None = None
    sinks: Sequence[ResultSink] = ()
    stats: RollingStats = field(default_factory=RollingStats)
    # MViT features for LART (realtime/appearance.py); with a lookahead the action stage runs that many
    # frames behind, on the frame the appearance stage hands back
    appearance: AppearanceExtractor | None = None
    clock: "StageClock | None" = None
    annotate: bool = False  # name each stage's range for torch.profiler ("stage:<name>"), for kernel sums
    _streams: dict = field(default_factory=dict, repr=False)  # (role, high priority) -> CUDA stream

    def describe(self) -> str:
        names = [self.detector.name]
        for stage in (self.lifter, self.tracker, self.appearance, self.actions):
            if stage is not None:
                names.append(stage.name)
        return " -> ".join(names)

    @property
    def random_weights(self) -> bool:
        return any(getattr(s, "random_weights", False) for s in (self.lifter, self.appearance, self.actions)
                   if s is not None)

    def process(self, frame: Frame, detected: tuple[Detections, float] | None = None) -> FrameResult:
        """Run every stage on ``frame``; ``detected`` = (detections, ms) when the detector already ran."""
        work = Work(frame)
        if detected is None:
            self.detect_step(work)
        else:
            work.detections, work.ms["detect"] = detected
        for step in (self.lift_step, self.finish_step):
            step(work)
        if work.error is not None:
            raise work.error
        return work.result  # type: ignore[return-value]

    def steps(self) -> tuple[Callable[[Work], Work], ...]:
        return self.detect_step, self.lift_step, self.finish_step

    def detect_step(self, work: Work) -> Work:
        with self._timed(work, "detect", self.detector):
            work.detections = self.detector(work.frame)
        return work

    def lift_step(self, work: Work) -> Work:
        if work.error is not None:
            return work
        if self.lifter is None:
            work.people = People.from_detections(work.detections, work.frame.size)
            return work
        with self._timed(work, "lift", self.lifter):
            work.people = self.lifter(work.frame, work.detections)
        return work

    def finish_step(self, work: Work) -> Work:
        """Tracking, actions, sinks and statistics: stateful, so one thread, in frame order."""
        if work.error is not None:
            return work
        frame, people, ms = work.frame, work.people, work.ms
        tracks, actions = Tracks.empty(), None
        try:
            if self.tracker is not None:
                with self._timed(work, "track"):
                    tracks = self.tracker.update(people, frame.index, frame.timestamp)
            appearance = None
            if self.actions is not None and people.has_3d:
                if self.appearance is None:
                    with self._timed(work, "actions", self.actions):
                        actions = self.actions.update(tracks, people, frame.index)
                else:
                    with self._timed(work, "appearance"):
                        step = self.appearance.update(frame, tracks, people)
                    if step is not None:  # None while a lookahead fills
                        appearance = step.features
                        with self._timed(work, "actions", self.actions):
                            actions = self.actions.update(step.tracks, step.people, step.frame_index, appearance)
            result = FrameResult(frame, work.detections, people, tracks, actions, ms, time.monotonic(), appearance)
            for sink in self.sinks:
                with self._timed(work, getattr(sink, "stage", "publish")):
                    sink.send(result)
        except Exception as exc:
            work.error = exc
            return work
        for key, value in ms.items():
            self.stats.add(key, value)
        for key, value in work.cpu_ms.items():
            self.stats.add(CPU_PREFIX + key, value)
        for key, value in work.sync_ms.items():
            self.stats.add(SYNC_PREFIX + key, value)
        # Capture-to-publish: the publisher is the first sink, so its send is included.
        self.stats.add("latency", (time.monotonic() - frame.t_capture) * 1e3)
        if self.clock is not None:
            for iv in self.clock.collect():
                self.stats.add(f"gpu_{iv.stage}", iv.ms)
        work.result = result
        return work

    def drain(self, last: FrameResult) -> list[FrameResult]:
        """End of input: the frames an appearance lookahead still holds back go through the action
        stage (their keyframe clips clamped at the last frame) and to the sinks, so every frame's
        actions are published. Each result is the last frame's (its tracks and people) with the
        actions of the drained frame (``ActionPredictions.frame_index``), as during the stream, where
        frame t's message carries frame t - lookahead's actions."""
        drain = getattr(self.appearance, "drain", None)
        if drain is None or self.actions is None:
            return []
        out = []
        for step in drain():
            work = Work(last.frame)
            with self._timed(work, "actions"):
                actions = self.actions.update(step.tracks, step.people, step.frame_index, step.features)
            result = FrameResult(last.frame, last.detections, last.people, last.tracks, actions, work.ms,
                                 time.monotonic(), step.features)
            for sink in self.sinks:
                sink.send(result)
            out.append(result)
        return out

    @contextlib.contextmanager
    def _timed(self, work: Work, key: str, stage: object = None):
        """Host wall time of a stage into ``work.ms[key]``, its thread's CPU time into
        ``work.cpu_ms[key]``, the ``stage``'s own device waits (its ``sync_ms`` after the call, when it
        has one) into ``work.sync_ms[key]`` (+ its GPU interval with a clock). A failure in the detect
        or lift step is recorded on the item (its thread carries on with the next)."""
        start = self.clock.begin() if self.clock is not None and key in GPU_STAGES else None
        t, cpu = time.perf_counter(), time.thread_time_ns()
        try:
            if self.annotate:
                import torch

                with torch.profiler.record_function(f"stage:{key}"):
                    yield
            else:
                yield
        except Exception as exc:
            if key in ("detect", "lift"):
                work.error = exc
                return
            raise
        work.ms[key] = (time.perf_counter() - t) * 1e3
        work.cpu_ms[key] = (time.thread_time_ns() - cpu) / 1e6
        sync = getattr(stage, "sync_ms", None)
        if sync is not None:
            work.sync_ms[key] = sync
        if start is not None:
            self.clock.end(key, work.frame.index, start)

    def stream(self, role: str, high_priority: bool = False):
        """A context running this thread's GPU work on the pipeline's CUDA stream for ``role`` (one per
        role and priority, kept across runs: the allocator's cached blocks are per stream, so a timed
        run after a warm-up one reuses them); nothing on the CPU."""
        key = (role, high_priority)
        stream = self._streams.get(key)
        if stream is None:
            stream = _new_cuda_stream(high_priority)
            if stream is not None:
                self._streams[key] = stream
        return _stream_context(stream)

    def close(self) -> None:
        if self.appearance is not None:
            self.appearance.close()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing must never hide the summary
                log.warning("closing %s failed: %s", type(sink).__name__, exc)


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
    # CPU seconds of each thread of the run (time.thread_time), by the steps it ran ("detect", "lift",
    # "finish", "detect+lift+finish" for one frame at a time): CPU / seconds near 1 = that thread is
    # CPU-bound; the threads together near 1 with Python work = the GIL is the limit
    thread_cpu_s: dict[str, float] = field(default_factory=dict)

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


class StageThreads:
    """Frames in flight: a chain of steps, each group in its own thread (and CUDA stream), with
    one-slot hand-offs; the consumer iterating this runs nothing itself and gets items in order.

    Each thread holds at most one item between taking it and the next group taking it over (a token
    per hand-off), so at most ``len(groups)`` items are past the source, plus the consumer's one:
    nothing queues up. The first thread reads the source only when its slot is free, so a live
    source's newest frame is taken as late as possible and does not age in a queue. Steps record their
    own failures on the item (Pipeline's steps set ``Work.error``) and the thread goes on with the
    next item; an exception escaping a step (or the source) ends the stream, logged.

    ``late_read`` (two or more groups): the first thread reads its next item only when the second
    is due to finish its current one within the first's own running time (means of the last 30
    items), so a frame does not wait in the hand-off while the slower stage finishes: lower latency,
    the same throughput while the estimates hold.

    Reusable for any chain: ``items`` any iterable, ``groups`` lists of steps ``item -> item``.
    """

    def __init__(self, items: Iterable, groups: Sequence[Sequence[Callable]], stop: threading.Event,
                 late_read: bool = False, stream: Callable[[int], Any] | None = None):
        self.stop = stop
        # thread k's CUDA stream context (default: a new stream each)
        self.stream = stream or (lambda k: _stream_context(_new_cuda_stream()))
        self.queues = [queue.Queue(maxsize=1) for _ in groups]
        self.free = [threading.Semaphore(1) for _ in groups]
        self.late_read = late_read and len(groups) > 1
        self.busy_since: list[float | None] = [None] * len(groups)  # perf_counter at the current item's start
        self.work_s = [collections.deque(maxlen=30) for _ in groups]  # seconds per item, recent
        self.cpu_s = [0.0] * len(groups)  # each thread's CPU time, set when it ends (time.thread_time)
        self.threads = []
        inputs: list = [iter(items)] + self.queues[:-1]
        for k, steps in enumerate(groups):
            t = threading.Thread(target=self._work, args=(k, inputs[k], tuple(steps)),
                                 name=f"stage-{k}", daemon=True)
            self.threads.append(t)
        for t in self.threads:
            t.start()

    def _put(self, q: queue.Queue, item: object) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, k: int, source) -> object:
        if k == 0:
            return next(source, _END)
        while not self.stop.is_set():
            try:
                item = source.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is not _END:
                self.free[k - 1].release()  # the item is ours now: the thread before may take the next
            return item
        return _END

    def _work(self, k: int, source, steps: tuple[Callable, ...]) -> None:
        cpu = time.thread_time()
        with self.stream(k):
            try:
                while not self.stop.is_set():
                    if not self.free[k].acquire(timeout=0.1):
                        continue
                    if k == 0 and self.late_read:
                        self.stop.wait(self._read_delay())
                    item = self._take(k, source)
                    if item is _END:
                        break
                    t = self.busy_since[k] = time.perf_counter()
                    for step in steps:
                        item = step(item)
                    self.work_s[k].append(time.perf_counter() - t)
                    self.busy_since[k] = None
                    if not self._put(self.queues[k], item):
                        break
            except Exception:  # the source or a step that does not record its failures: end the stream
                log.exception("stage thread %d stopped", k)
            finally:
                self.cpu_s[k] = time.thread_time() - cpu
                self._put(self.queues[k], _END)

    def _read_delay(self) -> float:
        """Seconds until the second thread's current item is due, minus the first thread's own time."""
        since, mine, theirs = self.busy_since[1], self.work_s[0], self.work_s[1]
        if since is None or not mine or not theirs:
            return 0.0
        left = sum(theirs) / len(theirs) - (time.perf_counter() - since)
        return max(0.0, left - sum(mine) / len(mine))

    def __iter__(self) -> Iterator:
        last = self.queues[-1]
        while True:
            try:
                item = last.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set() and not self.threads[-1].is_alive():
                    return
                continue
            if item is _END:
                return
            self.free[-1].release()
            yield item

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5.0)


def stage_groups(steps: Sequence[Callable], inflight: int) -> tuple[list[list[Callable]], list[Callable]]:
    """Split a chain of steps into (thread groups, consumer steps) for ``inflight`` frames in flight:
    1 = everything in the consumer; 2 = the first step ahead in a thread; 3 = the first two steps each
    in a thread. The last step (the stateful one) always runs in the consumer."""
    if inflight < 1:
        raise ValueError(f"inflight must be >= 1, got {inflight}")
    ahead = min(inflight - 1, len(steps) - 1)
    return [[s] for s in steps[:ahead]], list(steps[ahead:])


MAX_INFLIGHT = 3  # detect, lift, finish: one frame per step


def _new_cuda_stream(high_priority: bool = False):
    """A CUDA stream for one thread's work, or None on the CPU. ``high_priority``: the highest priority
    the device offers, so the per-frame kernels are scheduled ahead of a background keyframe pass (the
    appearance worker's stream has the lowest)."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            from lart_stream.realtime.backends import cuda_stream_priority

            return torch.cuda.Stream(priority=cuda_stream_priority(high_priority))
    except Exception:
        pass
    return None


def _stream_context(stream):
    if stream is None:
        return contextlib.nullcontext()
    import torch

    return torch.cuda.stream(stream)


def _background_appearance(pipeline: Pipeline) -> bool:
    """The appearance stage runs its passes in a worker thread on its own (low-priority) stream."""
    return bool(getattr(pipeline.appearance, "threaded", False))


def run(source: FrameSource | Iterable[Frame], pipeline: Pipeline, *, max_frames: int = 0,
        stop: threading.Event | None = None, status: StatusLine | None = None,
        on_stats: Callable[[dict], None] | None = None, stats_period_s: float = 1.0,
        max_consecutive_errors: int = 25, overlap: bool = False, inflight: int = 1,
        late_read: bool = False) -> RunSummary:
    """Process frames until the source ends, ``max_frames`` is reached or ``stop`` is set.

    ``inflight``: frames in the pipeline at once (``stage_groups``): 1 = one frame at a time; 2 =
    detection of t+1 beside the rest of t; 3 = detection of t+2, lifting of t+1 and tracking, actions
    and publishing of t, each in its own thread and CUDA stream. Results come out in frame order with
    each frame's own stage timings. ``overlap`` (older name) = ``inflight=2``. ``late_read`` (inflight
    3): read a frame only when lifting is about to be free (StageThreads): lower latency.
    """
    stop = stop or threading.Event()
    if overlap:
        inflight = max(inflight, 2)
    groups, consumer = stage_groups(pipeline.steps(), min(inflight, MAX_INFLIGHT))
    cpu0 = time.thread_time()
    # Models and buffers are built: move them out of the collector's way, so a full collection
    # doesn't walk millions of long-lived objects in the middle of a frame (tail latency).
    gc.collect()
    gc.freeze()
    frames = errors = consecutive = people_max = 0
    last: FrameResult | None = None
    size: tuple[int, int] | None = None
    reason = "end of input"
    t0 = time.monotonic()
    t_stats = t0
    frames_at_stats = 0
    done: collections.deque = collections.deque(maxlen=30)  # completion times: the status line's fps
    tally = ActionTally()
    total = expected_frames(source, max_frames)
    works = (Work(f) for f in source)
    # A threaded appearance stage: every per-frame stream at the highest priority, so a keyframe pass
    # (lowest priority) only fills the GPU around the per-frame kernels.
    high = _background_appearance(pipeline)
    ahead = StageThreads(works, groups, threading.Event(), late_read=late_read,
                         stream=lambda k: pipeline.stream(f"ahead{k}", high)) if groups else None
    items = iter(ahead) if ahead is not None else works
    # With threads the consumer leaves the legacy default stream too: that stream would otherwise
    # serialise with the other threads' streams and no GPU work could overlap.
    main_stream = pipeline.stream("consumer", high) if groups or high else contextlib.nullcontext()
    try:
        main_stream.__enter__()
        for work in items:
            if stop.is_set():
                reason = "stopped"
                break
            frame = work.frame
            if size is not None and frame.size != size:
                log.warning("frame size changed from %dx%d to %dx%d at frame %d", *size, *frame.size, frame.index)
            size = frame.size
            for step in consumer:
                work = step(work)
            if work.error is not None:
                errors += 1
                consecutive += 1
                log.error("frame %d failed (%s: %s); continuing with the next frame", frame.index,
                          type(work.error).__name__, work.error, exc_info=work.error)
                if consecutive >= max_consecutive_errors:
                    reason = "too many errors"
                    break
                continue
            result = last = work.result
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
        if reason == "end of input" and last is not None:
            try:  # a file's end: the frames a lookahead holds back are published too
                pipeline.drain(last)
            except Exception:  # the frames already published stand; the summary still comes
                log.exception("publishing the frames held back by the appearance lookahead failed")
    finally:
        main_stream.__exit__(None, None, None)
        if ahead is not None:
            ahead.close()
    thread_cpu = {_steps_name(g): round(c, 4) for g, c in zip(groups, ahead.cpu_s if ahead is not None else ())}
    thread_cpu[_steps_name(consumer)] = round(time.thread_time() - cpu0, 4)
    if pipeline.clock is not None:
        for iv in pipeline.clock.collect(wait=True):
            pipeline.stats.add(f"gpu_{iv.stage}", iv.ms)
    if stop.is_set() and reason == "end of input":
        reason = "stopped"
    if status is not None:
        status.clear()
    keys = [k for k in STAGES if pipeline.stats.count.get(k)]
    return RunSummary(frames, time.monotonic() - t0, getattr(source, "dropped", 0), errors, people_max,
                      {k: _rounded(pipeline.stats.summary(k)) for k in keys},
                      _rounded(pipeline.stats.summary("latency")), reason, people=tally.top(),
                      random_weights=tally.random_weights or pipeline.random_weights, thread_cpu_s=thread_cpu)


def _steps_name(steps: Sequence[Callable]) -> str:
    """detect_step, lift_step -> "detect+lift" (a thread's name in RunSummary.thread_cpu_s)."""
    return "+".join(getattr(s, "__name__", "step").removesuffix("_step") for s in steps)


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
