"""HMR 2.0 (official size: ViT-H/16 + 6-layer decoder, 670 M parameters) forward time on one GPU.

    python benchmarks/device/hmr2_timing.py --out $OUT/hmr2_timing.json
    python benchmarks/device/hmr2_timing.py --cpu-smoke --out /tmp/hmr2_timing.json   # path check only

For 1, 5 and 10 crops (256x192), random weights (speed does not depend on weight values):
  model-eager   HMR2.forward in fp32 (TF32 off unless --tf32), and under bf16 / fp16 autocast
  model-graph   the same, replayed from a CUDA graph captured per batch size (static input buffer)
  stage         HMRLifter end to end on a 1920x1080 frame (upload, crops, network, full-frame cameras,
                copy back), host wall-clock per call, in three modes:
                  eager   the eager path, no graphs
                  graphs  the eager path with the torch backend's CUDA graphs (buckets 1, 2, 4, 8, 16:
                          5 runs as 8, 10 as 16; the previous default)
                  fused   the fused path (the default on CUDA now): pinned banded frame upload, a crop
                          graph + a network/post graph at the exact batch size, one copy back;
                          also with large people (the reference blur) as "fused+blur"
                "over net" = stage wall - model-graph (same dtype, same batch): what the stage adds.
  breakdown     the fused stage's parts from CUDA events at 1, 5, 10 people: upload (box geometry +
                staging memcpy + H2D of frame rows and boxes), crops (graph 1), network+post (graph 2),
                post alone (its own graph), d2h; wall - sum = host work after the copy (unpack, People).
  warm-up       seconds and GPU memory to capture every fused graph (batches 1..16, one frame size).
Parity: graph vs eager (same precision) and bf16 / fp16 vs fp32, max |difference| per output; on the
device: fused-path crops vs crop_people (sharp bitwise, blurred ~1e-3) and fused vs eager stage outputs.
Times: CUDA events around each call with a synchronize per iteration (per-call latency, ms),
median and p10-p90; the stage rows are host wall-clock (they include the host work).
Needs only torch + numpy (+ onnx for the import of export/); imports models/ and realtime/ from here.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402

from lart_stream.benchmarks.device.timing import quantiles, time_calls  # noqa: E402,F401

from lart_stream.models.hmr2 import HMR2, HMR2Config, HMR2Output  # noqa: E402

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BATCHES = (1, 5, 10)


def autocast(dtype_name: str, device: str, cache: bool = True):
    dt = AUTOCAST[dtype_name]
    if dt is None:
        return torch.autocast(device.split(":")[0], enabled=False)
    return torch.autocast(device.split(":")[0], dtype=dt, cache_enabled=cache)


def graph_of(model: HMR2, x: torch.Tensor, dtype_name: str, device: str):
    """(replay, static input, static outputs): model(x) captured after warm-up on a side stream."""
    static_in = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad(), autocast(dtype_name, device, cache=False):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad(), autocast(dtype_name, device, cache=False):
        out = model(static_in)
    return g.replay, static_in, out


def maxabs(a: HMR2Output, b: HMR2Output) -> dict[str, float]:
    return {f: float((x.float() - y.float()).abs().max()) for f, x, y in zip(HMR2Output._fields, a, b)}


def gflop_per_crop(c: HMR2Config) -> float:
    T = c.grid[0] * c.grid[1]
    vit = c.depth * (2 * T * (4 * c.embed_dim ** 2 + 2 * c.embed_dim * int(c.embed_dim * c.mlp_ratio))
                     + 4 * T * T * c.embed_dim) + 2 * T * c.embed_dim * 3 * c.patch_size ** 2
    inner = c.head_heads * c.head_dim_head
    head = c.head_depth * 2 * (c.head_dim * 4 * inner + T * c.embed_dim * 2 * inner + 2 * c.head_dim * c.head_mlp_dim)
    return (vit + head) / 1e9


def bench_model(model: HMR2, device: str, args) -> tuple[list[dict], list[dict]]:
    cuda = device.startswith("cuda")
    rows, parity = [], []
    g = torch.Generator(device).manual_seed(0)
    for b in BATCHES:
        x = torch.randn(b, 3, 256, 192, generator=g, device=device)
        with torch.no_grad():
            ref32 = model(x)
        for dn in args.dtypes:
            def eager():
                with torch.no_grad(), autocast(dn, device):
                    return model(x)

            row = dict(case="model", dtype=dn, batch=b, gflop=round(b * gflop_per_crop(model.cfg), 1))
            row["eager"] = time_calls(eager, args.iters, args.warmup, cuda)
            out = eager()
            par = dict(batch=b, dtype=dn, vs_fp32_eager=maxabs(out, ref32))
            if cuda and not args.no_graph:
                replay, static_in, static_out = graph_of(model, x, dn, device)
                row["graph"] = time_calls(replay, args.graph_iters, 3, cuda)
                replay()
                torch.cuda.synchronize()
                par["graph_vs_eager"] = maxabs(static_out, out)
                del replay, static_in, static_out
            if "graph" in row:
                row["graph_tflops"] = round(row["gflop"] / row["graph"]["median"], 1)
            rows.append(row)
            parity.append(par)
    return rows, parity


def capture_fn(fn):
    """replay of fn() captured as a CUDA graph after warm-up on a side stream (outputs stay in its pool)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        fn()
    return g.replay


