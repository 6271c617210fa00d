"""`lart-stream bench`: latency of the real pipeline, per stage and end to end.

One run = the real stages (HMR lifter, tracker, LART stage, ZeroMQ publisher)
on a set number of frames after warm-up. The people count is controlled by a
scripted detector stage that replays N walking boxes per frame (random-weight
detectors find nobody); the real detector is still run and timed beside it as
``detect_real``. Sweeps vary people, window T, backend and model size; the
baselines run a full-window LART recompute against the incremental step and
the reference's offline-style flow (one eager HMR call per person) against ours.

Writes bench.json (machine, versions, every figure), bench.md and PNG plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lart_stream.benchmarks import report
from lart_stream.benchmarks.scripted import ScriptedDetector, SyntheticSource, load_boxes, walking_boxes
from lart_stream.realtime.engine import Pipeline, RollingStats, run
from lart_stream.realtime.records import Detections, Frame, People

log = logging.getLogger("lart_stream.bench")


@dataclass(frozen=True)
class RunSpec:
    name: str
    series: str
    people: int = 5
    window: int = 0  # 0: the model's default
    mode: str = "causal"  # LART: causal step or window (full recompute)
    hmr_size: str = "tiny"
    lart_size: str = "tiny"
    backend: str = "torch"  # torch (CUDA graphs on CUDA) | torch-eager | onnxruntime | tensorrt
    per_person: bool = False  # reference-style: one eager HMR call per person
    tracker: str = "iou"
    overlap: bool = False  # detect the next frame in its own thread


class TrackCounter:
    """A sink that records how many tracks each frame had (the LART stage's batch)."""

    stage = "count"

    def __init__(self):
        self.counts: list[int] = []

    def send(self, result) -> None:
        self.counts.append(len(result.tracks))

    def close(self) -> None:
        pass


class PerPersonLifter:
    """The reference's offline-style flow: one HMR call per person, no batching."""

    def __init__(self, lifter):
        self.inner = lifter
        self.name = "hmr-per-person"
        self.random_weights = lifter.random_weights

    def __call__(self, frame: Frame, detections: Detections) -> People:
        rows = [self.inner(frame, detections[i:i + 1]) for i in range(len(detections))]
        if not rows:
            return self.inner(frame, detections)
        return People(
            detections.xyxy, detections.confidence, image_size=rows[0].image_size,
            **{f.name: np.concatenate([getattr(r, f.name) for r in rows])
               for f in dataclasses.fields(People)
               if f.name not in ("xyxy", "confidence", "image_size") and getattr(rows[0], f.name) is not None})


def build_stages(spec: RunSpec, device: str, args: argparse.Namespace):
    from lart_stream.realtime.actions import ActionStage, ActionStageConfig
    from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
    from lart_stream.realtime.tracking import TrackerConfig, build_tracker

    backend = {"torch-eager": "torch"}.get(spec.backend, spec.backend)
    graphs = spec.backend == "torch" and not spec.per_person
    export_dir = exported_models(spec.hmr_size, args) if backend in ("onnxruntime", "tensorrt") else None
    if backend == "onnxruntime" and device.startswith("cuda"):
        from lart_stream.realtime.backends import onnxruntime_providers

        if not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime_providers()):
            raise RuntimeError("onnxruntime has only CPU providers here: it would run HMR on the CPU")
    lifter = HMRLifter.from_config(HMRLifterConfig(
        size=spec.hmr_size, device=device, backend=backend, cuda_graphs=graphs, export_dir=export_dir,
        precision="fp32" if spec.per_person else "auto", max_batch=max(16, spec.people)))
    if spec.per_person:
        lifter = PerPersonLifter(lifter)
    kwargs = dict(size=spec.lart_size, mode=spec.mode, device=device, max_tracks=max(16, spec.people),
                  pose_only=False)
    if spec.window:
        kwargs["window"] = spec.window
    actions = ActionStage.from_config(ActionStageConfig(**kwargs))
    tracker = build_tracker(spec.tracker, TrackerConfig())
    return lifter, tracker, actions


