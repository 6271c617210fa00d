"""ActionStage's static-buffer (CUDA-graph) path against its eager path, frame after frame, on the CPU.

The capture is swapped for an eager stand-in (as tests/test_backends.py does for TorchBackend), so
everything else of the GPU path runs here: packed host inputs, one upload, bucket padding, the
in-graph ring / K/V-cache / probability-ring writes at device-side indices, pooling, read-back of
the scores, slot moves when tracks vanish and slot clearing when they come. Also the host side of a
frame: state cached between frames and reset(), the staging buffers' hand-over between frames (with
stand-in CUDA events), the torch calls a steady-state frame makes, and a failed capture.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

import test_actions
from lart_stream.realtime import backends as B
from lart_stream.realtime.actions import ActionStage, ActionStageConfig
from lart_stream.realtime.records import People, Tracks
from test_actions import scripted_stream, stage

# tracks come and go (slots freed and reused, sequences swap-removed), 9 at once at steps 35-36
# (one more than max_tracks), nobody at steps 45-46, then new tracks
SPANS = {10: (0, 45), 11: (2, 18), 12: (5, 30), 13: (12, 25), 14: (20, 40), 15: (14, 28), 16: (26, 45),
         17: (31, 38), 18: (33, 45), 19: (30, 31), 20: (35, 37), 21: (35, 37), 22: (35, 37), 23: (35, 44),
         24: (47, 56), 25: (48, 56)}
STEPS = 56


class EagerGraph(B._Graph):
    """B._Graph's static-buffer loading; the capture-time warm-up calls and every replay run eagerly."""

    shapes: list[tuple[int, ...]] = []

    def __init__(self, fn, static_in, axes, warmup: int = 3, pool=None) -> None:  # noqa: ANN001
        self.fn, self.static_in, self.axes = fn, static_in, list(axes)
        for _ in range(warmup):  # as the real capture: state written here must not drift
            fn(*static_in)
        self.static_out = fn(*static_in)
        EagerGraph.shapes.append(tuple(static_in[-1].shape))

    def launch(self) -> None:
        for dst, src in zip(self.static_out, self.fn(*self.static_in)):
            dst.copy_(src)  # a replay writes into the same output buffers


@pytest.fixture(autouse=True)
def eager_capture(monkeypatch):
    monkeypatch.setattr(ActionStage, "_graph_cls", EagerGraph)
    monkeypatch.setattr(test_actions, "SPANS", SPANS)
    EagerGraph.shapes = []


def twins(mode: str, **kw) -> tuple[ActionStage, ActionStage]:
    """(eager, static) stages sharing one model."""
    eager = stage(mode, cuda_graphs=False, **kw)
    static = ActionStage(eager.model, dataclasses.replace(eager.cfg, cuda_graphs=True), eager.random_weights)
    assert not eager.static and static.static
    return eager, static


def assert_same_stream(eager: ActionStage, static: ActionStage, atol: float = 2e-6) -> tuple[int, set[int]]:
    """Runs both on the stream; (predictions published, live-track counts met)."""
    published, live = 0, set()
    for tau, (tracks, people, frame_index, _) in enumerate(scripted_stream(STEPS)):
        if tau == 20:  # a step without 3D input passes through both
            e = eager.update(tracks, People(people.xyxy, people.confidence), frame_index)
            s = static.update(tracks, People(people.xyxy, people.confidence), frame_index)
            assert len(e) == len(s) == 0
        e = eager.update(tracks, people, frame_index)
        s = static.update(tracks, people, frame_index)
        assert s.track_id.tolist() == e.track_id.tolist(), f"step {tau}"
        assert s.frame_index.tolist() == e.frame_index.tolist(), f"step {tau}"
        np.testing.assert_allclose(s.scores, e.scores, rtol=0, atol=atol, err_msg=f"step {tau}")
        assert s.random_weights == e.random_weights
        published += len(e)
        live.add(len(static._row_of))
    return published, live - {0}


POW2 = dict(graph_buckets=(1, 2, 4))  # + max_tracks 8: live counts 3 and 5-7 run padded


@pytest.mark.parametrize("mode,kw", [
    ("causal", {}),
    ("causal", dict(POW2, stride=2, attention="sdpa")),
    ("causal", dict(POW2, pose_only=True)),
    ("window", {}),
    ("window", dict(POW2, stride=3, attention="sdpa")),
    ("window", dict(POW2, pose_only=True, lookahead=0)),
])
def test_static_path_equals_eager_path_frame_after_frame(mode: str, kw: dict, caplog) -> None:
    eager, static = twins(mode, **kw)
    with caplog.at_level(logging.WARNING):
        published, live = assert_same_stream(eager, static)
    assert published > 110 // kw.get("stride", 1)  # the comparison really ran, on many tracks
    assert "gets no predictions (raise max_tracks)" in caplog.text  # 9 tracks > max_tracks=8 at step 35
    # one graph per bucket met, never recaptured
    sizes = sorted(s[0] for s in EagerGraph.shapes)  # batch axis first
    if "graph_buckets" in kw:
        assert sizes == [1, 2, 4, 8] and static.buckets == (1, 2, 4, 8)
    else:  # a graph per live count met
        assert sizes == sorted(live) and static.buckets == tuple(range(1, 9)) and len(live) >= 6


