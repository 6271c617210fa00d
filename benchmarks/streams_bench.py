"""`lart-stream bench --streams N`: many paced camera streams through one batched pipeline per GPU.

Each stream is a paced source (``--rate``, newest frame only: a frame the pipeline could not take in
time is dropped and counted) with its own scripted people (``--people`` walking boxes; the real
detector runs beside, timed in the detect stage). Every stream goes through the real multi-stream
pipeline (realtime/multistream.py: batched HMR, one LART step for all tracks, a ZeroMQ publisher).

Reported per run: per-stream fps, dropped frames, capture-to-publish p50/p99; a run *holds the rate*
when every stream keeps >= 98% of ``--rate`` with no more than 0.5% of its frames dropped, and *meets
the target* when it also keeps capture-to-publish p99 <= ``--p99-target`` ms. ``--sweep`` finds the
largest stream count that holds the rate for each people count (doubling, then bisection).

``--gpus 0,1``: one worker process per GPU (streams round-robin), every worker publishing through one
ZeroMQ proxy (realtime/workers.py); the parent also subscribes to the proxy and measures
capture-to-receive latency through it (CLOCK_MONOTONIC is shared by the processes of one host).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lart_stream.benchmarks import report
from lart_stream.benchmarks.scripted import ScriptedDetector, SyntheticSource, walking_boxes

log = logging.getLogger("lart_stream.bench.streams")
HOLD_FPS, HOLD_DROPS = 0.98, 0.005  # of the rate; of the frames


class StreamsBench:
    """The stages of one device, built once and reused by every run (models are the slow part to build)."""

    def __init__(self, args: argparse.Namespace, device: str):
        from lart_stream.realtime.lifting import MULTI_STREAM_BUCKETS, HMRLifter, HMRLifterConfig

        self.args, self.device = args, device
        self.size = tuple(int(x) for x in args.size.split("x"))
        self.lifter = HMRLifter.from_config(HMRLifterConfig(size=args.model_size, device=device, max_batch=128,
                                                            buckets=MULTI_STREAM_BUCKETS))
        self.real_detector = None
        if args.detector != "none":
            from lart_stream.realtime.detectors import DetectorConfig, build_detector

            self.real_detector = build_detector(DetectorConfig(model=args.detector, device=device,
                                                               person_classes=args.person_classes))
        self.images = SyntheticSource._load(args.source, self.size)
        if args.lift_parts:
            try:
                self.lifter.profile()  # per-part CUDA events: where lift's time goes in a tick
            except ValueError as exc:  # the eager path (CPU) has no parts
                log.warning("--lift-parts: %s", exc)
        self._actions: dict[tuple[int, int], Any] = {}

    def actions(self, streams: int, people: int):
        """A LART stage sized for this run (capacity and graphs grow with streams x people)."""
        from lart_stream.realtime.actions import ActionStage, ActionStageConfig
        from lart_stream.realtime.multistream import STREAM_SHIFT, multi_stream_tracks

        key = (streams, people)
        if key not in self._actions:
            self._actions.clear()  # one at a time: a stage holds its KV cache on the device
            _free_device(self.device)
            from lart_stream.realtime.build import lart_precision

            kwargs = dict(size=self.args.model_size, mode=self.args.mode, device=self.device, pose_only=False,
                          precision=lart_precision("auto", str(self.device)),
                          group_shift=STREAM_SHIFT, **multi_stream_tracks(streams, per_stream=lart_capacity(people)))
            if self.args.window:
                kwargs["window"] = self.args.window
            stage = ActionStage.from_config(ActionStageConfig(**kwargs))
            stage.warmup()
            self._actions[key] = stage
        return self._actions[key]

    def run(self, ids: list[str], people: int, publish: str = "tcp://127.0.0.1:*", connect: bool = False,
            seed: int = 0) -> dict:
        """One timed run of len(ids) paced streams of ``people`` people each."""
        from lart_stream.realtime.engine import Pipeline
        from lart_stream.realtime.multistream import run_streams
        from lart_stream.realtime.publisher import Publisher, PublisherConfig
        from lart_stream.realtime.tracking import TrackerConfig, build_tracker

        args, n = self.args, len(ids)
        scripts = {sid: ScriptedDetector(walking_boxes(people, 500, self.size, seed=seed + k))
                   for k, sid in enumerate(ids)}
        detector = _PerStream(scripts, self.real_detector)
        actions = self.actions(n, people)
        total = n * people
        self.lifter.warmup(batch_sizes=[min(total, 128), total % 128 or 128], frame_size=None)
        publisher = Publisher(PublisherConfig(address=publish, connect=connect))
        pipeline = Pipeline(detector, self.lifter, None, actions, [publisher])
        try:
            # warm-up run (unpaced): allocator, caches, the crop kernels at this frame size
            self._timed(pipeline, ids, frames=args.warmup, rate=0.0)
            actions.reset()
            detector.real_ms.clear()
            summary, sources, cpu = self._timed(pipeline, ids, frames=args.frames, rate=args.rate)
        finally:
            pipeline.close()
        per = {}
        for sid, src in zip(ids, sources):
            s = summary.streams[sid]
            per[sid] = {"frames": s["frames"], "fps": s["fps"], "dropped": src.dropped,
                        "latency_ms": {k: s["latency_ms"][k] for k in ("p50", "p99", "max")}}
        return {"streams": n, "people": people, "rate": args.rate, "frames_per_stream": args.frames,
                "seconds": summary.seconds, "per_stream": per, "stages_ms": summary.stages_ms,
                "latency_ms": {k: summary.latency_ms[k] for k in ("p50", "p99", "max")},
                "tick_ms": summary.stages_ms, "cpu_percent": cpu, "device": self.device, "inflight": args.inflight,
                "lift_parts_ms": summary.lift_parts_ms,
                "detect_real_tick_ms": report.percentiles(detector.real_ms),
                "detector": self.real_detector.describe() if hasattr(self.real_detector, "describe") else args.detector}

    def _timed(self, pipeline, ids: list[str], frames: int, rate: float):
        from lart_stream.realtime.multistream import MultiStreamConfig, run_streams
        from lart_stream.realtime.tracking import TrackerConfig, build_tracker

        sources = [SyntheticSource(frames, self.size, rate=rate, stream_id=sid, images=self.images) for sid in ids]
        trackers = [build_tracker("iou", TrackerConfig()) for _ in ids]
        cpu0, wall0 = time.process_time(), time.monotonic()
        summary = run_streams(sources, ids, pipeline, trackers,
                              MultiStreamConfig(gather_ms=self.args.gather_ms, inflight=self.args.inflight))
        cpu = round((time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9) * 100, 1)
        return summary, sources, cpu


class _PerStream:
    """Each stream's scripted people; the real detector (if any) runs beside on the tick's frames, in
    one batched call when it has ``detect_many``, timed per tick (its boxes are not used)."""

    name = "scripted"

    def __init__(self, scripts: dict, real_detector=None):
        self.scripts, self.real = scripts, real_detector
        self.real_ms: list[float] = []
        # the real detector's: then the pipeline uploads each tick's frames once for it and the lifter
        self.image_device = getattr(real_detector, "image_device", None)

    def __call__(self, frame):
        return self.detect_many([frame])[0]

    def detect_many(self, frames, device_images=None):
        if self.real is not None:
            t = time.perf_counter()
            many = getattr(self.real, "detect_many", None)
            if many is None:
                [self.real(f) for f in frames]
            elif device_images is not None:
                many(frames, device_images=device_images)
            else:
                many(frames)
            self.real_ms.append((time.perf_counter() - t) * 1e3)
        return [self.scripts[f.stream_id](f) for f in frames]


def best_inflight(runs: list[dict]) -> int:
    """The inflight of the best run: highest min fps over its streams, then lowest worst p99."""
    best = max(runs, key=lambda r: (r["verdict"]["min_fps"], -r["verdict"]["worst_p99_ms"]))
    return int(best.get("inflight", 1))


def lart_capacity(people: int) -> int:
    """LART tracks per stream: room for the people, tracks still coasting after a miss and new ones."""
    from lart_stream.realtime.multistream import TRACKS_PER_STREAM

    return max(TRACKS_PER_STREAM, 2 * people + 4)


def _free_device(device: str) -> None:
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def verdict(run: dict, rate: float, p99_target: float) -> dict:
    per = run["per_stream"].values()
    holds = all(s["fps"] >= HOLD_FPS * rate and s["dropped"] <= HOLD_DROPS * max(s["frames"], 1) for s in per)
    worst_p99 = max((s["latency_ms"]["p99"] for s in per), default=0.0)
    return {"holds_rate": holds, "meets_target": holds and worst_p99 <= p99_target, "worst_p99_ms": worst_p99,
            "min_fps": min((s["fps"] for s in per), default=0.0), "dropped": sum(s["dropped"] for s in per)}


# ------------------------------------------------------------------------------------------------
# Runners: in this process, or one worker process per GPU behind the proxy


class LocalRunner:
    def __init__(self, args: argparse.Namespace, device: str):
        self.bench = StreamsBench(args, device)
        self.devices = [device]

    def point(self, streams: int, people: int) -> dict:
        return self.bench.run([f"s{i}" for i in range(streams)], people)

    def close(self) -> None:
        pass


def _gpu_worker(conn, args: argparse.Namespace, connect_to: str) -> None:
    """A worker process: builds its stages on its GPU, then runs what the parent asks."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s worker %(name)s: %(message)s")
    device = "cuda" if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("",) else "cpu"
    try:
        bench = StreamsBench(args, device)
        conn.send(("ready", device))
        while True:
            cmd = conn.recv()
            if cmd[0] == "quit":
                return
            _, ids, people, seed = cmd
            try:
                conn.send(("ok", bench.run(ids, people, publish=connect_to, connect=True, seed=seed)))
            except Exception as exc:  # reported by the parent, which skips the point
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProxyRunner:
    """One worker process per entry of --gpus, one publish address (the proxy) the parent listens on."""

    def __init__(self, args: argparse.Namespace, gpus: list[str]):
        from lart_stream.realtime.workers import StreamProxy

        self.args, self.devices = args, gpus
        self.proxy = StreamProxy("tcp://127.0.0.1:*")
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for g in gpus:
            parent, child = ctx.Pipe()
            old = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = "" if g == "cpu" else g
            try:
                proc = ctx.Process(target=_gpu_worker, args=(child, args, self.proxy.inner), daemon=True)
                proc.start()
            finally:
                if old is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = old
            self.conns.append(parent)
            self.procs.append(proc)
        for g, c in zip(gpus, self.conns):
            kind, what = c.recv()
            if kind != "ready":
                raise RuntimeError(f"worker on {g}: {what}")

    def point(self, streams: int, people: int) -> dict:
        from lart_stream.realtime.protocol import ActionsMessage
        from lart_stream.realtime.subscriber import Subscriber
        from lart_stream.realtime.workers import assign_round_robin

        ids = [f"s{i}" for i in range(streams)]
        shares = assign_round_robin(streams, len(self.conns))
        received: dict[str, list[float]] = {}
        last: dict[str, int] = {}
        stop = threading.Event()
        sub = Subscriber(self.proxy.endpoint, ("actions",), hwm=0)

        def listen() -> None:
            while not stop.is_set():
                try:
                    m = sub.recv(timeout=0.2)
                except TimeoutError:
                    continue
                if isinstance(m, ActionsMessage):
                    lat = received.setdefault(m.stream, [])
                    if m.frame <= last.get(m.stream, -1):
                        lat.clear()  # frame indices start again: the timed run follows the warm-up run
                    last[m.stream] = m.frame
                    lat.append((time.monotonic_ns() - m.t_capture_ns) / 1e6)

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        time.sleep(0.5)  # the subscription reaches every worker before frames flow
        try:
            busy = []
            for w, (conn, share) in enumerate(zip(self.conns, shares)):
                if share:
                    conn.send(("run", [ids[i] for i in share], people, 100 * w))
                    busy.append(conn)
            results = [c.recv() for c in busy]
        finally:
            time.sleep(0.5)
            stop.set()
            thread.join(5)
            sub.close()
        errors = [r[1] for r in results if r[0] != "ok"]
        if errors:
            raise RuntimeError("; ".join(errors))
        parts = [r[1] for r in results]
        per = {k: v for p in parts for k, v in p["per_stream"].items()}
        lat = [x for v in received.values() for x in v]
        return {"streams": streams, "people": people, "rate": self.args.rate, "frames_per_stream": self.args.frames,
                "workers": len(busy), "per_stream": per, "per_worker": parts,
                "latency_ms": {k: max(p["latency_ms"][k] for p in parts) for k in ("p50", "p99", "max")},
                "through_proxy_ms": report.percentiles(lat),
                "received_per_stream": {k: len(v) for k, v in received.items()}}

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("quit",))
            except Exception:
                pass
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        self.proxy.close()


