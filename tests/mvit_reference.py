"""Independent float64 computations for the MViT tests, written from the math of the reference
(brjathu/SlowFast attention.py, head_helper.py; torchvision's compiled roi_align kernel), calling
none of models/mvit.py or models/roi_align.py: plain loops and numpy, torch only for the 3D
convolution / max-pool windows and the GELU's erf.

Only parameters are read from the model (by checkpoint key), never its modules.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-6


# ----------------------------------------------------------------------------- RoIAlign


def roi_align_loop(fmap: np.ndarray, boxes: np.ndarray, out: int, scale: float, sampling_ratio: int = 0,
                   aligned: bool = True) -> np.ndarray:
    """torchvision's roi_align kernel, one sample at a time. Box and sample coordinates in float32
    as the kernel computes them (T = float), bilinear sums in float64."""
    f32 = np.float32
    B, C, H, W = fmap.shape
    res = np.zeros((len(boxes), C, out, out))
    for n, (bi, x1, y1, x2, y2) in enumerate(boxes):
        off = f32(0.5) if aligned else f32(0.0)
        sw, sh = f32(x1) * f32(scale) - off, f32(y1) * f32(scale) - off
        ew, eh = f32(x2) * f32(scale) - off, f32(y2) * f32(scale) - off
        rw, rh = f32(ew - sw), f32(eh - sh)
        if not aligned:
            rw, rh = max(rw, f32(1)), max(rh, f32(1))
        bw, bh = f32(rw / f32(out)), f32(rh / f32(out))
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / f32(out)))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / f32(out)))
        count = max(gh * gw, 1)
        img = fmap[int(bi)].astype(np.float64)
        for ph in range(out):
            for pw in range(out):
                acc = np.zeros(C)
                for iy in range(gh):
                    y = f32(f32(sh + f32(f32(ph) * bh)) + f32(f32(f32(iy + 0.5) * bh) / f32(gh)))
                    for ix in range(gw):
                        x = f32(f32(sw + f32(f32(pw) * bw)) + f32(f32(f32(ix + 0.5) * bw) / f32(gw)))
                        acc += _bilinear(img, float(y), float(x))
                res[n, :, ph, pw] = acc / count
    return res


def _bilinear(img: np.ndarray, y: float, x: float) -> np.ndarray:
    C, H, W = img.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return np.zeros(C)
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= H - 1:
        yl = yh = H - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= W - 1:
        xl = xh = W - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * img[:, yl, xl] + hy * lx * img[:, yl, xh] + ly * hx * img[:, yh, xl] + ly * lx * img[:, yh, xh]


# ----------------------------------------------------------------------------- MViT pieces


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def linear(x: np.ndarray, P: dict, name: str) -> np.ndarray:
    return x @ P[f"{name}.weight"].T + P[f"{name}.bias"]


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + torch.erf(torch.from_numpy(x / math.sqrt(2.0))).numpy())


def interp_rows(table: np.ndarray, rows: int) -> np.ndarray:
    """Linear resize of a (L, C) table to ``rows`` (half-pixel centres, edges clamped)."""
    L = table.shape[0]
    if L == rows:
        return table
    out = np.zeros((rows, table.shape[1]))
    for i in range(rows):
        src = max((i + 0.5) * L / rows - 0.5, 0.0)
        lo = min(int(math.floor(src)), L - 1)
        hi = min(lo + 1, L - 1)
        lam = src - lo
        out[i] = (1 - lam) * table[lo] + lam * table[hi]
    return out


def rel_index(qi: int, kj: int, q: int, k: int) -> int:
    """The reference's distance index: float32 arithmetic, truncated."""
    f32 = np.float32
    qr, kr = f32(max(k / q, 1.0)), f32(max(q / k, 1.0))
    d = f32(f32(qi) * qr) - f32(f32(kj) * kr)
    return int(f32(d + f32((k - 1) * max(q / k, 1.0))))


