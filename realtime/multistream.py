"""Several streams through one batched pipeline: a tick loop over N sources.

    stream readers (one thread each, one-slot hand-off)
        -> tick: the newest frame of every stream that has one
        -> detector (a list if it takes one, else per frame)
        -> HMR once on every crop of every frame (HMRLifter.lift_many)
        -> each stream's own tracker
        -> LART once for every track of every stream (ids keyed by stream)
        -> one FrameResult per stream -> sinks (topic actions/<stream>)

Each stream keeps its own reader thread, tracker, frame indices and LART state. The action stage is
shared: a track's id carries its stream in the bits >= ``STREAM_SHIFT`` (ActionStageConfig.group_shift)
so sequences and their context tracks never mix streams, and the ids published are the stream's own.

The tick is LART's clock. A tick waits (at most ``gather_ms``, like DeepStream's batched-push timeout)
for the streams that are flowing to deliver a frame, so that with cameras of one rate every tick
holds one frame of each and LART steps once per frame. A stream without a frame in a tick (late,
stalled, slower camera) keeps its tracks: they take a masked step there (not detected), as the
reference does for frames where a person is missing. A stream silent for ``stall_s`` is not waited
for at all, so a stalled camera costs the others at most one ``gather_ms`` wait; fairness: every
stream gives at most one frame per tick, so none starves.

``MultiStreamConfig.inflight`` 2 (``--inflight 2``): the GPU front (gather, detect, lift) of tick n+1
runs on its own thread (engine.StageThreads, a one-slot hand-off) while the back (trackers, the LART
step, sinks) of tick n runs; ticks reach the back in order, so LART still steps once per tick.
``inflight`` 3: three threads, gather + upload + detect | lift | back, one-slot hand-offs between them.

Each tick's frames go up to the device once (realtime/device_frames.py, when the detector and the
lifter both read frames on one device): the detector's letterbox and the lifter's crops read that copy.

Not batched across streams yet: the MViT appearance stage (realtime/appearance.py follows one stream's
frames; several streams run without it, warned) and the detector when it has no ``detect_many``
(then it runs once per frame of the tick).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lart_stream.realtime.config import AppConfig
from lart_stream.realtime.device_frames import DeviceFrames, FrameUploader, frame_uploader
from lart_stream.realtime.engine import STAGES, Pipeline, RollingStats, RunSummary, StageThreads, StatusLine
from lart_stream.realtime.protocol import STREAM_ID
from lart_stream.realtime.records import ActionPredictions, Detections, Frame, FrameResult, People, Tracks
from lart_stream.realtime.sources import FrameSource, SourceConfig

log = logging.getLogger(__name__)

STREAM_SHIFT = 40  # LART track key = stream number << 40 | the stream's track id
_ID_MASK = (1 << STREAM_SHIFT) - 1
TRACKS_PER_STREAM = 16  # LART capacity per stream


def multi_stream_tracks(streams: int, per_stream: int = TRACKS_PER_STREAM) -> dict:
    """ActionStageConfig sizes for ``streams`` streams: capacity and graph buckets (exact up to 16,
    then steps of 8: a causal step's padding rows cost little, a graph per count up to 128 would
    cost capture time)."""
    cap = per_stream * max(1, streams)
    buckets = tuple(range(1, 17)) + tuple(range(24, cap + 1, 8))
    return {"max_tracks": cap, "graph_buckets": tuple(b for b in buckets if b <= cap)}


def check_stream_ids(ids: Sequence[str]) -> None:
    """ValueError naming the problem: ids go into topic names (letters, digits, _ . -) and must differ."""
    bad = [i for i in ids if not STREAM_ID.match(i)]
    if bad:
        raise ValueError(f"stream id {bad[0]!r}: use 1-64 letters, digits, '_', '.' or '-'")
    dup = sorted({i for i in ids if list(ids).count(i) > 1})
    if dup:
        raise ValueError(f"stream id {dup[0]!r} given twice")


@dataclass(frozen=True)
class MultiStreamConfig:
    gather_ms: float = 40.0  # longest a tick waits for flowing streams after the first frame is ready
    stall_s: float = 0.5  # a stream silent this long is not waited for
    max_frames: int = 0  # per stream (0: until the source ends)
    stats_period_s: float = 1.0
    max_consecutive_errors: int = 25
    # ticks in flight: 1 = one at a time; 2 = the GPU front (gather, detect, lift) of tick n+1 runs on
    # its own thread while the back (trackers, LART, sinks) of tick n runs; 3 = gather + detect, lift
    # and the back on three threads; ticks stay in order
    inflight: int = 1


class StreamReader:
    """Reads one source on its own thread into a one-slot hand-off (the source decides what is dropped:
    live sources keep the newest frame; files and paced files hand out every frame in order).

    ``start_frame``: frames of a file with a smaller index are read and skipped (a restarted worker
    resumes a file where the dead one stopped; a live source just goes on from its newest frame)."""

    def __init__(self, source: FrameSource, ready: threading.Condition, stop: threading.Event,
                 start_frame: int = 0):
        self.source, self.ready, self.stop = source, ready, stop
        self.start_frame = 0 if source.live else start_frame
        self.slot: Frame | None = None
        self.ended = False
        self.error: Exception | None = None
        self.t_last = time.monotonic()  # last frame delivered (or start)
        self.thread = threading.Thread(target=self._read, name=f"reader-{source.name}"[:15], daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for frame in self.source:
                if frame.index < self.start_frame:
                    continue
                with self.ready:
                    while self.slot is not None and not self.stop.is_set():
                        self.ready.wait(0.1)
                    if self.stop.is_set():
                        return
                    self.slot = frame
                    self.t_last = time.monotonic()
                    self.ready.notify_all()
        except Exception as exc:  # a source that fails mid-stream ends this stream only
            self.error = exc
            log.error("stream %s failed: %s", self.source.name, exc)
        finally:
            with self.ready:
                self.ended = True
                self.ready.notify_all()

    def take(self) -> Frame | None:
        """The frame in the slot (caller holds ``ready``)."""
        frame, self.slot = self.slot, None
        return frame


@dataclass
class StreamState:
    """One stream's own state in the shared pipeline."""

    id: str
    number: int  # its place among the streams: the high bits of its LART track keys
    reader: StreamReader
    tracker: object | None
    stats: RollingStats = field(default_factory=lambda: RollingStats(window=2000))
    frames: int = 0  # published
    taken: int = 0  # taken into a tick
    last_tracks: Tracks = field(default_factory=Tracks.empty)
    frame_of_tick: dict[int, int] = field(default_factory=dict)  # LART step -> this stream's frame index
    done: collections.deque = field(default_factory=lambda: collections.deque(maxlen=30))
    t_first: float | None = None  # first and last frame published (sustained fps between them)
    t_last: float | None = None
    closed: bool = False

    @property
    def dropped(self) -> int:
        return int(getattr(self.reader.source, "dropped", 0))

    @property
    def finished(self) -> bool:
        """Closed (max frames) or its source ended with nothing left to take."""
        return self.closed or (self.reader.ended and self.reader.slot is None)

    def fps(self) -> float:
        d = self.done
        return (len(d) - 1) / (d[-1] - d[0]) if len(d) > 1 and d[-1] > d[0] else 0.0


