"""MViTv2-L attention pooling alone: "tokens -> depthwise Conv3d pooled tokens -> LayerNorm" summed over
every q/k/v pool of one pass, in several implementations (issue 14: pooling + its layout copies are
~40 of the 67 ms fast pass).

    python benchmarks/device/mvit_pool.py --out $OUT/mvit_pool.json
    python benchmarks/device/mvit_pool.py --cpu-smoke --out /tmp/mvit_pool.json   # tiny config, CPU, eager
    python benchmarks/device/mvit_pool.py --triton-sweep --out $OUT/mvit_sweep.json
    TRITON_INTERPRET=1 python benchmarks/device/mvit_pool.py --cpu-smoke --triton-sweep --out /tmp/s.json

--triton-sweep: instead of the variants, the Triton kernel (1t) under the launches of ``SWEEP`` (tokens
per program, warps, pipeline stages, taps unrolled or looped), timed per distinct pool shape (one CUDA
graph per shape: its pools of the pass) next to (1) timed the same way, each launch checked against (1)
with the tolerance below; the best launch per shape, the whole pass with those launches (all kernel,
and "auto": the kernel only where it beat (1)), and ``config_table``: that table in the format of
models/mvit_triton_configs.json, to commit if it shows wins. Launches are tried in order until --budget-s
(less a reserve) would be passed; the JSON is written after each.

The pools come from the built model (official MViTv2-L 40x3, built on the meta device): per block the
pool_q/k/v Conv3d (kernel, stride, padding), norm_q/k/v, heads and head dim, the runtime (T, H, W)
grid propagated from the patch embedding of a 40 x 312 x 374 clip through each block's q pooling.
Each pool's input is what the "fast" path hands it: a (B, nh, N, hd) view of the block's qkv Linear
output (B, N, 3, nh, hd), cls token first. Random weights, bf16.

Variants (each checked against (1): max abs difference, tolerance from bf16 rounding):
  (1)  models.mvit._pool, the torch pooling path of every impl: reshape/permute to (B*nh, C, T, H, W),
       nn.Conv3d, permute back, cat cls, LayerNorm
  (1t) models.mvit.pool_into with the Triton kernel (the fast path's CUDA default), CUDA only
  (1c) (1) op for op on plain tensors (what (4b) compiles: modules would be guarded by identity)
  (2)  channels_last_3d: the tokens viewed as (B*nh, C, T, H, W) with channels-last strides (compacted
       once with .contiguous(channels_last_3d) when the qkv slice is not already that), F.conv3d
       (cuDNN), output read back as tokens through a view, LayerNorm; (2v) the same with the strided
       qkv view handed to F.conv3d as it is
  (3)  the depthwise conv as 27 shifted strided slices x per-channel weights on the (.., T, H, W, C)
       layout (F.pad once, fp32 accumulator), LayerNorm
  (4)  torch.compile(mode="max-autotune-no-cudagraphs", dynamic=False) of (3) and of (1), one compiled
       function per distinct pool geometry (12 for MViTv2-L), compile seconds reported; a variant whose
       compile passes --compile-cap-s (60 s; less when --budget-s, 140 s for the run, is short) is skipped
  copy the layout round trip alone: tokens -> contiguous (B*nh, C, T, H, W) -> pooled grid (strided
       slice) -> tokens (two copies per pool, no conv, no norm)
GPU timing: the whole pass (all pools) captured as one CUDA graph, CUDA events around each replay,
median of --iters replays (eager timing where capture fails, noted). CPU smoke: perf_counter, eager.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lart_stream.models import mvit as M
from lart_stream.models.mvit_pool_table import LaunchConfig, PoolTable, shape_key, table_to_json

BF16_EPS = 2.0 ** -8  # bf16 unit roundoff (8-bit significand incl. the implicit bit: 2^-8 relative)


@dataclass(frozen=True)
class PoolGeom:
    """The static part of one pooling: grids, Conv3d geometry, cls token, LayerNorm eps."""
    thw: tuple[int, int, int]
    out_thw: tuple[int, int, int]
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    has_cls: bool
    eps: float


@dataclass
class PoolCase:
    """One q/k/v pooling of one block: its input view and the model's modules."""
    block: int
    which: str  # "q" / "k" / "v"
    x: torch.Tensor  # (B, nh, N, hd) view of the block's (B, N, 3, nh, hd) qkv output
    pool: nn.Conv3d
    norm: nn.LayerNorm
    geom: PoolGeom

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x, self.pool.weight, self.norm.weight, self.norm.bias