_EXPORTS: dict[str, str] = {}


def exported_models(size: str, args: argparse.Namespace) -> str:
    """A folder with HMR 2.0 exported to ONNX at ``size`` (--export-dir, else exported once per run)."""
    if args.export_dir:
        return args.export_dir
    if size not in _EXPORTS:
        import tempfile

        from lart_stream.export.cli import main as export_main

        out = tempfile.mkdtemp(prefix=f"lart-bench-{size}-")
        if export_main(["--out", out, "--models", "hmr2", "--size", size]) != 0:
            raise RuntimeError(f"export of the {size} HMR model failed")
        _EXPORTS[size] = out
    return _EXPORTS[size]


def _real_detector(args: argparse.Namespace, device: str):
    if args.detector == "none":
        return None
    from lart_stream.realtime.detectors import DetectorConfig, build_detector

    return build_detector(DetectorConfig(model=args.detector, device=device, person_classes=args.person_classes))


def run_one(spec: RunSpec, args: argparse.Namespace, device: str, boxes: np.ndarray | None,
            real_detector) -> dict:
    import torch

    from lart_stream.realtime.publisher import Publisher, PublisherConfig

    size = tuple(int(x) for x in args.size.split("x"))
    if boxes is None:
        boxes = walking_boxes(spec.people, 500, size, seed=1)
    else:
        boxes = boxes[:, : spec.people]
    detector = ScriptedDetector(boxes, real_detector)
    lifter, tracker, actions = build_stages(spec, device, args)
    publisher = Publisher(PublisherConfig(address=args.publish))
    counter = TrackCounter()
    pipeline = Pipeline(detector, lifter, tracker, actions, [publisher, counter])
    try:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        # Warm-up: graph capture (before any second thread uses the GPU: a capture fails if another
        # thread launches work meanwhile), allocator, caches; then a fresh clock.
        inner = getattr(lifter, "inner", lifter)
        inner.warmup(batch_sizes=[1] if spec.per_person else [spec.people], frame_size=size)
        actions.warmup()
        run(SyntheticSource(args.warmup, size, args.source), pipeline)
        pipeline.stats = RollingStats(window=100_000)
        detector.real_ms.clear()
        counter.counts.clear()
        source = SyntheticSource(args.frames, size, args.source, rate=args.rate)
        cpu0, wall0 = time.process_time(), time.monotonic()
        summary = run(source, pipeline, overlap=spec.overlap)
        cpu = (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9) * 100
    finally:
        pipeline.close()
    stages = {k: report.percentiles(list(pipeline.stats.samples[k]))
              for k in ("detect", "lift", "track", "actions", "publish") if pipeline.stats.count.get(k)}
    if detector.real_ms:
        stages["detect_real"] = report.percentiles(detector.real_ms)
    return {
        "name": spec.name,
        "config": {**dataclasses.asdict(spec), "frames": args.frames, "input": args.size, "rate": args.rate,
                   "detector_real": args.detector, "device": device},
        "frames": summary.frames,
        "fps": summary.fps,
        "stages_ms": stages,
        "capture_to_publish_ms": report.percentiles(list(pipeline.stats.samples["latency"])),
        "dropped": source.dropped,
        "peak_host_mb": report.peak_host_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
        "cpu_percent": round(cpu, 1),
        "tracks_mean": round(float(np.mean(counter.counts)), 2) if counter.counts else 0.0,
    }


