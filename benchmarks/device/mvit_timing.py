"""MViTv2-L 40x3 appearance backbone + AVA head on one GPU: ms per keyframe pass, kernel breakdown, parity.

    python benchmarks/device/mvit_timing.py --out $OUT/mvit_timing.json
    python benchmarks/device/mvit_timing.py --cpu-smoke --out /tmp/mvit_timing.json   # tiny config, path check

Official MViTv2-L 40x3 config (models/mvit.py), RANDOM weights (speed does not depend on them),
bf16 (weights cast once), clips 40 x 312 x 312 and 40 x 312 x 374 (the demo's non-square input):
  pass        ms per backbone+head pass, CUDA events around each call, median (p10-p90), with 1/5/10
              boxes, attention "folded" (rel-pos folded into q/k channels, one SDPA) and
              "reference" (materialised scores + rel-pos adds; 1 box only, it is slow);
              "folded+graph": the folded pass captured as one CUDA graph and replayed (no host
              launch overhead: what a live stage that captures its pass pays)
  profile     torch.profiler kernel time by category for folded at 312x374, 10 boxes
  parity      folded vs reference features (10 boxes): bf16 and fp32 (TF32 off), max abs diff and the
              feature scale; roi_align (models/roi_align.py) vs torchvision.ops.roi_align (CUDA
              kernel) in fp32 on random boxes incl. border-crossing, larger-than-image, sub-cell and
              zero-size ones
  compile     torch.compile of the backbone (folded, 312x374, 10 boxes) in a child process killed
              when the budget (--budget-s, default 270 s) is spent: compile seconds, ms per pass,
              max abs diff to eager
The JSON is rewritten after every section, so a run cut short keeps what it measured.
Needs only torch (+ torchvision for the RoIAlign parity); imports models/ from this checkout.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from lart_stream.benchmarks.report import cpu_name
from lart_stream.benchmarks.device.timing import kernel_breakdown, time_calls
from lart_stream.models.mvit import MViT, MViTConfig
from lart_stream.models.roi_align import roi_align

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def random_boxes(n: int, height: int, width: int, g: torch.Generator, device: str) -> torch.Tensor:
    """n boxes [0, x1, y1, x2, y2] in clip pixels; about a fifth start outside the frame."""
    size = torch.tensor([width, height], dtype=torch.float32)
    xy = (torch.rand(n, 2, generator=g) * 1.2 - 0.2) * size
    wh = (0.1 + 0.6 * torch.rand(n, 2, generator=g)) * size
    return torch.cat([torch.zeros(n, 1), xy, xy + wh], dim=1).to(device)


def build(cfg: MViTConfig, device: str, dtype: torch.dtype, seed: int = 0) -> MViT:
    with torch.device(device):
        model = MViT(cfg)
    return model.init_random_(seed).to(dtype).eval()


def bench_passes(model: MViT, sizes, boxes_list, args, device: str, rows: list) -> None:
    cuda = device.startswith("cuda")
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    for (h, w) in sizes:
        clip = torch.randn(1, 3, cfg.num_frames, h, w, generator=g).to(device, next(model.parameters()).dtype)
        for impl in ("folded", "reference"):
            model.set_attention_impl(impl)
            for n in boxes_list if impl == "folded" else boxes_list[:1]:
                boxes = random_boxes(n, h, w, g, device)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with torch.no_grad():
                    fn = lambda: model(clip, boxes)  # noqa: E731
                    iters, warm = (args.iters, args.warmup) if impl == "folded" else (args.ref_iters, 1)
                    q = time_calls(fn, iters, warm, cuda)
                row = dict(case="pass", size=f"{h}x{w}", impl=impl, boxes=n, dtype=args.dtype_name, ms=q)
                if cuda:
                    row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                rows.append(row)
                report(row)
                if cuda and impl == "folded" and not args.no_graph:
                    try:
                        rows.append(graph_row(fn, row, args))
                        report(rows[-1])
                    except Exception as exc:  # noqa: BLE001 - report, keep the other rows
                        print(f"pass {h}x{w} folded+graph {n} boxes: FAILED {type(exc).__name__}: {exc}", flush=True)
                        rows.append(dict(row, impl="folded+graph", ms=None, failed=f"{type(exc).__name__}: {str(exc)[:300]}"))
    model.set_attention_impl("folded")


def report(row: dict) -> None:
    q = row["ms"]
    print(f"pass {row['size']} {row['impl']:<12} {row['boxes']:>2} boxes: {q['median']:8.2f} ms "
          f"(p10 {q['p10']:.2f}, p90 {q['p90']:.2f})" + (f"  peak {row['peak_gib']} GiB" if "peak_gib" in row else ""),
          flush=True)


def graph_row(fn, row: dict, args) -> dict:
    """The same pass captured as one CUDA graph (static clip and boxes), replayed: no launch overhead."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad():
        with torch.cuda.graph(g):
            out = fn()
        eager = fn()
    g.replay()
    torch.cuda.synchronize()
    q = time_calls(g.replay, args.iters, 2, True)
    return dict(row, impl="folded+graph", ms=q, graph_vs_eager_maxabs=float((out[0].float() - eager[0].float()).abs().max()))


