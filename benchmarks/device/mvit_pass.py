"""One MViTv2-L 40x3 pass at 312x374 (bf16, random weights, 5 boxes, eager, CUDA events, median of 20)
with the pooling as "auto" (the committed per-shape Triton table) and as "torch" (cuDNN), same run.

    python3 benchmarks/device/mvit_pass.py --out $OUT/mvit_pass.json
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from lart_stream.models.mvit import MViT, MViTConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    m = MViT(MViTConfig.official_l_40x3()).cuda().to(torch.bfloat16).eval()
    clip = torch.randn(1, 3, 40, 312, 374, device="cuda", dtype=torch.bfloat16)
    boxes = torch.tensor([[0, 10, 10, 100, 300]] * 5, device="cuda", dtype=torch.bfloat16)
    res, outs = {}, {}
    for backend in ("torch", "auto"):
        m.set_attention_impl("fast", pool_backend=backend)
        with torch.no_grad():
            for _ in range(3):
                outs[backend] = m(clip, boxes)[0].float()
            ms = []
            for _ in range(20):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                m(clip, boxes)
                e.record()
                e.synchronize()
                ms.append(s.elapsed_time(e))
        res[backend] = statistics.median(ms)
    res["features_maxabs_auto_vs_torch"] = (outs["auto"] - outs["torch"]).abs().max().item()
    res["features_scale"] = outs["torch"].abs().max().item()
    print(json.dumps(res))
    json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