def plan(args: argparse.Namespace, device: str) -> list[RunSpec]:
    official = args.model_size == "official"
    size = "official" if official else "tiny"
    base = RunSpec("base", "ours", people=args.people, window=args.window, hmr_size=size, lart_size=size,
                   backend=args.backend, mode=args.mode, tracker=args.tracker, overlap=args.overlap)
    sweeps = set(args.sweep.split(",")) if args.sweep else set()
    if "all" in sweeps:
        sweeps = {"people", "window", "backend", "size", "baselines", "overlap"}
    specs: list[RunSpec] = []
    if "people" in sweeps:
        specs += [dataclasses.replace(base, name=f"people{n}", people=n) for n in (1, 5, 10, 20)]
    else:
        specs.append(dataclasses.replace(base, name=f"people{args.people}"))
    if "window" in sweeps:
        specs += [dataclasses.replace(base, name=f"T{t}-{m}", series=f"window-{m}", window=t, mode=m)
                  for t in (32, 64, 125) for m in ("causal", "window")]
    if "backend" in sweeps:
        for b in ("torch-eager", "onnxruntime", "tensorrt"):
            if b != args.backend:
                specs.append(dataclasses.replace(base, name=f"backend-{b}", series=f"backend-{b}", backend=b))
    if "size" in sweeps:
        other = "tiny" if official else "official"
        if other == "tiny" or device.startswith("cuda"):
            specs.append(dataclasses.replace(base, name=f"size-{other}", series=f"size-{other}", hmr_size=other,
                                             lart_size=other))
    if "overlap" in sweeps:
        specs += [dataclasses.replace(base, name=f"people{n}-overlap", series="ours-overlap", people=n,
                                      overlap=not args.overlap) for n in (1, 5, 10, 20)]
    if "baselines" in sweeps:
        specs.append(dataclasses.replace(base, name=f"full-window-recompute", series="window-full", mode="window"))
        specs.append(dataclasses.replace(base, name="per-person-eager", series="per-person-eager",
                                         per_person=True, backend="torch-eager", mode="window"))
    return specs


