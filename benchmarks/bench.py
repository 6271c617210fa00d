"""`lart-stream bench`: latency of the real pipeline, per stage and end to end.

One run = the real stages (HMR lifter, tracker, LART stage, ZeroMQ publisher)
on a set number of frames after warm-up. The people count is controlled by a
scripted detector stage that replays N walking boxes per frame (random-weight
detectors find nobody); the real detector is still run and timed beside it as
``detect_real``. ``--appearance on`` adds the MViT appearance stage (random weights; a keyframe pass
every K frames) and LART takes its features. Sweeps vary people, window T, backend, model size and
the appearance stage (off against on at the same settings); the
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
from lart_stream.realtime.engine import CPU_PREFIX, SYNC_PREFIX, Pipeline, RollingStats, run
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
    inflight: int = 1  # frames in flight (engine.run): 1 sequential, 2 detect ahead, 3 detect/lift/finish threads
    late_read: bool = False  # inflight 3: read a frame only when lifting is about to be free
    hmr_weights: str = "cast"  # cast: bf16 weights cast once | autocast: fp32 weights under autocast (old path)
    compile: bool = False  # HMR network through torch.compile (max-autotune) inside our graphs
    fp8: bool = False  # HMR's ViT linears in FP8 (row-wise scaled torch._scaled_mm)
    appearance: bool = False  # the MViT appearance stage, its features into LART
    appearance_every: int = 6  # K: a keyframe pass every K frames
    appearance_size: str = "tiny"  # tiny | official (MViTv2-L 40x3, bf16 on CUDA), random weights
    appearance_chunks: int = 1  # the backbone pass as this many slices of blocks
    backbone_bf16: bool = False  # HMR's whole ViT in bf16 (residual stream and LayerNorms too)
    lart_precision: str = "auto"  # LART transformer matmuls: auto (bf16 on CUDA) | fp32 | bf16


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
        precision="fp32" if spec.per_person else "auto", max_batch=max(16, spec.people),
        cast_weights=spec.hmr_weights == "cast", compile=spec.compile, compile_cache_dir=args.compile_cache,
        fp8=spec.fp8, backbone_bf16=spec.backbone_bf16))
    if spec.per_person:
        lifter = PerPersonLifter(lifter)
    appearance = build_appearance(spec, device)
    from lart_stream.realtime.build import lart_precision

    kwargs = dict(size=spec.lart_size, mode=spec.mode, device=device, max_tracks=max(16, spec.people),
                  precision="fp32" if spec.per_person else lart_precision(spec.lart_precision, device),
                  pose_only=False, appearance_dim=appearance.dim if appearance is not None else 0)
    if spec.window:
        kwargs["window"] = spec.window
    actions = ActionStage.from_config(ActionStageConfig(**kwargs))
    tracker = build_tracker(spec.tracker, TrackerConfig())
    return lifter, tracker, actions, appearance


def build_appearance(spec: RunSpec, device: str):
    """The MViT appearance stage of the run (random weights at ``appearance_size``), or None."""
    if not spec.appearance:
        return None
    from lart_stream.realtime.appearance import AppearanceStage, AppearanceStageConfig

    cuda = device.startswith("cuda")
    return AppearanceStage.from_config(AppearanceStageConfig(
        every=spec.appearance_every, device=device, size=spec.appearance_size,
        dtype="bfloat16" if cuda and spec.appearance_size == "official" else "float32",
        chunks=spec.appearance_chunks))


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

    return build_detector(DetectorConfig(model=args.detector, device=device, person_classes=args.person_classes,
                                         precision=args.detector_precision))


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
    lifter, tracker, actions, appearance = build_stages(spec, device, args)
    publisher = Publisher(PublisherConfig(address=args.publish))
    counter = TrackCounter()
    pipeline = Pipeline(detector, lifter, tracker, actions, [publisher, counter], appearance=appearance)
    cuda = device.startswith("cuda")
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        # Warm-up: graph capture (before any second thread uses the GPU: a capture fails if another
        # thread launches work meanwhile), allocator, caches; then a fresh clock.
        inner = getattr(lifter, "inner", lifter)
        t_warm = time.perf_counter()
        inner.warmup(batch_sizes=[1] if spec.per_person else [spec.people], frame_size=size)
        warmup_s = time.perf_counter() - t_warm
        actions.warmup()
        if appearance is not None:
            appearance.warmup()
        run(SyntheticSource(args.warmup, size, args.source), pipeline)  # lazy captures: one thread on the GPU
        if spec.inflight > 1:  # then the threads' own streams get their allocator blocks
            run(SyntheticSource(args.warmup, size, args.source), pipeline, inflight=spec.inflight)
        pipeline.stats = RollingStats(window=100_000)
        if cuda and not args.no_gpu_clock:
            from lart_stream.realtime.gpu_clock import StageClock

            torch.cuda.synchronize()
            pipeline.clock = StageClock(device)
        detector.real_ms.clear()
        counter.counts.clear()
        if appearance is not None:
            appearance.flush()  # the warm-up's passes are done before the clock starts
            appearance.pass_ms.clear()
            passes0, skipped0 = appearance.passes, appearance.skipped_passes
        source = SyntheticSource(args.frames, size, args.source, rate=args.rate)
        cpu0, wall0 = time.process_time(), time.monotonic()
        summary = run(source, pipeline, inflight=spec.inflight, late_read=spec.late_read)
        cpu = (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9) * 100
        kernels = kernel_profile(pipeline, spec, args, size) if args.kernel_profile else None
    finally:
        pipeline.close()
    stages = {k: report.percentiles(list(pipeline.stats.samples[k]))
              for k in ("detect", "lift", "track", "appearance", "actions", "publish") if pipeline.stats.count.get(k)}
    if detector.real_ms:
        stages["detect_real"] = report.percentiles(detector.real_ms)
    # each stage's thread CPU time over the same span as its wall time (no sync added to measure it)
    stages_cpu, stages_sync = ({k: report.percentiles(list(pipeline.stats.samples[prefix + k]))
                                for k in stages if pipeline.stats.count.get(prefix + k)}
                               for prefix in (CPU_PREFIX, SYNC_PREFIX))
    gpu = gpu_figures(pipeline, summary.seconds, summary.frames)
    fused = getattr(inner, "_fused", None)
    compile_log = [{**dataclasses.asdict(r), "warm": r.warm} for r in getattr(fused, "compile_log", [])]
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
        "stages_cpu_ms": stages_cpu,
        "stages_sync_ms": stages_sync,  # the stage's own device waits (lift, actions: their one sync)
        "thread_cpu_percent": {name: round(100 * c / max(summary.seconds, 1e-9), 1)
                               for name, c in summary.thread_cpu_s.items()},
        "tracks_mean": round(float(np.mean(counter.counts)), 2) if counter.counts else 0.0,
        **gpu,
        "hmr": getattr(inner, "backend_info", ""),
        "hmr_warmup_s": round(warmup_s, 2),
        "compile_log": compile_log,
        **({"kernel_ms": kernels} if kernels else {}),
        **({"appearance": appearance_figures(appearance, passes0, skipped0)} if appearance is not None else {}),
    }


def appearance_figures(stage, passes0: int, skipped0: int) -> dict:
    """The appearance stage in the timed run: its keyframe passes (host ms each, on the worker when
    threaded, features copied to the host included), how many ran and were skipped as stale."""
    return {"model": stage.describe(), "random_weights": stage.random_weights,
            "pass_ms": report.percentiles(list(stage.pass_ms)), "passes": stage.passes - passes0,
            "skipped": stage.skipped_passes - skipped0}


def kernel_profile(pipeline: Pipeline, spec: RunSpec, args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """``args.kernel_profile`` more frames under torch.profiler: GPU kernel time per stage per frame
    (benchmarks/kernel_profile.py). The timed run's statistics are kept aside meanwhile."""
    import json
    import tempfile

    import torch
    from torch.profiler import ProfilerActivity, profile

    from lart_stream.benchmarks.kernel_profile import kernel_time_by_stage

    stats, clock = pipeline.stats, pipeline.clock
    pipeline.stats, pipeline.clock, pipeline.annotate = RollingStats(), None, True
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    try:
        with profile(activities=activities) as prof:
            summary = run(SyntheticSource(args.kernel_profile, size, args.source), pipeline, inflight=spec.inflight)
        with tempfile.TemporaryDirectory() as tmp:
            prof.export_chrome_trace(f"{tmp}/trace.json")
            trace = json.loads(Path(f"{tmp}/trace.json").read_text())
    finally:
        pipeline.stats, pipeline.clock, pipeline.annotate = stats, clock, False
    out = kernel_time_by_stage(trace, summary.frames)
    out["wall_s"] = round(summary.seconds, 3)
    return out


