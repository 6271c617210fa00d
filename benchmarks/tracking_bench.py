"""Tracking benchmark on CPU: every tracker on the hard synthetic scenes (issue 15), and per-frame time.

    python benchmarks/tracking_bench.py    # writes benchmarks/results/tracking/{tracking_cpu.md,tracking_cpu.json,idf1_per_seed.png}
    python benchmarks/tracking_bench.py --seeds 2 --out-dir /tmp/bench   # quicker

Scenes: HARD_SUITE (tuned on, seeds 0..N-1) and HELD_OUT (never tuned on: 'hard_crowd', seeds 1000..;
'hard_pairs', seeds 2000.., a scene type added after the tuning).
Scoring: against the visible-part GT box (the box our modal detector aims at; see metrics.ground_truth),
with IDF1 against the full-body box (MOTChallenge's amodal convention) alongside, and IDF1's loss split
by cause (metrics.idf1_losses).
Trackers: lart (default), phalp-reference, iou, and an oracle that knows who each detection is but goes
through the same lifecycle (an upper bound for association at this detection quality).

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
from dataclasses import replace
from pathlib import Path

import numpy as np

from lart_stream.realtime.records import People
from lart_stream.realtime.tracking import TrackerConfig, build_tracker
from lart_stream.realtime.tracking.metrics import (LOSS_CAUSES, OracleTracker, absences, evaluate, ground_truth, hijacks,
                                                   idf1_losses, run_scene)
from lart_stream.benchmarks.report import cpu_name
from lart_stream.realtime.tracking.synthetic import HARD_SUITE, HELD_OUT, HELD_OUT_SEED0, make_scene

KINDS = ("lart", "phalp-reference", "iou", "oracle")
TIMED = ("lart", "phalp-reference", "iou")
LOW_TIMED = "lart (half the detections low-score)"
SCENES = HARD_SUITE + HELD_OUT
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


def scene_seeds(name: str, seeds: int) -> range:
    first = HELD_OUT_SEED0.get(name, 0)
    return range(first, first + seeds)


def suite_metrics(seeds: int) -> dict:
    """Per scene, per tracker: per-seed IDF1/IDSW/MOTA/HOTA/hijacks and every 1-3 s absence."""
    out = {}
    for name in SCENES:
        per_kind = {k: [] for k in KINDS}
        for seed in scene_seeds(name, seeds):
            scene = make_scene(name, seed=seed)
            gt = ground_truth(scene.frames)
            gt_full = ground_truth(scene.frames, "full")
            for kind in KINDS:
                tracker = OracleTracker(scene) if kind == "oracle" else build_tracker(kind, TrackerConfig())
                run = run_scene(tracker, scene)
                m = evaluate(gt, run.hyp)
                gaps = absences(scene, run)
                _, losses = idf1_losses(scene, run)
                _, losses_full = idf1_losses(scene, run, "full")
                per_kind[kind].append({
                    "seed": seed, "idf1": m.idf1, "idf1_full_box": evaluate(gt_full, run.hyp).idf1, "idf1_losses": losses,
                    "idf1_full_box_loss": losses_full["box"],
                    "mota": m.mota, "hota": m.hota, "id_switches": m.id_switches,
                    "hijacks": hijacks(scene, run), "false_positives": m.false_positives, "misses": m.misses,
                    "gt_boxes": m.num_gt, "absences": [[a.identity, round(a.seconds, 3), a.reidentified] for a in gaps]})
        out[name] = per_kind
    return out


def summarise(rows: list[dict]) -> dict:
    gaps = [g for r in rows for g in r["absences"]]
    short = [g[2] for g in gaps if g[1] < 2.0]  # 1-2 s
    long = [g[2] for g in gaps if g[1] >= 2.0]  # 2-4 s (lart keeps lost tracks 4 s)
    # Per seed: was every absence of 2 s or more re-identified (seeds without one are left out)?
    seeds_long = [all(g[2] for g in r["absences"] if g[1] >= 2.0) for r in rows
                  if any(g[1] >= 2.0 for g in r["absences"])]
    hota = [r["hota"] for r in rows]
    return {"idf1": float(np.mean([r["idf1"] for r in rows])), "idf1_min": float(np.min([r["idf1"] for r in rows])),
            "idf1_full_box": float(np.mean([r["idf1_full_box"] for r in rows])),
            "idf1_losses": {k: float(np.mean([r["idf1_losses"][k] for r in rows])) for k in LOSS_CAUSES},
            "idf1_full_box_loss": float(np.mean([r["idf1_full_box_loss"] for r in rows])),
            "mota": float(np.mean([r["mota"] for r in rows])),
            "hota": None if None in hota else float(np.mean(hota)),
            "id_switches": int(sum(r["id_switches"] for r in rows)), "hijacks": int(sum(r["hijacks"] for r in rows)),
            "reid_1_2s": [int(sum(short)), len(short)], "reid_2_4s": [int(sum(long)), len(long)],
            "seeds_reid_2s": [int(sum(seeds_long)), len(seeds_long)]}


def half_low(people: People) -> People:
    """The same detections with every other one at a partial-occlusion score (exercises lart's low-score stage)."""
    confidence = people.confidence.copy()
    confidence[::2] = 0.5
    return replace(people, confidence=confidence)


def timing(n_tracks: int, frames: int, warmup: int, repeats: int) -> dict:
    scene = make_scene("steady", seed=0, n_people=n_tracks, n_frames=frames, p_miss=0.0, fp_rate=0.0)
    out = {}
    for kind in TIMED + (LOW_TIMED,):
        tracker = build_tracker(kind.split(" ")[0], TrackerConfig())
        times, emitted = [], []
        for _ in range(repeats):
            tracker.reset()
            for frame in scene.frames:
                people = half_low(frame.people) if kind == LOW_TIMED and frame.index >= warmup else frame.people
                t0 = time.perf_counter()
                tracks = tracker.update(people, frame.index)
                dt = time.perf_counter() - t0
                if frame.index >= warmup:
                    times.append(dt * 1e3)
                    emitted.append(len(tracks))
        ms = np.array(times)
        out[kind] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                     "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "frames_timed": len(ms),
                     "mean_confirmed_tracks": float(np.mean(emitted))}
    return out


