"""Frames in flight (run(inflight=N)): the same messages as one frame at a time, in order, bounded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lart_stream.realtime.actions import ActionStage, ActionStageConfig
from lart_stream.realtime.detectors import HOGDetector
from lart_stream.realtime.engine import Pipeline, StageThreads, run, stage_groups
from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
from lart_stream.realtime.records import Detections, Frame
from lart_stream.realtime.sources import SourceConfig, open_source
from lart_stream.realtime.tracking import TrackerConfig, build_tracker

FRAMES = 24


class SortedHOG:
    """HOG with its boxes in a fixed order (OpenCV scans scales in parallel: the order varies)."""

    name = "hog-sorted"

    def __init__(self):
        self.hog = HOGDetector()

    def __call__(self, frame: Frame) -> Detections:
        d = self.hog(frame)
        order = np.lexsort(d.xyxy.T[::-1]) if len(d) else np.zeros(0, np.int64)
        return d[order]


class Messages:
    """A sink keeping what a subscriber would get: frame, boxes, track ids, action rows and scores."""

    stage = "record"

    def __init__(self):
        self.seen: list[tuple] = []

    def send(self, result) -> None:
        a = result.actions
        self.seen.append((result.frame.index, result.detections.xyxy.copy(), result.tracks.track_id.copy(),
                          result.people.pose_vector.copy(),
                          None if a is None else (a.track_id.copy(), a.frame_index.copy(), a.scores.copy()),
                          sorted(result.stage_ms)))

    def close(self) -> None:
        pass


def _run_real(pedestrians, inflight: int, late_read: bool = False) -> tuple[Messages, object]:
    lifter = HMRLifter.from_config(HMRLifterConfig(seed=1, fused=True, max_batch=8))
    actions = ActionStage.from_config(ActionStageConfig(size="tiny", mode="causal", pose_only=False))
    sink = Messages()
    pipeline = Pipeline(SortedHOG(), lifter, build_tracker("iou", TrackerConfig(n_init=2)), actions, [sink])
    source = open_source(SourceConfig(path=str(pedestrians)), threading.Event())
    try:
        summary = run(source, pipeline, max_frames=FRAMES, inflight=inflight, late_read=late_read)
    finally:
        source.close()
    return sink, summary


def test_inflight_gives_the_sequential_messages_on_the_real_clip(pedestrians):
    seq, s1 = _run_real(pedestrians, 1)
    assert s1.frames == FRAMES and s1.errors == 0
    assert any(len(m[2]) for m in seq.seen) and any(m[4] is not None and len(m[4][0]) for m in seq.seen)
    for inflight, late in ((2, False), (3, False), (3, True)):
        got, s = _run_real(pedestrians, inflight, late)
        assert s.frames == FRAMES and s.errors == 0 and s.reason == "max frames"
        assert [m[0] for m in got.seen] == list(range(FRAMES))  # in order, none skipped
        for a, b in zip(seq.seen, got.seen):
            assert a[0] == b[0]
            np.testing.assert_array_equal(a[1], b[1])  # boxes
            np.testing.assert_array_equal(a[2], b[2])  # track ids
            np.testing.assert_array_equal(a[3], b[3])  # HMR output (exact: same CPU kernels)
            assert (a[4] is None) == (b[4] is None)
            if a[4] is not None:
                for x, y in zip(a[4], b[4]):
                    np.testing.assert_array_equal(x, y)  # action rows and scores
            assert a[5] == b[5]  # every stage timed on every frame
        assert all(s.stages_ms[k]["n"] == FRAMES for k in ("detect", "lift", "track", "actions"))


class CountingSource:
    """Frames of one image; records, at each read, how many frames were read but not yet finished."""

    def __init__(self, frames: int, release_at: int):
        self.frames, self.release_at = frames, release_at
        self.read = self.finished = 0
        self.in_flight: list[int] = []
        self.saturated = threading.Event()  # the first frame's sink waits for this
        self.lock = threading.Lock()
        self.image = np.zeros((48, 64, 3), np.uint8)

    def __iter__(self):
        for i in range(self.frames):
            with self.lock:
                self.read += 1
                self.in_flight.append(self.read - self.finished)
                if self.read >= self.release_at:
                    self.saturated.set()
            yield Frame(i, 0.0, self.image)


class HoldFirst:
    """A sink that holds frame 0 until the source has read ``release_at`` frames (events, no sleeps)."""

    stage = "record"

    def __init__(self, source: CountingSource):
        self.source = source
        self.order: list[int] = []

    def send(self, result) -> None:
        if result.frame.index == 0:
            assert self.source.saturated.wait(timeout=60), "the earlier stages never filled up"
        self.order.append(result.frame.index)
        with self.source.lock:
            self.source.finished += 1

    def close(self) -> None:
        pass


class NoBoxes:
    name = "none"

    def __call__(self, frame: Frame) -> Detections:
        return Detections.empty()


@pytest.mark.parametrize("inflight", [1, 2, 3])
def test_hand_offs_are_bounded(inflight):
    """While the consumer is held, the stages ahead fill up to ``inflight`` frames and read no more."""
    source = CountingSource(12, release_at=inflight)
    sink = HoldFirst(source)
    summary = run(source, Pipeline(NoBoxes(), sinks=[sink]), inflight=inflight)
    assert summary.frames == 12 and sink.order == list(range(12))
    assert max(source.in_flight) == inflight


def test_stage_groups_and_a_failing_step_travel_on_the_item():
    steps = ("detect", "lift", "finish")
    assert stage_groups(steps, 1) == ([], list(steps))
    assert stage_groups(steps, 2) == ([["detect"]], ["lift", "finish"])
    assert stage_groups(steps, 3) == ([["detect"], ["lift"]], ["finish"])
    assert stage_groups(steps, 7) == stage_groups(steps, 3)
    with pytest.raises(ValueError):
        stage_groups(steps, 0)

    def double(x):
        if x == 3:
            raise RuntimeError("boom")
        return 2 * x

    def safe(step):
        def inner(x):
            try:
                return step(x)
            except RuntimeError as exc:
                return exc
        return inner

    threads = StageThreads(range(6), [[safe(double)], [lambda x: x if isinstance(x, Exception) else x + 1]],
                           threading.Event())
    out = list(threads)
    threads.close()
    assert out[:3] == [1, 3, 5] and isinstance(out[3], RuntimeError) and out[4:] == [9, 11]


def test_busy_fraction_is_the_union_of_stage_intervals_over_the_span():
    from lart_stream.realtime.gpu_clock import Interval, busy_fraction

    ivs = [Interval("detect", 0, 0.0, 2.0), Interval("lift", 0, 1.0, 5.0),  # overlapping streams
           Interval("actions", 0, 6.0, 7.0), Interval("detect", 1, 9.0, 10.0)]
    assert busy_fraction(ivs) == (5.0 + 1.0 + 1.0) / 10.0
    assert busy_fraction([]) == 0.0
    assert busy_fraction([Interval("lift", 0, 3.0, 3.0)]) == 0.0


def test_late_read_delay_waits_for_the_second_stage_minus_the_first_stages_own_time():
    import time

    threads = StageThreads(range(0), [[lambda x: x], [lambda x: x]], threading.Event(), late_read=True)
    list(threads)
    threads.close()
    assert threads._read_delay() == 0.0  # nothing measured yet
    threads.work_s[0].append(3.0)
    threads.work_s[1].append(10.0)
    assert threads._read_delay() == 0.0  # the second stage is idle: read now
    threads.busy_since[1] = time.perf_counter() - 1.0  # 1 s into a 10 s item, reading takes 3 s
    assert 5.0 < threads._read_delay() <= 6.0
    threads.busy_since[1] = time.perf_counter() - 9.0  # due in 1 s, less than our 3 s: read now
    assert threads._read_delay() == 0.0


@pytest.mark.parametrize("inflight", [1, 2, 3])
@pytest.mark.parametrize("threaded", [False, True])
def test_per_frame_streams_get_high_priority_when_the_appearance_stage_is_threaded(monkeypatch, inflight, threaded):
    """Every stream the frame loop opens (the consumer's and each frames-in-flight thread's) asks for
    the highest priority exactly when a threaded appearance stage runs its passes in the background;
    sequential without one, the loop stays on the default stream (no stream opened)."""
    from lart_stream.realtime import engine

    asked: list[bool] = []

    def new_stream(high_priority: bool = False):
        asked.append(high_priority)
        return None  # no CUDA here: the loop runs in a null context

    monkeypatch.setattr(engine, "_new_cuda_stream", new_stream)

    class Background:  # what the engine reads of an appearance stage
        name, random_weights = "bg", True

        def __init__(self):
            self.threaded = threaded

        def close(self):
            pass

    class Nobody:
        name = "nobody"

        def __call__(self, frame):
            return Detections.empty()

    pipeline = Pipeline(Nobody(), appearance=Background())
    frames = [Frame(i, 0.0, np.zeros((8, 8, 3), np.uint8)) for i in range(3)]
    assert run(frames, pipeline, inflight=inflight).frames == 3
    opened = (inflight - 1) + (1 if inflight > 1 or threaded else 0)  # threads' streams + the consumer's
    assert asked == [threaded] * opened


def test_pipeline_keeps_one_stream_per_role_and_priority_across_runs(monkeypatch):
    """A timed run after a warm-up run uses the same streams (the allocator caches blocks per stream)."""
    import contextlib

    from lart_stream.realtime import engine

    made: list[object] = []
    entered: list[object] = []

    def new_stream(high_priority: bool = False):
        made.append(object())
        return made[-1]

    monkeypatch.setattr(engine, "_new_cuda_stream", new_stream)
    monkeypatch.setattr(engine, "_stream_context", lambda s: entered.append(s) or contextlib.nullcontext())
    pipeline = Pipeline(detector=None)
    for role, high in [("consumer", True), ("ahead0", True), ("consumer", True), ("consumer", False)]:
        with pipeline.stream(role, high):
            pass
    assert len(made) == 3 and entered == [made[0], made[1], made[0], made[2]]


class BusyBoxes:
    """A detector whose host work is pure Python (it holds the GIL), then one fixed box."""

    name = "busy"
    sync_ms = 0.25  # as a stage that waited for its device: the engine records it as sync_detect

    def __call__(self, frame: Frame) -> Detections:
        sum(i * i for i in range(2000))
        return Detections(np.array([[4.0, 4.0, 30.0, 40.0]]), np.array([0.9]), np.zeros(1, np.int32))


@pytest.mark.parametrize("inflight", [1, 3])
def test_every_stage_has_its_threads_cpu_time_beside_its_wall_time(inflight):
    """cpu_<stage> stats: one per frame and stage, never above the stage's wall time (one thread's CPU
    time cannot outrun the wall clock); per-thread CPU totals named by the steps each thread ran."""
    frames = 10
    source = CountingSource(frames, release_at=0)
    sink = HoldFirst(source)  # released at once (release_at=0)
    pipeline = Pipeline(BusyBoxes(), tracker=build_tracker("iou", TrackerConfig(n_init=1)), sinks=[sink])
    summary = run(source, pipeline, inflight=inflight)
    assert summary.frames == frames and sink.order == list(range(frames))
    for stage in ("detect", "track", "record"):
        wall = np.asarray(pipeline.stats.samples[stage])
        cpu = np.asarray(pipeline.stats.samples["cpu_" + stage])
        assert len(cpu) == len(wall) == frames
        assert (cpu >= 0).all() and (cpu <= wall + 0.05).all()  # 0.05 ms: the two clocks' read-out order
    assert (np.asarray(pipeline.stats.samples["cpu_detect"]) > 0).all()  # Python work costs CPU time
    assert list(pipeline.stats.samples["sync_detect"]) == [0.25] * frames
    assert "sync_track" not in pipeline.stats.samples  # a stage without sync_ms has none
    names = {1: {"detect+lift+finish"}, 3: {"detect", "lift", "finish"}}[inflight]
    assert set(summary.thread_cpu_s) == names
    assert summary.thread_cpu_s["detect" if inflight == 3 else "detect+lift+finish"] > 0
    assert "cpu_detect" not in summary.stages_ms  # the summary's stage table stays wall time
