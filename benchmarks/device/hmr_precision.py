"""HMR 2.0's network (official size) in each precision mode, captured in a CUDA graph: time and error.

    python3 benchmarks/device/hmr_precision.py --out $OUT/hmr_precision.json
    python3 benchmarks/device/hmr_precision.py --cpu-smoke --out /tmp/hmr_precision.json   # path check only

Modes, for 1, 5 and 10 crops (random weights: speed does not depend on weight values):
  fp32       the reference numbers (TF32 off), eager
  autocast   fp32 weights under bf16 autocast with cache_enabled=False (the runtime before issue 16:
             every replay re-casts all weights)
  bf16       weights cast once (models/precision.py: LayerNorm, residual stream and readouts fp32)
  bf16-backbone  bf16 + the whole ViT in bf16 (residual stream, LayerNorms, position embedding)
  fp8        bf16 + the ViT's 128 linears in e4m3 with row-wise scales (torch._scaled_mm)
Times: CUDA events around graph replays, median and p10-p90 of ``--iters`` (ms per call).
Errors: per output, max |mode - fp32| / max |fp32|, and for fp8 also against bf16; the appearance
embedding's cosine similarity to fp32 (its use in tracking).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from lart_stream.benchmarks.device.timing import time_calls
from lart_stream.models.hmr2 import FP32_READOUTS, HMR2, HMR2Config, HMR2Output
from lart_stream.models.precision import cast_matmul_weights_, fp8_linears_, parameter_bytes

BATCHES = (1, 5, 10)


def build(mode: str, base: HMR2) -> HMR2:
    if mode in ("fp32", "autocast"):
        return base
    model = copy.deepcopy(base)
    cast_matmul_weights_(model, torch.bfloat16, keep=FP32_READOUTS)
    if mode == "bf16-backbone":  # the whole ViT in bf16: residual stream, LayerNorms, position embedding
        model.backbone.to(torch.bfloat16)
    if mode == "fp8":
        fp8_linears_(model, "backbone.blocks")
    return model


def call(model: HMR2, mode: str, x: torch.Tensor, device: str):
    if mode == "autocast":
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, cache_enabled=False):
            return model(x)
    return model(x)


def captured(fn, cuda: bool):
    """(replay, outputs): fn captured in a CUDA graph after warm-up (plain calls on the CPU)."""
    if not cuda:
        return fn, fn()
    from lart_stream.benchmarks.device.timing import graph_of

    return graph_of(fn)


def rel_errors(a: HMR2Output, ref: HMR2Output) -> dict[str, float]:
    out = {}
    for f, x, y in zip(HMR2Output._fields, a, ref):
        y = y.double()
        out[f] = float((x.double() - y).abs().max() / y.abs().max().clamp_min(1e-30))
    cos = torch.nn.functional.cosine_similarity(a.appearance.double(), ref.appearance.double(), dim=-1)
    out["appearance_cos_min"] = float(cos.min())
    return out


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU, 2 iterations")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--modes", default="fp32,autocast,bf16,bf16-backbone,fp8")
    args = p.parse_args(argv)
    cuda = not args.cpu_smoke and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    size = "tiny" if args.cpu_smoke else "official"
    iters = 2 if args.cpu_smoke else args.iters
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.device(device):
        base = HMR2(HMR2Config.from_size(size)).init_random_(0).eval()
    modes = args.modes.split(",")
    models = {m: build(m, base) for m in modes}
    rows, errors = [], []
    gen = torch.Generator(device).manual_seed(0)
    for b in BATCHES:
        x = torch.randn(b, 3, 256, 192, device=device, generator=gen)
        ref = base(x)  # fp32 eager
        outs = {}
        for m in modes:
            replay, out = captured(lambda m=m: call(models[m], m, x, device), cuda and m != "fp32")
            q = time_calls(replay, iters, warmup=2, cuda=cuda)
            outs[m] = tuple(t.clone() for t in call(models[m], m, x, device))
            rows.append({"mode": m, "batch": b, "graph": cuda and m != "fp32", **q})
            print(f"batch {b:>2} {m:<13} {q['median']:8.3f} ms (p10 {q['p10']:.3f}, p90 {q['p90']:.3f})", flush=True)
        for m in modes:
            if m == "fp32":
                continue
            e = {"mode": m, "batch": b, "vs": "fp32", **rel_errors(HMR2Output(*outs[m]), ref)}
            errors.append(e)
            if m == "fp8" and "bf16" in outs:
                errors.append({"mode": m, "batch": b, "vs": "bf16",
                               **rel_errors(HMR2Output(*outs[m]), HMR2Output(*outs["bf16"]))})
        del outs, ref
    mem = {m: {str(k): v for k, v in parameter_bytes(models[m]).items()} for m in modes}
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "size": size,
              "times_ms": rows, "errors": errors, "parameter_bytes": mem,
              "weights": "random (speed does not depend on weight values)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("\nrelative error (max |d| / max |ref|) per output:")
    for e in errors:
        cols = " ".join(f"{k} {v:.2e}" for k, v in e.items() if k not in ("mode", "batch", "vs") and k != "appearance_cos_min")
        print(f"batch {e['batch']:>2} {e['mode']:<13} vs {e['vs']:<5} {cols} | appearance cos min {e['appearance_cos_min']:.5f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
