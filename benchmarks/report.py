"""Benchmark results: machine description, JSON, Markdown table and PNG plots."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["machine", "versions", "runs", "created"],
    "properties": {
        "created": {"type": "string"},
        "machine": {"type": "object", "required": ["cpu", "cpu_count", "device", "gpu"]},
        "versions": {"type": "object", "required": ["python", "torch", "numpy", "lart_stream"]},
        "runs": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "config", "frames", "fps", "stages_ms", "capture_to_publish_ms",
                             "dropped", "peak_host_mb", "cpu_percent"],
                "properties": {
                    "name": {"type": "string"},
                    "config": {"type": "object"},
                    "frames": {"type": "integer", "minimum": 1},
                    "fps": {"type": "number", "exclusiveMinimum": 0},
                    "stages_ms": {"type": "object", "additionalProperties": {
                        "type": "object", "required": ["mean", "p50", "p95", "p99", "max"]}},
                    "capture_to_publish_ms": {"type": "object", "required": ["p50", "p95", "p99", "max"]},
                    "dropped": {"type": "integer", "minimum": 0},
                    "peak_host_mb": {"type": "number"},
                    "peak_gpu_mb": {"type": ["number", "null"]},
                    "cpu_percent": {"type": "number"},
                    "stages_cpu_ms": {"type": "object", "additionalProperties": {
                        "type": "object", "required": ["mean", "p50", "p95", "p99", "max"]}},
                    "thread_cpu_percent": {"type": "object", "additionalProperties": {"type": "number"}},
                },
            },
        },
        "comparisons": {"type": "array"},
    },
}


def percentiles(values_ms: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray(values_ms, dtype=np.float64)
    if v.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"mean": round(float(v.mean()), 4), "p50": round(float(p50), 4), "p95": round(float(p95), 4),
            "p99": round(float(p99), 4), "max": round(float(v.max()), 4)}


def peak_host_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> tuple[dict, dict]:
    import torch

    cpu = cpu_name()
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
               "sm_count": props.multi_processor_count, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version()}
    machine = {"cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(), "device": device,
               "gpu": gpu, "torch_threads": torch.get_num_threads()}
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                "lart_stream": _own_version()}
    for name in ("cv2", "onnx", "onnxruntime", "tensorrt", "zmq", "scipy"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:
            versions[name] = None
    return machine, versions


def _own_version() -> str:
    try:
        from importlib.metadata import version

        return version("lart-stream")
    except Exception:
        return "source tree"


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))


def write_table_and_json(out_dir: str | Path, name: str, result: dict, lines: list[str]) -> None:
    """``out_dir/name.json`` (the result) and ``out_dir/name.md`` (the table lines), echoed to stdout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def markdown(result: dict) -> str:
    m, v = result["machine"], result["versions"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    lines = [f"# lart-stream benchmark ({result['created']})", "",
             f"Device: {m['device']} (GPU: {gpu}); CPU: {m['cpu']} x{m['cpu_count']}; "
             f"python {v['python']}, torch {v['torch']}, onnxruntime {v.get('onnxruntime')}, "
             f"tensorrt {v.get('tensorrt') or 'absent'}.", ""]
    stages = sorted({k for r in result["runs"] for k in r["stages_ms"]}, key=_stage_order)
    head = ["run", "people", "tracks", "fps", "c2p p50", "c2p p99", "c2p max", *[f"{s} p50" for s in stages], "dropped",
            "host MB", "GPU MB"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in result["runs"]:
        c2p = r["capture_to_publish_ms"]
        row = [r["name"], str(r["config"].get("people", "")), f"{r.get('tracks_mean', 0):.1f}", f"{r['fps']:.1f}", f"{c2p['p50']:.2f}",
               f"{c2p['p99']:.2f}", f"{c2p['max']:.2f}",
               *[f"{r['stages_ms'][s]['p50']:.2f}" if s in r["stages_ms"] else "" for s in stages],
               str(r["dropped"]), f"{r['peak_host_mb']:.0f}",
               "" if r.get("peak_gpu_mb") is None else f"{r['peak_gpu_mb']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    for comp in result.get("comparisons", []):
        lines += ["", f"**{comp['title']}**", ""]
        keys = list(comp["rows"][0].keys()) if comp["rows"] else []
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for row in comp["rows"]:
            lines.append("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    lines.append("")
    lines.append("All ms are per frame; c2p = capture-to-publish latency. Model weights are random "
                 "(speed does not depend on weight values).")
    return "\n".join(lines) + "\n"


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


_ORDER = ["detect", "detect_real", "lift", "track", "actions", "publish"]


def _stage_order(name: str) -> int:
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)


def plot(result: dict, out_dir: Path) -> list[Path]:
    """Latency percentiles against people, and a per-stage breakdown. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    groups: dict[str, list[dict]] = {}
    for r in result["runs"]:
        groups.setdefault(r["config"].get("series", r["name"]), []).append(r)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for series, runs in groups.items():
        runs = sorted(runs, key=lambda r: r["config"].get("people", 0))
        x = [r["config"].get("people", 0) for r in runs]
        for q, style in (("p50", "-o"), ("p99", "--^")):
            ax.plot(x, [r["capture_to_publish_ms"][q] for r in runs], style, label=f"{series} {q}")
    ax.set_xlabel("people per frame")
    ax.set_ylabel("capture-to-publish latency (ms)")
    ax.set_title("Latency against people")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "latency_vs_people.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    runs = result["runs"]
    stages = sorted({k for r in runs for k in r["stages_ms"] if k != "detect_real"}, key=_stage_order)
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(runs)), 4.5))
    bottom = np.zeros(len(runs))
    for s in stages:
        vals = np.array([r["stages_ms"].get(s, {}).get("mean", 0.0) for r in runs])
        ax.bar(range(len(runs)), vals, bottom=bottom, label=s)
        bottom += vals
    ax.set_xticks(range(len(runs)), [r["name"] for r in runs], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean ms per frame")
    ax.set_title("Per-stage breakdown")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "stage_breakdown.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
