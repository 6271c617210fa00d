"""Several streams in one batched pipeline (realtime/multistream.py), on generated clips and a live
loopback stream: ids, order, batching, LART namespaces per stream, a stalled stream, the CLI."""

from __future__ import annotations

import dataclasses

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port, run_cli, write_video
from lart_stream.benchmarks.scripted import ScriptedDetector, walking_boxes
from lart_stream.realtime.actions import ActionStage, ActionStageConfig
from lart_stream.realtime.engine import Pipeline
from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
from lart_stream.realtime.multistream import (STREAM_SHIFT, MultiStreamConfig, multi_stream_tracks, run_streams,
                                              streams_from_config)
from lart_stream.realtime.protocol import ActionsMessage
from lart_stream.realtime.publisher import Publisher, PublisherConfig
from lart_stream.realtime.records import Frame
from lart_stream.realtime.sources import SourceConfig, open_source
from lart_stream.realtime.subscriber import Subscriber
from lart_stream.realtime.tracking import TrackerConfig, build_tracker

SIZE = (160, 120)
FFMPEG = shutil.which("ffmpeg")


class Counting:
    """Wraps a stage and counts calls of one method (batching: one call per tick)."""

    def __init__(self, inner, method: str):
        self.inner, self.method, self.calls = inner, method, 0
        self.name = inner.name
        self.random_weights = inner.random_weights

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def counted(*a, **k):
            self.calls += 1
            return attr(*a, **k)
        return counted


def stages(streams: int):
    lifter = HMRLifter.from_config(HMRLifterConfig(size="tiny"))
    actions = ActionStage.from_config(ActionStageConfig(size="tiny", mode="causal", pose_only=True,
                                                        group_shift=STREAM_SHIFT if streams > 1 else 0,
                                                        **(multi_stream_tracks(streams) if streams > 1 else {})))
    return lifter, actions


def scripted(people: int, seed: int) -> ScriptedDetector:
    return ScriptedDetector(walking_boxes(people, 64, SIZE, seed=seed))


class PerStreamDetector:
    """Each stream its own scripted people (a frame's stream picks the script)."""

    name = "scripted"

    def __init__(self, scripts: dict[str, ScriptedDetector]):
        self.scripts = scripts

    def __call__(self, frame: Frame):
        return self.scripts[frame.stream_id](frame)


class SharedFramesDetector(PerStreamDetector):
    """PerStreamDetector that takes the tick's frames on the device (so the pipeline uploads them once and
    the lifter cuts its crops from that copy); checks each is its frame's pixels."""

    def __init__(self, scripts: dict[str, ScriptedDetector]):
        import torch

        super().__init__(scripts)
        self.image_device = torch.device("cpu")
        self.shared = 0  # frames that came with their device copy

    def detect_many(self, frames, device_images=None):
        assert device_images is not None and len(device_images) == len(frames)
        for f, im in zip(frames, device_images):
            assert np.array_equal(im.numpy(), f.image)
        self.shared += len(frames)
        return [self(f) for f in frames]


def collect(sub: Subscriber, until) -> list[ActionsMessage]:
    got = []
    while not until(got):
        msg = sub.recv(timeout=120)
        if isinstance(msg, ActionsMessage):
            got.append(msg)
    return got


