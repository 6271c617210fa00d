"""Tracking benchmark on CPU: both trackers' metrics on the synthetic suite, and per-frame time at 5/20/50 tracks.

    python benchmarks/tracking_bench.py                 # writes benchmarks/results/tracking_cpu.{md,json}
    python benchmarks/tracking_bench.py --seeds 2 --frames 120 --out-dir /tmp/bench   # quicker

Timing: a 'steady' scene of N people, all visible and detected every frame (no misses, no false
positives), so each tracker holds N confirmed tracks and sees N detections. The first frames
(confirmation and burn-in) are not timed; ``update()`` is timed alone, the scene is generated first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from lart_stream.realtime.tracking import TrackerConfig, build_tracker
from lart_stream.realtime.tracking.metrics import evaluate_tracker
from lart_stream.benchmarks.report import cpu_name
from lart_stream.realtime.tracking.synthetic import SUITE, make_scene

KINDS = ("phalp", "iou")
SCENES = SUITE + ("follow",)  # 'follow' is a known hard case for the 3D cost (see synthetic.py)
TRACK_COUNTS = (5, 20, 50)


def machine_info() -> dict:
    import scipy

    cpu = cpu_name()
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}
    for mod in ("motmetrics", "trackeval", "pandas"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {"platform": platform.platform(), "cpu": cpu, "logical_cores": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "versions": versions}


def suite_metrics(seeds: int, frames: int) -> dict:
    out = {}
    for name in SCENES:
        per_kind = {k: [] for k in KINDS}
        for seed in range(seeds):
            scene = make_scene(name, seed=seed, n_frames=frames)
            for kind in KINDS:
                per_kind[kind].append(evaluate_tracker(build_tracker(kind, TrackerConfig()), scene))
        out[name] = {kind: {
            "idf1": float(np.mean([m.idf1 for m in ms])),
            "mota": float(np.mean([m.mota for m in ms])),
            "hota": None if ms[0].hota is None else float(np.mean([m.hota for m in ms])),
            "id_switches": int(sum(m.id_switches for m in ms)),
            "id_switches_per_seed": [m.id_switches for m in ms],
            "false_positives": int(sum(m.false_positives for m in ms)),
            "misses": int(sum(m.misses for m in ms)),
            "gt_boxes": int(sum(m.num_gt for m in ms)),
        } for kind, ms in per_kind.items()}
    return out


def timing(n_tracks: int, frames: int, warmup: int, repeats: int) -> dict:
    scene = make_scene("steady", seed=0, n_people=n_tracks, n_frames=frames, p_miss=0.0, fp_rate=0.0)
    out = {}
    for kind in KINDS:
        tracker = build_tracker(kind, TrackerConfig())
        times, emitted = [], []
        for _ in range(repeats):
            tracker.reset()
            for frame in scene.frames:
                t0 = time.perf_counter()
                tracks = tracker.update(frame.people, frame.index)
                dt = time.perf_counter() - t0
                if frame.index >= warmup:
                    times.append(dt * 1e3)
                    emitted.append(len(tracks))
        ms = np.array(times)
        out[kind] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                     "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "frames_timed": len(ms),
                     "mean_confirmed_tracks": float(np.mean(emitted))}
    return out


def render_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Tracking on CPU: synthetic-suite metrics and per-frame time",
        "",
        f"Written by `benchmarks/tracking_bench.py` on {result['date']}.",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['platform']}; "
        f"load average {m['load_average_1m']:.2f} at start (the CPU is shared: timings are noisy upward).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        f"## Metrics ({result['seeds']} seeds per scene, {result['frames']} frames each; IDF1/MOTA/HOTA averaged, IDSW summed)",
        "",
        "Ground truth: every person with at least 40% of the box in the frame, occluded or not; a hypothesis is a "
        "confirmed track matched in that frame (IoU >= 0.5). IDF1, IDSW, MOTA from motmetrics; HOTA from trackeval.",
        "",
        "| scene | tracker | IDF1 | MOTA | HOTA | ID switches (per seed) | FP | FN | GT boxes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scene, per_kind in result["metrics"].items():
        for kind, r in per_kind.items():
            hota = "n/a" if r["hota"] is None else f"{r['hota']:.3f}"
            lines.append(f"| {scene} | {kind} | {r['idf1']:.3f} | {r['mota']:.3f} | {hota} | {r['id_switches']} "
                         f"({', '.join(map(str, r['id_switches_per_seed']))}) | {r['false_positives']} | {r['misses']} "
                         f"| {r['gt_boxes']} |")
    lines += [
        "",
        f"## Per-frame `update()` time ({result['timing_frames']} frames, first {result['timing_warmup']} untimed, "
        f"x{result['timing_repeats']} passes)",
        "",
        "N people all visible and detected every frame, so N confirmed tracks and N detections per frame.",
        "",
        "| tracks | tracker | p50 ms | p95 ms | p99 ms | mean ms | confirmed tracks (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, per_kind in result["timing"].items():
        for kind, r in per_kind.items():
            lines.append(f"| {n} | {kind} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | "
                         f"{r['mean_ms']:.3f} | {r['mean_confirmed_tracks']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per suite scene")
    parser.add_argument("--frames", type=int, default=200, help="frames per suite scene")
    parser.add_argument("--timing-frames", type=int, default=300)
    parser.add_argument("--timing-warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.frames < 20 or args.timing_frames <= args.timing_warmup:
        print("tracking_bench: need --seeds >= 1, --frames >= 20 and --timing-frames > --timing-warmup", file=sys.stderr)
        return 2
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(), "seeds": args.seeds,
              "frames": args.frames, "timing_frames": args.timing_frames, "timing_warmup": args.timing_warmup,
              "timing_repeats": args.repeats}
    result["metrics"] = suite_metrics(args.seeds, args.frames)
    result["timing"] = {str(n): timing(n, args.timing_frames, args.timing_warmup, args.repeats) for n in TRACK_COUNTS}
    result["machine"]["load_average_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render_markdown(result)
    (out / "tracking_cpu.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