def runtime_grid(cfg: M.MViTConfig, height: int, width: int) -> tuple[int, int, int]:
    """(T, H, W) after the patch embedding Conv3d for a num_frames x height x width clip."""
    size = (cfg.num_frames, height, width)
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in
                 zip(size, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding))


def pool_cases(cfg: M.MViTConfig, height: int, width: int, batch: int, device: str, dtype: torch.dtype,
               seed: int = 0) -> list[PoolCase]:
    """Every q/k/v pool of one pass, read from the model built on the meta device; its modules moved to
    ``device`` with random weights, its input a random qkv buffer of the block's token count."""
    with torch.device("meta"):
        model = M.MViT(cfg)
    g = torch.Generator().manual_seed(seed)  # weights (small) on the CPU, the qkv buffers where they live
    g_dev = torch.Generator(device=device).manual_seed(seed)
    thw = runtime_grid(cfg, height, width)
    cases: list[PoolCase] = []
    for i, blk in enumerate(model.blocks):
        attn = blk.attn
        nh, hd = attn.num_heads, attn.dim_out // attn.num_heads
        s = 1 if attn.has_cls else 0
        n_tokens = s + math.prod(thw)
        qkv = torch.randn(batch, n_tokens, 3, nh, hd, generator=g_dev, device=device).to(dtype)
        for j, which in enumerate("qkv"):
            pool, norm = getattr(attn, f"pool_{which}"), getattr(attn, f"norm_{which}")
            if pool is None:
                continue
            pool = nn.Conv3d(hd, hd, pool.kernel_size, stride=pool.stride, padding=pool.padding, groups=hd,
                             bias=False)
            norm = nn.LayerNorm(hd, eps=norm.eps)
            with torch.no_grad():
                pool.weight.copy_(torch.randn(pool.weight.shape, generator=g) / math.sqrt(pool.weight[0].numel()))
                norm.weight.copy_(1.0 + 0.1 * torch.randn(hd, generator=g))
                norm.bias.copy_(0.1 * torch.randn(hd, generator=g))
            pool, norm = pool.to(device, dtype), norm.to(device, dtype)
            geom = PoolGeom(thw, M.pooled_thw(thw, pool), tuple(pool.kernel_size), tuple(pool.stride),
                            tuple(pool.padding), bool(s), norm.eps)
            cases.append(PoolCase(i, which, qkv[:, :, j].transpose(1, 2), pool, norm, geom))
        thw = M.pooled_thw(thw, attn.pool_q)
    return cases


# ----------------------------------------------------------------------------- variants


def pool_reference(c: PoolCase) -> torch.Tensor:
    """(1): the model's own torch pooling path."""
    return M._pool(c.x, c.pool, c.geom.thw, c.geom.has_cls, c.norm)[0]


def reference_ops(x, weight, gamma, beta, geom: PoolGeom) -> torch.Tensor:
    """(1) op for op (models.mvit._pool) on plain tensors, for torch.compile (modules would be guarded by id)."""
    s = int(geom.has_cls)
    cls_tok, x = x[:, :, :s], x[:, :, s:]
    B, N, L, C = x.shape
    y = F.conv3d(x.reshape(B * N, *geom.thw, C).permute(0, 4, 1, 2, 3), weight, None, geom.stride, geom.padding,
                 groups=C)
    y = y.permute(0, 2, 3, 4, 1).reshape(B, N, -1, C)
    if s:
        y = torch.cat((cls_tok, y), dim=2)
    return F.layer_norm(y, (C,), gamma, beta, geom.eps)


def pool_triton(c: PoolCase, table: PoolTable | None = None, backend: str = "triton") -> torch.Tensor:
    """(1t): pool_into with the Triton kernel (raises where triton does not import); ``table`` picks the
    launch per shape (default: the committed table, else the kernel's default launch)."""
    B, nh, _, hd = c.x.shape
    out = c.x.new_empty(B, nh, int(c.geom.has_cls) + math.prod(c.geom.out_thw), hd)
    M.pool_into(c.x, c.pool, c.norm, c.geom.thw, c.geom.has_cls, out, backend=backend, table=table)
    return out


