"""Per-frame cost of the LART action stage on one GPU: trailing-window forward vs causal KV-cache step.

    python benchmarks/device/lart_timing.py --out $OUT/lart_timing.json
    python benchmarks/device/lart_timing.py --cpu-smoke --out /tmp/lart_timing.json   # path check only

For N = 1, 5, 10 tracks (each track one sequence with N person slots, so B = N sequences of
T x N tokens) and T = 125 frames, tiny and official (MViT-style, 51 M parameters) sizes:
  window      LART.forward_window on (N, T, N) tokens: what the window mode runs per frame
              (attention "sdpa" = F.scaled_dot_product_attention with an additive key bias;
              "exact" = explicit scores with the reference's -1e3 replacement)
  step        LART.step: N new tokens per sequence against a full K/V cache of T x N rows
  stage-*     ActionStage.update end to end (host bookkeeping, copies, read-back), wall clock with a
              synchronize per frame: "eager" = cuda_graphs=False, "graph" = cuda_graphs=True (static
              buffers, graphs captured by stage.warmup()), max_tracks = N; graph-eager = max |score
              difference| over the first 8 frames. stage-*/pow2 (official bf16): graph only,
              max_tracks 16, graph_buckets 1, 2, 4, 8, 16: N tracks padded to the next bucket.
              stage-*/host (official bf16, graph column): the static path with every replay skipped
              (the graph's launch does nothing): the stage's own cost over the replay, i.e. host
              bookkeeping + the upload + the read-back with its wait, on this machine's CPU
Each model call is timed eager and as a CUDA graph replay (static inputs, captured after warm-up),
with CUDA events and a synchronize per iteration: per-call latency, median and p10-p90 in ms.
--cpu-smoke runs the stage's static path on the CPU with the capture replaced by plain calls.
Random weights: speed does not depend on weight values. fp32 runs with TF32 off unless --tf32.
Needs only torch + numpy; imports models/ and realtime/ from this checkout.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from lart_stream.benchmarks.device.timing import graph_of, quantiles, time_calls  # noqa: E402,F401

from lart_stream.models.lart import LART, LARTConfig  # noqa: E402
from lart_stream.realtime.actions import ActionStage, ActionStageConfig  # noqa: E402
from lart_stream.realtime.backends import SkippedGraph, UncapturedGraph  # noqa: E402
from lart_stream.realtime.records import People, Tracks  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gflop(c: LARTConfig, tokens: int, queries_keys: int) -> float:
    inner = c.heads * c.dim_head
    per_token = 2 * c.depth * (c.dim * 3 * inner + inner * c.dim + 2 * c.dim * c.mlp_dim)
    return (tokens * per_token + 4 * c.depth * inner * queries_keys) / 1e9


def features(c: LARTConfig, lead: tuple[int, ...], dtype, device):
    g = lambda *s: torch.randn(*lead, *s, device=device, dtype=dtype)  # noqa: E731
    return g(229), (g(135) if c.has_joints else None), (g(c.app_dim) if c.has_appearance else None)


def eager_and_graph(row: dict, fn, args, cuda: bool) -> dict:
    """``row`` with fn's eager time and, on CUDA, its CUDA-graph time and graph-vs-eager difference."""
    row["eager"] = time_calls(fn, args.iters, args.warmup, cuda)
    if cuda and not args.no_graph:
        ref = fn().float()
        replay, out = graph_of(fn)
        row["graph"] = time_calls(replay, args.graph_iters, 3, cuda)
        replay()
        torch.cuda.synchronize()
        row["graph_vs_eager_maxabs"] = float((out.float() - ref).abs().max())
    return row


def bench_model(size: str, dtype_name: str, n: int, T: int, args, device: str) -> list[dict]:
    torch.manual_seed(0)
    cfg = LARTConfig.official_mvit() if size == "official" else LARTConfig.tiny()
    dtype = DTYPES[dtype_name]
    model = LART(cfg).to(device=device, dtype=dtype).eval()
    cuda = device.startswith("cuda")
    rows = []
    B = n  # one sequence per track, each with n person slots
    pose, joints, app = features(cfg, (B, T, n), dtype, device)
    valid = torch.rand(B, T, n, device=device) > 0.1
    valid[:, :, 0] = True
    base = dict(size=size, dtype=dtype_name, N=n, T=T, B=B)
    for attn in ("sdpa", "exact"):
        fn = lambda: model.forward_window(pose, joints, app, valid, exact=attn == "exact")  # noqa: E731
        row = dict(base, case=f"window-{attn}", tokens=B * T * n,
                   gflop=round(gflop(cfg, B * T * n, B * (T * n) ** 2), 2))
        rows.append(eager_and_graph(row, fn, args, cuda))
    # causal step against a full cache (cost does not depend on how full it is)
    k, v, kb = model.new_cache(B, T, n)
    k.normal_()
    v.normal_()
    kb.copy_(torch.where(torch.rand_like(kb) > 0.1, 0.0, -1e3))
    spose, sjoints, sapp = features(cfg, (B, n), dtype, device)
    svalid = torch.ones(B, n, dtype=torch.bool, device=device)
    positions = torch.randint(0, T, (B,), device=device)
    fn = lambda: model.step(spose, sjoints, sapp, svalid, positions, k, v, kb)[0]  # noqa: E731
    row = dict(base, case="step-sdpa", tokens=B * n, gflop=round(gflop(cfg, B * n, B * n * T * n), 3),
               cache_mib=round(2 * k.numel() * k.element_size() / 2 ** 20, 1))
    rows.append(eager_and_graph(row, fn, args, cuda))
    return rows


