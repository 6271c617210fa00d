"""Parity of every backend against PyTorch FP32 on the same inputs.

For each model, backend, batch size and output we report the maximum absolute error and the
relative error ``max|got - ref| / max|ref|`` (normwise: element-wise ratios explode on outputs
that are near zero, e.g. camera translations of random weights). An output passes when

    max|got - ref| <= atol + rtol * max|ref|

with (atol, rtol) = TOLERANCES[precision]: FP32 backends (onnxruntime, torch eager/graphs in
FP32) must agree to 1e-4 + 1e-3 relative; FP16 ones (TensorRT, torch under fp16 autocast) to
1e-3 + 3e-2 relative (fp16 ViT-H drifts ~5e-3 over 32 layers).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lart_stream.realtime.backends import Backend, to_numpy

TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (1e-3, 3e-2), "bf16": (2e-3, 6e-2)}


@dataclass(frozen=True)
class ParityRow:
    model: str
    backend: str
    batch: int
    output: str
    max_abs: float
    max_rel: float
    ref_scale: float  # max|ref|
    limit: float  # atol + rtol * max|ref|
    passed: bool
    note: str = ""


def compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, float, float, bool]:
    """(max_abs, max_rel, ref_scale, limit, passed) over the finite entries; a shape mismatch, a NaN
    or an infinity where the reference has none (or of the other sign) fails."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        return float("inf"), float("inf"), float("nan"), 0.0, False
    if ref.size == 0:
        return 0.0, 0.0, 0.0, atol, True
    fin = np.isfinite(ref)
    if not np.array_equal(fin, np.isfinite(got)) or not np.array_equal(ref[~fin], got[~fin]):
        return float("inf"), float("inf"), float("nan"), 0.0, False  # NaN, or +-inf in other places
    if not fin.any():
        return 0.0, 0.0, 0.0, atol, True
    ref, got = ref[fin], got[fin]  # -inf marks never-written cache rows: equal above, skipped here
    max_abs = float(np.max(np.abs(ref - got)))
    scale = float(np.max(np.abs(ref)))
    limit = atol + rtol * scale
    return max_abs, max_abs / max(scale, 1e-12), scale, limit, bool(max_abs <= limit)


def reference_outputs(module: torch.nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str],
                      device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """PyTorch FP32 outputs (TF32 off, so CUDA references are true FP32)."""
    dev = torch.device(device)
    prev = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            out = module.to(dev).float()(*[t.to(dev) for t in inputs])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    return {n: o.detach().float().cpu().numpy() for n, o in zip(names, out)}


def check_backend(model: str, backend: Backend, reference: Callable[[Sequence[torch.Tensor]], dict[str, np.ndarray]],
                  make_inputs: Callable[[int], Sequence[torch.Tensor]], batches: Sequence[int], *,
                  precision: str = "fp32", input_names: Sequence[str] | None = None) -> list[ParityRow]:
    """Rows for one backend over several batch sizes."""
    atol, rtol = TOLERANCES[precision]
    names = list(input_names or backend.io.input_names)
    rows = []
    for b in batches:
        inputs = make_inputs(b)
        ref = reference(inputs)
        got = backend.run({n: t.numpy() if isinstance(t, torch.Tensor) else t for n, t in zip(names, inputs)})
        for name in backend.io.output_names:
            m = compare(ref[name], to_numpy(got[name]), atol, rtol)
            rows.append(ParityRow(model, backend.describe(), b, name, *m))
    return rows


def check_streaming(model: str, backend: Backend, step_reference: Callable[..., Any], frames: Sequence[Mapping[str, Any]],
                    cache_pairs: Mapping[str, str], init_cache: Mapping[str, np.ndarray], *, precision: str = "fp32",
                    compare_outputs: Sequence[str] | None = None) -> list[ParityRow]:
    """Run a step graph for several frames feeding its cache outputs back as inputs.

    ``cache_pairs`` maps cache output name -> cache input name. ``step_reference(frame_inputs)``
    returns the PyTorch outputs (dict) for one step, keeping its own cache. Every output of every
    frame is compared; the rows give, per output, the worst frame (``batch`` = number of frames).
    """
    atol, rtol = TOLERANCES[precision]
    cache = {k: np.asarray(v) for k, v in init_cache.items()}
    worst: dict[str, ParityRow] = {}
    ok: dict[str, bool] = {}
    for i, frame in enumerate(frames):
        got = backend.run({**{k: to_numpy(v) for k, v in frame.items()}, **cache})
        ref = step_reference(frame)
        for name in compare_outputs or backend.io.output_names:
            m = compare(ref[name], to_numpy(got[name]), atol, rtol)
            ok[name] = ok.get(name, True) and m[4]
            if name not in worst or m[0] > worst[name].max_abs:
                worst[name] = ParityRow(model, backend.describe(), len(frames), name, *m, note="frames")
        cache = {inp: to_numpy(got[out]) for out, inp in cache_pairs.items()}
    # one row per output: the worst frame, failed if any frame failed
    return [dataclasses.replace(r, passed=ok[n]) for n, r in worst.items()]


def format_report(rows: Sequence[ParityRow]) -> str:
    """A fixed-width table, one row per (model, backend, batch, output), and a verdict line."""
    head = f"{'model':<12} {'backend':<44} {'batch':>5} {'output':<16} {'max_abs':>10} {'max_rel':>10} {'limit':>10}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        batch = f"{r.batch}fr" if r.note == "frames" else str(r.batch)
        lines.append(f"{r.model:<12} {r.backend[:44]:<44} {batch:>5} {r.output[:16]:<16} {r.max_abs:>10.3e} "
                     f"{r.max_rel:>10.3e} {r.limit:>10.3e}  {'yes' if r.passed else 'NO'}")
    bad = [r for r in rows if not r.passed]
    lines.append(f"parity: {len(rows) - len(bad)}/{len(rows)} outputs within tolerance"
                 + ("" if not bad else f"; FAILED: {', '.join(sorted({f'{r.model}/{r.output}' for r in bad}))}"))
    return "\n".join(lines)


def fp32_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A CPU FP32 copy used as the reference, so a backend that moves or casts the module cannot
    change the reference."""
    return copy.deepcopy(module).float().cpu().eval()


__all__ = ["ParityRow", "TOLERANCES", "check_backend", "check_streaming", "compare", "format_report",
           "fp32_copy", "reference_outputs"]