def pool_tokens(x: np.ndarray, w: np.ndarray | None, stride, thw, has_cls: bool):
    """(N, L, C) per-head tokens -> depthwise conv over (T, H, W), cls kept. Returns (tokens, thw)."""
    if w is None:
        return x, thw
    cls, body = (x[:, :1], x[:, 1:]) if has_cls else (None, x)
    N, L, C = body.shape
    T, H, W = thw
    vol = torch.from_numpy(body.reshape(N, T, H, W, C).transpose(0, 4, 1, 2, 3).copy())
    k = w.shape[2:]
    pooled = F.conv3d(vol, torch.from_numpy(w), stride=tuple(stride), padding=tuple(s // 2 for s in k), groups=C).numpy()
    thw = pooled.shape[2:]
    body = pooled.reshape(N, C, -1).transpose(0, 2, 1)
    return (np.concatenate([cls, body], axis=1) if has_cls else body), tuple(thw)


def block_forward(P: dict, pre: str, x: np.ndarray, thw, *, heads: int, dim_out: int, dim_mul_in_att: bool,
                  stride_q, stride_kv, has_cls: bool = True, residual_pooling: bool = True):
    """One MultiScaleBlock on one clip's tokens x (N, C) in float64 -> (N', dim_out), thw'."""
    g = lambda n: P[f"{pre}.{n}"]  # noqa: E731
    dim = x.shape[1]
    x_norm = layer_norm(x, g("norm1.weight"), g("norm1.bias"))
    att_dim = dim_out if dim_mul_in_att else dim
    hd = att_dim // heads
    qkv = linear(x_norm, P, f"{pre}.attn.qkv").reshape(len(x), 3, heads, hd).transpose(1, 2, 0, 3)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (heads, N, hd)

    def pooled(t, name, stride):
        key = f"{pre}.attn.pool_{name}.weight"
        t, shape = pool_tokens(t, P.get(key), stride, thw, has_cls)
        if key in P:
            t = layer_norm(t, g(f"attn.norm_{name}.weight"), g(f"attn.norm_{name}.bias"))
        return t, shape

    q, qs = pooled(q, "q", stride_q)
    k, ks = pooled(k, "k", stride_kv)
    v, _ = pooled(v, "v", stride_kv)
    s = 1 if has_cls else 0
    Rh = interp_rows(g("attn.rel_pos_h"), 2 * max(qs[1], ks[1]) - 1)
    Rw = interp_rows(g("attn.rel_pos_w"), 2 * max(qs[2], ks[2]) - 1)
    Rt = interp_rows(g("attn.rel_pos_t"), 2 * max(qs[0], ks[0]) - 1)
    idx = [np.array([[rel_index(i, j, qs[a], ks[a]) for j in range(ks[a])] for i in range(qs[a])]) for a in range(3)]
    out = np.zeros_like(q)
    scale = hd ** -0.5
    for hh in range(heads):
        scores = (q[hh] * scale) @ k[hh].T
        qg = q[hh, s:].reshape(*qs, hd)  # (qt, qh, qw, c)
        # term[a-axis query, key index] = q . R[index(query pos, key pos)]
        rt = np.einsum("thwc,tkc->thwk", qg, Rt[idx[0]])
        rh = np.einsum("thwc,hkc->thwk", qg, Rh[idx[1]])
        rw = np.einsum("thwc,wkc->thwk", qg, Rw[idx[2]])
        bias = (rt[:, :, :, :, None, None] + rh[:, :, :, None, :, None] + rw[:, :, :, None, None, :])
        scores[s:, s:] += bias.reshape(len(qg.reshape(-1, hd)), -1)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        out[hh] = (e / e.sum(-1, keepdims=True)) @ v[hh]
        if residual_pooling:
            out[hh, s:] += q[hh, s:]
    y = linear(out.transpose(1, 0, 2).reshape(len(q[0]), att_dim), P, f"{pre}.attn.proj")
    if dim_mul_in_att and dim != dim_out:
        x = linear(x_norm, P, f"{pre}.proj")
    if stride_q and math.prod(stride_q) > 1:  # max-pool skip, kernel s+1
        kern = [st + 1 if st > 1 else st for st in stride_q]
        cls, body = (x[:1], x[1:]) if has_cls else (None, x)
        T, H, W = thw
        vol = torch.from_numpy(body.reshape(1, T, H, W, -1).transpose(0, 4, 1, 2, 3).copy())
        p = F.max_pool3d(vol, kern, tuple(stride_q), [kk // 2 for kk in kern]).numpy()
        body = p.reshape(p.shape[1], -1).T
        x = np.concatenate([cls, body]) if has_cls else body
    x = x + y
    x_norm = layer_norm(x, g("norm2.weight"), g("norm2.bias"))
    mlp = linear(gelu(linear(x_norm, P, f"{pre}.mlp.fc1")), P, f"{pre}.mlp.fc2")
    if not dim_mul_in_att and dim != dim_out:
        x = linear(x_norm, P, f"{pre}.proj")
    return x + mlp, qs


def params64(model) -> dict:
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