def synthetic_frame(n: int, app_dim: int, rng: np.random.Generator) -> tuple[Tracks, People]:
    people = People(np.zeros((n, 4)), np.ones(n), pose_vector=rng.normal(size=(n, 229)).astype(np.float32),
                    joints_3d=rng.normal(size=(n, 45, 3)).astype(np.float32),
                    cam_t=rng.normal(size=(n, 3)).astype(np.float32),
                    appearance=rng.normal(size=(n, app_dim)).astype(np.float32))
    tracks = Tracks(np.arange(n), np.zeros((n, 4)), np.full(n, 2), np.zeros(n), np.zeros(n), np.zeros(n),
                    np.arange(n))
    return tracks, people


def bench_stage(size: str, dtype_name: str, n: int, T: int, mode: str, args, device: str,
                pow2: bool = False, host: bool = False) -> dict:
    """ActionStage.update end to end, eager (cuda_graphs=False) and static + CUDA graphs (cuda_graphs=True,
    graphs captured by stage.warmup() first; a graph per track count, max_tracks = n). pow2: the graph
    stage only, max_tracks 16 with buckets 1, 2, 4, 8, 16 (n tracks padded to the next one). host: the
    graph stage with every replay skipped (what the stage costs over the replay)."""
    if host:
        graph_cls, ActionStage._graph_cls = ActionStage._graph_cls, SkippedGraph
        try:
            return bench_stage(size, dtype_name, n, T, mode, args, device, pow2=pow2)
        finally:
            ActionStage._graph_cls = graph_cls
    cuda = device.startswith("cuda")
    cap = 16 if pow2 else max(n, 1)
    host = ActionStage._graph_cls is SkippedGraph
    row = dict(size=size, dtype=dtype_name, N=n, T=T, B=n, max_tracks=cap,
               case=f"stage-{mode}" + ("/pow2" if pow2 else "/host" if host else ""))
    variants = [True] if pow2 or host else [False] + ([True] if (cuda and not args.no_graph) or args.cpu_smoke else [])
    outs: dict[bool, list] = {}
    for graphs in variants:
        cfg = ActionStageConfig(size=size, mode=mode, window=T, max_people=n, device=device,
                                dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype_name], max_tracks=cap,
                                cuda_graphs=graphs, graph_buckets=(1, 2, 4, 8) if pow2 else ())
        stage = ActionStage.from_config(cfg)
        t0 = time.perf_counter()
        stage.warmup()  # captures every bucket's graph (no-op eager)
        warm_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)  # the same frames for both variants
        frames = [synthetic_frame(n, stage.model.config.app_dim, rng) for _ in range(8)]
        outs[graphs] = [stage.update(tr, pe, f) for f, (tr, pe) in enumerate(frames)]  # also warms up
        i = [len(frames)]

        def fn():
            tr, pe = frames[i[0] % len(frames)]
            stage.update(tr, pe, i[0])
            i[0] += 1
            if cuda:  # per-frame latency: host work and GPU work both finished
                torch.cuda.synchronize()

        # wall clock: includes host work, copies and the read-back
        q = time_calls(fn, args.graph_iters if graphs else args.iters, args.warmup, False)
        if graphs:
            row.update(graph=q, graph_static_path=stage.static, graph_buckets=list(stage.buckets),
                       graph_warmup_s=round(warm_s, 2))
        else:
            row["eager"] = q
        del stage
        if cuda:
            torch.cuda.empty_cache()
    if len(outs) == 2:
        pairs = list(zip(outs[False], outs[True]))
        if any(a.track_id.tolist() != b.track_id.tolist() for a, b in pairs):
            row["graph_vs_eager_maxabs"] = float("inf")  # different tracks published: a bug
        else:
            row["graph_vs_eager_maxabs"] = max((float(np.abs(a.scores - b.scores).max()) for a, b in pairs
                                                if len(a)), default=0.0)
    return row