@pytest.mark.parametrize("lengths", [(10, 7), (9, 12, 6)], ids=["two", "three"])
def test_file_streams_arrive_in_order_with_their_ids_batched(tmp_path: Path, lengths):
    ids = ["cam-a", "s1", "back.2"][: len(lengths)]
    clips = [write_video(tmp_path / f"{i}.avi", frames=n, size=SIZE) for i, n in zip(ids, lengths)]
    lifter, actions = stages(len(ids))
    lifter, actions = Counting(lifter, "lift_many"), Counting(actions, "update")
    publisher = Publisher(PublisherConfig(address="tcp://127.0.0.1:*"))
    detector = PerStreamDetector({i: scripted(2 + k, seed=k) for k, i in enumerate(ids)})
    pipeline = Pipeline(detector, lifter, None, actions, [publisher])
    trackers = [build_tracker("iou", TrackerConfig()) for _ in ids]
    sources = [open_source(SourceConfig(path=str(c), stream_id=i)) for c, i in zip(clips, ids)]
    with Subscriber(publisher.endpoint, ("actions",)) as everyone, \
            Subscriber(publisher.endpoint, ("actions",), streams=[ids[1]]) as one:
        time.sleep(0.3)  # the subscriptions reach the publisher (a late one would miss early frames)
        stats: list[dict] = []
        try:
            summary = run_streams(sources, ids, pipeline, trackers, MultiStreamConfig(stats_period_s=0.0),
                                  on_stats=stats.append)
            all_msgs = collect(everyone, lambda got: len(got) == sum(lengths))
            one_msgs = collect(one, lambda got: len(got) == lengths[1])
        finally:
            pipeline.close()
            for s in sources:
                s.close()
    for sid, n in zip(ids, lengths):
        mine = [m for m in all_msgs if m.stream == sid]
        assert [m.frame for m in mine] == list(range(n)), sid  # every frame, in order
        assert [m.seq for m in mine] == list(range(n))  # each stream's topic counts its own messages
        assert summary.streams[sid]["frames"] == n
        tracked = [t for m in mine for t in m.tracks]
        assert tracked and all(0 <= t.id < 1 << STREAM_SHIFT for t in tracked)  # the stream's own ids
        acted = [(m, t) for m in mine for t in m.tracks if t.action is not None]
        assert acted and all(t.action.frame <= m.frame for m, t in acted)
    assert {m.stream for m in one_msgs} == {ids[1]} and [m.frame for m in one_msgs] == list(range(lengths[1]))
    ticks = max(lengths)  # unpaced files: every stream has a frame in every tick until it ends
    assert lifter.calls == ticks and actions.calls == ticks  # HMR and LART once per tick, all streams
    assert summary.frames == sum(lengths) and summary.reason == "end of input"
    last = stats[-1]  # what the `stats` topic carries in `extra`: each stream's figures
    assert last["streams"] == len(ids)
    assert all({f"{i}.fps", f"{i}.dropped", f"{i}.latency_p50", f"{i}.latency_p99"} <= set(last) for i in ids)


@pytest.mark.parametrize("lengths", [(9, 6), (8, 11, 5)], ids=["two", "three"])
def test_inflight_two_and_three_give_the_messages_of_inflight_one(tmp_path: Path, lengths):
    """The GPU front of tick n+1 on its own thread while the back of tick n runs (inflight 2), or detect,
    lift and the back on three threads (inflight 3): the same results per stream (frames in order,
    tracks, action scores) as one tick at a time, also with the tick's frames uploaded once and shared
    by the detector and the lifter (a ring slot per tick in flight); max_frames still holds."""
    ids = ["a", "b", "c"][: len(lengths)]
    clips = [write_video(tmp_path / f"{i}.avi", frames=n, size=SIZE) for i, n in zip(ids, lengths)]

    def run(inflight: int, max_frames: int = 0, shared: bool = False) -> dict[str, list]:
        lifter, actions = stages(len(ids))
        kind = SharedFramesDetector if shared else PerStreamDetector
        detector = kind({i: scripted(2 + k, seed=k) for k, i in enumerate(ids)})
        pipeline = Pipeline(detector, lifter, None, actions, [])
        trackers = [build_tracker("iou", TrackerConfig()) for _ in ids]
        sources = [open_source(SourceConfig(path=str(c), stream_id=i)) for c, i in zip(clips, ids)]
        got: dict[str, list] = {i: [] for i in ids}

        def keep(results) -> None:
            for r in results:
                acts = r.actions
                got[r.frame.stream_id].append((
                    r.frame.index, r.tracks.track_id.tolist(),
                    None if acts is None else (acts.track_id.tolist(), acts.frame_index.tolist(), acts.scores.copy())))
        try:
            summary = run_streams(sources, ids, pipeline, trackers,
                                  MultiStreamConfig(inflight=inflight, max_frames=max_frames), on_results=keep)
        finally:
            pipeline.close()
            for src in sources:
                src.close()
        assert summary.errors == 0
        assert not shared or detector.shared == summary.frames  # every frame went up once, shared
        return got

    one = run(1)
    for inflight, shared in ((2, False), (3, False), (3, True)):  # shared: the lifter reads the device copies
        two = run(inflight, shared=shared)
        for sid, n in zip(ids, lengths):
            assert [m[0] for m in two[sid]] == list(range(n))
            assert len(one[sid]) == len(two[sid])
            for a, b in zip(one[sid], two[sid]):
                assert a[:2] == b[:2]
                assert (a[2] is None) == (b[2] is None)
                if a[2] is not None:
                    assert a[2][:2] == b[2][:2]
                    np.testing.assert_array_equal(a[2][2], b[2][2])  # the same computation, in the same order
            assert any(m[2] is not None and len(m[2][0]) for m in two[sid])
        capped = run(inflight, max_frames=4)
        assert all([m[0] for m in capped[sid]] == list(range(4)) for sid in ids)