def case_key(c: PoolCase) -> str:
    """The launch-table key of a pool (models/mvit_pool_table.shape_key)."""
    return shape_key(c.x.shape[3], c.x.shape[1], c.geom.thw, c.geom.kernel, c.geom.stride, c.geom.padding,
                     c.geom.has_cls)


def _grid_view(x: torch.Tensor, geom: PoolGeom) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B*nh, T, H, W, C) view of the non-cls tokens (a view when B == 1 or the heads merge), cls tokens."""
    s = int(geom.has_cls)
    grid = x[:, :, s:].unflatten(2, geom.thw).flatten(0, 1)  # reshape-like: a view where strides allow
    return grid, (x[:, :, :s] if s else None)


def _finish(x: torch.Tensor, pooled: torch.Tensor, cls_tok: torch.Tensor | None, gamma: torch.Tensor,
            beta: torch.Tensor, geom: PoolGeom) -> torch.Tensor:
    """(B*nh, T', H', W', C) pooled grid (+ cls) -> LayerNorm'd (B, nh, 1 + T'H'W', C) tokens in x's dtype."""
    B, nh, _, C = x.shape
    tokens = pooled.reshape(B, nh, -1, C)
    if cls_tok is not None:
        tokens = torch.cat((cls_tok.to(tokens.dtype), tokens), dim=2)
    return F.layer_norm(tokens, (C,), gamma.to(tokens.dtype), beta.to(tokens.dtype), geom.eps).to(x.dtype)


def channels_last_ops(x, weight, gamma, beta, geom: PoolGeom, compact: bool = True) -> torch.Tensor:
    """(2): the conv on a channels_last_3d (B*nh, C, T, H, W) tensor, read back as tokens by a view;
    ``compact`` False hands the strided qkv view to F.conv3d as it is (it picks the layout)."""
    grid, cls_tok = _grid_view(x, geom)
    x5 = grid.permute(0, 4, 1, 2, 3)  # (B*nh, C, T, H, W), channels-last strides
    if compact and not x5.is_contiguous(memory_format=torch.channels_last_3d):
        x5 = x5.contiguous(memory_format=torch.channels_last_3d)
    y = F.conv3d(x5, weight, None, geom.stride, geom.padding, groups=x5.shape[1])
    y = y.contiguous(memory_format=torch.channels_last_3d)  # no-op when cuDNN kept the layout
    return _finish(x, y.permute(0, 2, 3, 4, 1), cls_tok, gamma, beta, geom)


def shifted_ops(x, weight, gamma, beta, geom: PoolGeom) -> torch.Tensor:
    """(3): sum over kernel taps of strided slices of the padded (.., T, H, W, C) grid x per-channel weight."""
    grid, cls_tok = _grid_view(x, geom)
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = geom.kernel, geom.stride, geom.padding
    To, Ho, Wo = geom.out_thw
    xp = F.pad(grid, (0, 0, pw, pw, ph, ph, pt, pt))
    w = weight[:, 0].to(torch.float64 if x.dtype == torch.float64 else torch.float32)  # (C, kt, kh, kw)
    acc = None
    for a in range(kt):
        for b in range(kh):
            for d in range(kw):
                tap = xp[:, a:a + st * (To - 1) + 1:st, b:b + sh * (Ho - 1) + 1:sh, d:d + sw * (Wo - 1) + 1:sw]
                term = tap * w[:, a, b, d]  # bf16 x fp32 -> fp32 accumulator
                acc = term if acc is None else acc + term
    return _finish(x, acc, cls_tok, gamma, beta, geom)


def copy_ops(x, weight, gamma, beta, geom: PoolGeom) -> torch.Tensor:
    """The layout copies alone: tokens -> contiguous (B*nh, C, T, H, W) -> pooled grid -> tokens."""
    grid, _ = _grid_view(x, geom)
    x5 = grid.permute(0, 4, 1, 2, 3).contiguous()
    (st, sh, sw), (To, Ho, Wo) = geom.stride, geom.out_thw
    y = x5[:, :, ::st, ::sh, ::sw][:, :, :To, :Ho, :Wo]
    B, nh, _, C = x.shape
    return y.permute(0, 2, 3, 4, 1).reshape(B, nh, -1, C).contiguous()


def on_case(ops: Callable[..., torch.Tensor], **kw) -> Callable[[PoolCase], torch.Tensor]:
    return lambda c: ops(*c.tensors, c.geom, **kw)


pool_channels_last = on_case(channels_last_ops)
pool_shifted = on_case(shifted_ops)
copy_round_trip = on_case(copy_ops)

VARIANTS: dict[str, Callable[[PoolCase], torch.Tensor]] = {
    "(1) models.mvit._pool": pool_reference,
    "(1t) pool_into triton": pool_triton,
    "(2) channels_last_3d cuDNN": pool_channels_last,
    "(2v) as (2), strided view to conv": on_case(channels_last_ops, compact=False),
    "(3) 27 shifted slices": pool_shifted,
}


# ----------------------------------------------------------------------------- timing


def whole_pass(fn: Callable[[PoolCase], torch.Tensor], cases: list[PoolCase]) -> Callable[[], list[torch.Tensor]]:
    return lambda: [fn(c) for c in cases]


def time_pass(run: Callable[[], object], cuda: bool, iters: int, warmup: int) -> tuple[dict, str]:
    """ms per pass (median, p10, p90): CUDA graph replays under events on the GPU, else eager."""
    from lart_stream.benchmarks.device.timing import graph_of, quantiles, time_calls

    if not cuda:
        return time_calls(run, iters, warmup, cuda=False), "eager (perf_counter)"
    try:
        replay, _ = graph_of(run)
        mode = "cuda graph"
    except Exception as exc:  # noqa: BLE001 - a variant that cannot be captured is timed eagerly
        torch.cuda.synchronize()
        replay, mode = run, f"eager ({type(exc).__name__})"
    for _ in range(warmup):
        replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return quantiles(times), mode


def max_error(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> tuple[float, float]:
    """(max abs difference, max |reference|) over all pools."""
    err = max(float((o.double() - r.double()).abs().max()) for o, r in zip(outs, refs))
    mag = max(float(r.double().abs().max()) for r in refs)
    return err, mag


def tolerance(mag: float, dtype: torch.dtype) -> float:
    """The bf16 pools round the conv output (relative eps) before a LayerNorm that divides by the std
    (inputs ~unit std, so the normalised error ~ |value| * eps), then round the output: a generous
    multiple of eps * max |output|."""
    eps = BF16_EPS if dtype == torch.bfloat16 else float(torch.finfo(dtype).eps)
    return 16.0 * eps * max(1.0, mag)


def compiled_variant(ops: Callable[..., torch.Tensor], cases: list[PoolCase], cap_s: float,
                     cuda: bool) -> tuple[Callable[[PoolCase], torch.Tensor] | None, float, str]:
    """torch.compile of ``ops`` once per distinct (geometry, input shape, strides) (12 for MViTv2-L), each
    compiled by a first call; stops (None) once the cumulative compile time passes ``cap_s``."""
    import torch._dynamo as dynamo

    for key in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                "accumulated_recompile_limit"):
        if hasattr(dynamo.config, key):
            setattr(dynamo.config, key, 4096)
    compiled: dict[tuple, Callable] = {}

    def key_of(c: PoolCase) -> tuple:
        return (c.geom, tuple(c.x.shape), c.x.stride())

    def make(geom: PoolGeom) -> Callable:
        return torch.compile(lambda x, w, g, b: ops(x, w, g, b, geom), mode="max-autotune-no-cudagraphs",
                             dynamic=False)

    t0 = time.perf_counter()
    for c in cases:
        if key_of(c) in compiled:
            continue
        compiled[key_of(c)] = fn = make(c.geom)
        fn(*c.tensors)
        if cuda:
            torch.cuda.synchronize()
        if time.perf_counter() - t0 > cap_s:
            return None, time.perf_counter() - t0, f"skipped: compile passed {cap_s:.0f} s at block {c.block}"
    return (lambda c: compiled[key_of(c)](*c.tensors)), time.perf_counter() - t0, f"{len(compiled)} graphs"


# ----------------------------------------------------------------------------- --triton-sweep

# launches tried, most promising first (the budget may cut the tail); the first is the kernel's default
SWEEP = [LaunchConfig(32, 4, 3, True), LaunchConfig(32, 4, 3, False), LaunchConfig(64, 4, 3, False),
         LaunchConfig(16, 2, 3, False), LaunchConfig(16, 4, 3, True), LaunchConfig(64, 8, 3, False),
         LaunchConfig(128, 8, 3, False), LaunchConfig(16, 2, 3, True), LaunchConfig(32, 2, 3, False),
         LaunchConfig(128, 4, 3, False), LaunchConfig(32, 8, 3, True), LaunchConfig(16, 4, 3, False),
         LaunchConfig(64, 8, 3, True), LaunchConfig(32, 8, 3, False), LaunchConfig(64, 4, 2, False),
         LaunchConfig(64, 4, 3, True)]
SMOKE_SWEEP = [LaunchConfig(16, 2, 1, True), LaunchConfig(32, 2, 1, False)]


def group_by_shape(cases: list[PoolCase]) -> dict[str, list[PoolCase]]:
    groups: dict[str, list[PoolCase]] = {}
    for c in cases:
        groups.setdefault(case_key(c), []).append(c)
    return groups


def time_groups(fn: Callable[[PoolCase], torch.Tensor], groups: dict[str, list[PoolCase]], refs: dict,
                cuda: bool, iters: int, warmup: int, dtype: torch.dtype) -> dict:
    """ms (median) of each shape's pools (one graph per shape), their sum, max error vs (1) and ok."""
    by_shape, err, mag = {}, 0.0, 0.0
    for key, group in groups.items():
        run = whole_pass(fn, group)
        e, m = max_error(run(), refs[key])  # the first call compiles the kernel for this geometry
        err, mag = max(err, e), max(mag, m)
        by_shape[key] = time_pass(run, cuda, iters, warmup)[0]["median"]
    return {"ms_by_shape": by_shape, "ms": sum(by_shape.values()), "max_abs_err": err, "ref_max_abs": mag,
            "tol": tolerance(mag, dtype), "ok": err <= tolerance(mag, dtype)}


def triton_sweep(cases: list[PoolCase], cuda: bool, args: argparse.Namespace, t_start: float, result: dict,
                 save: Callable[[], None], dtype: torch.dtype) -> None:
    """Time the kernel per pool shape over ``SWEEP`` launches next to (1); the best launch per shape, the
    whole pass with those launches, and a launch table (``config_table``, the format of
    models/mvit_triton_configs.json) marking the shapes where the kernel beats (1)."""
    groups = group_by_shape(cases)
    if args.cpu_smoke:  # the interpreter runs ~1e3 x slower: the two smallest shapes, one call each
        groups = dict(sorted(groups.items(), key=lambda kv: sum(c.x.shape[1] * math.prod(c.geom.out_thw)
                                                                for c in kv[1]))[:2])
    refs = {key: whole_pass(pool_reference, g)() for key, g in groups.items()}
    iters, warmup = (1, 0) if args.cpu_smoke else (min(args.iters, 10), min(args.warmup, 2))
    result.update(sweep_iters=iters, shapes_by_key={k: len(g) for k, g in groups.items()}, sweep=[])
    torch_row = time_groups(pool_reference, groups, refs, cuda, iters, warmup, dtype)
    result["torch_by_shape"] = torch_row["ms_by_shape"]
    cases = [c for g in groups.values() for c in g]
    whole = time_pass(whole_pass(pool_reference, cases), cuda, iters, warmup)[0]["median"]
    result["torch_whole_pass_ms"] = whole
    save()
    reserve = 20.0  # the final whole-pass timings and the summary
    last = 0.0
    for launch in (SMOKE_SWEEP if args.cpu_smoke else SWEEP):
        spent = time.perf_counter() - t_start
        if spent + last > args.budget_s - reserve:
            result["sweep"].append({"config": launch.label(), "note": f"skipped: --budget-s ({spent:.0f} s spent)"})
            continue
        t0 = time.perf_counter()
        table = PoolTable(None, {key: launch for key in groups})
        row = {"config": launch.label(), "launch": asdict(launch)}
        try:
            row.update(time_groups(lambda c, t=table: pool_triton(c, t), groups, refs, cuda, iters, warmup, dtype))
        except Exception as exc:  # noqa: BLE001 - a launch that fails (resources) must not lose the rest
            row["note"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        last = time.perf_counter() - t0
        row["wall_s"] = round(last, 1)
        result["sweep"].append(row)
        save()
    done = [r for r in result["sweep"] if r.get("ok")]
    if not done:
        return
    best: dict[str, LaunchConfig] = {}
    extra: dict[str, dict] = {}
    for key in groups:
        r = min(done, key=lambda r: r["ms_by_shape"][key])
        kms, tms = r["ms_by_shape"][key], result["torch_by_shape"][key]
        best[key] = LaunchConfig(**{**r["launch"], "kernel_wins": kms < tms})
        extra[key] = {"kernel_ms": kms, "torch_ms": tms, "pools": len(groups[key])}
    device = torch.cuda.get_device_name() if cuda else None
    result["config_table"] = table_to_json(PoolTable(device, best), extra)
    finals = {"best launch per shape, all kernel": (PoolTable(None, best), "triton"),
              "auto with that table (kernel where it wins)": (PoolTable(None, best), "auto")}
    result["whole_pass"] = {"(1) torch": whole}
    for name, (table, backend) in finals.items():
        run = whole_pass(lambda c, t=table, b=backend: pool_triton(c, t, b), cases)
        if backend == "auto" and not cuda:
            continue  # auto never runs the kernel off CUDA
        run()
        result["whole_pass"][name] = time_pass(run, cuda, iters, warmup)[0]["median"]
    save()


def print_sweep(result: dict) -> None:
    base = result["torch_whole_pass_ms"]
    print(f"(1) torch/cuDNN whole pass {base:.3f} ms (sum of per-shape graphs "
          f"{sum(result['torch_by_shape'].values()):.3f} ms); kernel launches, sum over shapes:")
    print(f"{'launch':24s} {'ms/pass':>9s} {'vs (1)':>7s} {'max err':>9s} {'tol':>8s} {'wall s':>7s}  note")
    for r in result["sweep"]:
        if "ms" not in r:
            print(f"{r['config']:24s} {'-':>9s} {'-':>7s} {'-':>9s} {'-':>8s} {'-':>7s}  {r.get('note', '')}")
            continue
        flag = "" if r["ok"] else "ERROR ABOVE TOL"
        print(f"{r['config']:24s} {r['ms']:9.3f} {r['ms'] / base:7.2f} {r['max_abs_err']:9.2e} {r['tol']:8.1e} "
              f"{r['wall_s']:7.1f}  {flag}")
    table = result.get("config_table")
    if not table:
        print("no launch passed: no per-shape table")
        return
    print(f"\n{'pool shape':44s} {'pools':>5s} {'torch ms':>9s} {'kernel ms':>9s}  best launch")
    for key, e in table["shapes"].items():
        launch = LaunchConfig(**{k: v for k, v in e.items() if k in LaunchConfig.__dataclass_fields__})
        win = "  kernel wins" if e["kernel_wins"] else ""
        print(f"{key:44s} {e['pools']:5d} {e['torch_ms']:9.3f} {e['kernel_ms']:9.3f}  {launch.label()}{win}")
    for name, ms in result["whole_pass"].items():
        print(f"whole pass, {name}: {ms:.3f} ms ({ms / base:.2f} x (1))")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU, eager, no compile")
    ap.add_argument("--height", type=int, default=312)
    ap.add_argument("--width", type=int, default=374)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile-cap-s", type=float, default=60.0)
    ap.add_argument("--budget-s", type=float, default=140.0, help="whole run; compile caps shrink to fit it")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--triton-sweep", action="store_true",
                    help="time the Triton kernel's launches per pool shape next to (1) instead of the variants "
                         "(CPU: only with TRITON_INTERPRET=1, two launches)")
    args = ap.parse_args(argv)
    cuda = not args.cpu_smoke
    if cuda and not torch.cuda.is_available():
        print("mvit_pool: no CUDA device (use --cpu-smoke here)", file=sys.stderr)
        return 2
    if args.triton_sweep and not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        print("mvit_pool: --triton-sweep off CUDA needs TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.bfloat16)
    if args.cpu_smoke:
        cfg, (h, w) = M.MViTConfig.tiny(), (64, 80)
        args.iters, args.warmup, args.no_compile = min(args.iters, 5), 1, True
    else:
        cfg, (h, w) = M.MViTConfig.official_l_40x3(), (args.height, args.width)
    t_start = time.perf_counter()
    cases = pool_cases(cfg, h, w, 1, device, dtype)
    result = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
              "torch": torch.__version__, "config": "tiny" if args.cpu_smoke else "MViTv2-L 40x3",
              "clip": [cfg.num_frames, h, w], "dtype": str(dtype), "pools": len(cases),
              "shapes": [dict(block=c.block, which=c.which, heads=c.x.shape[1], head_dim=c.x.shape[3],
                              thw=c.geom.thw, out_thw=c.geom.out_thw, kernel=c.geom.kernel,
                              stride=c.geom.stride) for c in cases],
              "rows": []}
    out_path = Path(args.out)

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1, default=str))

    if args.triton_sweep:
        result["mode"] = "triton-sweep"
        with torch.no_grad():
            triton_sweep(cases, cuda, args, t_start, result, save, dtype)
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        save()
        print(f"{result['config']} {cfg.num_frames}x{h}x{w}, {len(cases)} pools, {dtype}, {result['device']}")
        print_sweep(result)
        print(f"wall {result['wall_s']} s -> {out_path}")
        return 0
    with torch.no_grad():
        refs = whole_pass(pool_reference, cases)()
        variants = dict(VARIANTS)
        if not cuda:
            variants.pop("(1t) pool_into triton")
        variants["(1c) (1) as plain tensor ops"] = on_case(reference_ops)  # what (4b) compiles
        todo: list[tuple[str, Callable[[PoolCase], torch.Tensor] | None, dict]] = \
            [(name, fn, {}) for name, fn in variants.items()]
        if not args.no_compile:
            for name, fn in (("(4a) compile of (3)", shifted_ops), ("(4b) compile of (1)", reference_ops)):
                cap = min(args.compile_cap_s, args.budget_s - 30.0 - (time.perf_counter() - t_start))
                if cap < 5.0:
                    todo.append((name, None, {"note": "skipped: --budget-s spent"}))
                    continue
                try:
                    cfn, secs, note = compiled_variant(fn, cases, cap, cuda)
                except Exception as exc:  # noqa: BLE001 - report, keep the other rows
                    cfn, secs, note = None, float("nan"), f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                todo.append((name, cfn, {"compile_s": round(secs, 1), "note": note}))
        todo.append(("copy only (layout round trip)", copy_round_trip, {}))
        base_ms = None
        for name, fn, extra in todo:
            row = {"variant": name, **extra}
            if fn is not None:
                try:
                    run = whole_pass(fn, cases)
                    outs = run()
                    q, mode = time_pass(run, cuda, args.iters, args.warmup)
                    row.update(ms=q, timing=mode)
                    if not name.startswith("copy"):
                        err, mag = max_error(outs, refs)
                        row.update(max_abs_err=err, ref_max_abs=mag, tol=tolerance(mag, dtype),
                                   ok=err <= tolerance(mag, dtype))
                    if base_ms is None:
                        base_ms = q["median"]
                    row["vs_1"] = q["median"] / base_ms
                except Exception as exc:  # noqa: BLE001 - one broken variant must not lose the rest
                    row["note"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            result["rows"].append(row)
            save()
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    save()
    print(f"{result['config']} {cfg.num_frames}x{h}x{w}, {len(cases)} pools, {dtype}, {result['device']}")
    print(f"{'variant':34s} {'ms/pass':>9s} {'p10-p90':>15s} {'vs (1)':>7s} {'max err':>9s} {'tol':>8s}  note")
    for r in result["rows"]:
        q = r.get("ms")
        ms = f"{q['median']:9.3f}" if q else f"{'-':>9s}"
        spread = f"{q['p10']:.2f}-{q['p90']:.2f}" if q else "-"
        vs = f"{r['vs_1']:7.2f}" if "vs_1" in r else f"{'-':>7s}"
        err = f"{r['max_abs_err']:9.2e}" if "max_abs_err" in r else f"{'-':>9s}"
        tol = f"{r['tol']:8.1e}" if "tol" in r else f"{'-':>8s}"
        note = " ".join(x for x in (r.get("timing", ""), f"compile {r['compile_s']} s" if "compile_s" in r else "",
                                    "" if r.get("ok", True) else "ERROR ABOVE TOL", r.get("note", "")) if x)
        print(f"{r['variant']:34s} {ms} {spread:>15s} {vs} {err} {tol}  {note}")
    print(f"wall {result['wall_s']} s -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