def parity_checks(device: str, T: int, n: int) -> dict[str, float]:
    """On the device, fp32: window sdpa vs exact, and the causal step vs a full causal recompute."""
    torch.manual_seed(1)
    model = LART(LARTConfig.official_mvit()).to(device).eval()
    S = T + 20  # the window slides 20 times
    pose, joints, app = features(model.config, (n, S, n), torch.float32, device)
    valid = torch.rand(n, S, n, device=device) > 0.2
    valid[:, 0, 0] = True
    w = model.forward_window(pose[:, :T], joints[:, :T], app[:, :T], valid[:, :T])
    we = model.forward_window(pose[:, :T], joints[:, :T], app[:, :T], valid[:, :T], exact=True)
    positions = (torch.arange(S, device=device) % T).expand(n, S)
    full = model.forward_causal(pose, joints, app, valid, positions, T)
    k, v, kb = model.new_cache(n, T, n)
    steps = []
    for t in range(S):
        steps.append(model.step(pose[:, t], joints[:, t], app[:, t], valid[:, t], positions[:, t], k, v, kb)[0])
    return {"window_sdpa_vs_exact_maxabs": float((w - we).abs().max()),
            "step_vs_full_causal_maxabs": float((torch.stack(steps, 1) - full).abs().max()),
            "logit_scale": float(full.abs().max())}


def guarded(fn, *a) -> list[dict]:
    """Run one case; an error (e.g. out of memory, capture failure) is recorded, not fatal."""
    try:
        out = fn(*a)
        return out if isinstance(out, list) else [out]
    except Exception as exc:  # noqa: BLE001 - one lead run must return every case it can
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [dict(case=f"{fn.__name__}{a[:3]}", error=f"{type(exc).__name__}: {str(exc)[:300]}")]


def fmt(q: dict | None) -> str:
    return "-" if q is None else f"{q['median']:8.3f} ({q['p10']:.3f}-{q['p90']:.3f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny iteration counts on CPU: checks the code path")
    p.add_argument("--tf32", action="store_true", help="allow TF32 for fp32 matmuls")
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--graph-iters", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    if args.cpu_smoke:
        device, T, people = "cpu", 8, (1, 2)
        args.iters, args.graph_iters, args.warmup, args.no_graph = 2, 2, 1, True
        ActionStage._graph_cls = UncapturedGraph  # the stage's static-buffer path runs, captures replaced by calls
        combos = [("tiny", "fp32"), ("official", "fp32")]
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --cpu-smoke for a path check", file=sys.stderr)
            return 2
        device, T, people = "cuda", 125, (1, 5, 10)
        combos = [("tiny", "fp32"), ("official", "fp32"), ("official", "bf16")]
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    logging.getLogger("lart_stream.realtime.actions").setLevel(logging.ERROR)  # random-weight/zero-feature warnings
    logging.getLogger("lart_stream.models.lart").setLevel(logging.ERROR)
    t_start = time.time()
    rows: list[dict] = []
    with torch.inference_mode():
        checks = guarded(parity_checks, device, T, people[-1] if args.cpu_smoke else 5)[0]
        print(f"  parity: {checks}", flush=True)
        for size, dt in combos:
            for n in people:
                rows += guarded(bench_model, size, dt, n, T, args, device)
                for mode in ("window", "causal"):
                    rows += guarded(bench_stage, size, dt, n, T, mode, args, device)
                    if size == "official" and dt == "bf16" or args.cpu_smoke and size == "tiny":
                        # max_tracks 16, power-of-two buckets: what padding n tracks to a bucket costs
                        rows += guarded(bench_stage, size, dt, n, T, mode, args, device, True)
                        rows += guarded(bench_stage, size, dt, n, T, mode, args, device, False, True)
                print(f"  done {size} {dt} N={n} ({time.time() - t_start:.0f} s)", flush=True)
    env = dict(torch=torch.__version__, python=platform.python_version(), device=device,
               gpu=torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(), tf32=args.tf32,
               cpu_smoke=args.cpu_smoke, seconds=round(time.time() - t_start, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"env": env, "checks": checks, "rows": rows}, indent=1))
    print(f"\nLART per-frame cost, T={T}, {env['gpu']}, torch {env['torch']} (ms: median (p10-p90))")
    print(f"{'size':8} {'dtype':5} {'N':>2} {'case':17} {'tokens':>6} {'GFLOP':>8} {'eager ms':>24} "
          f"{'graph ms':>24} {'graph-eager':>11}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']}: {r['error']}")
            continue
        d = r.get("graph_vs_eager_maxabs")
        print(f"{r['size']:8} {r['dtype']:5} {r['N']:>2} {r['case']:17} {r.get('tokens', ''):>6} "
              f"{r.get('gflop', ''):>8} {fmt(r.get('eager')):>24} {fmt(r.get('graph')):>24} "
              f"{'-' if d is None else f'{d:.1e}':>11}")
    print(f"wrote {args.out} in {env['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