def test_shared_lart_equals_one_stage_per_stream(tmp_path: Path):
    """Keyed by stream, the shared LART stage gives each stream exactly what a stage of its own gives
    (context stays within the stream); people, tracks and frames differ between the two streams."""
    clips = [write_video(tmp_path / f"{i}.avi", frames=12, size=SIZE) for i in range(2)]
    scripts = {"a": scripted(3, seed=1), "b": scripted(2, seed=2)}

    def scores(results) -> dict:
        return {(r.frame.stream_id, int(r.frame.index), int(t)): s for r in results if r.actions is not None
                for t, s in zip(r.actions.track_id, r.actions.scores)}

    lifter, shared = stages(2)
    got: list = []
    pipeline = Pipeline(PerStreamDetector(scripts), lifter, None, shared, [])
    run_streams([open_source(SourceConfig(path=str(c), stream_id=i)) for c, i in zip(clips, "ab")], ["a", "b"],
                pipeline, [build_tracker("iou", TrackerConfig()) for _ in range(2)], on_results=got.extend)
    want = {}
    for clip, sid in zip(clips, "ab"):
        _, alone = stages(1)
        single = Pipeline(scripts[sid], lifter, build_tracker("iou", TrackerConfig()), alone, [])
        want.update(scores([single.process(f) for f in open_source(SourceConfig(path=str(clip), stream_id=sid))]))
    have = scores(got)
    assert have.keys() == want.keys() and len(have) > 20
    # Same float32 operations; only the batch differs (rows of 2 streams vs 1), which may reorder the
    # reductions: bounded by float32 rounding over the model's sums (width x eps, scores in [0, 1]).
    tol = 64 * np.finfo(np.float32).eps
    assert max(float(np.abs(have[k] - want[k]).max()) for k in have) <= tol


def test_context_tracks_come_from_the_same_stream():
    from lart_stream.realtime.records import People, Tracks

    stage = ActionStage.from_config(ActionStageConfig(size="tiny", mode="causal", pose_only=True, max_people=3,
                                                      group_shift=STREAM_SHIFT, **multi_stream_tracks(2)))
    ids = np.array([1, 2, 3, (1 << STREAM_SHIFT) | 1, (1 << STREAM_SHIFT) | 5], np.int64)
    n = len(ids)
    tracks = Tracks(ids, np.zeros((n, 4)), np.full(n, 2), np.zeros(n), np.ones(n), np.zeros(n), np.arange(n))
    people = People(np.zeros((n, 4)), np.ones(n), pose_vector=np.zeros((n, 229), np.float32))
    stage.update(tracks, people, 0)
    seq_ids, slots, _ = stage.causal_inputs(tracks, 1)
    track_of_row = {row: tid for tid, row in stage._row_of.items()}
    for tid, row in zip(seq_ids, slots):
        context = [track_of_row[r] for r in row[1:] if r >= 0]
        assert context and all(c >> STREAM_SHIFT == tid >> STREAM_SHIFT for c in context)