def gpu_figures(pipeline: Pipeline, seconds: float, frames: int) -> dict:
    """GPU span per stage per frame (CUDA events, realtime/gpu_clock.py) beside the wall times, and
    the GPU busy fraction (union of the stage intervals over the timed span); {} without a clock."""
    clock = pipeline.clock
    if clock is None:
        return {}
    from lart_stream.realtime.gpu_clock import busy_fraction

    intervals = list(clock.intervals)
    gpu_ms = {k[4:]: report.percentiles(list(v)) for k, v in pipeline.stats.samples.items() if k.startswith("gpu_")}
    span = (max(iv.end_ms for iv in intervals) - min(iv.start_ms for iv in intervals)) if intervals else 0.0
    return {"gpu_ms": gpu_ms, "gpu_busy_fraction": round(busy_fraction(intervals), 4),
            "gpu_sum_ms_per_frame": round(sum(v["mean"] for v in gpu_ms.values()), 4),
            "gpu_span_ms": round(span, 2)}


def plan(args: argparse.Namespace, device: str) -> list[RunSpec]:
    official = args.model_size == "official"
    size = "official" if official else "tiny"
    base = RunSpec("base", "ours", people=args.people, window=args.window, hmr_size=size, lart_size=size,
                   backend=args.backend, mode=args.mode, tracker=args.tracker,
                   inflight=max(args.inflight, 2 if args.overlap else 1), late_read=args.late_read,
                   hmr_weights=args.hmr_weights,
                   compile=args.compile, fp8=args.fp8, backbone_bf16=args.backbone_bf16, appearance=args.appearance == "on",
                   appearance_every=args.appearance_every, appearance_size=args.appearance_size,
                   appearance_chunks=args.appearance_chunks, lart_precision=args.lart_precision)
    sweeps = set(args.sweep.split(",")) if args.sweep else set()
    if "all" in sweeps:
        sweeps = {"people", "window", "backend", "size", "baselines", "overlap", "inflight", "weights"}
    people = [int(n) for n in args.people_sweep.split(",")]
    specs: list[RunSpec] = []
    if "people" in sweeps:
        specs += [dataclasses.replace(base, name=_name(f"people{n}", base), people=n) for n in people]
    else:
        specs.append(dataclasses.replace(base, name=_name(f"people{args.people}", base)))
    if "inflight" in sweeps:
        for n in (people if "people" in sweeps else [args.people]):
            specs += [dataclasses.replace(base, name=f"people{n}-inflight{k}", series=f"ours-inflight{k}", people=n,
                                          inflight=k, late_read=False) for k in (1, 2, 3) if k != base.inflight]
            if not (base.inflight == 3 and base.late_read):
                specs.append(dataclasses.replace(base, name=f"people{n}-inflight3-late", series="ours-inflight3-late",
                                                 people=n, inflight=3, late_read=True))
    if "appearance" in sweeps:  # the same run with the stage toggled (and, when on, its slicing)
        for n in (people if "people" in sweeps else [args.people]):
            on = dataclasses.replace(base, people=n, appearance=True)
            if not base.appearance:
                specs.append(dataclasses.replace(on, name=_name(f"people{n}", on), series="ours-appearance"))
            else:
                off = dataclasses.replace(base, people=n, appearance=False)
                specs.append(dataclasses.replace(off, name=_name(f"people{n}", off), series="ours-no-appearance"))
            if args.appearance_chunks == 1:
                sliced = dataclasses.replace(on, appearance_chunks=4, series="ours-appearance-sliced")
                specs.append(dataclasses.replace(sliced, name=_name(f"people{n}", sliced)))
    if "weights" in sweeps:
        other = "autocast" if args.hmr_weights == "cast" else "cast"
        specs.append(dataclasses.replace(base, name=f"hmr-{other}", series=f"hmr-{other}", hmr_weights=other,
                                         fp8=False, backbone_bf16=False))
        if not args.backbone_bf16:
            specs.append(dataclasses.replace(base, name="hmr-bf16-backbone", series="hmr-bf16-backbone",
                                             backbone_bf16=True))
        if not args.fp8:
            specs.append(dataclasses.replace(base, name="hmr-fp8", series="hmr-fp8", fp8=True))
        lart_other = "bf16" if args.lart_precision == "fp32" else "fp32"
        specs.append(dataclasses.replace(base, name=f"lart-{lart_other}", series=f"lart-{lart_other}",
                                         lart_precision=lart_other))
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
    if "overlap" in sweeps:  # older name: the detector one frame ahead
        specs += [dataclasses.replace(base, name=f"people{n}-overlap", series="ours-overlap", people=n,
                                      inflight=1 if base.inflight > 1 else 2) for n in people]
    if "baselines" in sweeps:
        specs.append(dataclasses.replace(base, name=f"full-window-recompute", series="window-full", mode="window"))
        specs.append(dataclasses.replace(base, name="per-person-eager", series="per-person-eager",
                                         per_person=True, backend="torch-eager", mode="window", inflight=1,
                                         hmr_weights="autocast", compile=False, fp8=False,
                                         backbone_bf16=False))
    return specs


