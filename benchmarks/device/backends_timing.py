"""Full-size HMR 2.0 and LART through the torch backend on one GPU: parity and timings.

    python benchmarks/device/backends_timing.py --out $OUT/backends_timing.json
    python benchmarks/device/backends_timing.py --out /tmp/b.json --cpu-smoke      # tiny sizes, CPU, seconds
    python benchmarks/device/backends_timing.py --out ... --detector best_fp16.onnx # + a detector via onnx2torch

Needs torch, numpy, onnx and onnxruntime (CPU) only; runs from a checkout (adds the repo root to
sys.path). Random weights: speed does not depend on them; parity compares each backend with
PyTorch FP32 (TF32 off) on the same inputs and the same weights.

Per model and batch (crops for HMR, tracks for LART) it reports, for each backend: torch eager
FP32, torch CUDA graphs FP32 (padded to the batch bucket), torch CUDA graphs under bf16 autocast
(and, with --compile, torch.compile + CUDA graphs bf16): median / p10 / p90 latency of
``backend.run`` on device tensors (CUDA events, warm-up first, synchronise every call) and the
worst output's relative error ``max|got-ref| / max|ref|`` with pass/fail at the stated tolerance.
The LART step is also streamed for several frames with its cache fed back (parity only).

TensorRT is never run here (it is not installed on the GPU image); the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from lart_stream.benchmarks.device.timing import time_calls  # noqa: E402

from lart_stream.export import onnx_export as ox  # noqa: E402
from lart_stream.export.check import TOLERANCES, compare, fp32_copy  # noqa: E402
from lart_stream.realtime import backends as B  # noqa: E402


def time_call(fn, device: torch.device, warmup: int, iters: int) -> dict[str, float]:
    q = time_calls(fn, iters, warmup, device.type == "cuda")
    return {"p50_ms": q["median"], "p10_ms": q["p10"], "p90_ms": q["p90"]}


def reference(module: torch.nn.Module, inputs: list[torch.Tensor], names, device: torch.device) -> dict[str, np.ndarray]:
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            out = module(*[x.to(device) for x in inputs])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    return {n: o.float().cpu().numpy() for n, o in zip(names, out)}


def worst(ref: dict[str, np.ndarray], got: dict, precision: str) -> tuple[float, str, bool]:
    atol, rtol = TOLERANCES[precision]
    rows = [(n, *compare(ref[n], B.to_numpy(got[n]), atol, rtol)) for n in ref]
    bad = [r for r in rows if not r[5]]
    name, _, rel, *_ = max(rows, key=lambda r: r[2])
    return float(rel), name, not bad


def backend_variants(args, device: torch.device) -> list[tuple[str, dict, str]]:
    """(label, TorchBackend kwargs, precision for the tolerance)."""
    if device.type != "cuda":
        return [("torch eager fp32", {"cuda_graphs": False}, "fp32")]
    v = [("torch eager fp32", {"cuda_graphs": False}, "fp32"),
         ("torch graphs fp32", {"cuda_graphs": True}, "fp32"),
         ("torch graphs bf16", {"cuda_graphs": True, "precision": "bf16"}, "bf16")]
    if args.compile:
        v.append(("torch compile+graphs bf16", {"cuda_graphs": True, "precision": "bf16", "compile": True}, "bf16"))
    return v


def bench_spec(spec, args, device: torch.device, batches: list[int], rows: list, notes: list) -> None:
    names = spec.io.output_names
    ref_module = fp32_copy(spec.module).to(device)
    for label, kw, precision in backend_variants(args, device):
        t0 = time.perf_counter()
        try:
            backend = B.TorchBackend(fp32_copy(spec.module), spec.io, device, **kw)
        except Exception as e:  # noqa: BLE001 (report and go on)
            notes.append(f"{spec.kind} {label}: could not build ({type(e).__name__}: {e})")
            continue
        for b in batches:
            inputs = [x.to(device) for x in spec.example(b, seed=b)]
            feed = dict(zip(spec.io.input_names, inputs))
            row = {"model": spec.kind, "backend": label, "describe": backend.describe(), "batch": b}
            try:
                got = backend.run(feed)  # first call captures the graph for this bucket
                rel, out_name, ok = worst(reference(ref_module, inputs, names, device), got, precision)
                row.update(max_rel=rel, worst_output=out_name, tolerance=precision, parity_ok=ok)
                row.update(time_call(lambda: backend.run(feed), device, args.warmup, args.iters))
            except Exception as e:  # noqa: BLE001
                row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                traceback.print_exc(limit=3)
            rows.append(row)
            print_row(row)
        if spec.streaming_check is not None and "error" not in rows[-1]:
            frames = args.stream_frames
            srows = spec.streaming_check(backend, frames=frames, batch=3, precision=precision)
            ok = all(r.passed for r in srows)
            rel = max(r.max_rel for r in srows)
            row = {"model": "lart_step(stream)", "backend": label, "batch": 3, "frames": frames, "max_rel": rel,
                   "tolerance": precision, "parity_ok": ok, "worst_output": max(srows, key=lambda r: r.max_rel).output}
            rows.append(row)
            print_row(row)
        notes.append(f"{spec.kind} {label}: {time.perf_counter() - t0:.1f} s incl. capture")
        del backend
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_detector(path: str, args, device: torch.device, rows: list, notes: list) -> None:
    from lart_stream.realtime.onnx_detector import OnnxDetector, OnnxDetectorConfig, letterbox, to_blob
    from lart_stream.realtime.records import Frame

    ok, why = B.onnx2torch_status()
    if not ok:
        notes.append(f"detector: skipped ({why})")
        return
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    ort = OnnxDetector(OnnxDetectorConfig(path, person_classes=(0, 1), backend="onnxruntime"))
    blob = to_blob(letterbox(image, ort.input_size)[0])
    ref = B.to_numpy(ort.backend.run({ort.input_name: blob})[ort.output_name])
    rows.append({"model": "detector", "backend": "onnxruntime cpu", "batch": 1,
                 **time_call(lambda: ort.backend.run({ort.input_name: blob}), torch.device("cpu"), 2, 10)})
    print_row(rows[-1])
    for label, graphs in (("torch(onnx2torch) eager", False), ("torch(onnx2torch) graph", True)):
        if graphs and device.type != "cuda":
            continue
        row = {"model": "detector", "backend": label, "batch": 1}
        try:
            module = B.load_onnx_as_torch(path, device)
            backend = B.TorchBackend(module, ort._concrete_io(), device, cuda_graphs=graphs)
            x = {ort.input_name: torch.from_numpy(blob).to(device)}
            got = B.to_numpy(backend.run(x)[ort.output_name])
            row["max_abs_vs_ort"] = float(np.abs(got - ref).max())
            row.update(time_call(lambda: backend.run(x), device, args.warmup, args.iters))
            det = OnnxDetector(OnnxDetectorConfig(path, person_classes=(0, 1), device=str(device)), backend=backend)
            # the whole stage: letterbox on the CPU, upload, model, download, NMS
            row["full_stage_p50_ms"] = time_call(lambda: det(Frame(0, 0.0, image)), device, 3, args.iters)["p50_ms"]
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rows.append(row)
        print_row(row)


def print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['model']:<18} {r['backend']:<28} b={r['batch']:<3} ERROR {r['error']}", flush=True)
        return
    t = f"{r['p50_ms']:8.2f} ms [{r['p10_ms']:.2f}-{r['p90_ms']:.2f}]" if "p50_ms" in r else " " * 26
    par = ""
    if "max_rel" in r:
        par = f"relerr {r['max_rel']:.2e} ({r.get('worst_output', '')}) {'ok' if r['parity_ok'] else 'FAIL'}"
    elif "max_abs_vs_ort" in r:
        par = f"max|d| vs ort {r['max_abs_vs_ort']:.2e}"
    extra = f" stage {r['full_stage_p50_ms']:.2f} ms" if "full_stage_p50_ms" in r else ""
    print(f"{r['model']:<18} {r['backend']:<28} b={r['batch']:<3} {t}  {par}{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU (checks the script runs)")
    p.add_argument("--batches", default="1,7,16")
    p.add_argument("--models", default="hmr2,lart_window,lart_step")
    p.add_argument("--compile", action="store_true", help="also torch.compile + graphs (adds ~30 s per shape)")
    p.add_argument("--detector", default=os.environ.get("LART_TEST_DETECTOR_ONNX"),
                   help="detector ONNX for the onnx2torch path (default $LART_TEST_DETECTOR_ONNX)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--stream-frames", type=int, default=8)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.cpu_smoke:
        device, size = torch.device("cpu"), "tiny"
        args.iters, args.warmup, args.batches = 2, 1, "1,7"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --cpu-smoke", file=sys.stderr)
            return 2
        device, size = torch.device("cuda"), "official"
    batches = [int(b) for b in args.batches.split(",")]
    # FP32 means FP32: TF32 off for the reference and the FP32 backends (bf16 autocast is unaffected)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    trt_ok, trt_why = B.tensorrt_status()
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "ort_providers": B.onnxruntime_providers(), "tensorrt": trt_ok or trt_why,
           "onnx2torch": B.onnx2torch_status()[0], "size": size}
    print(json.dumps(env), flush=True)
    rows: list[dict] = []
    notes = ["TensorRT path NOT run: " + (trt_why or "not exercised by this script")]
    import warnings

    for kind in args.models.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            spec = ox.SPEC_BUILDERS[kind](size)
            notes.append(f"{kind}: built {size} random weights in {time.perf_counter() - t0:.1f} s")
        bench_spec(spec, args, device, batches, rows, notes)
        del spec
    if args.detector:
        bench_detector(args.detector, args, device, rows, notes)
    notes.append(f"total {time.perf_counter() - t_start:.1f} s")
    for n in notes:
        print("note:", n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": env, "rows": rows, "notes": notes}, indent=1) + "\n")
    failed = [r for r in rows if r.get("parity_ok") is False or "error" in r]
    print(f"rows {len(rows)}, parity failures/errors {len(failed)}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