class FedStream:
    """ffmpeg serving MJPEG over HTTP on loopback from JPEGs the test writes to its stdin: the test
    decides when frames flow and when the stream stalls (connection open, no frames)."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/feed"
        self.proc = subprocess.Popen(
            [FFMPEG, "-loglevel", "error", "-hide_banner", "-f", "image2pipe",
             "-c:v", "mjpeg", "-framerate", "10", "-i", "-", "-c:v", "copy", "-f", "mpjpeg", "-listen", "1",
             self.url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.stall = threading.Event()
        self.stop = threading.Event()
        import cv2

        rng = np.random.default_rng(3)
        image = rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
        self.jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        while not self.stop.is_set():
            if not self.stall.is_set():
                try:
                    self.proc.stdin.write(self.jpeg)
                    self.proc.stdin.flush()
                except (BrokenPipeError, ValueError):
                    return
            self.stop.wait(0.05)

    def close(self) -> None:
        self.stop.set()
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_a_stalled_live_stream_does_not_hold_up_the_others(tmp_path: Path):
    clips = [write_video(tmp_path / f"{i}.avi", frames=40, size=SIZE) for i in range(2)]
    ids = ["f0", "f1", "live"]
    server = FedStream(free_port())
    stop = threading.Event()
    sources = []
    try:
        deadline = time.monotonic() + 60
        while True:  # ffmpeg listens once it has read its first input frames
            try:
                live = open_source(SourceConfig(path=server.url, stream_id="live"), stop)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # files paced at 20 fps: they outlast the live stream's first frames
        sources = [open_source(SourceConfig(path=str(c), stream_id=i, realtime=True, fps=20.0), stop)
                   for c, i in zip(clips, ids)] + [live]
        lifter, actions = stages(3)
        publisher = Publisher(PublisherConfig(address="tcp://127.0.0.1:*"))
        detector = PerStreamDetector({i: scripted(2, seed=k) for k, i in enumerate(ids)})
        pipeline = Pipeline(detector, lifter, None, actions, [publisher])
        trackers = [build_tracker("iou", TrackerConfig()) for _ in ids]
        live_frames: list[int] = []
        live_seen = threading.Condition()
        after_stall: dict[str, list[int]] = {"f0": [], "f1": []}

        def watch(results) -> None:
            for r in results:
                if r.frame.stream_id == "live":
                    with live_seen:
                        live_frames.append(r.frame.index)
                        live_seen.notify_all()
                elif server.stall.is_set():
                    after_stall[r.frame.stream_id].append(r.frame.index)
            if all(after_stall[k] and after_stall[k][-1] == 39 for k in after_stall):
                stop.set()  # both files done: the live stream would run forever

        with Subscriber(publisher.endpoint, ("actions",), streams=["live"]) as sub:
            runner = threading.Thread(target=lambda: watch_run.append(run_streams(
                sources, ids, pipeline, trackers, MultiStreamConfig(gather_ms=40, stall_s=0.5), stop=stop,
                on_results=watch)))
            watch_run: list = []
            runner.start()
            with live_seen:
                assert live_seen.wait_for(lambda: len(live_frames) >= 3, timeout=120), "no live frames"
            server.stall.set()  # the camera stops sending; its connection stays open
            runner.join(timeout=180)
            assert not runner.is_alive(), "the stalled stream held up the others"
            received = collect(sub, lambda got: len(got) == len(live_frames))
        pipeline.close()
    finally:
        stop.set()
        server.close()
        for s in sources:
            s.close()
    summary = watch_run[0]
    assert summary.reason == "stopped"
    for k in ("f0", "f1"):
        assert summary.streams[k]["frames"] == 40 and after_stall[k] == sorted(after_stall[k])
        assert len(after_stall[k]) > 5  # they kept going while the live stream was silent
    assert [m.frame for m in received] == live_frames == sorted(live_frames)
    assert {m.stream for m in received} == {"live"}


def test_cli_several_sources_and_streams_table(tmp_path: Path):
    a = write_video(tmp_path / "a.avi", frames=4, size=SIZE)
    b = write_video(tmp_path / "b.avi", frames=4, size=SIZE)
    out = tmp_path / "summary.json"
    r = run_cli("--source", str(a), "--source", f"door={b}", "--max-frames", "3", "--publish", "none",
                "--device", "cpu", "--threads", "1", "--summary-json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert {k: v["frames"] for k, v in summary["streams"].items()} == {"s0": 3, "door": 3}
    assert summary["reason"] == "max frames" and "door" in r.stderr  # the per-stream table

    config = tmp_path / "streams.toml"
    config.write_text(f'[source]\nrealtime = false\n[[streams]]\nid = "left"\npath = "{a}"\n'
                      f'[[streams]]\nid = "right"\npath = "{b}"\n')
    r = run_cli("--config", str(config), "--print-config")
    assert r.returncode == 0 and 'id = "left"' in r.stdout and 'id = "right"' in r.stdout, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--source", "x=a.avi", "--source", "x=b.avi"], "stream id 'x' given twice"),
    (["--camera", "front", "--source", "b.avi"], "expected a camera index"),
    (["--source", "a.avi", "--gpus", "0,x"], "--gpus"),
    (["--source", "a.avi", "--gpus", "0", "--workers", "2"], "either --gpus or --workers"),
])
def test_cli_bad_streams_are_one_line_errors(args, message):
    r = run_cli(*args, "--publish", "none", timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_streams_table_errors_name_the_entry():
    base = SourceConfig()
    with pytest.raises(ValueError, match=r"streams\[1\] \(b\): give exactly one of path or camera"):
        streams_from_config([{"id": "a", "path": "x"}, {"id": "b"}], base, "f.toml")
    with pytest.raises(ValueError, match="unknown setting colour"):
        streams_from_config([{"id": "a", "path": "x", "colour": 1}], base, "f.toml")
    got = streams_from_config([{"path": "x", "fps": 15}, {"id": "cam", "camera": 2}], base, "f.toml")
    assert [(s.stream_id, s.path, s.camera, s.fps) for s in got] == [("s0", "x", None, 15), ("cam", None, 2, 0.0)]


def test_runtime_imports_without_ray():
    code = ("import sys, importlib.abc\n"
            "class NoRay(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'ray' or name.startswith('ray.'): raise ImportError('no ray here')\n"
            "sys.meta_path.insert(0, NoRay())\n"
            "import lart_stream.realtime.cli, lart_stream.realtime.multistream, lart_stream.realtime.workers\n"
            "import lart_stream.realtime.cluster\n"
            "from lart_stream.realtime.cluster import main\n"
            "import tempfile, os\n"
            "f = tempfile.NamedTemporaryFile('w', suffix='.toml', delete=False)\n"
            "f.write('[[streams]]\\nid = \"a\"\\npath = \"x.avi\"\\n'); f.close()\n"
            "print('rc', main(['--streams', f.name]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "rc 2" in r.stdout and "Ray is not installed" in r.stderr, r.stderr


@pytest.mark.parametrize("fused, rows_upload, buckets", [
    (False, False, None), (False, True, None), (True, True, None), (True, True, (1, 2, 3))],
    ids=["eager-whole-frame", "eager-rows-only", "fused", "fused-chunks"])
def test_lift_many_equals_one_frame_at_a_time(fused, rows_upload, buckets):
    """Crops of several frames in one network call give each frame's People as the one-frame eager path.
    rows-only: the CUDA path's upload of just the rows the crops read, into a buffer holding an older
    frame elsewhere (the blurred large box reads the most rows). fused: crops cut into the shared
    buffer per frame, the network graph of the total's bucket (fused-chunks: 4 people in chunks of
    3, padded to the bucket); its per-part timing names every part."""
    rng = np.random.default_rng(0)
    cfg = HMRLifterConfig(size="tiny", fused=fused)
    lifter = HMRLifter.from_config(cfg if buckets is None else dataclasses.replace(cfg, buckets=buckets, max_batch=3))
    lifter.rows_upload = rows_upload
    if fused:
        lifter.profile()

    def frame(k: int, size) -> Frame:
        return Frame(k, 0.0, rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), f"s{k}")

    from lart_stream.realtime.records import Detections

    def boxes(*rows) -> Detections:
        b = np.asarray(rows, np.float32).reshape(-1, 4)
        return Detections(b, np.ones(len(b)), np.zeros(len(b)))

    frames = [frame(0, (160, 120)), frame(1, (200, 90)), frame(2, (640, 1200))]
    dets = [boxes([10, 10, 60, 100], [50, 20, 120, 118]), boxes(), boxes([5, 600, 400, 1190], [300, 40, 330, 90])]
    for _ in range(2):  # the second time the row buffers hold the first round's frames outside the rows
        many = lifter.lift_many(frames, dets)
        frames = [Frame(f.index, 0.0, rng.integers(0, 255, f.image.shape, dtype=np.uint8), f.stream_id)
                  for f in frames]
    many = lifter.lift_many(frames, dets)
    if fused:
        assert set(lifter.last_parts()) == {"boxes", "upload", "crops", "network+post", "d2h"}
    for f, d, p in zip(frames, dets, many):
        one = lifter.eager(f, d)
        assert len(p) == len(d) and p.image_size == f.size
        for name in ("pose_vector", "cam_t", "location", "appearance"):
            a, b = getattr(p, name), getattr(one, name)
            # the same float32 operations on the same pixels; batching may reorder the network's sums
            scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
            assert a.shape == b.shape and (not a.size or np.abs(a - b).max() <= 1e3 * np.finfo(np.float32).eps * scale)


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_lift_many_reads_shared_device_frames(fused):
    """Given the frames already on the device (realtime/device_frames.py), lift_many cuts its crops from
    them and uploads nothing: the frames handed in carry blank pixels, the People are still those of
    the real pixels, bit for bit (one frame too)."""
    from lart_stream.realtime.device_frames import FrameUploader
    from lart_stream.realtime.records import Detections

    rng = np.random.default_rng(1)
    lifter = HMRLifter.from_config(HMRLifterConfig(size="tiny", fused=fused))
    assert str(lifter.image_device) == "cpu"
    frames = [Frame(k, 0.0, rng.integers(0, 255, (h, w, 3), dtype=np.uint8), f"s{k}")
              for k, (w, h) in enumerate([(160, 120), (200, 90), (640, 1200)])]
    boxes = [[[10, 10, 60, 100], [50, 20, 120, 118]], [], [[5, 600, 400, 1190], [300, 40, 330, 90]]]
    dets = [Detections(np.asarray(b, np.float32).reshape(-1, 4), np.ones(len(b)), np.zeros(len(b))) for b in boxes]
    blank = [Frame(f.index, 0.0, np.zeros_like(f.image), f.stream_id) for f in frames]
    uploader = FrameUploader("cpu", depth=2)
    for idx in ([0, 1, 2], [2]):
        ref = lifter.lift_many([frames[i] for i in idx], [dets[i] for i in idx])
        shared = uploader.upload([frames[i].image for i in idx], keys=idx)
        got = lifter.lift_many([blank[i] for i in idx], [dets[i] for i in idx], device_images=shared.images)
        assert sum(len(p) for p in got) == sum(len(dets[i]) for i in idx) > 0
        for a, b in zip(got, ref):
            for name in ("pose_vector", "cam_t", "location", "appearance"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_frame_uploader_only_for_one_device_both_read():
    """The pipeline uploads frames once for both stages only when both take them, on one device."""
    from types import SimpleNamespace

    import torch

    from lart_stream.realtime.device_frames import frame_uploader

    cpu = SimpleNamespace(image_device=torch.device("cpu"))
    assert len(frame_uploader(cpu, cpu, depth=3).slots) == 3
    assert frame_uploader(cpu, None) is None  # no lifter
    assert frame_uploader(SimpleNamespace(), cpu) is None  # a detector that takes numpy frames only
    assert frame_uploader(cpu, SimpleNamespace(image_device=torch.device("meta"))) is None