def _name(name: str, spec: RunSpec) -> str:
    """The base runs' names say what is not the default (inflight, autocast, compiled)."""
    tags = [f"inflight{spec.inflight}"] if spec.inflight > 1 else []
    tags += ["late"] if spec.late_read else []
    tags += ["autocast"] if spec.hmr_weights != "cast" else []
    tags += ["compiled"] if spec.compile else []
    tags += ["fp8"] if spec.fp8 else []
    if spec.appearance:
        tags.append(f"appearance-K{spec.appearance_every}")
        tags += [f"sliced{spec.appearance_chunks}"] if spec.appearance_chunks > 1 else []
    return "-".join([name, *tags])


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
    same = [r for r in runs if ref and not r["config"]["per_person"] and r["config"]["people"] == ref["config"]["people"]
            and r["config"]["mode"] == "causal"]
    if ref and same:
        rows = []
        for ours in (same[0], max(same, key=lambda r: r["fps"])):  # the base run, and the fastest setting
            row = {"people": ref["config"]["people"], "ours": ours["name"], "reference fps": ref["fps"],
                   "ours fps": ours["fps"], "speed-up": ours["fps"] / max(ref["fps"], 1e-9),
                   "reference c2p p50 ms": ref["capture_to_publish_ms"]["p50"],
                   "ours c2p p50 ms": ours["capture_to_publish_ms"]["p50"]}
            if row not in rows:
                rows.append(row)
        out.append({"title": "Reference-style flow (one eager fp32 HMR call per person, window LART) vs ours",
                    "rows": rows})
    app = appearance_rows(runs)
    if app:
        out.append({"title": "Appearance stage on vs off at the same settings (fps; capture-to-publish ms; the "
                             "keyframe pass on its worker, random weights)", "rows": app})
    host = host_rows(runs)
    if host:
        out.append({"title": "Per stage: host wall time / the stage thread's CPU time / wall time in the stage's "
                             "own device sync (mean ms per frame; a spinning sync counts as CPU, so CPU - sync is "
                             "the host work; wall well above CPU = waiting: GIL, a blocking sync, a lock); CPU % of the process and "
                             "of each thread over the run (a thread near 100 % is CPU-bound; Python threads "
                             "together near 100 % = the GIL is the limit)", "rows": host})
    gpu_rows = [{"run": r["name"], "fps": r["fps"], "GPU busy": r["gpu_busy_fraction"],
                 **{f"{k} wall/GPU ms": f"{r['stages_ms'][k]['mean']:.2f} / {v['mean']:.2f}"
                    for k, v in r["gpu_ms"].items() if k in r["stages_ms"]},
                 "GPU ms/frame (sum)": r["gpu_sum_ms_per_frame"]}
                for r in runs if r.get("gpu_ms")]
    if gpu_rows:
        keys = list(dict.fromkeys(k for row in gpu_rows for k in row))
        out.append({"title": "Per stage: host wall time vs GPU span (CUDA events; mean ms per frame), GPU busy "
                             "fraction (union of stage intervals over the run)",
                    "rows": [{k: row.get(k, "") for k in keys} for row in gpu_rows]})
    prof = [{"run": r["name"], **{f"{k} kernels ms": v for k, v in r["kernel_ms"]["per_frame_ms"].items()},
             "fps if GPU-bound": round(1e3 / r["kernel_ms"]["per_frame_ms"]["total"], 1)
             if r["kernel_ms"]["per_frame_ms"].get("total") else "",
             "top kernels": ", ".join(f"{n} {ms:.2f}" for n, ms in r["kernel_ms"]["top_kernels"][:4])}
            for r in runs if r.get("kernel_ms")]
    if prof:
        keys = list(dict.fromkeys(k for row in prof for k in row))
        out.append({"title": "GPU kernel time per frame by stage (torch.profiler, kernels only; 'total' / frame "
                             "period = how busy the GPU could be)", "rows": [{k: row.get(k, "") for k in keys}
                                                                            for row in prof]})
    compiled = [dict(run=r["name"], **c) for r in runs for c in r.get("compile_log", [])]
    if compiled:
        out.append({"title": "torch.compile start-up per batch bucket (cold: compiled; warm: from the disk cache)",
                    "rows": compiled})
    return out