def test_warmup_captures_every_bucket_and_leaves_no_trace() -> None:
    eager, static = twins("causal", **POW2)
    k_ptr = static._k.data_ptr()
    static.warmup()
    assert sorted(s[0] for s in EagerGraph.shapes) == [1, 2, 4, 8]
    # warm-up wrote into the cache (all-masked padding rows); reset cleared it in place
    assert static._k.data_ptr() == k_ptr and not static._k.any() and torch.isinf(static._kb).all()
    assert static._tau == 0 and static._row_of == {}
    assert_same_stream(eager, static)
    assert len(EagerGraph.shapes) == 4  # the stream only replayed


def test_window_warmup_and_reset_mid_stream() -> None:
    eager, static = twins("window", **POW2)
    static.warmup()
    stream = list(scripted_stream(12))
    for tracks, people, f, _ in stream:
        eager.update(tracks, people, f)
        static.update(tracks, people, f)
    ring = static._pose.data_ptr()
    eager.reset()
    static.reset()
    assert static._pose.data_ptr() == ring and not static._pose.any() and (static._step_of == -1).all()
    assert_same_stream(eager, static)
    assert len(EagerGraph.shapes) == 4


def test_bfloat16_static_path_close_to_eager() -> None:
    eager, static = twins("causal", dtype="bfloat16")
    assert static.dtype == torch.bfloat16
    assert_same_stream(eager, static, atol=1e-4)  # same kernels on the CPU: bf16 rounding is not at stake


def test_static_causal_keeps_no_feature_rings_and_full_capacity_cache() -> None:
    _, static = twins("causal")
    assert static._pose is None and static._cap == static.cfg.max_tracks
    assert static._k.shape[1] == static.cfg.max_tracks


def test_cpu_default_is_eager_and_describe() -> None:
    ActionStage._graph_cls = None  # undone by the fixture's monkeypatch
    st = ActionStage.from_config(ActionStageConfig(mode="window"))
    assert st.cfg.cuda_graphs and not st.static
    assert "eager" in st.describe()
    st.warmup()  # no-op on the eager path
    empty = People(np.zeros((0, 4)), np.zeros(0), pose_vector=np.zeros((0, 229), np.float32))
    assert len(st.update(Tracks.empty(), empty, 0)) == 0


def test_buckets_cover_max_tracks() -> None:
    def buckets(**kw) -> tuple[int, ...]:
        return ActionStage.from_config(ActionStageConfig(**kw)).buckets

    assert buckets(max_tracks=5) == (1, 2, 3, 4, 5)
    assert buckets(max_tracks=1) == (1,)
    assert buckets(max_tracks=16, graph_buckets=(1, 2, 4, 8)) == (1, 2, 4, 8, 16)
    assert buckets(max_tracks=6, graph_buckets=(8, 2)) == (2, 6)
    with pytest.raises(ValueError, match="graph_buckets"):
        ActionStageConfig(graph_buckets=(0, 4))


@pytest.mark.parametrize("mode", ["causal", "window"])
@pytest.mark.parametrize("static", [False, True])
def test_reset_mid_stream_forgets_everything(mode: str, static: bool) -> None:
    # per-track state derived from the set of tracks is cached between frames: after reset() the stage
    # must behave as a fresh one, also when the next frame has the same tracks as the last one
    eager, fresh = twins(mode, **POW2)
    if not static:
        fresh = ActionStage(eager.model, eager.cfg, eager.random_weights)
    used = ActionStage(fresh.model, fresh.cfg, fresh.random_weights)
    stream = list(scripted_stream(STEPS))
    for tracks, people, f, _ in stream[:24]:
        used.update(tracks, people, f)
    used.reset()
    published = 0
    for tau, (tracks, people, f, _) in enumerate(stream[23:]):  # starts with the frame seen last
        a, b = used.update(tracks, people, f), fresh.update(tracks, people, f)
        assert a.track_id.tolist() == b.track_id.tolist(), f"step {tau}"
        np.testing.assert_array_equal(a.scores, b.scores)
        published += len(a)
    assert published > 50


class FakeEvent:
    """A CUDA event on a model stream: ops run in order; synchronize() completes all before record()."""

    ops = 0  # ops enqueued so far
    done = 0  # ops known complete

    def __init__(self) -> None:
        self.at = 0

    def record(self) -> None:
        self.at = FakeEvent.ops

    def synchronize(self) -> None:
        FakeEvent.done = max(FakeEvent.done, self.at)


