"""The "fast" MViT attention (models/mvit.py) and its Triton pooling kernel (models/mvit_triton.py):
fast == folded == reference within float32 rounding of a float64 forward, and the kernel (run by
Triton's numpy interpreter, TRITON_INTERPRET=1, when triton is installed) against the torch ops.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from lart_stream.models import mvit as M
from lart_stream.models.mvit import MViT, MViTConfig

EPS32 = float(np.finfo(np.float32).eps)


def _model(cfg: MViTConfig, seed: int) -> MViT:
    m = MViT(cfg).init_random_(seed).double().eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".rel_pos_" in name:
                p.mul_(20.0)  # rel-pos terms big enough to matter
            elif ".norm_" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name)), dtype=p.dtype) * 0.3)
    return m


@pytest.mark.parametrize("kv", [(1, 4, 4), (1, 3, 3)])
def test_fast_equals_float64_within_float32_rounding(kv: tuple) -> None:
    """fp32 "fast" (in-place q'/k'/v' buffers, strided rel-pos GEMMs, narrow v) against the float64
    materialised forward: float32 rounding only (bound 2^7 eps32 of the output scale, as the folded
    test), and bit-equal to fp32 "folded" on the torch path (same ops, same order)."""
    cfg = MViTConfig.tiny(pool_kv_stride_adaptive=kv)
    m64 = _model(cfg, seed=6)
    clip = torch.randn(2, 3, cfg.num_frames, 72, 88, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        want = m64.set_attention_impl("reference").backbone(clip)
        m32 = MViT(cfg).eval()
        m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
        folded = m32.set_attention_impl("folded").backbone(clip.float())
        outs = {f"fast narrow_v={nv}": m32.set_attention_impl("fast", narrow_v=nv).backbone(clip.float())
                for nv in (False, True)}
    bound = 2 ** 7 * EPS32 * float(want.abs().max())
    for name, got in outs.items():
        err = float((got.double() - want).abs().max())
        assert 0 < err <= bound, (name, err, bound)
    assert torch.equal(outs["fast narrow_v=False"], folded)
    assert MViTConfig().attention_impl == "fast"


def test_fast_catches_a_missing_rel_pos_term() -> None:
    """Not vacuous: the fast path without the w term differs far beyond the bound."""
    cfg = MViTConfig.tiny()
    m = _model(cfg, seed=6).float()
    clip = torch.randn(1, 3, cfg.num_frames, 64, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = m.set_attention_impl("folded").backbone(clip)
        m.set_attention_impl("fast")
        for b in m.blocks:
            b.attn.rel_pos_w = torch.nn.Parameter(torch.zeros_like(b.attn.rel_pos_w))
        changed = m.backbone(clip)
    assert float((changed - ref).abs().max()) > 100 * 2 ** 7 * EPS32 * float(ref.abs().max())


CASES = [((1, 1, 1), (3, 3, 3), True, 12, (3, 7, 9)), ((1, 2, 2), (3, 3, 3), True, 12, (3, 7, 9)),
         ((1, 4, 3), (3, 3, 3), False, 12, (3, 7, 9)), ((2, 2, 2), (1, 3, 3), True, 12, (3, 7, 9)),
         ((1, 8, 8), (3, 3, 3), True, 72, (2, 17, 19))]  # MViTv2-L's head dim and first kv stride


# strided pools again with the runtime tap loop (the other launches unroll the taps)
LOOP_CASES = [CASES[1], CASES[3]]


def check_pool_norm_kernel(stride: tuple, kernel: tuple, has_cls: bool, C: int, thw: tuple,
                           unroll: bool = True) -> None:
    """Depthwise Conv3d + LayerNorm from strided qkv-Linear-like tokens into a strided
    (B, tokens, nh, width) buffer, plus the scaled second output, vs the torch ops in float64
    (fp32 kernel accumulation: bound 2^5 eps32 of the scale); cls row normed, not pooled.
    ``unroll`` False: the launch with the runtime loop over the taps."""
    import lart_stream.models.mvit_triton as K
    from lart_stream.models.mvit_pool_table import LaunchConfig

    launch = LaunchConfig(block_n=16, num_warps=2, num_stages=2, unroll=unroll)

    B, nh = 2, 2
    g = torch.Generator().manual_seed(11)
    N = int(has_cls) + int(np.prod(thw))
    qkv = torch.randn(B, N, 3, nh, C, generator=g)
    x = qkv[:, :, 1].transpose(1, 2)  # the k slice, (B, nh, N, C) with token stride 3*nh*C
    pool = nn.Conv3d(C, C, kernel, stride=stride, padding=[k // 2 for k in kernel], groups=C, bias=False)
    norm = nn.LayerNorm(C, eps=1e-6)
    with torch.no_grad():
        pool.weight.copy_(torch.randn(pool.weight.shape, generator=g) * 0.3)
        norm.weight.copy_(1 + 0.2 * torch.randn(C, generator=g))
        norm.bias.copy_(0.1 * torch.randn(C, generator=g))
        out_thw = M.pooled_thw(thw, pool)
        Nq = int(has_cls) + int(np.prod(out_thw))
        want, want_thw = M._pool(x.double(), pool.double(), thw, has_cls, norm.double())
        assert want_thw == out_thw
        pool.float(), norm.float()
        out = torch.full((B, nh, Nq, C), float("nan"))
        buf = torch.full((B, Nq, nh, C + 5), float("nan"))  # a q'-like buffer, width beyond C untouched
        K.pool_norm(x, pool.weight, norm.weight, norm.bias, norm.eps, thw, out_thw, stride,
                    tuple(pool.padding), has_cls, out, buf.transpose(1, 2)[..., :C], 0.25, config=launch)
    bound = 2 ** 5 * EPS32 * float(want.abs().max())
    assert float((out.double() - want).abs().max()) <= bound
    assert float((buf[..., :C].transpose(1, 2).double() - 0.25 * want).abs().max()) <= bound
    assert torch.isnan(buf[..., C:]).all()
    if has_cls:  # the cls row is the LayerNorm of the input cls token
        cls = torch.nn.functional.layer_norm(x[:, :, :1].double(), (C,), norm.weight.double(), norm.bias.double(), 1e-6)
        assert float((out[:, :, :1].double() - cls).abs().max()) <= bound
    # not vacuous: a wrong stencil weight is seen
    with torch.no_grad():
        pool.weight[0, 0, 0, 0, 0] += 1.0
        K.pool_norm(x, pool.weight, norm.weight, norm.bias, norm.eps, thw, out_thw, stride,
                    tuple(pool.padding), has_cls, out, None, 1.0, config=launch)
    assert float((out.double() - want).abs().max()) > 100 * bound


def check_fast_model_with_kernel() -> None:
    """The whole tiny model, "fast" with the kernel writing into the q'/k'/v' slices (and, fused,
    the rel-pos channels), against fp32
    "folded" (torch pooling) and the float64 reference: float32 rounding only."""
    cfg = MViTConfig.tiny()
    m64 = _model(cfg, seed=7)
    clip = torch.randn(1, 3, cfg.num_frames, 32, 48, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        want = m64.set_attention_impl("reference").backbone(clip)
        m32 = MViT(cfg).eval()
        m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
        folded = m32.set_attention_impl("folded").backbone(clip.float())
        # fused: the kernel writes the whole q' row, rel-pos channels too (plain pooling: CASES above)
        got = {True: m32.set_attention_impl("fast", pool_backend="triton", fuse_rel=True).backbone(clip.float())}
    bound = 2 ** 7 * EPS32 * float(want.abs().max())
    for out in got.values():
        assert 0 < float((out.double() - want).abs().max()) <= bound
        assert float((out - folded).abs().max()) <= bound


def test_triton_pool_norm_equals_torch_under_the_interpreter() -> None:
    """The kernel in Triton's numpy interpreter: TRITON_INTERPRET must be set before triton is
    first imported, so the cases run in a child interpreter."""
    if importlib.util.find_spec("triton") is None:  # not imported here: only the child needs it
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = ("import test_mvit_speed as t\n"
            "for case in t.CASES:\n    t.check_pool_norm_kernel(*case)\n"
            "for case in t.LOOP_CASES:\n    t.check_pool_norm_kernel(*case, unroll=False)\n"
            "t.check_fast_model_with_kernel()\nprint('ok', len(t.CASES) + len(t.LOOP_CASES))")
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parent, capture_output=True,
                         text=True, timeout=600)
    want = f"ok {len(CASES) + len(LOOP_CASES)}"
    assert run.returncode == 0 and run.stdout.strip() == want, run.stdout[-2000:] + run.stderr[-4000:]


def test_speed_script_cpu_smoke_runs_every_cpu_variant_exactly(tmp_path) -> None:
    """benchmarks/device/mvit_speed.py --cpu-smoke: the CPU variants run, agree with the reference
    within float32 rounding, and the CUDA-only ones are marked skipped, not failed."""
    import json

    from lart_stream.benchmarks.device import mvit_speed

    out = tmp_path / "speed.json"
    assert mvit_speed.main(["--cpu-smoke", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["variants"]
    assert set(rows) == {name for name, _, _ in mvit_speed.VARIANTS}
    for name, _, needs_cuda in mvit_speed.VARIANTS:
        assert ("skipped" in rows[name]) == needs_cuda, (name, rows[name])
        if not needs_cuda:
            assert rows[name]["exact"] is True and rows[name]["eager_ms"]["n"] == 3, (name, rows[name])
    assert res["best"] in rows
