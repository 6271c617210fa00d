"""GPU kernel time per pipeline stage from a torch.profiler trace (chrome-trace JSON).

Each stage's host range is named ``stage:<name>`` (Pipeline.annotate). A kernel (or copy/memset) is
charged to the stage whose range, on the same host thread, holds the CUDA runtime call that launched
it (matched by CUPTI's correlation id; the kernels of a CUDA-graph replay share the replay's id).
The sums are kernel execution time only: no launch gaps, no idle time between kernels.
"""

from __future__ import annotations

import bisect
import collections
from typing import Any

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def kernel_time_by_stage(trace: dict[str, Any], frames: int) -> dict[str, Any]:
    """{'per_frame_ms': {stage: ms, 'unattributed': ms, 'total': ms}, 'top_kernels': [(name, ms/frame)]}."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    ranges: dict[Any, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith("stage:"):
            ranges[e.get("tid")].append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), e["name"][6:]))
    for r in ranges.values():
        r.sort()
    starts = {tid: [a for a, _, _ in r] for tid, r in ranges.items()}
    launcher: dict[Any, str] = {}
    for e in events:
        if e.get("cat") != "cuda_runtime":
            continue
        corr = (e.get("args") or {}).get("correlation")
        tid, ts = e.get("tid"), float(e["ts"])
        r = ranges.get(tid)
        if corr is None or not r:
            continue
        i = bisect.bisect_right(starts[tid], ts) - 1
        if i >= 0 and r[i][0] <= ts <= r[i][1]:
            launcher[corr] = r[i][2]
    per_stage: dict[str, float] = collections.Counter()
    by_name: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") not in GPU_CATS:
            continue
        dur_ms = float(e.get("dur", 0)) / 1e3
        stage = launcher.get((e.get("args") or {}).get("correlation"), "unattributed")
        per_stage[stage] += dur_ms
        by_name[str(e.get("name", "?"))[:80]] += dur_ms
    n = max(frames, 1)
    out = {k: round(v / n, 4) for k, v in sorted(per_stage.items())}
    out["total"] = round(sum(per_stage.values()) / n, 4)
    top = [(name, round(ms / n, 4)) for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:12]]
    return {"per_frame_ms": out, "top_kernels": top, "frames": frames}