def person_boxes(rng: np.random.Generator, b: int, W: int, H: int, large: int = 0) -> np.ndarray:
    """b people of ordinary video size (100-400 px tall, none blurred); the first ``large`` of them
    700-1000 px tall, which the reference blurs before the crop."""
    h = rng.uniform(100, 400, b)
    h[:large] = rng.uniform(700, 1000, large)
    x0 = rng.uniform(0, W - 0.45 * h)
    y0 = rng.uniform(0, np.maximum(H - h, 1))
    return np.stack([x0, y0, x0 + 0.45 * h, y0 + h], 1).astype(np.float32)


STAGE_CASES = [(b, 0) for b in BATCHES] + [(1, 1), (5, 2)]  # (people, of which large)


def bench_stage(size: str, device: str, args) -> list[dict]:
    from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
    from lart_stream.realtime.records import Detections, Frame

    cuda = device.startswith("cuda")
    rng = np.random.default_rng(0)
    H, W = (1080, 1920) if not args.cpu_smoke else (720, 1280)
    frame = Frame(0, 0.0, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    dets = {(b, k): Detections(person_boxes(rng, b, W, H, k), np.ones(b), np.zeros(b)) for b, k in STAGE_CASES}
    rows = []
    graphs = cuda and not args.no_graph
    modes = [("eager", dict(fused=False, cuda_graphs=False))]
    if graphs:
        modes.append(("graphs", dict(fused=False, cuda_graphs=True)))
    modes.append(("fused", dict(fused=True, cuda_graphs=graphs)))  # on the CPU: the same code, plain calls
    for label, kw in modes:
        lifter = HMRLifter.from_config(HMRLifterConfig(size=size, device=device, backend="torch",
                                                       precision=args.stage_dtype, **kw))
        if label == "fused":
            rows.append(guarded_row(fused_warmup, lifter, (W, H), cuda))
        for b, k in STAGE_CASES:
            if k and label != "fused":
                continue
            row = dict(case="stage", mode=label + ("+blur" if k else ""), dtype=args.stage_dtype, batch=b, large=k,
                       frame=f"{W}x{H}", backend=lifter.backend_info)
            row["wall"] = time_calls(lambda: lifter(frame, dets[(b, k)]), args.iters, args.warmup, cuda, wall=True)
            rows.append(row)
        if label == "fused":
            for b in BATCHES:
                rows.append(guarded_row(breakdown, lifter, frame, dets[(b, 0)], args, cuda))
            rows.append(guarded_row(stage_parity, lifter, frame, dets, cuda))
        del lifter
        gc.collect()  # graphs and their pool go with the lifter
        if cuda:
            torch.cuda.empty_cache()
    return rows


def guarded_row(fn, *a) -> dict:
    try:
        return fn(*a)
    except Exception as exc:  # noqa: BLE001 - one lead run must return every case it can
        return dict(case=fn.__name__, error=f"{type(exc).__name__}: {str(exc)[:400]}")


def fused_warmup(lifter, frame_size, cuda: bool) -> dict:
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_reserved()
    t0 = time.perf_counter()
    lifter.warmup(frame_size=frame_size)  # every bucket up to max_batch, crop graphs for this frame size
    row = dict(case="warmup", seconds=round(time.perf_counter() - t0, 2), graphs=len(lifter._fused.net),
               capture=lifter._fused.capture)
    if cuda:
        row["reserved_gib_added"] = round((torch.cuda.memory_reserved() - before) / 2 ** 30, 2)
        row["reserved_gib"] = round(torch.cuda.memory_reserved() / 2 ** 30, 2)
    return row


def breakdown(lifter, frame, dets, args, cuda: bool) -> dict:
    """The fused stage's parts (CUDA events) and its post-processing alone, at len(dets) people."""
    from lart_stream.models.hmr2 import HMR2Output

    b = len(dets)
    lifter.profile(True)
    parts, walls = [], []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        lifter(frame, dets)
        wall = 1e3 * (time.perf_counter() - t0)
        if i >= args.warmup:
            parts.append(lifter.last_parts())
            walls.append(wall)
    lifter.profile(False)
    row = dict(case="breakdown", batch=b, wall=quantiles(walls))
    for name in parts[0]:
        row[name] = quantiles([p[name] for p in parts])
    # post-processing alone, on the network's outputs for this batch (its own graph on CUDA)
    fs = lifter._fused
    B = fs._bucket(b)
    with torch.no_grad(), (torch.autocast(fs.device.type, dtype=fs.dtype, cache_enabled=False)
                           if fs.dtype != torch.float32 else torch.autocast(fs.device.type, enabled=False)):
        out = HMR2Output(*(t.clone() for t in fs.model(fs.crops[:B])))
    boxes = fs._boxes_for(B)
    post = (lambda: fs.post_pack(out, boxes))
    run = capture_fn(post) if cuda and fs.capture else post
    row["post"] = time_calls(run, args.graph_iters, 3, cuda)
    return row


def stage_parity(lifter, frame, dets, cuda: bool) -> dict:
    """On this device: fused crops vs crop_people, and fused vs eager stage outputs (max |diff|)."""
    from lart_stream.models.hmr2_crop import (blur_radius, blur_rows, blur_sigma, box_center_size, crop_people,
                                  crop_people_static, image_to_tensor, normalisation, radius_bucket)

    fs = lifter._fused
    xyxy = dets[(5, 2)].xyxy
    ref, _, _ = crop_people(image_to_tensor(frame.image, fs.device), xyxy, fs.cc)
    center, side = box_center_size(xyxy, fs.cc.aspect)
    sigma = blur_sigma(side, fs.cc)
    bl = np.flatnonzero(sigma > 0)
    R = radius_bucket(int(blur_radius(sigma[bl]).max()))
    tab = np.concatenate([bl[:, None], center[bl], side[bl, None], blur_rows(sigma[bl], R)], 1).astype(np.float32)
    boxes = torch.as_tensor(np.concatenate([center, side[:, None]], 1), device=fs.device)
    got = torch.empty_like(ref)
    crop_people_static(torch.as_tensor(frame.image, device=fs.device), boxes, torch.as_tensor(tab, device=fs.device),
                       got, *normalisation(fs.device), fs.cc)
    sharp = torch.as_tensor(sigma == 0, device=fs.device)
    row = dict(case="parity", crops_sharp_maxabs=float((got[sharp] - ref[sharp]).abs().max()),
               crops_blurred_maxabs=float((got[~sharp] - ref[~sharp]).abs().max()))
    for (b, k), d in dets.items():
        a, e = lifter(frame, d), lifter.eager(frame, d)
        row[f"stage_{b}_{k}"] = {f: float(np.abs(getattr(a, f) - getattr(e, f)).max())
                                 for f in ("pose_vector", "cam_t", "location", "appearance")}
    return row


def guarded(fn, *a) -> list:
    """Run one part; an error (out of memory, capture failure) is recorded, not fatal."""
    try:
        return fn(*a)
    except Exception as exc:  # noqa: BLE001 - one lead run must return every case it can
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [dict(case=fn.__name__, error=f"{type(exc).__name__}: {str(exc)[:400]}")]


def fmt(q: dict | None) -> str:
    return "-" if q is None else f"{q['median']:8.2f} ({q['p10']:.2f}-{q['p90']:.2f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU, 2 iterations: checks the code path")
    p.add_argument("--size", default="official", choices=["official", "tiny"])
    p.add_argument("--tf32", action="store_true", help="allow TF32 for fp32 matmuls")
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--graph-iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--stage-dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    args = p.parse_args(argv)
    args.dtypes = ("fp32", "bf16", "fp16")
    if args.cpu_smoke:
        device, args.size = "cpu", "tiny"
        args.iters, args.graph_iters, args.warmup, args.no_graph = 2, 2, 1, True
        args.dtypes, args.stage_dtype = ("fp32", "bf16"), "fp32"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --cpu-smoke for a path check", file=sys.stderr)
            return 2
        device = "cuda"
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    t0 = time.time()
    cfg = HMR2Config.from_size(args.size)
    with torch.device(device):
        model = HMR2(cfg).init_random_(0).eval()
    result = {"script": "benchmarks/device/hmr2_timing.py", "size": args.size, "device": device,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
              "torch": torch.__version__, "tf32": args.tf32, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
              "gflop_per_crop": round(gflop_per_crop(cfg), 1), "random_weights": True}
    model_rows = guarded(bench_model, model, device, args)
    rows, parity = (model_rows if isinstance(model_rows, tuple) else (model_rows, []))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    stage_rows = guarded(bench_stage, args.size, device, args)
    result.update(rows=rows + stage_rows, parity=parity, seconds=round(time.time() - t0, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))

    print(f"HMR 2.0 {args.size} ({result['params_m']} M params, {result['gflop_per_crop']} GFLOP/crop) on "
          f"{result['gpu']}, torch {result['torch']}, TF32 {'on' if args.tf32 else 'off'}; ms median (p10-p90)")
    print(f"{'case':7} {'dtype':5} {'B':>3}  {'eager':>24}  {'CUDA graph':>24}  {'TFLOP/s':>7}")
    net = {}  # (dtype, batch) -> the network alone: graph median, else eager
    for r in rows:
        if "error" in r:
            print(f"{r['case']:7} ERROR {r['error']}")
            continue
        net[(r["dtype"], r["batch"])] = (r.get("graph") or r["eager"])["median"]
        print(f"{'model':7} {r['dtype']:5} {r['batch']:>3}  {fmt(r['eager']):>24}  {fmt(r.get('graph')):>24}  "
              f"{r.get('graph_tflops', '-'):>7}")
    print(f"stage (HMRLifter, host wall per call; 'over net' = wall - model {'graph' if device == 'cuda' else 'eager'},"
          f" same dtype and batch):")
    for r in stage_rows:
        if "error" in r:
            print(f"  {r['case']} ERROR {r['error']}")
        elif r["case"] == "stage":
            base = net.get((r["dtype"], r["batch"]))
            over = f"{r['wall']['median'] - base:+7.2f}" if base is not None else "      -"
            print(f"  {r['mode']:11} {r['dtype']:5} B={r['batch']:>2}  wall {fmt(r['wall']):>24}  over net {over}"
                  f"  {r['backend'] if r['mode'] in ('eager', 'graphs', 'fused') and r['batch'] == 1 else ''}")
        elif r["case"] == "warmup":
            mem = f", GPU memory reserved +{r['reserved_gib_added']} GiB (total {r['reserved_gib']})" if "reserved_gib" in r else ""
            print(f"  fused warm-up: {r['graphs']} network graphs + crop graphs in {r['seconds']} s"
                  f" (capture {r['capture']}){mem}")
    parts = [r for r in stage_rows if r.get("case") == "breakdown" and "error" not in r]
    if parts:
        names = ["upload", "crops", "network+post", "post", "d2h"]
        print("fused stage breakdown, ms median (" + ("CUDA events" if device == "cuda" else "host clock") +
              "; network = network+post - post; host = wall - upload - crops - network+post - d2h):")
        print(f"  {'B':>3} " + " ".join(f"{n:>12}" for n in names) + f" {'network':>9} {'host':>7} {'wall':>7}")
        for r in parts:
            med = {n: r[n]["median"] for n in names if n in r}
            gpu = sum(med.get(n, 0.0) for n in ("upload", "crops", "network+post", "d2h"))
            print(f"  {r['batch']:>3} " + " ".join(f"{med.get(n, float('nan')):12.3f}" for n in names) +
                  f" {med['network+post'] - med['post']:9.3f} {r['wall']['median'] - gpu:7.3f} {r['wall']['median']:7.3f}")
    for r in stage_rows:
        if r.get("case") == "parity" and "error" not in r:
            print(f"device parity: fused crops vs crop_people max |diff| sharp {r['crops_sharp_maxabs']:.2e}, "
                  f"blurred {r['crops_blurred_maxabs']:.2e}; fused vs eager stage (max over pose_vector, cam_t, "
                  f"location, appearance): " + ", ".join(f"{k[6:]} {max(v.values()):.2e}"
                                                         for k, v in r.items() if k.startswith("stage_")))
    print("model parity, max |diff| over outputs (dtype: vs fp32 eager / graph vs eager):")
    for b in BATCHES:
        cells = [f"{par['dtype']}: {max(par['vs_fp32_eager'].values()):.1e}" +
                 (f" / {max(par['graph_vs_eager'].values()):.1e}" if "graph_vs_eager" in par else "")
                 for par in parity if par["batch"] == b]
        print(f"  B={b:>2}  " + "   ".join(cells))
    print(f"wrote {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