def parity_impls(model: MViT, h: int, w: int, n: int, device: str) -> dict:
    """max |folded - reference| of the features and scores for one clip and n boxes, in the model's dtype."""
    cfg = model.config
    g = torch.Generator().manual_seed(2)
    clip = torch.randn(1, 3, cfg.num_frames, h, w, generator=g).to(device, next(model.parameters()).dtype)
    boxes = random_boxes(n, h, w, g, device)
    out = {}
    with torch.no_grad():
        for impl in ("folded", "reference"):
            out[impl] = [t.float() for t in model.set_attention_impl(impl)(clip, boxes)]
    model.set_attention_impl("folded")
    (ff, fs), (rf, rs) = out["folded"], out["reference"]
    return {"features_maxabs": float((ff - rf).abs().max()), "features_scale": float(rf.abs().max()),
            "scores_maxabs": float((fs - rs).abs().max()), "size": f"{h}x{w}", "boxes": n}


def roi_parity(device: str) -> dict:
    """models/roi_align vs torchvision.ops.roi_align (the compiled kernel) on the same inputs."""
    try:
        from torchvision.ops import roi_align as tv_roi_align
    except Exception as exc:  # noqa: BLE001 - torchvision's ops do not load with every torch build
        return {"skipped": f"torchvision.ops unavailable: {type(exc).__name__}: {str(exc)[:120]}"}
    g = torch.Generator().manual_seed(3)
    res = {}
    for (H, W) in ((20, 24), (10, 12), (7, 9)):
        fmap = torch.randn(2, 64, H, W, generator=g).to(device)
        n = 400
        size = torch.tensor([W * 16.0, H * 16.0])
        xy = (torch.rand(n, 2, generator=g) * 1.6 - 0.3) * size
        wh = torch.rand(n, 2, generator=g) * 1.2 * size
        wh[:20] = 0.0  # zero size
        wh[20:60] *= 0.02  # sub-cell
        xy[60:80] = -0.6 * size  # far outside
        boxes = torch.cat([torch.randint(0, 2, (n, 1), generator=g).float(), xy, xy + wh], dim=1).to(device)
        for aligned in (True, False):
            ours = roi_align(fmap, boxes, 7, 1 / 16, 0, aligned)
            ref = tv_roi_align(fmap, boxes, (7, 7), 1 / 16, 0, aligned)
            res[f"{H}x{W}/aligned={aligned}"] = {"maxabs": float((ours - ref).abs().max()),
                                                 "scale": float(ref.abs().max()), "boxes": n}
    return res


def try_compile(model: MViT, h: int, w: int, n: int, args, device: str) -> dict:
    cfg = model.config
    g = torch.Generator().manual_seed(4)
    clip = torch.randn(1, 3, cfg.num_frames, h, w, generator=g).to(device, next(model.parameters()).dtype)
    boxes = random_boxes(n, h, w, g, device)
    backbone = torch.compile(model.backbone)
    t0 = time.perf_counter()
    with torch.no_grad():
        fmap = backbone(clip)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        eager = model(clip, boxes)[0].float()
        fn = lambda: model.head(backbone(clip), boxes)  # noqa: E731
        got = fn()[0].float()
        q = time_calls(fn, args.iters, 2, True)
    del fmap
    return {"compile_s": round(compile_s, 1), "ms": q, "features_maxabs_vs_eager": float((got - eager).abs().max()),
            "size": f"{h}x{w}", "boxes": n}


def compile_in_subprocess(out: Path, timeout_s: float) -> dict:
    """torch.compile in a child process, killed after ``timeout_s`` (inductor on 48 blocks can take
    minutes; the rest of the results must not wait for it)."""
    import subprocess

    child = out.with_name(out.stem + ".compile.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-only", "--out", str(child)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"compile + timing did not finish within {timeout_s:.0f} s (budget)"}
    if proc.returncode != 0 or not child.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"failed": " | ".join(tail)[:400]}
    return json.loads(child.read_text())


