"""MViTv2-L 40x3 pass (backbone + AVA head) at 312x374, 10 boxes, bf16: the attention speed levers, one by one.

    python benchmarks/device/mvit_speed.py --out $OUT/mvit_speed.json
    python benchmarks/device/mvit_speed.py --cpu-smoke --out /tmp/mvit_speed.json   # tiny config, path check

RANDOM weights (speed does not depend on them). Variants, cumulative (models/mvit.py switches):
  folded            main's path: rel-pos folded into q/k channels, one SDPA, torch pooling (baseline)
  fast/torch-pool   lever 2: q'/k'/v' preallocated, pooled tokens and rel-pos terms written into
                    their slices, residual pooling fused into the layout change
  fast/triton-pool  + lever 1: depthwise Conv3d + LayerNorm as one Triton kernel (models/mvit_triton.py)
  .../sdpa=X        + lever 3: SDPA backend forced (FLASH / EFFICIENT / CUDNN), v padded to q's width
  .../narrow-v      + v at its own head dim 72 (backends that accept dim(v) != dim(q))
  ...+rel           the Triton q kernel also writes the folded rel-pos channels (no rel-pos GEMMs)
  compile           + lever 4: torch.compile (--compile-mode, default "default") of the backbone with the
                    fastest exact eager variant, in a child process killed when the budget is spent
Each variant: ms per pass eager and replayed as one CUDA graph (CUDA events, median, p10/p90);
parity against the materialised "reference" attention in bf16 and in
fp32 with TF32 off (max |diff| of the RoI features, and the feature scale). The best exact variant
gets a torch.profiler kernel breakdown. Every variant is guarded; the JSON is rewritten after each.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from lart_stream.benchmarks.device.mvit_timing import build, cpu_name, graph_row, random_boxes
from lart_stream.benchmarks.device.timing import kernel_breakdown, time_calls
from lart_stream.models.mvit import MViT, MViTConfig

# name -> set_attention_impl kwargs (cumulative levers); "cuda": needs the GPU
VARIANTS: list[tuple[str, dict, bool]] = [
    ("folded", dict(impl="folded"), False),
    ("fast/torch-pool", dict(impl="fast", pool_backend="torch"), False),
    ("fast/torch-pool/narrow-v", dict(impl="fast", pool_backend="torch", narrow_v=True), False),
    ("fast/triton-pool", dict(impl="fast", pool_backend="triton"), True),
    ("fast/triton-pool/sdpa=FLASH", dict(impl="fast", pool_backend="triton", sdpa_backend="FLASH_ATTENTION"), True),
    ("fast/triton-pool/sdpa=EFFICIENT", dict(impl="fast", pool_backend="triton", sdpa_backend="EFFICIENT_ATTENTION"), True),
    ("fast/triton-pool/sdpa=CUDNN", dict(impl="fast", pool_backend="triton", sdpa_backend="CUDNN_ATTENTION"), True),
    ("fast/triton-pool/narrow-v/sdpa=CUDNN", dict(impl="fast", pool_backend="triton", narrow_v=True,
                                                  sdpa_backend="CUDNN_ATTENTION"), True),
    ("fast/triton-pool/narrow-v/sdpa=EFFICIENT", dict(impl="fast", pool_backend="triton", narrow_v=True,
                                                      sdpa_backend="EFFICIENT_ATTENTION"), True),
    ("fast/triton-pool/narrow-v", dict(impl="fast", pool_backend="triton", narrow_v=True), True),
    ("fast/triton-pool+rel", dict(impl="fast", pool_backend="triton", fuse_rel=True), True),
    ("fast/triton-pool+rel/sdpa=CUDNN", dict(impl="fast", pool_backend="triton", fuse_rel=True,
                                             sdpa_backend="CUDNN_ATTENTION"), True),
    ("fast/triton-pool+rel/narrow-v/sdpa=CUDNN", dict(impl="fast", pool_backend="triton", fuse_rel=True,
                                                      narrow_v=True, sdpa_backend="CUDNN_ATTENTION"), True),
]
# bf16 parity must stay within this many bf16 ulps of the feature scale (main's folded: ~0.03 at 4.5 = 1.8 ulp)
BF16_ULPS_OK = 8.0


def settings(name: str) -> dict:
    return next(kw for nm, kw, _ in VARIANTS if nm == name)


def apply(model: MViT, kw: dict) -> None:
    kw = dict(kw)
    model.set_attention_impl(kw.pop("impl"), **kw)


def inputs(cfg: MViTConfig, h: int, w: int, n: int, device: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(2)
    clip = torch.randn(1, 3, cfg.num_frames, h, w, generator=g).to(device, dtype)
    return clip, random_boxes(n, h, w, g, device)


def features(model: MViT, clip: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(clip, boxes)[0].float()


def diff(got: torch.Tensor, ref: torch.Tensor) -> dict:
    return {"maxabs": float((got - ref).abs().max()), "scale": float(ref.abs().max())}


def time_variant(model: MViT, clip, boxes, args, cuda: bool, graph: bool) -> dict:
    fn = lambda: model(clip, boxes)  # noqa: E731
    with torch.no_grad():
        eager = time_calls(fn, args.iters, args.warmup, cuda)
    row = {"eager_ms": eager}
    if cuda and graph:
        row["graph_ms"] = graph_row(fn, {}, args)["ms"]
    return row


def fp32_parity(cfg: MViTConfig, kw: dict, h: int, w: int, n: int, device: str, cache: dict) -> dict:
    """The variant in fp32 (TF32 off) against the fp32 reference: the folding, not bf16 rounding.
    A forced half-only SDPA backend is dropped here (noted): torch's fp32 choice is used."""
    if "m32" not in cache:
        cache["m32"] = build(cfg, device, torch.float32)
        clip, boxes = inputs(cfg, h, w, n, device, torch.float32)
        cache["io32"] = (clip, boxes)
        cache["ref32"] = features(cache["m32"].set_attention_impl("reference"), clip, boxes)
    kw32 = {k: v for k, v in kw.items() if k != "sdpa_backend"}
    apply(cache["m32"], kw32)
    out = diff(features(cache["m32"], *cache["io32"]), cache["ref32"])
    if "sdpa_backend" in kw:
        out["note"] = "fp32 without the forced (half-only) SDPA backend"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU: checks the code path only")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--budget-s", type=float, default=220.0, help="wall-clock budget (s); compile gets what is left")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (max-autotune-no-cudagraphs autotunes every GEMM shape: "
                        "minutes more than the ~160 s default compile, beyond a 4-minute run)")
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)  # for the compile child
    args = p.parse_args(argv)
    if args.compile_only:
        return compile_child(args)
    start = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = "cuda" if cuda else "cpu"
    if args.cpu_smoke or not cuda:
        args.cpu_smoke = True
        cfg, (h, w), n, dtype = MViTConfig.tiny(), (64, 80), 10, torch.float32
        args.iters, args.warmup = 3, 1
    else:
        cfg, (h, w), n, dtype = MViTConfig.official_l_40x3(), (312, 374), 10, torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
           "gpu": torch.cuda.get_device_name(0) if cuda else cpu_name(),
           "config": "tiny" if args.cpu_smoke else "MViTv2-L 40x3, AVA head, RANDOM weights",
           "size": f"{h}x{w}", "boxes": n, "dtype": str(dtype).replace("torch.", "")}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        env["triton"] = f"not importable: {type(exc).__name__}"
    result: dict = {"env": env, "variants": {}, "profile": None, "compile": None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        result["wall_s"] = round(time.perf_counter() - start, 1)
        out.write_text(json.dumps(result, indent=1))

    print(f"MViT speed levers on {env['gpu']} ({env['config']}), {h}x{w}, {n} boxes, {env['dtype']}, "
          f"torch {torch.__version__}, triton {env['triton']}", flush=True)
    model = build(cfg, device, dtype)
    clip, boxes = inputs(cfg, h, w, n, device, dtype)
    ref = features(model.set_attention_impl("reference"), clip, boxes)
    ulp = float(ref.abs().max()) * 2.0 ** -8  # one bf16 ulp at the feature scale (7 mantissa bits + 1)
    cache: dict = {}
    for name, kw, needs_cuda in VARIANTS:
        if needs_cuda and not cuda:
            result["variants"][name] = {"skipped": "needs CUDA"}
            continue
        row: dict = {"settings": kw}
        try:
            apply(model, kw)
            row["parity_vs_reference"] = diff(features(model, clip, boxes), ref)
            row.update(time_variant(model, clip, boxes, args, cuda, graph=True))
            if not args.cpu_smoke:
                row["parity_vs_reference"]["bf16_ulps"] = row["parity_vs_reference"]["maxabs"] / ulp
                row["exact"] = row["parity_vs_reference"]["bf16_ulps"] <= BF16_ULPS_OK
        except Exception as exc:  # noqa: BLE001 - report, keep the other variants
            row["failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if "failed" not in row:
            try:
                row["parity_fp32"] = fp32_parity(cfg, kw, h, w, n, device, cache)
                if args.cpu_smoke:
                    row["exact"] = row["parity_fp32"]["maxabs"] <= 2 ** 7 * 1.2e-7 * row["parity_fp32"]["scale"]
            except Exception as exc:  # noqa: BLE001
                row["parity_fp32"] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
        result["variants"][name] = row
        print_row(name, row)
        save()
    cache.clear()
    if cuda:
        torch.cuda.empty_cache()
    best = best_variant(result["variants"])
    result["best"] = best
    if best and cuda:
        try:
            apply(model, settings(best))
            with torch.no_grad():
                result["profile"] = kernel_breakdown(lambda: model(clip, boxes), 3)
        except Exception as exc:  # noqa: BLE001
            result["profile"] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
        save()
    left = args.budget_s - (time.perf_counter() - start)
    if cuda and best and not args.no_compile and left > 60:
        del model
        torch.cuda.empty_cache()
        result["compile"] = compile_in_subprocess_variant(out, best, args.compile_mode, left - 5)
    elif cuda:
        result["compile"] = {"skipped": "--no-compile" if args.no_compile else f"{left:.0f} s of the budget left"}
    save()
    summary(result)
    print(f"wrote {out} ({result['wall_s']} s)")
    return 0


def best_variant(variants: dict) -> str | None:
    ok = [(r.get("graph_ms", r.get("eager_ms"))["median"], nm) for nm, r in variants.items()
          if r.get("exact") and (r.get("graph_ms") or r.get("eager_ms"))]
    return min(ok)[1] if ok else None


def print_row(name: str, row: dict) -> None:
    if "skipped" in row or "failed" in row:
        print(f"{name:<42} {row.get('skipped') or 'FAILED ' + row['failed']}", flush=True)
        return
    e, g = row["eager_ms"]["median"], row.get("graph_ms", {}).get("median", float("nan"))
    pb, pf = row["parity_vs_reference"], row.get("parity_fp32", {})
    print(f"{name:<42} eager {e:8.2f} ms  graph {g:8.2f} ms  |d| {pb['maxabs']:.3g} "
          f"(scale {pb['scale']:.3g}, {pb.get('bf16_ulps', float('nan')):.2f} bf16 ulp)  fp32 |d| "
          f"{pf.get('maxabs', float('nan')):.3g}  exact={row.get('exact')}", flush=True)


def summary(result: dict) -> None:
    print("\n--- summary: ms per pass (median), CUDA graph replay / eager; parity vs reference ---")
    for name, row in result["variants"].items():
        print_row(name, row)
    print(f"best exact variant: {result.get('best')}")
    prof = result.get("profile")
    if prof and "categories" in prof:
        print(f"kernel time, {result.get('best')}: {prof['total_ms']:.2f} ms")
        for cat, v in prof["categories"].items():
            print(f"  {cat:<28} {v['ms']:8.2f} ms  {100 * v['share']:5.1f} %")
        for k in prof["top_kernels"][:8]:
            print(f"    {k['ms']:7.2f} ms  {k['name'][:90]}")
    if result.get("compile") is not None:
        print(f"compile: {json.dumps(result['compile'])}")


def compile_in_subprocess_variant(out: Path, variant: str, mode: str, timeout_s: float) -> dict:
    import subprocess

    child = out.with_name(out.stem + ".compile.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-only", "--variant", variant,
           "--compile-mode", mode, "--out", str(child)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        partial = json.loads(child.read_text()) if child.exists() else {}
        return dict(partial, cut=f"compile + timing did not finish within {timeout_s:.0f} s (budget)", variant=variant)
    if proc.returncode != 0 or not child.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"failed": " | ".join(tail)[:400], "variant": variant}
    return json.loads(child.read_text())


def compile_child(args) -> int:
    """torch.compile of the backbone with one variant's switches (then, if that fails, the same with
    torch pooling), CUDA graph replay of compiled backbone + head; parity vs eager and the reference.
    The JSON is written after each step, so a child killed at the budget keeps what it measured."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = MViTConfig.official_l_40x3()
    res: dict = {"variant": args.variant, "mode": args.compile_mode, "attempts": []}

    def save() -> None:
        Path(args.out).write_text(json.dumps(res, indent=1))

    model = build(cfg, "cuda", torch.bfloat16)
    clip, boxes = inputs(cfg, 312, 374, 10, "cuda", torch.bfloat16)
    ref = features(model.set_attention_impl("reference"), clip, boxes)
    tries = [settings(args.variant)]
    if tries[0].get("pool_backend") == "triton":
        tries.append(dict(tries[0], pool_backend="torch"))
    for kw in tries:
        att: dict = {"settings": kw}
        res["attempts"].append(att)
        try:
            torch._dynamo.reset()
            apply(model, kw)
            eager = features(model, clip, boxes)
            backbone = torch.compile(model.backbone, mode=args.compile_mode)
            fn = lambda: model.head(backbone(clip), boxes)  # noqa: E731
            t0 = time.perf_counter()
            with torch.no_grad():
                got = fn()[0].float()
            torch.cuda.synchronize()
            att["compile_s"] = round(time.perf_counter() - t0, 1)
            att["parity_vs_reference"] = diff(got, ref)
            att["maxabs_vs_eager"] = float((got - eager).abs().max())
            save()
            with torch.no_grad():
                att["eager_ms"] = time_calls(fn, 10, 2, True)
            save()
            att["graph_ms"] = graph_row(fn, {}, argparse.Namespace(iters=20))["ms"]
            save()
            break
        except Exception as exc:  # noqa: BLE001
            att["failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            save()
    return 0

if __name__ == "__main__":
    sys.exit(main())