@dataclass
class Tick:
    """One tick on its way through the pipeline: its frames, then what the front made of them."""

    number: int  # LART's step
    batch: list[tuple[StreamState, Frame]]
    detections: list[Detections] = field(default_factory=list)
    people: list[People] = field(default_factory=list)
    ms: dict[str, float] = field(default_factory=dict)
    lift_parts: dict[str, float] = field(default_factory=dict)
    error: Exception | None = None
    device: DeviceFrames | None = None  # the frames on the device, from upload until the lift


@dataclass
class MultiStreamPipeline:
    """The shared stages plus one tracker per stream; ``process`` runs one tick."""

    pipeline: Pipeline  # detector, lifter, actions (group_shift set), sinks; its tracker is unused
    streams: list[StreamState]
    stats: RollingStats = field(default_factory=RollingStats)
    lift_parts: RollingStats = field(default_factory=RollingStats)  # the lifter's parts, when it times them
    uploader: FrameUploader | None = None  # each tick's frames up once, for the detector and the lifter

    def process(self, batch: list[tuple[StreamState, Frame]], tick: int) -> list[FrameResult]:
        """One tick, front and back in turn."""
        work = Tick(tick, batch)
        self.front(work)
        if work.error is not None:
            raise work.error
        return self.back(work)

    def front(self, work: "Tick") -> "Tick":
        """The GPU front of a tick: ``detect`` then ``lift``."""
        return self.lift(self.detect(work))

    def detect(self, work: "Tick") -> "Tick":
        """The tick's frames up to the device (once, shared) and the detector over every frame. A
        failure is kept on the tick (``error``) for the loop to count, so a front thread goes on."""
        p = self.pipeline
        try:
            t = time.perf_counter()
            frames = [f for _, f in work.batch]
            if self.uploader is not None:
                work.device = self.uploader.upload([f.image for f in frames], [s.number for s, _ in work.batch])
            detect_many = getattr(p.detector, "detect_many", None)
            if detect_many is None:
                work.detections = [p.detector(f) for f in frames]
            elif work.device is not None:
                work.detections = list(detect_many(frames, device_images=work.device.images))
            else:
                work.detections = list(detect_many(frames))
            _lap(work.ms, "detect", t)
        except Exception as exc:  # noqa: BLE001 - counted by the loop
            work.error = exc
        return work

    def lift(self, work: "Tick") -> "Tick":
        """HMR over every crop of every frame (from the shared device frames when there are some)."""
        p = self.pipeline
        if work.error is not None:
            work.device = None
            return work
        frames = [f for _, f in work.batch]
        try:
            t = time.perf_counter()
            if p.lifter is not None:
                lift_many = getattr(p.lifter, "lift_many", None)
                if lift_many is None:
                    work.people = [p.lifter(f, d) for f, d in zip(frames, work.detections)]
                elif work.device is not None:
                    work.device.wait()  # uploaded on the detect thread's stream
                    work.people = list(lift_many(frames, work.detections, device_images=work.device.images))
                else:
                    work.people = list(lift_many(frames, work.detections))
                _lap(work.ms, "lift", t)
                parts = getattr(p.lifter, "last_parts", None)
                work.lift_parts = parts() if parts is not None else {}
            else:
                work.people = [People.from_detections(d, f.size) for d, f in zip(work.detections, frames)]
        except Exception as exc:  # noqa: BLE001 - counted by the loop
            work.error = exc
        work.device = None  # its buffers go back to the uploader's ring
        return work

    def back(self, work: "Tick") -> list[FrameResult]:
        """The rest of a tick, in tick order: each stream's tracker, one LART step, the sinks."""
        p, batch, people, tick, ms = self.pipeline, work.batch, work.people, work.number, work.ms
        t = time.perf_counter()
        tracks = []
        for (stream, frame), ppl in zip(batch, people):
            tracks.append(stream.tracker.update(ppl, frame.index) if stream.tracker is not None else Tracks.empty())
        if any(s.tracker is not None for s, _ in batch):
            t = _lap(ms, "track", t)
        actions: list[ActionPredictions | None] = [None] * len(batch)
        if p.actions is not None and people and people[0].has_3d:
            actions = self._actions(batch, people, tracks, tick)
            t = _lap(ms, "actions", t)
        results = []
        for (stream, frame), det, ppl, trk, act in zip(batch, work.detections, people, tracks, actions):
            results.append(FrameResult(frame, det, ppl, trk, act, dict(ms), time.monotonic()))
        t_sinks = time.perf_counter()
        for result, (stream, frame) in zip(results, batch):
            for sink in p.sinks:
                sink.send(result)
            stream.stats.add("latency", (time.monotonic() - frame.t_capture) * 1e3)
        _lap(ms, "publish", t_sinks)
        for key, value in ms.items():
            self.stats.add(key, value)
        for key, value in work.lift_parts.items():
            self.lift_parts.add(key, value)
        return results

    def _actions(self, batch: list[tuple[StreamState, Frame]], people: list[People], tracks: list[Tracks],
                 tick: int) -> list[ActionPredictions | None]:
        """One LART step for every stream's tracks: streams in this tick with their new tracks, the
        others' last tracks as not detected (a masked step keeps their state)."""
        present = {s.number: (s, trk, ppl) for (s, _), trk, ppl in zip(batch, tracks, people)}
        parts, ppl_parts, offset = [], [], 0
        for stream in self.streams:
            if stream.number in present:
                _, trk, ppl = present[stream.number]
                pi = np.where(trk.person_index >= 0, trk.person_index + offset, -1)
                parts.append(dataclasses.replace(trk, track_id=trk.track_id | (stream.number << STREAM_SHIFT),
                                                 person_index=pi))
                ppl_parts.append(ppl)
                offset += len(ppl)
            elif not stream.finished and len(stream.last_tracks):
                last = stream.last_tracks
                parts.append(dataclasses.replace(
                    last, track_id=last.track_id | (stream.number << STREAM_SHIFT),
                    person_index=np.full(len(last), -1, np.int32), time_since_update=last.time_since_update + 1))
        for s, frame in batch:
            s.last_tracks = present[s.number][1]
            s.frame_of_tick[tick] = frame.index
        merged_tracks = _concat_tracks(parts)
        merged_people = _concat_people(ppl_parts)
        preds = self.pipeline.actions.update(merged_tracks, merged_people, tick)
        out: list[ActionPredictions | None] = []
        for stream, _ in batch:
            rows = np.flatnonzero((preds.track_id >> STREAM_SHIFT) == stream.number)
            mine = preds[rows]
            mine.track_id = mine.track_id & _ID_MASK
            mine.frame_index = np.array([stream.frame_of_tick.get(int(c), -1) for c in mine.frame_index], np.int64)
            out.append(mine)
        return out


