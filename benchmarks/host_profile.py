"""Host (Python/numpy) work per frame of each stage, on the CPU, without the models' arithmetic.

    python benchmarks/host_profile.py                        # writes benchmarks/results/host_profile.{json,md}
    python benchmarks/host_profile.py --frames 200 --top 8 --out-dir /tmp/hp

What a stage's thread spends on the host around its GPU work, at N people (default 5), with tiny
models and the GPU work replaced by stand-ins that do nothing, so what remains is what the GIL sees:

- ``detect``: the ONNX detector's host part on the torch backend (letterbox on the device): the frame
  copied into the staging buffer, decode of a YOLOv8-shaped [1, 84, 8400] output with N people's
  anchors (plus near-duplicates for NMS), NMS, undo letterbox. Not the output's copy to the host.
- ``lift``: the fused HMR path (realtime/lifting.py ``_FusedStage.__call__``): box geometry, staging of
  the frame rows the crops read, box rows, output unpacking; the crop and network steps are stand-ins.
- ``track``: ``tracker.update`` (iou and phalp) on a steady synthetic scene with HMR-shaped fields.
- ``actions``: ``ActionStage.update`` (causal, tiny LART, the static-buffer path of CUDA) with a graph
  stand-in whose replay does nothing: the per-frame bookkeeping, packing and read-back only.
- ``publish``: ``Publisher.send`` (message building, msgpack, hand-off), 60 scores per track.

Each part: per-call wall and thread-CPU ms (p50, mean) and cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from lart_stream.benchmarks.report import cpu_name, write_table_and_json


def timed(fn: Callable[[int], object], frames: int, warmup: int, top: int) -> dict:
    """Calls fn(i) for warm-up then timed frames: wall and thread CPU per call, and a cProfile run."""
    for i in range(warmup):
        fn(i)
    wall, cpu = [], []
    for i in range(warmup, warmup + frames):
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        fn(i)
        cpu.append((time.thread_time_ns() - c) / 1e6)
        wall.append((time.perf_counter_ns() - t) / 1e6)
    prof = cProfile.Profile()
    prof.enable()
    for i in range(warmup + frames, warmup + 2 * frames):
        fn(i)
    prof.disable()
    return {"wall_ms": _stats(wall), "cpu_ms": _stats(cpu), "top": _top(prof, frames, top)}


def _stats(v: list[float]) -> dict:
    a = np.asarray(v)
    return {"p50": round(float(np.median(a)), 4), "mean": round(float(a.mean()), 4),
            "p95": round(float(np.percentile(a, 95)), 4)}


def _top(prof: cProfile.Profile, frames: int, top: int) -> list[list]:
    """[function, own µs per frame, cumulative µs per frame, calls per frame] by own time."""
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, name), (cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append([where, round(tt / frames * 1e6, 1), round(ct / frames * 1e6, 1), round(nc / frames, 1)])
    rows.sort(key=lambda r: -r[1])
    return rows[:top]


# ---------------------------------------------------------------------------------------------- parts

def scene(people: int, frames: int):
    from lart_stream.realtime.tracking.synthetic import make_scene

    return make_scene("steady", seed=0, n_people=people, n_frames=frames, p_miss=0.0, fp_rate=0.0)


def part_track(kind: str, people: int, n: int) -> Callable[[int], object]:
    from lart_stream.realtime.tracking import TrackerConfig, build_tracker

    sc = scene(people, n)
    tracker = build_tracker(kind, TrackerConfig())
    return lambda i: tracker.update(sc.frames[i].people, sc.frames[i].index)


def track_results(people: int, n: int) -> list:
    """FrameResults of a steady scene with 60 action scores per track (what the publisher sends)."""
    from lart_stream.realtime.actions import AVA_EVAL_IDS, AVA_EVAL_NAMES
    from lart_stream.realtime.records import ActionPredictions, Detections, Frame, FrameResult
    from lart_stream.realtime.tracking import TrackerConfig, build_tracker

    sc = scene(people, n)
    tracker = build_tracker("iou", TrackerConfig())
    rng = np.random.default_rng(0)
    image = np.zeros((8, 8, 3), np.uint8)
    out = []
    for f in sc.frames:
        tracks = tracker.update(f.people, f.index)
        k = len(tracks)
        actions = ActionPredictions(tracks.track_id.astype(np.int64), np.full(k, f.index, np.int64),
                                    rng.random((k, len(AVA_EVAL_IDS)), dtype=np.float32), AVA_EVAL_IDS,
                                    AVA_EVAL_NAMES, True)
        out.append(FrameResult(Frame(f.index, time.monotonic(), image),
                               Detections(f.people.xyxy, f.people.confidence, np.zeros(len(f.people), np.int32)),
                               f.people, tracks, actions, {"detect": 1.0, "lift": 2.0, "track": 0.3}, time.monotonic()))
    return out


def part_publish(people: int, n: int, closers: list) -> Callable[[int], object]:
    from lart_stream.realtime.publisher import Publisher, PublisherConfig

    results = track_results(people, n)
    publisher = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0.0))
    closers.append(publisher.close)
    return lambda i: publisher.send(results[i])


class NullGraph:
    """ActionStage's graph stand-in: the outputs' shapes once, then replays that do nothing."""

    def __init__(self, fn, static_in, axes, warmup: int = 3, pool=None) -> None:  # noqa: ANN001
        self.static_out = fn(*static_in)

    def launch(self) -> None:
        pass


def part_actions(people: int, n: int) -> Callable[[int], object]:
    import torch

    from lart_stream.realtime.actions import ActionStage, ActionStageConfig
    from lart_stream.realtime.tracking import TrackerConfig, build_tracker

    torch.set_num_threads(1)
    ActionStage._graph_cls = NullGraph
    stage = ActionStage.from_config(ActionStageConfig(size="tiny", mode="causal", pose_only=False,
                                                      max_tracks=max(16, people), cuda_graphs=True))
    stage.warmup()
    sc = scene(people, n)
    tracker = build_tracker("iou", TrackerConfig())
    frames = [(tracker.update(f.people, f.index), f.people, f.index) for f in sc.frames]
    return lambda i: stage.update(*frames[i])


def part_lift(people: int, n: int, size: tuple[int, int]) -> Callable[[int], object]:
    import torch

    from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
    from lart_stream.realtime.records import Detections, Frame
    from lart_stream.benchmarks.scripted import walking_boxes

    torch.set_num_threads(1)
    lifter = HMRLifter.from_config(HMRLifterConfig(seed=1, fused=True, max_batch=16))
    fused = lifter._fused
    packed = {}

    class Stub:  # the graph replay: nothing computed, the outputs' buffer handed back
        def __init__(self, out):
            self.out = out

        def __call__(self):
            return self.out

    fused._prep_step = lambda B, nb, R: Stub(None)  # type: ignore[method-assign]
    def net_step(B: int) -> Stub:
        if B not in packed:
            packed[B] = Stub(torch.zeros(B, fused.width))
        return packed[B]

    fused._net_step = net_step  # type: ignore[method-assign]
    boxes = walking_boxes(people, n, size, seed=1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return lambda i: lifter(Frame(i, 0.0, image), Detections(boxes[i, :, :4], boxes[i, :, 4], np.zeros(people, np.int32)))


def part_detect(people: int, n: int, size: tuple[int, int]) -> Callable[[int], object]:
    from lart_stream.realtime.onnx_detector import OnnxDetectorConfig, letterbox, postprocess
    from lart_stream.benchmarks.scripted import walking_boxes

    cfg = OnnxDetectorConfig(onnx_path="unused.onnx")
    boxes = walking_boxes(people, n, size, seed=1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    outputs = []
    for i in range(n):  # YOLOv8 [1, 84, 8400]: each person 6 overlapping anchors, the rest low scores
        out = rng.random((1, 84, 8400), dtype=np.float32) * 0.05
        _, lb = letterbox(image[:8, :8], (640, 640))
        scale = 640 / max(size)
        pad_y = (640 - round(size[1] * scale)) // 2
        for p, b in enumerate(boxes[i]):
            cx, cy = (b[0] + b[2]) / 2 * scale, (b[1] + b[3]) / 2 * scale + pad_y
            w, h = (b[2] - b[0]) * scale, (b[3] - b[1]) * scale
            for k in range(6):
                a = 100 * p + k
                out[0, :4, a] = (cx + k, cy - k, w, h)
                out[0, 4, a] = 0.9 - 0.05 * k
        outputs.append(out)

    _, lb = letterbox(image, (640, 640))
    staging = np.empty_like(image)

    def run(i: int):
        np.copyto(staging, image)  # DeviceLetterbox's host share: the frame into the pinned staging buffer
        return postprocess(outputs[i], "yolo", lb, size, cfg)

    return run


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--people", type=int, default=5)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--parts", default="detect,lift,track-iou,track-phalp,actions,publish")
    p.add_argument("--out-dir", default="benchmarks/results")
    args = p.parse_args(argv)
    size = tuple(int(x) for x in args.size.split("x"))
    n, total = args.people, args.warmup + 2 * args.frames
    closers: list = []
    makers = {"detect": lambda: part_detect(n, total, size), "lift": lambda: part_lift(n, total, size),
              "track-iou": lambda: part_track("iou", n, total), "track-phalp": lambda: part_track("phalp", n, total),
              "actions": lambda: part_actions(n, total), "publish": lambda: part_publish(n, total, closers)}
    parts = {}
    try:
        for name in args.parts.split(","):
            parts[name] = timed(makers[name](), args.frames, args.warmup, args.top)
            print(f"{name}: wall p50 {parts[name]['wall_ms']['p50']:.3f} ms, cpu p50 {parts[name]['cpu_ms']['p50']:.3f} ms",
                  file=sys.stderr)
    finally:
        for close in closers:
            close()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "people": n,
              "frame_size": args.size, "parts": parts}
    lines = [f"# Host work per frame by stage, {n} people, {args.size} ({result['cpu']}, {result['cores']} logical "
             f"cores, load {result['load_average']:.2f} at start)", "",
             "GPU work replaced by stand-ins (benchmarks/host_profile.py): what each stage's thread does on the host.", "",
             "| part | wall p50 ms | cpu p50 ms | wall mean ms | cpu mean ms |", "|---|---|---|---|---|"]
    for name, r in parts.items():
        lines.append(f"| {name} | {r['wall_ms']['p50']:.3f} | {r['cpu_ms']['p50']:.3f} | {r['wall_ms']['mean']:.3f} | "
                     f"{r['cpu_ms']['mean']:.3f} |")
    for name, r in parts.items():
        lines += ["", f"**{name}**: top functions by own time (µs per frame; cProfile adds its own overhead)", "",
                  "| function | own µs | cumulative µs | calls |", "|---|---|---|---|"]
        lines += [f"| `{f}` | {own} | {cum} | {calls} |" for f, own, cum, calls in r["top"]]
    write_table_and_json(args.out_dir, "host_profile", result, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