def comparisons(runs: list[dict]) -> list[dict]:
    by = {r["name"]: r for r in runs}
    out = []
    step = {r["config"]["window"] or "default": r for r in runs if r["config"]["mode"] == "causal"}
    rows = []
    for r in runs:
        if r["config"]["mode"] == "window" and not r["config"]["per_person"]:
            t = r["config"]["window"] or "default"
            s = step.get(t)
            if s and s["config"]["people"] == r["config"]["people"] and "actions" in s["stages_ms"]:
                rows.append({"people": r["config"]["people"], "window T": t,
                             "full recompute ms": r["stages_ms"]["actions"]["p50"],
                             "incremental step ms": s["stages_ms"]["actions"]["p50"],
                             "ratio": r["stages_ms"]["actions"]["p50"] / max(s["stages_ms"]["actions"]["p50"], 1e-9)})
    if rows:
        out.append({"title": "LART: full-window recompute vs incremental causal step (p50 of the actions stage)",
                    "rows": rows})
    ref = by.get("per-person-eager")
    ours = next((r for r in runs if r["name"] == f"people{ref['config']['people']}"), None) if ref else None
    if ref and ours:
        out.append({"title": "Reference-style flow (one eager fp32 HMR call per person, window LART) vs ours",
                    "rows": [{"people": ref["config"]["people"], "reference fps": ref["fps"], "ours fps": ours["fps"],
                              "speed-up": ours["fps"] / max(ref["fps"], 1e-9),
                              "reference c2p p50 ms": ref["capture_to_publish_ms"]["p50"],
                              "ours c2p p50 ms": ours["capture_to_publish_ms"]["p50"]}]})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lart-stream bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", help="video whose frames are used (resized); default: textured noise")
    p.add_argument("--boxes", help="JSON of boxes to replay ({'frames': [[[x1,y1,x2,y2,conf], ...], ...]})")
    p.add_argument("--size", default="1920x1080", help="frame size WxH (default 1920x1080)")
    p.add_argument("--people", type=int, default=5)
    p.add_argument("--frames", type=int, default=200, help="timed frames per run")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rate", type=float, default=0.0, help="pace frames like a camera at this fps (0: as fast as possible)")
    p.add_argument("--model-size", choices=["tiny", "official"], default="tiny")
    p.add_argument("--window", type=int, default=0, help="LART window T (0: model default)")
    p.add_argument("--mode", choices=["causal", "window"], default="causal")
    p.add_argument("--backend", choices=["torch", "torch-eager", "onnxruntime", "tensorrt"], default="torch")
    # iou by default: random HMR features make the 3D cost associate badly, so PHALP would spawn
    # spurious tracks and every later stage would run on more tracks than there are people.
    p.add_argument("--tracker", choices=["phalp", "iou"], default="iou")
    p.add_argument("--detector", default="hog", help="real detector timed beside the scripted one: hog | FILE.onnx | none")
    p.add_argument("--person-classes", default="0")
    p.add_argument("--overlap", action="store_true", help="detect the next frame in its own thread")
    p.add_argument("--sweep", default="", help="comma list of people,window,backend,size,baselines,overlap or all")
    p.add_argument("--device", default="auto")
    p.add_argument("--export-dir", help="models from `lart-stream export` for the onnxruntime/tensorrt runs "
                                        "(default: export HMR to a temporary folder)")
    p.add_argument("--publish", default="tcp://127.0.0.1:*", help="publisher address (port *: any free port)")
    p.add_argument("--out", default="benchmarks/results/latest", help="output folder")
    p.add_argument("--streams", type=int, help="N paced streams through one batched pipeline "
                   "(lart-stream bench --streams N --help: benchmarks/streams_bench.py)")
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--streams" or a.startswith("--streams=") for a in argv):  # many paced streams: its own runner
        from lart_stream.benchmarks.streams_bench import main as streams_main

        return streams_main(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from lart_stream.realtime.build import BuildError, resolve_device

    try:
        device = resolve_device(args.device)
        size = tuple(int(x) for x in args.size.lower().split("x"))
        assert len(size) == 2
    except (BuildError, ValueError, AssertionError) as exc:
        print(f"lart-stream bench: {exc if isinstance(exc, BuildError) else 'bad --size ' + args.size}", file=sys.stderr)
        return 2
    args.size = f"{size[0]}x{size[1]}"
    boxes = load_boxes(Path(args.boxes)) if args.boxes else None
    if boxes is not None and boxes.shape[1] < args.people:
        print(f"lart-stream bench: {args.boxes} has {boxes.shape[1]} boxes per frame, fewer than --people",
              file=sys.stderr)
        return 2
    real_detector = _real_detector(args, device)
    machine, versions = report.machine_info(device)
    specs = plan(args, device)
    runs, skipped = [], []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec.name}: {spec.people} people, {spec.hmr_size} models, {spec.backend}, "
              f"LART {spec.mode}", file=sys.stderr, flush=True)
        try:
            r = run_one(spec, args, device, boxes, real_detector)
        except Exception as exc:  # a backend absent here (tensorrt) is recorded, not fatal
            log.warning("run %s skipped: %s", spec.name, exc)
            skipped.append({"name": spec.name, "reason": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        c = r["capture_to_publish_ms"]
        print(f"    {r['fps']:.1f} fps, capture-to-publish p50 {c['p50']:.1f} p99 {c['p99']:.1f} ms", file=sys.stderr)
        runs.append(r)
    if not runs:
        print("lart-stream bench: no run completed", file=sys.stderr)
        return 1
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine,
              "versions": versions, "runs": runs, "skipped": skipped, "comparisons": comparisons(runs),
              "weights": "random (speed does not depend on weight values)"}
    out = Path(args.out)
    report.write_json(out / "bench.json", result)
    (out / "bench.md").write_text(report.markdown(result) + "".join(
        f"\nSkipped {s['name']}: {s['reason']}\n" for s in skipped))
    if not args.no_plots:
        try:
            report.plot(result, out)
        except ImportError:
            log.warning("matplotlib not installed: no plots")
    print(report.markdown(result))
    print(f"wrote {out}/bench.json, bench.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
