"""One Triton kernel for MViT's q/k/v pooling: depthwise Conv3d + LayerNorm, straight from the tokens.

PySlowFast pools each of q/k/v by permuting (B, nh, 1+THW, C) tokens to (B*nh, C, T, H, W), a
depthwise Conv3d (no bias), permuting back, re-attaching the cls token and a LayerNorm over C.
This kernel reads the tokens where the qkv Linear left them (any batch/head/token strides, channels
contiguous), accumulates the 3-D stencil in float32, layer-norms in float32 and writes the pooled
tokens wherever attention wants them (any strides), optionally a second, scaled copy (q * scale
into the folded-attention buffer). The cls row is not pooled but is layer-normed, as the reference.

Imported only on CUDA (or under TRITON_INTERPRET=1 in tests); models/mvit.py falls back to torch.
"""

from __future__ import annotations

import math
import weakref

import torch
import triton
import triton.language as tl

from lart_stream.models.mvit_pool_table import LaunchConfig


@triton.jit
def _add_tap(acc, xbase, w_ptr, tap, ot, oh, ow, is_sp, cols, cmask, T, H, W, sxn,
             ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
             PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
             KH: tl.constexpr, KW: tl.constexpr, C: tl.constexpr, CLS: tl.constexpr):
    """acc + one stencil tap (flat index kt*KH*KW + kh*KW + kw; a constexpr when unrolled): the (BN, BC)
    input tokens it reads times its C weights, one contiguous row of the tap-major (taps, C) weights."""
    kt = tap // (KH * KW)
    kh = (tap // KW) % KH
    kw = tap % KW
    it = ot * ST - PT + kt
    ih = oh * SH - PH + kh
    iw = ow * SW - PW + kw
    m = is_sp & (it >= 0) & (it < T) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    tok = tl.where(m, CLS + (it * H + ih) * W + iw, 0)
    v = tl.load(xbase + tok.to(tl.int64)[:, None] * sxn + cols[None, :],
                mask=m[:, None] & cmask[None, :], other=0.0).to(tl.float32)
    wv = tl.load(w_ptr + tap * C + cols, mask=cmask, other=0.0).to(tl.float32)
    return acc + v * wv[None, :]


# the grid sizes only index: not specialised, so the pools of one model share a compiled kernel per geometry
@triton.jit(do_not_specialize=["NH", "T", "H", "W", "TO", "HO", "WO"])
def _pool_norm_kernel(x_ptr, w_ptr, g_ptr, b_ptr, out_ptr, out2_ptr, scale2, eps,
                      NH, T, H, W, TO, HO, WO,
                      sxb, sxh, sxn, sob, soh, son, s2b, s2h, s2n,
                      ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                      PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                      KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                      C: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr,
                      CLS: tl.constexpr, HAS_OUT2: tl.constexpr, UNROLL: tl.constexpr, SA: tl.constexpr,
                      rt_ptr=None, rh_ptr=None, rw_ptr=None, NT=0, NHK=0, NW=0, NZ=0, REL: tl.constexpr = False):
    # the strides come divided by SA (elements): multiplied back by a constant, every row start is known
    # to be SA-aligned, so the channel loads/stores vectorise (a runtime stride like 72 = C proves nothing)
    sxb, sxh, sxn = sxb * SA, sxh * SA, sxn * SA
    sob, soh, son = sob * SA, soh * SA, son * SA
    s2b, s2h, s2n = s2b * SA, s2h * SA, s2n * SA
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // NH
    h = pid_bh % NH
    rows = pid_n * BN + tl.arange(0, BN)  # output token index, cls first when CLS
    cols = tl.arange(0, BC)
    cmask = cols < C
    n_out = TO * HO * WO
    valid = rows < n_out + CLS
    sp = rows - CLS  # spatial output index
    is_sp = valid & (sp >= 0)
    ow = sp % WO
    oh = (sp // WO) % HO
    ot = sp // (WO * HO)
    xbase = x_ptr + b.to(tl.int64) * sxb + h.to(tl.int64) * sxh
    acc = tl.zeros((BN, BC), dtype=tl.float32)
    # UNROLL: all taps inlined (constant offsets, but every tap's loads live at once: register pressure);
    # else one runtime loop over the flat tap index (div/mod per tap, small code, pipelined by num_stages)
    if UNROLL:
        for tap in tl.static_range(KT * KH * KW):
            acc = _add_tap(acc, xbase, w_ptr, tap, ot, oh, ow, is_sp, cols, cmask, T, H, W, sxn,
                           ST, SH, SW, PT, PH, PW, KH, KW, C, CLS)
    else:
        for tap in range(KT * KH * KW):
            acc = _add_tap(acc, xbase, w_ptr, tap, ot, oh, ow, is_sp, cols, cmask, T, H, W, sxn,
                           ST, SH, SW, PT, PH, PW, KH, KW, C, CLS)
    if CLS:
        is_cls = valid & (rows == 0)
        cv = tl.load(xbase + cols[None, :] + rows[:, None] * 0, mask=is_cls[:, None] & cmask[None, :],
                     other=0.0).to(tl.float32)
        acc = tl.where(is_cls[:, None], cv, acc)
    mean = tl.sum(acc, axis=1) / C
    d = tl.where(cmask[None, :], acc - mean[:, None], 0.0)
    var = tl.sum(d * d, axis=1) / C
    gam = tl.load(g_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    bet = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    y = d * tl.rsqrt(var + eps)[:, None] * gam[None, :] + bet[None, :]
    smask = valid[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)[:, None]
    obase = out_ptr + b.to(tl.int64) * sob + h.to(tl.int64) * soh
    tl.store(obase + r64 * son + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=smask)
    if HAS_OUT2:
        # the reference scales the already-rounded q: round first, then scale in the output dtype
        yq = y.to(out_ptr.dtype.element_ty).to(tl.float32) * scale2
        o2 = out2_ptr + b.to(tl.int64) * s2b + h.to(tl.int64) * s2h
        tl.store(o2 + r64 * s2n + cols[None, :], yq.to(out2_ptr.dtype.element_ty), mask=smask)
        if REL:
            # the folded rel-pos channels after the C scaled ones: q . R[t|h|w of the query] for each key
            # coordinate (from the rounded, unscaled q, as the torch path's GEMMs), 0 on the cls row,
            # then NZ zero pad channels
            yr = y.to(out_ptr.dtype.element_ty).to(tl.float32)
            lmask = is_sp[:, None] & cmask[None, :]
            rmask = valid
            for j in range(NT):
                r = tl.load(rt_ptr + (ot * NT + j)[:, None] * C + cols[None, :], mask=lmask, other=0.0).to(tl.float32)
                val = tl.where(is_sp, tl.sum(yr * r, axis=1), 0.0)
                tl.store(o2 + rows.to(tl.int64) * s2n + (C + j), val.to(out2_ptr.dtype.element_ty), mask=rmask)
            for j in range(NHK):
                r = tl.load(rh_ptr + (oh * NHK + j)[:, None] * C + cols[None, :], mask=lmask, other=0.0).to(tl.float32)
                val = tl.where(is_sp, tl.sum(yr * r, axis=1), 0.0)
                tl.store(o2 + rows.to(tl.int64) * s2n + (C + NT + j), val.to(out2_ptr.dtype.element_ty), mask=rmask)
            for j in range(NW):
                r = tl.load(rw_ptr + (ow * NW + j)[:, None] * C + cols[None, :], mask=lmask, other=0.0).to(tl.float32)
                val = tl.where(is_sp, tl.sum(yr * r, axis=1), 0.0)
                tl.store(o2 + rows.to(tl.int64) * s2n + (C + NT + NHK + j), val.to(out2_ptr.dtype.element_ty),
                         mask=rmask)
            zero = tl.zeros((BN,), dtype=tl.float32).to(out2_ptr.dtype.element_ty)
            for j in range(NZ):
                tl.store(o2 + rows.to(tl.int64) * s2n + (C + NT + NHK + NW + j), zero, mask=rmask)


_TAP_MAJOR: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}


def tap_major(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, kt, kh, kw) depthwise weights as a contiguous (kt*kh*kw, C) copy, so a tap's C weights are
    one coalesced load; made once per weight tensor and version (an in-place update remakes it)."""
    hit = _TAP_MAJOR.get(id(weight))
    if hit is not None and hit[0]() is weight and hit[1] == weight._version:
        return hit[2]
    wt = weight.detach().reshape(weight.shape[0], -1).t().contiguous()
    for key in [k for k, (ref, _, _) in _TAP_MAJOR.items() if ref() is None]:
        del _TAP_MAJOR[key]  # weights freed since: their copies go too
    _TAP_MAJOR[id(weight)] = (weakref.ref(weight), weight._version, wt)
    return wt


def pool_norm(x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
              thw: tuple[int, int, int], out_thw: tuple[int, int, int], stride: tuple[int, int, int],
              padding: tuple[int, int, int], has_cls: bool, out: torch.Tensor,
              out2: torch.Tensor | None = None, scale2: float = 1.0,
              rel: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None, zero_pad: int = 0,
              config: LaunchConfig | None = None) -> None:
    """x (B, nh, 1+THW, C) any strides with contiguous C; weight (C, 1, kt, kh, kw);
    out / out2 (B, nh, 1+T'H'W', C) any strides with contiguous C: out = LN(conv(x)), out2 = out * scale2.
    ``rel`` (needs out2, whose rows must extend past C): the gathered rel-pos tables Rt (qT, kt, C),
    Rh (qH, kh, C), Rw (qW, kw, C), contiguous; out2 channels C.. get out . R (unscaled, 0 on the cls
    row) for t, h, w, then ``zero_pad`` zeros: the whole folded q' row in one pass. ``config`` picks the
    launch (default ``LaunchConfig()``)."""
    B, nh, _, C = x.shape
    kt, kh, kw = weight.shape[2:]
    cfg = config or LaunchConfig()
    n_out = math.prod(out_thw) + int(has_cls)
    for t in (x, out) + ((out2,) if out2 is not None else ()):
        if t.stride(-1) != 1:
            raise ValueError("pool_norm: channels must be contiguous")
    o2 = out2 if out2 is not None else out
    strides = [t.stride(i) for t in (x, out, o2) for i in range(3)]
    # (the kernel multiplies back in 32 bits where the quotient fits them: huge strides stay undivided)
    align = next(a for a in (8, 4, 2, 1) if all(s % a == 0 for s in strides)) if max(strides) < 2 ** 28 else 1
    grid = (triton.cdiv(n_out, cfg.block_n), B * nh)
    _pool_norm_kernel[grid](
        x, tap_major(weight), gamma, beta, out, o2, float(scale2), float(eps),
        nh, *thw, *out_thw, *(s // align for s in strides),
        ST=stride[0], SH=stride[1], SW=stride[2], PT=padding[0], PH=padding[1], PW=padding[2],
        KT=kt, KH=kh, KW=kw, C=C, BC=triton.next_power_of_2(C), BN=cfg.block_n,
        CLS=int(has_cls), HAS_OUT2=out2 is not None, UNROLL=cfg.unroll, SA=align,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **rel_args(rel, zero_pad, out2))


def rel_args(rel: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, zero_pad: int,
             out2: torch.Tensor | None) -> dict:
    if rel is None:
        return {}
    if out2 is None:
        raise ValueError("pool_norm: the rel-pos channels go to out2")
    rt, rh, rw = (r.contiguous() for r in rel)
    return dict(rt_ptr=rt, rh_ptr=rh, rw_ptr=rw, NT=rt.shape[1], NHK=rh.shape[1], NW=rw.shape[1], NZ=zero_pad,
                REL=True)