def _frac(pair: list[int]) -> str:
    return "-" if pair[1] == 0 else f"{pair[0]}/{pair[1]} ({pair[0] / pair[1]:.0%})"


def render_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Tracking on CPU: hard synthetic scenes (issue 15) and per-frame time",
        "",
        f"Written by `benchmarks/tracking_bench.py` on {result['date']}.",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['platform']}; "
        f"load average {m['load_average_1m']:.2f} at start (the CPU is shared: timings are noisy upward).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        f"## Metrics ({result['seeds']} seeds per scene, 240 frames at 30 fps each)",
        "",
        "Scenes (realtime/tracking/synthetic.py): turns and stops, 2-3x depth changes, partial occlusion (box cropped "
        "to the visible part, score 0.4-0.6, appearance mixed with the occluder's), 20-40-frame detection gaps, "
        "~0.3 false positives per frame (some beside hidden people), one person out of view for 60 frames "
        "(hard_leave, hard_crowd, hard_pairs). Held out, never tuned on: `hard_crowd` (8 people, seeds 1000+) and "
        "`hard_pairs` (seeds 2000+; two pairs walking side by side, one changing sides behind the other in half the "
        "pairs, one walker toward/away, one leaver: a scene type added after all tuning).",
        "Ground truth: every person with at least 40% of the box in the frame, occluded or not (MOTChallenge keeps "
        "occluded people). Boxes: IDF1, MOTA, HOTA, IDSW are scored against the box of the person's unoccluded part, "
        "the box our COCO-trained (modal) detector gives and hence every tracker publishes; 'IDF1 full box' scores "
        "the same output against the whole-body box (MOTChallenge's amodal annotation), where a correct track on a "
        "half-hidden person fails IoU >= 0.5 (86-90% of correct detections below 50% visibility do). A hypothesis is "
        "a confirmed track matched in that frame (IoU >= 0.5). IDF1, IDSW, MOTA: motmetrics; HOTA: TrackEval. "
        "IDF1/MOTA/HOTA averaged over seeds, IDSW and hijacks (a track that followed a real person takes a false "
        "positive, counted per frame) summed. Re-ID: absences between detections of 1-2 s and 2-4 s (the 60 frames "
        "out of view are 2.4-3.3 s between detections) after which the "
        "first track to take the person (within 1 s) has the old id; 'seeds 2 s': seeds in which every absence of "
        "2 s or more was re-identified. Oracle: knows who each detection is, same lifecycle as lart.",
        "",
        "| scene | tracker | IDF1 | min IDF1 | IDF1 full box | MOTA | HOTA | IDSW | hijacks | re-ID 1-2 s | re-ID 2-4 s "
        "| seeds 2 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scene, per_kind in result["summary"].items():
        for kind, r in per_kind.items():
            hota = "n/a" if r["hota"] is None else f"{r['hota']:.3f}"
            lines.append(f"| {scene} | {kind} | {r['idf1']:.3f} | {r['idf1_min']:.3f} | {r['idf1_full_box']:.3f} | "
                         f"{r['mota']:.3f} | {hota} | {r['id_switches']} | {r['hijacks']} | {_frac(r['reid_1_2s'])} | "
                         f"{_frac(r['reid_2_4s'])} | {_frac(r['seeds_reid_2s'])} |")
    lines += ["", "## Where IDF1 goes (IDF1 points lost, mean over seeds; IDF1 + the row's losses = 1)", "",
              "Every IDFN (a ground-truth box without its identity's track) and IDFP (a published box not on its "
              "identity) is charged to one cause (realtime/tracking/metrics.py `idf1_losses`): "
              + "; ".join(f"**{k}**: {v}" for k, v in LOSS_CAUSES.items()) + ". Visible-part boxes; the last column "
              "is the box loss against the full-body box instead.", "",
              "| scene | tracker | IDF1 | " + " | ".join(LOSS_CAUSES) + " | box (full-box GT) |",
              "|---|---|---|" + "---|" * (len(LOSS_CAUSES) + 1)]
    for scene, per_kind in result["summary"].items():
        for kind, r in per_kind.items():
            lines.append(f"| {scene} | {kind} | {r['idf1']:.3f} | "
                         + " | ".join(f"{r['idf1_losses'][k]:.3f}" for k in LOSS_CAUSES)
                         + f" | {r['idf1_full_box_loss']:.3f} |")
    lines += ["", "Reading it: the undetected columns are the same for every tracker (no tracker publishes a box "
              "without a detection); the oracle's remaining loss is confirmation latency, people who come into view "
              "partly hidden (a low score never starts a track) and boxes of barely visible people; lart's extra "
              "loss over the oracle is mostly low-score detections it still refuses, and wrong associations are a "
              "small share. Against full-body boxes, publishing a correct partly-hidden detection costs twice (IDFN + "
              "IDFP), so there lart and the oracle, which both publish most of them, lose more than against "
              "visible-part boxes.",
              "",
              "Caveat: lart's low-score stage extends a track on a partly hidden detection with an occluder-mixed "
              "embedding when the body shape (betas) agrees (lart.low_score_gate). In these scenes betas vary 0.05 "
              "per component per frame even under occlusion and false positives' betas are random, which makes "
              "shape an easy cue. Measured on the tuned scenes (20 seeds): with 3x that noise (betas_noise 0.15) "
              "lart's IDF1 stays 0.885; with 6x (0.3) the shape path stops firing and lart falls back to the strict "
              "appearance gate (0.859; 0.857 without the path at that noise). HMR 2.0's betas spread on partly "
              "hidden people is not measured here: re-tune low_shape_gate on footage."]
    t = result["targets"]
    lines += ["", "## Targets (issue 15), on the tuned scenes and on the held-out ones", "",
              "| check | " + " | ".join(t) + " |", "|---|" + "---|" * len(t)]
    for key, label in (("mean_idf1", "mean IDF1 of lart (target >= 0.88)"),
                       ("oracle_idf1", "mean IDF1 of the oracle (the ceiling at this detection quality)"),
                       ("mean_idf1_full", "mean IDF1 of lart / the oracle, full-body GT boxes"),
                       ("idsw_ratio", "lart IDSW / IoU IDSW (target <= 0.5)"),
                       ("worst_vs_iou", "worst seed: lart IDF1 - IoU IDF1 (target >= -0.02)"),
                       ("worst_vs_phalp", "worst seed: lart IDF1 - phalp-reference IDF1"),
                       ("seeds_reid_2s", "seeds re-identifying every >= 2 s absence (target >= 90%)")):
        lines.append(f"| {label} | " + " | ".join(str(g[key]) for g in t.values()) + " |")
    lines += [
        "",
        f"## Per-frame `update()` time ({result['timing_frames']} frames, first {result['timing_warmup']} untimed, "
        f"x{result['timing_repeats']} passes)",
        "",
        "N people all visible and detected every frame, so N confirmed tracks and N detections per frame; in the "
        "last row of each group every other detection has a partial-occlusion score (0.5) after the untimed frames, "
        "so lart also runs its low-score stage with the occluder discount.",
        "",
        "| tracks | tracker | p50 ms | p95 ms | p99 ms | mean ms | confirmed tracks (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, per_kind in result["timing"].items():
        for kind, r in per_kind.items():
            lines.append(f"| {n} | {kind} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | "
                         f"{r['mean_ms']:.3f} | {r['mean_confirmed_tracks']:.1f} |")
    return "\n".join(lines) + "\n"


def targets(metrics: dict, scenes: tuple[str, ...]) -> dict:
    def rows(kind):
        return [r for s in scenes for r in metrics[s][kind]]

    lart, iou, ref, oracle = rows("lart"), rows("iou"), rows("phalp-reference"), rows("oracle")
    seeds = summarise(lart)["seeds_reid_2s"]
    return {"mean_idf1": f"{np.mean([r['idf1'] for r in lart]):.3f}",
            "oracle_idf1": f"{np.mean([r['idf1'] for r in oracle]):.3f}",
            "mean_idf1_full": f"{np.mean([r['idf1_full_box'] for r in lart]):.3f} / "
                              f"{np.mean([r['idf1_full_box'] for r in oracle]):.3f}",
            "idsw_ratio": f"{sum(r['id_switches'] for r in lart)} / {sum(r['id_switches'] for r in iou)}",
            "worst_vs_iou": f"{min(a['idf1'] - b['idf1'] for a, b in zip(lart, iou)):+.3f}",
            "worst_vs_phalp": f"{min(a['idf1'] - b['idf1'] for a, b in zip(lart, ref)):+.3f}",
            "seeds_reid_2s": _frac(seeds)}


def plot(result: dict, path: Path) -> None:
    """IDF1 per seed per tracker, one panel per scene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = list(result["metrics"])
    cols = min(3, len(scenes))
    rows = -(-len(scenes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), sharey=True, squeeze=False)
    styles = {"lart": ("tab:blue", "o"), "phalp-reference": ("tab:orange", "s"), "iou": ("tab:gray", "^"),
              "oracle": ("black", "_")}
    for ax, scene in zip(axes.flat, scenes):
        for kind, seeds in result["metrics"][scene].items():
            color, marker = styles[kind]
            ax.plot([r["seed"] for r in seeds], [r["idf1"] for r in seeds], marker=marker, color=color, linestyle="-",
                    linewidth=0.8, markersize=4, label=kind)
        held = " (held out)" if scene in HELD_OUT else ""
        ax.set_title(scene + held)
        ax.set_xlabel("seed")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(scenes):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("IDF1 (visible-part GT boxes)")
    axes.flat[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"IDF1 per seed ({result['machine']['cpu']}, {result['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results" / "tracking"))
    parser.add_argument("--seeds", type=int, default=20, help="seeds per scene")
    parser.add_argument("--timing-frames", type=int, default=300)
    parser.add_argument("--timing-warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.timing_frames <= args.timing_warmup:
        print("tracking_bench: need --seeds >= 1 and --timing-frames > --timing-warmup", file=sys.stderr)
        return 2
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(), "seeds": args.seeds,
              "timing_frames": args.timing_frames, "timing_warmup": args.timing_warmup,
              "timing_repeats": args.repeats}
    result["metrics"] = suite_metrics(args.seeds)
    result["summary"] = {s: {k: summarise(rows) for k, rows in per_kind.items()} for s, per_kind in result["metrics"].items()}
    groups = {"tuned (" + ", ".join(HARD_SUITE) + ")": HARD_SUITE, **{f"held out: {s}": (s,) for s in HELD_OUT}}
    result["targets"] = {label: targets(result["metrics"], scenes) for label, scenes in groups.items()}
    result["timing"] = {str(n): timing(n, args.timing_frames, args.timing_warmup, args.repeats) for n in TRACK_COUNTS}
    result["machine"]["load_average_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render_markdown(result)
    (out / "tracking_cpu.md").write_text(md)
    plot(result, out / "idf1_per_seed.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