def _concat_tracks(parts: list[Tracks]) -> Tracks:
    if not parts:
        return Tracks.empty()
    if len(parts) == 1:
        return parts[0]
    return Tracks(**_concat_fields(parts, Tracks))


def _concat_people(parts: list[People]) -> People:
    if not parts:
        return People.empty()
    if len(parts) == 1:
        return parts[0]
    # image_size is per frame and LART does not read it: the first frame's stands for all
    return People(**_concat_fields(parts, People), image_size=parts[0].image_size)


def _concat_fields(parts: list, cls: type) -> dict:
    """Row-wise concatenation of every array field (None where any part has None)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "image_size":
            continue
        values = [getattr(p, f.name) for p in parts]
        out[f.name] = None if any(v is None for v in values) else np.concatenate(values)
    return out


def _lap(ms: dict[str, float], key: str, t0: float) -> float:
    t1 = time.perf_counter()
    ms[key] = (t1 - t0) * 1e3
    return t1


@dataclass
class MultiRunSummary(RunSummary):
    # id -> frames, fps (sustained: frames between its first and last published frame), dropped, latency_ms
    streams: dict[str, dict] = field(default_factory=dict)
    lift_parts_ms: dict[str, dict] = field(default_factory=dict)  # the lifter's parts per tick, when timed

    def as_dict(self) -> dict:
        return {**super().as_dict(), "streams": self.streams, "lift_parts_ms": self.lift_parts_ms}

    def format(self) -> str:
        lines = [super().format(), f"{'stream':<12}{'frames':>8}{'fps':>8}{'dropped':>9}{'p50 ms':>9}{'p99 ms':>9}"]
        for sid, s in self.streams.items():
            lat = s["latency_ms"]
            lines.append(f"{sid:<12}{s['frames']:>8}{s['fps']:8.1f}{s['dropped']:>9}{lat['p50']:9.1f}{lat['p99']:9.1f}")
        return "\n".join(lines)


def run_streams(sources: Sequence[FrameSource], ids: Sequence[str], pipeline: Pipeline, trackers: Sequence,
                cfg: MultiStreamConfig = MultiStreamConfig(), *, stop: threading.Event | None = None,
                status: StatusLine | None = None, on_stats: Callable[[dict], None] | None = None,
                on_results: Callable[[list[FrameResult]], None] | None = None,
                start_frames: Sequence[int] | None = None) -> MultiRunSummary:
    """Run every source through ``pipeline`` until all end, each reaches ``max_frames``, or ``stop``.

    ``trackers``: one per stream. ``on_results``: called after each tick with its results (a worker
    reports progress with it). ``start_frames``: per stream, skip frames before this index."""
    check_stream_ids(list(ids))
    if not (len(sources) == len(ids) == len(trackers)):
        raise ValueError(f"{len(sources)} sources, {len(ids)} ids, {len(trackers)} trackers")
    stop = stop or threading.Event()
    ready = threading.Condition()
    halt = threading.Event()  # stops the readers (also when the loop ends for another reason)
    starts = list(start_frames or [0] * len(sources))
    streams = [StreamState(i, n, StreamReader(src, ready, halt, starts[n]), trk)
               for n, (src, i, trk) in enumerate(zip(sources, ids, trackers))]
    if cfg.inflight not in (1, 2, 3):
        raise ValueError(f"inflight must be 1, 2 or 3 for several streams, got {cfg.inflight}")
    # a ring slot per tick in flight: a tick's device frames stay put until its lift is done
    multi = MultiStreamPipeline(pipeline, streams, uploader=frame_uploader(pipeline.detector, pipeline.lifter,
                                                                           depth=cfg.inflight))
    gc.collect()
    gc.freeze()
    frames = errors = consecutive = people_max = 0
    reason = "end of input"
    t0 = t_stats = time.monotonic()
    frames_at_stats = {s.id: 0 for s in streams}

    def ticks() -> Iterator[Tick]:
        number = 0
        while not stop.is_set():
            batch = _gather(streams, ready, cfg, stop)
            if batch is None:
                return
            if batch:
                yield Tick(number, batch)
                number += 1

    ahead = None
    if cfg.inflight == 1:
        flow: Iterable[Tick] = (multi.front(w) for w in ticks())
    else:  # the front in a thread (inflight 3: detect and lift in one each), one-slot hand-offs
        groups = [[multi.front]] if cfg.inflight == 2 else [[multi.detect], [multi.lift]]
        flow = ahead = StageThreads(ticks(), groups, threading.Event())
    try:
        for work in flow:
            try:
                if work.error is not None:
                    raise work.error
                results = multi.back(work)
            except Exception:
                errors += 1
                consecutive += 1
                log.exception("tick %d (streams %s) failed; continuing", work.number,
                              ",".join(s.id for s, _ in work.batch))
                if consecutive >= cfg.max_consecutive_errors:
                    reason = "too many errors"
                    break
                continue
            finally:
                _forget_old_ticks(streams, work.number + 1, pipeline)
            consecutive = 0
            now = time.monotonic()
            for (stream, _), result in zip(work.batch, results):
                stream.frames += 1
                stream.done.append(now)
                stream.t_first = now if stream.t_first is None else stream.t_first
                stream.t_last = now
                frames += 1
                people_max = max(people_max, len(result.people))
            if on_results is not None:
                on_results(results)
            if status is not None:
                status.update(" | ".join(f"{s.id} {s.fps():4.1f} fps d{s.dropped}" for s in streams))
            if on_stats is not None and now - t_stats >= cfg.stats_period_s:
                on_stats(_stats_dict(multi, frames_at_stats, now - t_stats))
                t_stats = now
                frames_at_stats = {s.id: s.frames for s in streams}
        if stop.is_set() and reason == "end of input":
            reason = "stopped"
        if reason == "end of input" and cfg.max_frames and all(s.closed for s in streams):
            reason = "max frames"
    finally:
        halt.set()
        stop_ahead = ahead.close if ahead is not None else (lambda: None)
        with ready:
            ready.notify_all()
        stop_ahead()
        for s in streams:
            s.reader.thread.join(timeout=2.0)
    if status is not None:
        status.clear()
    keys = [k for k in STAGES if multi.stats.count.get(k)]
    seconds = time.monotonic() - t0
    all_latency = RollingStats(window=100_000)
    per_stream = {}
    for s in streams:
        for v in s.stats.samples.get("latency", ()):
            all_latency.add("latency", v)
        span = (s.t_last - s.t_first) if s.frames > 1 else 0.0
        per_stream[s.id] = {"frames": s.frames, "fps": round((s.frames - 1) / span, 3) if span > 0 else 0.0,
                            "dropped": s.dropped, "latency_ms": _rounded(s.stats.summary("latency"))}
    return MultiRunSummary(frames, seconds, sum(s.dropped for s in streams), errors, people_max,
                           {k: _rounded(multi.stats.summary(k)) for k in keys},
                           _rounded(all_latency.summary("latency")), reason, streams=per_stream,
                           lift_parts_ms={k: _rounded(multi.lift_parts.summary(k)) for k in multi.lift_parts.count})


def _gather(streams: list[StreamState], ready: threading.Condition, cfg: MultiStreamConfig,
            stop: threading.Event) -> list[tuple[StreamState, Frame]] | None:
    """This tick's frames: wait for a first frame, then up to gather_ms for the other flowing streams.
    None when every stream has ended (or stop)."""
    with ready:
        while True:
            open_ = [s for s in streams if not s.finished]
            if not open_ or stop.is_set():
                return None
            if any(s.reader.slot is not None for s in open_):
                break
            ready.wait(0.1)
        deadline = time.monotonic() + cfg.gather_ms / 1e3
        while True:
            now = time.monotonic()
            waiting = [s for s in open_ if s.reader.slot is None and not s.reader.ended
                       and now - s.reader.t_last < cfg.stall_s]
            if not waiting or now >= deadline or stop.is_set():
                break
            ready.wait(deadline - now)
        batch = [(s, s.reader.take()) for s in open_ if s.reader.slot is not None]
        ready.notify_all()  # the readers refill their slots
    for s, _ in batch:  # a stream closes when its last frame is taken (a front thread may be a tick ahead)
        s.taken += 1
        if cfg.max_frames and s.taken >= cfg.max_frames:
            s.closed = True
    return batch


def _forget_old_ticks(streams: list[StreamState], tick: int, pipeline: Pipeline) -> None:
    """Keep the tick -> frame map only as far back as LART can publish (its window)."""
    keep = int(getattr(pipeline.actions, "T", 0) or 0) + 8
    for s in streams:
        old = tick - keep
        if old in s.frame_of_tick:
            del s.frame_of_tick[old]
        if len(s.frame_of_tick) > 4 * keep:  # a stream absent for long: prune in one go
            for k in [k for k in s.frame_of_tick if k < old]:
                del s.frame_of_tick[k]


def _stats_dict(multi: MultiStreamPipeline, frames_at: dict[str, int], seconds: float) -> dict:
    """A `stats` message's overrides: the pipeline's figures, each stream's in ``extra`` keys
    ``<stream>.fps``, ``<stream>.dropped``, ``<stream>.latency_p50``, ``<stream>.latency_p99``."""
    total = sum(s.frames - frames_at.get(s.id, 0) for s in multi.streams)
    out: dict = {"fps": total / seconds if seconds > 0 else 0.0,
                 "stage_ms": {k: multi.stats.recent_mean(k) for k in STAGES if multi.stats.count.get(k)},
                 "dropped_frames": sum(s.dropped for s in multi.streams),
                 "streams": float(len(multi.streams))}
    for s in multi.streams:
        lat = s.stats.summary("latency")
        out[f"{s.id}.fps"] = (s.frames - frames_at.get(s.id, 0)) / seconds if seconds > 0 else 0.0
        out[f"{s.id}.dropped"] = float(s.dropped)
        out[f"{s.id}.latency_p50"] = lat["p50"]
        out[f"{s.id}.latency_p99"] = lat["p99"]
    return out


def _rounded(d: dict) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# Stream specs (command line, [[streams]] in the config file) and one process serving them


def parse_input(kind: str, value: str, position: int, base: SourceConfig) -> SourceConfig:
    """One ``--source``/``--camera`` value -> a SourceConfig. ``NAME=URL|PATH|N`` names the stream;
    otherwise it is ``s<position>``. ValueError on a bad id or camera index."""
    name, sep, rest = value.partition("=")
    if sep and STREAM_ID.match(name) and "/" not in name and ":" not in name:
        sid, target = name, rest
    else:
        sid, target = f"s{position}", value
    if kind == "camera":
        try:
            return dataclasses.replace(base, camera=int(target), path=None, stream_id=sid)
        except ValueError:
            raise ValueError(f"--camera {value!r}: expected a camera index N or NAME=N") from None
    return dataclasses.replace(base, path=target, camera=None, stream_id=sid)


def streams_from_config(entries: object, base: SourceConfig, origin: str) -> list[SourceConfig]:
    """``[[streams]]`` tables (``id`` plus any [source] setting: path, camera, realtime, fps, ...) ->
    SourceConfigs; unset settings come from ``base`` (the [source] section). ValueError naming the entry."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{origin}: [[streams]] must be a list of tables")
    valid = {f.name for f in dataclasses.fields(base)} - {"stream_id"}
    out = []
    for n, entry in enumerate(entries):
        entry = dict(entry)
        sid = str(entry.pop("id", f"s{n}"))
        unknown = sorted(set(entry) - valid)
        if unknown:
            raise ValueError(f"{origin}: streams[{n}] ({sid}): unknown setting {unknown[0]} "
                             f"(valid: id, {', '.join(sorted(valid))})")
        if ("camera" in entry) == ("path" in entry):
            raise ValueError(f"{origin}: streams[{n}] ({sid}): give exactly one of path or camera")
        for key, value in entry.items():
            default = getattr(base, key)
            want = int if key == "camera" else str if key == "path" else type(default)
            ok = isinstance(value, (int, float) if want is float else want)
            if not ok or isinstance(value, bool) != isinstance(default, bool):
                raise ValueError(f"{origin}: streams[{n}] ({sid}).{key}: expected {want.__name__}, got {value!r}")
        out.append(dataclasses.replace(base, **{"camera": None, "path": None, **entry, "stream_id": sid}))
    check_stream_ids([s.stream_id for s in out])
    return out