def compile_only(args) -> int:
    cfg = MViTConfig.official_l_40x3()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    args.dtype_name = "bf16"
    model = build(cfg, "cuda", torch.bfloat16)
    try:
        res = try_compile(model, 312, 374, 10, args, "cuda")
    except Exception as exc:  # noqa: BLE001 - report, don't lose the other results
        res = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


def guarded(fn, *a):
    """fn(*a), or {"failed": reason}: one failing section must not lose the others."""
    try:
        return fn(*a)
    except Exception as exc:  # noqa: BLE001
        print(f"{fn.__name__}: FAILED {type(exc).__name__}: {exc}", flush=True)
        return {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU: checks the code path only")
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--ref-iters", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph replay rows")
    p.add_argument("--budget-s", type=float, default=270.0,
                   help="wall-clock budget: torch.compile runs in a child process killed when it is spent")
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)  # the child of compile_in_subprocess
    args = p.parse_args(argv)
    if args.compile_only:
        return compile_only(args)
    start = time.perf_counter()
    device = "cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.cpu_smoke:
        print("no CUDA device: running the CPU smoke path", file=sys.stderr)
        args.cpu_smoke = True
    if args.cpu_smoke:
        cfg, sizes, boxes_list = MViTConfig.tiny(), [(64, 64), (64, 80)], [1, 5, 10]
        args.iters, args.ref_iters, args.warmup, args.dtype_name = 3, 2, 1, "fp32"
    else:
        cfg, sizes, boxes_list = MViTConfig.official_l_40x3(), [(312, 312), (312, 374)], [1, 5, 10]
        args.dtype_name = "bf16"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
           "gpu": torch.cuda.get_device_name(0) if device == "cuda" else cpu_name(),
           "config": "tiny" if args.cpu_smoke else "MViTv2-L 40x3 (official_l_40x3), AVA head, RANDOM weights"}
    result: dict = {"env": env, "rows": [], "parity": {}, "profile": None, "compile": None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(result, indent=1))

    print(f"MViT timing on {env['gpu']} ({env['config']}), torch {torch.__version__}", flush=True)
    model = build(cfg, device, DTYPES[args.dtype_name])
    n_params = sum(p.numel() for p in model.parameters())
    env["params_M"] = round(n_params / 1e6, 2)
    bench_passes(model, sizes, boxes_list, args, device, result["rows"])
    save()
    h, w = sizes[-1]
    if device == "cuda":
        model.set_attention_impl("folded")
        clip = torch.randn(1, 3, cfg.num_frames, h, w, device=device, dtype=DTYPES[args.dtype_name])
        boxes = random_boxes(10, h, w, torch.Generator().manual_seed(5), device)
        with torch.no_grad():
            result["profile"] = guarded(kernel_breakdown, lambda: model(clip, boxes), 3)
        save()
    result["parity"][f"folded_vs_reference_{args.dtype_name}"] = guarded(parity_impls, model, h, w, 10, device)
    save()
    if not args.cpu_smoke:  # fp32 with TF32 off: the folding itself, not bf16 rounding
        del model
        torch.cuda.empty_cache()
        m32 = build(cfg, device, torch.float32)
        result["parity"]["folded_vs_reference_fp32"] = guarded(parity_impls, m32, h, w, 10, device)
        del m32
        torch.cuda.empty_cache()
        save()
    result["parity"]["roi_align_vs_torchvision_fp32"] = guarded(roi_parity, device)
    save()
    left = args.budget_s - (time.perf_counter() - start)
    if device == "cuda" and not args.no_compile and left > 60:
        result["compile"] = compile_in_subprocess(out, left - 10)
    elif device == "cuda":
        result["compile"] = {"skipped": f"{left:.0f} s of the budget left"}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    save()

    print("\n--- summary (ms per pass, median) ---")
    for r in result["rows"]:
        ms = f"{r['ms']['median']:8.2f} ms" if r.get("ms") else "  failed"
        print(f"{r['size']:>8} {r['impl']:<12} {r['boxes']:>2} boxes  {ms}")
    if result["profile"] and "categories" in result["profile"]:
        prof = result["profile"]
        print(f"\nkernel time, folded {h}x{w}, 10 boxes: {prof['total_ms']:.2f} ms")
        for k, v in prof["categories"].items():
            print(f"  {k:<26} {v['ms']:8.2f} ms  {100 * v['share']:5.1f} %")
    print("\nparity:")
    for k, v in result["parity"].items():
        print(f"  {k}: {json.dumps(v)}")
    if result["compile"]:
        print(f"compile: {json.dumps(result['compile'])}")
    print(f"wrote {out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