# ------------------------------------------------------------------------------------------------


def sweep(runner, people: int, args: argparse.Namespace, runs: list[dict], save=lambda: None) -> int:
    """Largest stream count holding the rate: double from --sweep-start, then bisect."""
    cache: dict[int, bool] = {}

    def holds(n: int) -> bool:
        if n not in cache:
            r = runner.point(n, people)
            r["verdict"] = verdict(r, args.rate, args.p99_target)
            runs.append(r)
            _print_point(r)
            save()
            cache[n] = r["verdict"]["holds_rate"]
        return cache[n]

    lo, hi, n = 0, None, args.sweep_start
    while n <= args.sweep_max:
        if holds(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    if hi is None:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _print_point(r: dict) -> None:
    v = r["verdict"]
    extra = f", through proxy p99 {r['through_proxy_ms']['p99']:.1f} ms" if "through_proxy_ms" in r else ""
    print(f"  {r['streams']:>3} streams x {r['people']:>2} people: min fps {v['min_fps']:.1f}, dropped {v['dropped']}, "
          f"worst p99 {v['worst_p99_ms']:.1f} ms{extra} -> {'holds' if v['holds_rate'] else 'FAILS'} "
          f"{r['rate']:g} fps (inflight {r.get('inflight', 1)}; ms per tick: {tick_parts(r)})", file=sys.stderr, flush=True)


def markdown(result: dict) -> str:
    lines = [f"# Many streams: {result['config']['model_size']} models, {result['config']['size']}, "
             f"LART {result['config']['mode']}, paced {result['config']['rate']:g} fps, devices "
             f"{', '.join(result['devices'])}", ""]
    if result.get("largest"):
        lines += ["| people per stream | largest stream count holding the rate |", "|---|---|"]
        lines += [f"| {p} | {n} |" for p, n in result["largest"].items()] + [""]
    lines += ["| streams | people | inflight | min fps | dropped | worst p99 ms | p50 ms | holds | meets p99 target "
              "| tick ms (mean): stages; lift parts |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        v = r["verdict"]
        lines.append(f"| {r['streams']} | {r['people']} | {r.get('inflight', 1)} | {v['min_fps']:.1f} | {v['dropped']} | "
                     f"{v['worst_p99_ms']:.1f} | {r['latency_ms']['p50']:.1f} | {'yes' if v['holds_rate'] else 'no'} | "
                     f"{'yes' if v['meets_target'] else 'no'} | {tick_parts(r)} |")
    return "\n".join(lines) + "\n"


def tick_parts(r: dict) -> str:
    """'detect 3.1, lift 30.2, ...; crops 2.0, network+post 27.1, ...' (means, ms per tick)."""
    stages = ", ".join(f"{k} {v['mean']:.1f}" for k, v in r.get("stages_ms", {}).items())
    parts = ", ".join(f"{k} {v['mean']:.1f}" for k, v in r.get("lift_parts_ms", {}).items())
    return stages + (f"; {parts}" if parts else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lart-stream bench --streams", description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, required=True, help="paced streams (with --sweep: ignored)")
    p.add_argument("--people", type=int, default=5, help="people per stream")
    p.add_argument("--rate", type=float, default=30.0, help="each stream's camera rate")
    p.add_argument("--frames", type=int, default=150, help="timed frames per stream")
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--source", help="video whose frames are used (resized); default: textured noise")
    p.add_argument("--model-size", choices=["tiny", "official"], default="tiny")
    p.add_argument("--mode", choices=["causal", "window"], default="causal")
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--detector", default="none", help="real detector timed in the detect stage: hog | FILE.onnx | none")
    p.add_argument("--person-classes", default="0")
    p.add_argument("--gather-ms", type=float, default=40.0, help="multistream tick gather window")
    p.add_argument("--inflight", default="1",
                   help="ticks in flight: 2 = the GPU front (detect, lift) of the next tick beside the rest; "
                        "3 = detect, lift and the rest on three threads; 2,3 runs the point once each "
                        "(a sweep then uses the best of them: highest min fps, then lowest worst p99)")
    p.add_argument("--lift-parts", action="store_true", help="time the lifter's parts per tick (CUDA events)")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpus", help="one worker process per entry (0,1 or cpu,cpu) behind one proxy")
    p.add_argument("--sweep", default="", help="people counts to sweep the stream count for, e.g. 1,5,10")
    p.add_argument("--sweep-start", type=int, default=1)
    p.add_argument("--streams-first", action="store_true", help="with --sweep: run the --streams point first")
    p.add_argument("--sweep-max", type=int, default=64)
    p.add_argument("--p99-target", type=float, default=50.0)
    p.add_argument("--out", default="benchmarks/results/latest-streams")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from lart_stream.realtime.build import BuildError, resolve_device

    try:
        size = tuple(int(x) for x in args.size.lower().split("x"))
        if len(size) != 2 or min(size) < 32:
            raise ValueError
        args.size = f"{size[0]}x{size[1]}"
        if args.streams < 1 or args.people < 1 or args.rate <= 0 or args.frames < 1:
            raise ValueError
        people_sweep = [int(x) for x in args.sweep.split(",")] if args.sweep else []
        inflights = [int(x) for x in args.inflight.split(",")]
        if not inflights or any(k not in (1, 2, 3) for k in inflights):
            raise ValueError
        device = resolve_device(args.device)
    except BuildError as exc:
        print(f"lart-stream bench: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print("lart-stream bench: --streams/--people/--frames >= 1, --rate > 0, --size WxH, --sweep N,N,..., "
              "--inflight 1|2|3|2,3", file=sys.stderr)
        return 2
    gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.inflight = inflights[0]
    runner = ProxyRunner(args, gpus) if gpus else LocalRunner(args, device)
    machine, versions = report.machine_info(device if not gpus else ("cuda" if gpus[0] != "cpu" else "cpu"))
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine,
              "versions": versions, "config": {k: v for k, v in vars(args).items()},
              "devices": runner.devices, "largest": {}, "runs": [],
              "weights": "random (speed does not depend on weight values)",
              "hold_rule": f"every stream >= {HOLD_FPS:.0%} of the rate and <= {HOLD_DROPS:.1%} frames dropped"}

    def save() -> None:  # after every point: a run cut short by a time limit keeps what it measured
        report.write_json(out / "streams.json", result)
        (out / "streams.md").write_text(markdown(result))

    try:
        if not people_sweep or args.streams_first:
            for k in inflights:  # the workers of --gpus keep the first value (their args were sent at start)
                args.inflight = k
                r = runner.point(args.streams, args.people)
                r["verdict"] = verdict(r, args.rate, args.p99_target)
                result["runs"].append(r)
                _print_point(r)
                save()
            if len(inflights) > 1 and not gpus:
                args.inflight = best_inflight(result["runs"])
        for people in people_sweep:
            print(f"sweep: {people} people per stream, inflight {args.inflight}", file=sys.stderr, flush=True)
            result["largest"][str(people)] = sweep(runner, people, args, result["runs"], save)
            save()
    finally:
        runner.close()
        save()
    print(markdown(result))
    print(f"wrote {out}/streams.json, streams.md", file=sys.stderr)
    return 0