def stream_inflight(inflight: int, overlap: bool = False) -> int:
    """--inflight for several streams: 1, 2 (the front ahead) or 3 (detect, lift and the back apart)."""
    wanted = max(inflight, 2 if overlap else 1)
    if wanted > 3:
        log.info("several streams: --inflight %d runs as 3 (gather + detect, lift, the back)", wanted)
    return min(wanted, 3)


def set_threads(n: int) -> None:
    """Cap torch's and OpenCV's CPU threads: spinning thread teams degrade badly when another process
    (another worker) holds a core."""
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    log.info("CPU threads: torch %d, OpenCV %d", torch.get_num_threads(), cv2.getNumThreads())


def serve(cfg: AppConfig, streams: Sequence[SourceConfig], *, stop: threading.Event | None = None, status: StatusLine | None = None,
          connect_to: str | None = None, start_frames: Sequence[int] | None = None,
          on_results: Callable[[list[FrameResult]], None] | None = None,
          gather_ms: float = MultiStreamConfig.gather_ms) -> MultiRunSummary:
    """Build the pipeline of ``cfg`` for ``streams`` (SourceConfigs), open them, run until they end.

    ``connect_to``: publish by connecting to this proxy XSUB address (a worker) instead of binding
    cfg.publish.address. Raises SourceError / BuildError (user errors) before anything runs."""
    from lart_stream.realtime.build import BuildError, build_pipeline, build_trackers
    from lart_stream.realtime.sources import open_source

    stop = stop or threading.Event()
    check_stream_ids([s.stream_id for s in streams])
    if cfg.runtime.threads > 0:
        set_threads(cfg.runtime.threads)
    if connect_to is not None:
        cfg = dataclasses.replace(cfg, publish=dataclasses.replace(cfg.publish, address="none"))
    sources: list[FrameSource] = []
    pipeline = None
    try:
        for s in streams:
            sources.append(open_source(s, stop))
        pipeline = build_pipeline(cfg, streams=len(streams))
        if connect_to is not None:
            from lart_stream.realtime.publisher import Publisher, PublisherConfig

            p = cfg.publish
            try:
                pipeline.sinks = [Publisher(PublisherConfig(address=connect_to, connect=True, top_k=cfg.actions.top_k,
                                                            frames=p.frames, frames_width=p.frames_width,
                                                            frames_fps=p.frames_fps, hwm=p.hwm)), *pipeline.sinks]
            except ValueError as exc:
                raise BuildError(str(exc)) from exc
        log.info("streams: %s", ", ".join(f"{s.stream_id}={src.name}" for s, src in zip(streams, sources)))
        log.info("pipeline: %s, %d streams batched", pipeline.describe(), len(streams))
        for stage in (pipeline.lifter, pipeline.actions):
            if stage is not None and hasattr(stage, "warmup"):
                stage.warmup()
        if pipeline.random_weights:
            log.warning("RANDOM WEIGHTS: predictions are meaningless")
        trackers = build_trackers(cfg, pipeline.lifter, len(streams)) if pipeline.tracker is not None else [None] * len(streams)
        publisher = next((s for s in pipeline.sinks if hasattr(s, "send_stats")), None)
        return run_streams(sources, [s.stream_id for s in streams], pipeline, trackers,
                           MultiStreamConfig(gather_ms=gather_ms, max_frames=cfg.runtime.max_frames,
                                             inflight=stream_inflight(cfg.runtime.inflight, cfg.runtime.overlap)),
                           stop=stop, status=status, on_stats=publisher.send_stats if publisher else None,
                           on_results=on_results, start_frames=start_frames)
    finally:
        if pipeline is not None:
            pipeline.close()
        for src in sources:
            src.close()