def host_rows(runs: list[dict]) -> list[dict]:
    """One row per run with CPU figures: "wall / cpu" ms per stage, process and per-thread CPU %."""
    rows = []
    for r in runs:
        cpu = r.get("stages_cpu_ms")
        if not cpu:
            continue
        row = {"run": r["name"], "fps": r["fps"]}
        sync = r.get("stages_sync_ms", {})
        row.update({f"{k} wall/cpu/sync ms": f"{r['stages_ms'][k]['mean']:.2f} / {v['mean']:.2f} / "
                    + (f"{sync[k]['mean']:.2f}" if k in sync else "-") for k, v in cpu.items()})
        row["process CPU %"] = r["cpu_percent"]
        row["threads CPU %"] = ", ".join(f"{k} {v:.0f}" for k, v in r.get("thread_cpu_percent", {}).items())
        rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k, "") for k in keys} for row in rows]


DEFAULT_OUT = "lart-stream-bench"  # under the working folder, so a run never writes into the checkout


def appearance_rows(runs: list[dict]) -> list[dict]:
    """Each run with the appearance stage beside the run without it that differs in nothing else."""
    def key(r: dict) -> tuple:
        c = r["config"]
        return tuple(sorted((k, str(v)) for k, v in c.items()
                            if not k.startswith("appearance") and k not in ("name", "series")))

    off = {key(r): r for r in runs if not r["config"].get("appearance")}
    rows = []
    for r in runs:
        base = off.get(key(r))
        if not r["config"].get("appearance") or base is None:
            continue
        a, c, b = r["appearance"], r["capture_to_publish_ms"], base["capture_to_publish_ms"]
        rows.append({"people": r["config"]["people"], "run": r["name"], "K": r["config"]["appearance_every"],
                     "slices": r["config"]["appearance_chunks"], "fps off / on": f"{base['fps']:.1f} / {r['fps']:.1f}",
                     "c2p p50 off / on": f"{b['p50']:.1f} / {c['p50']:.1f}",
                     "c2p p99 off / on": f"{b['p99']:.1f} / {c['p99']:.1f}",
                     "appearance stage p50 ms": r["stages_ms"].get("appearance", {}).get("p50", 0.0),
                     "pass p50 ms": a["pass_ms"]["p50"], "passes": a["passes"], "skipped": a["skipped"]})
    return rows