def test_staging_hands_out_no_host_buffer_a_copy_may_still_read() -> None:
    from lart_stream.realtime.actions import _Staging

    st = _Staging(8, [8], (2, 3), torch.device("cpu"))
    st._copied, st._done = [FakeEvent(), FakeEvent()], FakeEvent()
    FakeEvent.ops = FakeEvent.done = 0
    last_upload = [0, 0]  # op id of the last upload from each host buffer
    upload, download = st.upload, st.download

    def counted_upload(n: int, wait: bool) -> None:
        FakeEvent.ops += 1
        last_upload[st._i] = FakeEvent.ops
        upload(n, wait)

    def counted_download(out: torch.Tensor, rows: int) -> np.ndarray:
        FakeEvent.ops += 1
        return download(out, rows)

    rng = np.random.default_rng(0)
    waits = 0
    for _ in range(200):  # frames that publish (upload + download) or not (upload only), at random
        buf = st.next()
        assert last_upload[st._i] <= FakeEvent.done, "host buffer handed out while its upload may run"
        buf[:] = 1
        publish = rng.random() < 0.5
        counted_upload(8, wait=publish)
        if publish:
            counted_download(torch.zeros(2, 3), 2)
            waits += 1
    assert 50 < waits < 150


class CountingGraph(EagerGraph):
    """EagerGraph whose replays are not counted by a CountCalls mode."""

    counter = None

    def launch(self) -> None:
        c = CountingGraph.counter
        if c is None:
            return super().launch()
        c.paused = True
        try:
            super().launch()
        finally:
            c.paused = False


def test_static_frame_touches_torch_only_to_upload_replay_and_download(monkeypatch) -> None:
    from torch.overrides import TorchFunctionMode

    class CountCalls(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.paused, self.calls = False, []

        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if not self.paused:
                self.calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(ActionStage, "_graph_cls", CountingGraph)
    monkeypatch.setattr(CountingGraph, "counter", None)
    eager, static = twins("causal", stride=2)
    static.warmup()
    counted = 0
    prev: set[int] | None = None
    for tau, (tracks, people, f, _) in enumerate(scripted_stream(STEPS)):
        e = eager.update(tracks, people, f)
        now = set(tracks.track_id.tolist())
        CountingGraph.counter = counter = CountCalls()
        with counter:
            s = static.update(tracks, people, f)
        assert s.track_id.tolist() == e.track_id.tolist()
        np.testing.assert_allclose(s.scores, e.scores, rtol=0, atol=2e-6)
        if now == prev and now:  # the same tracks as the last frame: no membership work
            want = ["copy_", "copy_"] if tau % 2 == 0 else ["copy_"]  # upload (+ download when publishing)
            assert counter.calls == want, f"step {tau}: {counter.calls}"
            counted += 1
        prev = now
    assert counted > 25


def test_failed_capture_runs_the_bucket_eagerly_on_the_same_buffers(monkeypatch, caplog) -> None:
    class Failing(EagerGraph):
        def __init__(self, fn, static_in, axes, warmup: int = 3, pool=None) -> None:  # noqa: ANN001
            if static_in[-1].shape[0] == 2:
                raise RuntimeError("operation not permitted when stream is capturing")
            super().__init__(fn, static_in, axes, warmup, pool)

    monkeypatch.setattr(ActionStage, "_graph_cls", Failing)
    eager, static = twins("causal", **POW2)
    with caplog.at_level(logging.WARNING):
        assert_same_stream(eager, static)
    assert "capture of bucket 2 failed" in caplog.text
    assert sorted(s[0] for s in EagerGraph.shapes) == [1, 4, 8]


def test_staging_counts_the_wall_time_of_its_event_waits_and_update_reports_it(monkeypatch) -> None:
    """wait_s sums the event waits (download, and next() on a buffer whose upload may still run), on a
    stand-in clock that advances only inside a wait; update() starts it afresh; sync_ms is None on the
    eager path, which has no waits of its own."""
    import types

    from lart_stream.realtime import actions as A

    clock = [0.0]

    class SlowEvent(FakeEvent):
        def synchronize(self) -> None:
            clock[0] += 0.002
            super().synchronize()

    monkeypatch.setattr(A, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    st = A._Staging(8, [8], (2, 3), torch.device("cpu"))
    st._copied, st._done = [SlowEvent(), SlowEvent()], SlowEvent()
    st.next()
    st.upload(8, wait=True)
    st.download(torch.zeros(2, 3), 2)
    assert st.wait_s == pytest.approx(0.002)
    for _ in range(3):  # the third next() hands back the buffer of the first no-wait upload: it waits
        st.next()
        st.upload(8, wait=False)
    assert st.wait_s == pytest.approx(0.004)

    eager, static = twins("causal")
    tracks, people, frame_index, _ = next(iter(scripted_stream(2)))
    static._staging.wait_s = 1.0
    static.update(tracks, people, frame_index)
    assert static.sync_ms == 0.0  # no device events on the CPU: nothing waited, the old sum cleared
    eager.update(tracks, people, frame_index)
    assert eager.sync_ms is None
