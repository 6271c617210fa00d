"""Host cost of ActionStage.update on the static-buffer (CUDA-graph) path, measured on the CPU.

    python benchmarks/lart_stage_cpu.py                      # p50/p90 per frame, 5/10/20 tracks, both modes
    python benchmarks/lart_stage_cpu.py --profile --tracks 10 --mode causal   # + cProfile top functions

The capture is replaced by a stand-in (``--launch none``: a replay does nothing, so the time is the
stage's own host work: bookkeeping, packing the input buffer, copies, read-back, the output record;
``--launch eager``: a replay runs the tiny model eagerly). Tiny model, T=16, N=3 (``--size official``:
T=125, N=5). Tracks: ``n`` live tracks, each detected in 80% of the frames, one track replaced by a new
one every ``--churn`` frames (0: never), so the p90 shows the frames where membership changes.
What this cannot show: CUDA launch and copy latency, and the wait for the graph (see
benchmarks/device/lart_timing.py, the stage-* rows, for those on the GPU).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import pstats
import sys
import time
from collections import Counter


import numpy as np  # noqa: E402
import torch  # noqa: E402

from lart_stream.realtime.actions import ActionStage, ActionStageConfig  # noqa: E402
from lart_stream.realtime.backends import SkippedGraph, UncapturedGraph  # noqa: E402
from lart_stream.realtime.records import People, Tracks  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402


class CountTorchCalls(TorchFunctionMode):
    """Counts torch functions and tensor methods called from Python (attribute reads included). On the
    GPU each op among them is a launch, copy or sync, and the GIL is released around it: in the
    pipeline another thread may then hold the GIL when the op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.calls[getattr(func, "__name__", str(func))] += 1
        return func(*args, **(kwargs or {}))


def stream(n: int, frames: int, churn: int, app_dim: int, seed: int = 0) -> list[tuple[Tracks, People]]:
    """n live tracks per frame (shuffled order, 80% detected, one extra untracked person); every
    `churn` frames the oldest track is replaced by a new id."""
    rng = np.random.default_rng(seed)
    ids = list(range(n))
    nxt = n
    out = []
    for f in range(frames):
        if churn and f and f % churn == 0:
            ids = ids[1:] + [nxt]
            nxt += 1
        order = rng.permutation(ids)
        det = rng.random(n) < 0.8
        m = int(det.sum()) + 1
        person = np.full(n, -1)
        person[det] = rng.permutation(m)[: int(det.sum())]
        people = People(np.zeros((m, 4)), np.ones(m), pose_vector=rng.normal(size=(m, 229)).astype(np.float32),
                        joints_3d=rng.normal(size=(m, 45, 3)).astype(np.float32),
                        cam_t=rng.normal(size=(m, 3)).astype(np.float32),
                        appearance=rng.normal(size=(m, app_dim)).astype(np.float32))
        tracks = Tracks(order, np.zeros((n, 4)), np.full(n, 2), np.zeros(n), np.zeros(n), (~det).astype(np.int32),
                        person)
        out.append((tracks, people))
    return out


def make_stage(mode: str, n: int, size: str, launch: str) -> ActionStage:
    ActionStage._graph_cls = SkippedGraph if launch == "none" else UncapturedGraph
    kw = dict(window=125, max_people=5) if size == "official" else {}
    cfg = ActionStageConfig(mode=mode, size=size, max_tracks=max(16, n), people_appearance=True, **kw)
    st = ActionStage.from_config(cfg)
    assert st.static
    st.warmup()
    return st


def run(mode: str, n: int, args: argparse.Namespace,
        prof: cProfile.Profile | None = None) -> tuple[list[float], CountTorchCalls, int]:
    """ms per update() over args.frames frames; torch calls counted over 200 more (steady-state ones)."""
    st = make_stage(mode, n, args.size, args.launch)
    frames = stream(n, 97, args.churn, st.model.config.app_dim)  # 97: the churn pattern does not align
    for i in range(args.warmup):
        st.update(*frames[i % len(frames)], i)
    gc.collect()
    gc.freeze()
    times = []
    if prof is not None:
        prof.enable()
    for i in range(args.frames):
        tr, pe = frames[i % len(frames)]
        t0 = time.perf_counter_ns()
        st.update(tr, pe, i)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    if prof is not None:
        prof.disable()
    gc.unfreeze()
    counter, done = CountTorchCalls(), 0
    for i in range(args.frames, args.frames + 200):  # counted on steady-state frames (tracks unchanged)
        tr, pe = frames[i % len(frames)]
        prev = frames[(i - 1) % len(frames)][0]
        if sorted(tr.track_id.tolist()) != sorted(prev.track_id.tolist()):
            st.update(tr, pe, i)
            continue
        with counter:
            st.update(tr, pe, i)
        done += 1
    return times, counter, done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--mode", nargs="+", default=["causal", "window"], choices=["causal", "window"])
    p.add_argument("--size", default="tiny", choices=["tiny", "official"])
    p.add_argument("--launch", default="none", choices=["none", "eager"])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--churn", type=int, default=50, help="replace one track every CHURN frames (0: never)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--profile", action="store_true", help="cProfile the timed frames, print the top functions")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--calls", action="store_true", help="list the torch calls of a steady-state frame")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lart_stream.realtime.actions").setLevel(logging.ERROR)
    logging.getLogger("lart_stream.models.lart").setLevel(logging.ERROR)
    print(f"ActionStage.update on the static path, CPU, {args.size}, launch={args.launch}, churn={args.churn}, "
          f"{args.frames} frames (ms per frame)")
    print(f"{'mode':7} {'tracks':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'torch calls/frame':>18}")
    for mode in args.mode:
        for n in args.tracks:
            prof = cProfile.Profile() if args.profile else None
            times, counter, done = run(mode, n, args, prof)
            q = np.percentile(times, [50, 90, 99])
            calls = sum(counter.calls.values()) / done
            print(f"{mode:7} {n:>6} {q[0]:8.3f} {q[1]:8.3f} {q[2]:8.3f} {calls:18.1f}", flush=True)
            if args.calls:
                print("   ", ", ".join(f"{k} {v / done:.1f}" for k, v in counter.calls.most_common()))
            if prof is not None:
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
                print("\n".join(line for line in s.getvalue().splitlines()[6:] if line.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