def build_parser() -> argparse.ArgumentParser:
    from lart_stream.realtime.cli_args import (HelpFormatter, Parser, add_alias, non_negative_float,
                                               non_negative_int, positive_int)

    p = Parser(prog="lart-stream bench", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_version()
    p.add_argument("--source", help="video whose frames are used (resized); default: textured noise")
    p.add_argument("--boxes", help="JSON of boxes to replay ({'frames': [[[x1,y1,x2,y2,conf], ...], ...]})")
    frame_size = p.add_argument("--frame-size", dest="size", metavar="WxH", default="1920x1080", help="frame size")
    add_alias(p, "--size", frame_size)
    p.add_argument("--people", type=positive_int, default=5, help="people per frame (scripted boxes)")
    p.add_argument("--frames", type=positive_int, default=200, help="timed frames per run")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed frames before each run")
    p.add_argument("--rate", type=non_negative_float, default=0.0,
                   help="pace frames like a camera at this fps (0: as fast as possible)")
    p.add_argument("--model-size", choices=["tiny", "official"], default="tiny", help="HMR and LART size")
    p.add_argument("--window", type=non_negative_int, default=0, help="LART window T (0: model default)")
    mode = p.add_argument("--action-mode", dest="mode", choices=["causal", "window"], default="causal",
                          help="LART: causal step or trailing-window recompute")
    add_alias(p, "--mode", mode)
    p.add_argument("--backend", choices=["torch", "torch-eager", "onnxruntime", "tensorrt"], default="torch",
                   help="HMR backend")
    # iou by default: random HMR features make the 3D cost associate badly, so PHALP would spawn
    # spurious tracks and every later stage would run on more tracks than there are people.
    p.add_argument("--tracker", choices=["phalp", "iou"], default="iou", help="tracker")
    p.add_argument("--detector", default="hog", help="real detector timed beside the scripted one: hog | FILE.onnx | none")
    p.add_argument("--person-classes", default="0", help="ONNX detector: class ids that are people")
    p.add_argument("--lart-precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="LART transformer matmuls (auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--detector-precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="the ONNX detector on the torch backend (autocast)")
    p.add_argument("--overlap", action="store_true", help="same as --inflight 2")
    p.add_argument("--inflight", type=int, default=1, choices=[1, 2, 3],
                   help="frames in flight: 1 sequential, 2 detect ahead, 3 detect/lift/finish in their own threads")
    p.add_argument("--late-read", action="store_true",
                   help="with --inflight 3: read a frame only when lifting is about to be free (less latency)")
    p.add_argument("--hmr-weights", choices=["cast", "autocast"], default="cast",
                   help="bf16 HMR: weights cast once (default) or fp32 weights under autocast (the old path)")
    p.add_argument("--compile", action="store_true", help="torch.compile the HMR network (minutes per batch size cold)")
    p.add_argument("--backbone-bf16", action="store_true", help="HMR's whole ViT in bf16 (residual stream too)")
    p.add_argument("--fp8", action="store_true", help="HMR's ViT linears in FP8 (row-wise scales; Hopper/Ada)")
    p.add_argument("--compile-cache", help="inductor cache folder (default ~/.cache/lart-stream/inductor)")
    p.add_argument("--kernel-profile", type=int, default=0, metavar="N",
                   help="after each timed run, N frames under torch.profiler: kernel time per stage")
    p.add_argument("--no-gpu-clock", action="store_true", help="no CUDA events around the stages")
    p.add_argument("--appearance", choices=["on", "off"], default="off",
                   help="the MViT appearance stage (random weights) feeding LART (default off)")
    p.add_argument("--appearance-every", type=int, default=6, metavar="K", help="a keyframe pass every K frames")
    p.add_argument("--appearance-size", choices=["official", "tiny"], default="tiny",
                   help="official: MViTv2-L 40x3 shapes (bf16 on CUDA); tiny: for the CPU")
    p.add_argument("--appearance-chunks", type=int, default=1, metavar="N",
                   help="the keyframe pass as N slices of blocks, one launch each (the appearance sweep adds 4)")
    p.add_argument("--people-sweep", default="1,5,10,20", help="people counts of the people/inflight/overlap sweeps")
    p.add_argument("--sweep", default="",
                   help="comma list of people,inflight,weights,window,backend,size,baselines,overlap,appearance "
                        "or all (appearance: the same runs with the appearance stage toggled, and sliced)")
    p.add_argument("--device", default="auto", help="auto: cuda when available")
    p.add_argument("--export-dir", help="models from `lart-stream export` for the onnxruntime/tensorrt runs "
                                        "(default: export HMR to a temporary folder)")
    p.add_argument("--publish", default="tcp://127.0.0.1:*", help="publisher address (port *: any free port)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (relative to the working folder)")
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
        print(f"lart-stream bench: {exc if isinstance(exc, BuildError) else 'bad --frame-size ' + args.size}", file=sys.stderr)
        return 2
    args.size = f"{size[0]}x{size[1]}"
    if args.appearance_every < 1 or args.appearance_chunks < 1:
        print("lart-stream bench: --appearance-every and --appearance-chunks must be >= 1", file=sys.stderr)
        return 2
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
