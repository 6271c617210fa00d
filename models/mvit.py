"""PySlowFast's MViTv2 with the AVA RoI head: LART's appearance backbone (``mvit.pyth`` + ``mvit.yaml``).

Rebuilt from brjathu/SlowFast @0737f30 (slowfast/models/video_model_builder.py ``MViT``,
attention.py ``MultiScaleBlock``/``MultiScaleAttention``, head_helper.py ``ResNetRoIHead``,
common.py ``Mlp``); see shared/reference/appearance_backbone.md. Module names equal the
checkpoint's ``model_state`` keys, so it loads with no rename table:

    patch_embed.proj  Conv3d 3 -> C0 (bias)            cls_token  [1, 1, C0]
    blocks.i.norm1, blocks.i.attn.{qkv, proj, pool_{q,k,v}, norm_{q,k,v}, rel_pos_{h,w,t}},
    blocks.i.norm2, blocks.i.mlp.{fc1, fc2}, blocks.i.proj (where the width changes)
    norm, head.projection

Block (``MultiScaleBlock``), x (B, 1+THW, C) with a cls token:
    x_norm = norm1(x); y = attn(x_norm)                  # q/k/v pooled by depthwise Conv3d + LayerNorm
    x = maxpool_skip(proj(x_norm) if dim_mul_in_att and width changes else x) + y
    x_norm = norm2(x); x = (proj(x_norm) if not dim_mul_in_att and width changes else x) + mlp(x_norm)
Attention: scores = (q*scale) k^T + decomposed rel-pos (h, w, t terms of the *unscaled* pooled q),
softmax, @ v, + q on the non-cls rows (residual pooling), proj. The rel-pos tables were sized for the
build-time square grid; at run time they are linearly interpolated to 2*max(q, k)-1 rows, and the
row index is computed in float32 and truncated, exactly as the reference does (this picks a row one
lower than exact arithmetic at many positions). The grid comes from the patch-embed output, so
non-square inputs (the demo's 312 x 374) work.

Three attention implementations, same scores:
  "reference"  the materialised score matrix with the three rel-pos terms added (PySlowFast's way)
  "folded"     the rel-pos terms folded into extra q/k channels so one
               ``F.scaled_dot_product_attention`` (flash on the GPU) computes the same scores:
               q' = [q*scale, q.Rt | q.Rh | q.Rw], k' = [k, onehot(t) | onehot(h) | onehot(w)]
               (zeros on the cls row/column), padded to a multiple of 8, SDPA scale 1.
  "fast"       (default) the folded scores with fewer copies: q/k/v pooled straight from the qkv Linear's
               output into preallocated q'/k'/v' buffers (on CUDA one Triton kernel does the
               depthwise Conv3d + LayerNorm, models/mvit_triton.py; elsewhere the torch ops of
               "folded"), rel-pos terms written into q' slices, the one-hot key channels cached,
               residual pooling added while leaving the attention layout. Same arithmetic as
               "folded" on the torch path.
AVA head (``ResNetRoIHead``): AvgPool3d over NUM_FRAMES // patch_stride_t frames (the config's
length, not the input's), RoIAlign (R x R, spatial_scale = 1 / SPATIAL_SCALE_FACTOR from the config,
whatever the real stride is, sampling_ratio 0, aligned), MaxPool2d(R), then the feature (what
LART consumes) and sigmoid(projection(feature)).
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lart_stream.models.checkpoint import CheckpointError, load_pickled, shape_problems, show_keys
from lart_stream.models.mvit_pool_table import LaunchConfig, PoolTable, committed_table, shape_key
from lart_stream.models.roi_align import roi_align

LN_EPS = 1e-6  # PySlowFast's MVIT.NORM "layernorm": partial(nn.LayerNorm, eps=1e-6), pooled q/k/v norms too
ATTENTION_IMPLS = ("fast", "folded", "reference")
# "auto": the Triton kernel for the shapes the committed per-shape table (models/mvit_triton_configs.json,
# measured on an H200 for MViTv2-L at 312x374: all pools 8.4 ms against 28.6 with cuDNN) marks as kernel
# wins on that GPU; everywhere else "torch" (cuDNN's depthwise Conv3d + LayerNorm; the kernel's first,
# untuned launch was slower than it: benchmarks/results/h200/appearance/mvit_speed.json)
POOL_BACKENDS = ("auto", "torch", "triton")


class MViTCheckpointError(CheckpointError):
    """An mvit.pyth / mvit.yaml that does not describe this model exactly (a ValueError)."""


def _l_q_strides() -> tuple[tuple[int, int, int, int], ...]:
    """MViTv2-L's POOL_Q_STRIDE: every block listed, (1, 2, 2) at blocks 2, 8 and 44."""
    return tuple((i, 1, 2, 2) if i in (2, 8, 44) else (i, 1, 1, 1) for i in range(48))


@dataclass(frozen=True)
class MViTConfig:
    # DATA.NUM_FRAMES / SAMPLING_RATE / TRAIN_CROP_SIZE (= TEST_CROP_SIZE, asserted by PySlowFast)
    num_frames: int = 40
    sampling_rate: int = 3
    crop_size: int = 312  # build-time size: fixes the rel-pos table lengths
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # DATA.MEAN / STD (preprocessing, not used here)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    in_chans: int = 3
    embed_dim: int = 144
    num_heads: int = 2
    depth: int = 48
    dim_mul: tuple[tuple[int, float], ...] = ((2, 2.0), (8, 2.0), (44, 2.0))  # (block, multiplier)
    head_mul: tuple[tuple[int, float], ...] = ((2, 2.0), (8, 2.0), (44, 2.0))
    pool_q_stride: tuple[tuple[int, ...], ...] = field(default_factory=_l_q_strides)  # (block, st, sh, sw)
    pool_kvq_kernel: tuple[int, int, int] | None = (3, 3, 3)  # None: stride + 1 per axis
    pool_kv_stride_adaptive: tuple[int, int, int] | None = (1, 8, 8)  # divided by each q stride as it comes
    pool_kv_stride: tuple[tuple[int, ...], ...] = ()  # explicit (block, st, sh, sw), when not adaptive
    patch_kernel: tuple[int, int, int] = (3, 7, 7)
    patch_stride: tuple[int, int, int] = (2, 4, 4)
    patch_padding: tuple[int, int, int] = (1, 3, 3)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dim_mul_in_att: bool = True  # False: width changes one block earlier, blocks.i.proj after norm2
    residual_pooling: bool = True
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = True
    cls_embed_on: bool = True
    num_classes: int = 80
    head_act: str = "sigmoid"  # MODEL.HEAD_ACT: "sigmoid" (AVA) or "softmax"
    roi_resolution: int = 7  # DETECTION.ROI_XFORM_RESOLUTION
    spatial_scale_factor: int = 16  # DETECTION.SPATIAL_SCALE_FACTOR (the config's, not the real stride 32)
    aligned: bool = True  # DETECTION.ALIGNED
    attention_impl: str = "fast"  # not a checkpoint setting: "fast" / "folded" (SDPA) or "reference"

    def __post_init__(self) -> None:
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"MViTConfig.attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.head_act not in ("sigmoid", "softmax"):
            raise ValueError(f"MViTConfig.head_act must be 'sigmoid' or 'softmax', got {self.head_act!r}")
        if self.num_frames // self.patch_stride[0] < 1:
            raise ValueError(f"MViTConfig: num_frames {self.num_frames} shorter than the patch stride")

    @classmethod
    def official_l_40x3(cls, **kw: Any) -> "MViTConfig":
        """MViTv2-L 40x3 at 312 (SF configs/Kinetics/MVITv2_L_40x3_test.yaml schedule) with the AVA head."""
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "MViTConfig":
        """Four blocks, widths 16 -> 32 -> 64, 8 frames x 64 px: the same code paths (q pooling,
        adaptive kv strides, both rel-pos kinds, width changes) at test size."""
        base = dict(num_frames=8, sampling_rate=2, crop_size=64, embed_dim=16, num_heads=1, depth=4,
                    dim_mul=((1, 2.0), (3, 2.0)), head_mul=((1, 2.0), (3, 2.0)),
                    pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2), (2, 1, 1, 1), (3, 1, 2, 2)),
                    pool_kv_stride_adaptive=(1, 4, 4), num_classes=80)
        base.update(kw)
        return cls(**base)

    @classmethod
    def from_slowfast_yaml(cls, text_or_dict: str | Mapping[str, Any], **kw: Any) -> "MViTConfig":
        """From a PySlowFast config: a yaml text (an mvit.yaml, or the ``cfg`` a .pyth embeds) or
        the parsed dict. Keys the config leaves out take PySlowFast's defaults (config/defaults.py),
        not this class's. Options this rebuild does not implement are refused, naming them."""
        return config_from_slowfast(text_or_dict, **kw)

    @property
    def feature_dim(self) -> int:
        """Width of the final stage = the RoI feature LART consumes (1152 for MViTv2-L)."""
        return block_specs(self)[-1].dim_out

    @property
    def temporal_kernel(self) -> int:
        """The head's AvgPool3d time kernel: NUM_FRAMES // PATCH_STRIDE[0]."""
        return self.num_frames // self.patch_stride[0]


# ----------------------------------------------------------------------------- block schedule


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """PySlowFast's ``round_width`` (models/utils.py), in float32 as its torch.ones multipliers are."""
    w = np.float32(width) * np.float32(multiplier)
    min_width = min_width or divisor
    out = max(min_width, int(w + np.float32(divisor / 2)) // divisor * divisor)
    if out < 0.9 * w:
        out += divisor
    return int(out)


@dataclass(frozen=True)
class BlockSpec:
    dim: int
    dim_out: int
    att_dim: int  # attention width: dim_out with DIM_MUL_IN_ATT, else dim
    num_heads: int
    kernel_q: tuple[int, ...]  # () = no q pooling
    kernel_kv: tuple[int, ...]
    stride_q: tuple[int, ...]  # () when the block is not listed in POOL_Q_STRIDE
    stride_kv: tuple[int, ...]
    input_size: tuple[int, int, int]  # build-time (T, H, W) grid entering the block (floor division)

    @property
    def head_dim(self) -> int:
        return self.att_dim // self.num_heads


@functools.lru_cache(maxsize=64)
def block_specs(cfg: MViTConfig) -> tuple[BlockSpec, ...]:
    """The per-block widths, heads, pooling kernels/strides as ``MViT.__init__`` derives them."""
    depth = cfg.depth
    dim_mul = [1.0] * (depth + 1)
    head_mul = [1.0] * (depth + 1)
    for i, m in cfg.dim_mul:
        dim_mul[i] = m
    for i, m in cfg.head_mul:
        head_mul[i] = m
    pool_q: list[tuple[int, ...]] = [()] * depth
    pool_kv: list[tuple[int, ...]] = [()] * depth
    stride_q: list[tuple[int, ...]] = [()] * depth
    stride_kv: list[tuple[int, ...]] = [()] * depth
    for entry in cfg.pool_q_stride:
        i, s = entry[0], tuple(entry[1:])
        stride_q[i] = s
        pool_q[i] = tuple(cfg.pool_kvq_kernel) if cfg.pool_kvq_kernel is not None else tuple(x + 1 if x > 1 else x for x in s)
    kv_list = list(cfg.pool_kv_stride)
    if cfg.pool_kv_stride_adaptive is not None:
        cur = list(cfg.pool_kv_stride_adaptive)
        kv_list = []
        for i in range(depth):
            if stride_q[i]:
                cur = [max(cur[d] // stride_q[i][d], 1) for d in range(len(cur))]
            kv_list.append((i, *cur))
    for entry in kv_list:
        i, s = entry[0], tuple(entry[1:])
        stride_kv[i] = s
        pool_kv[i] = tuple(cfg.pool_kvq_kernel) if cfg.pool_kvq_kernel is not None else tuple(x + 1 if x > 1 else x for x in s)
    input_size = (cfg.num_frames // cfg.patch_stride[0], cfg.crop_size // cfg.patch_stride[1],
                  cfg.crop_size // cfg.patch_stride[2])
    embed, heads, specs = cfg.embed_dim, cfg.num_heads, []
    for i in range(depth):
        heads = round_width(heads, head_mul[i])
        if cfg.dim_mul_in_att:
            dim_out = round_width(embed, dim_mul[i], divisor=round_width(heads, head_mul[i]))
        else:
            dim_out = round_width(embed, dim_mul[i + 1], divisor=round_width(heads, head_mul[i + 1]))
        kq, kkv = pool_q[i], pool_kv[i]
        # MultiScaleAttention skips pooling whose kernel and stride are both all ones
        if math.prod(kq) == 1 and math.prod(stride_q[i]) == 1:
            kq = ()
        if math.prod(kkv) == 1 and math.prod(stride_kv[i]) == 1:
            kkv = ()
        specs.append(BlockSpec(embed, dim_out, dim_out if cfg.dim_mul_in_att else embed, heads, kq, kkv,
                               stride_q[i], stride_kv[i], input_size))
        if stride_q[i]:
            input_size = tuple(s // st for s, st in zip(input_size, stride_q[i]))
        embed = dim_out
    return tuple(specs)


# ----------------------------------------------------------------------------- attention pieces


def _pool(x: torch.Tensor, pool: nn.Module | None, thw: tuple[int, int, int], has_cls: bool,
          norm: nn.Module | None = None) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """PySlowFast ``attention_pool``: (B, N, L, C) tokens -> pooled over (T, H, W), cls kept, then norm."""
    if pool is None:
        return x, thw
    if has_cls:
        cls_tok, x = x[:, :, :1], x[:, :, 1:]
    B, N, L, C = x.shape
    T, H, W = thw
    x = pool(x.reshape(B * N, T, H, W, C).permute(0, 4, 1, 2, 3))  # (B*N, C, T', H', W')
    thw = (x.shape[2], x.shape[3], x.shape[4])
    # = reshape(B, N, C, L).transpose(2, 3); free when the conv kept the channels-last layout
    x = x.permute(0, 2, 3, 4, 1).reshape(B, N, thw[0] * thw[1] * thw[2], C)
    if has_cls:
        x = torch.cat((cls_tok, x), dim=2)
    if norm is not None:
        x = norm(x)
    return x, thw


def pooled_thw(thw: tuple[int, int, int], pool: nn.Module | None) -> tuple[int, int, int]:
    """The (T, H, W) grid after a Conv3d/MaxPool3d ``pool`` (floor division, as the modules do)."""
    if pool is None:
        return thw
    k, st, p = (tuple(pool.kernel_size), tuple(pool.stride), tuple(pool.padding))
    return tuple((n + 2 * pi - ki) // si + 1 for n, ki, si, pi in zip(thw, k, st, p))




@functools.lru_cache(maxsize=1)
def _triton_pool_norm():
    """models/mvit_triton.pool_norm, or None where triton does not import."""
    try:
        from lart_stream.models.mvit_triton import pool_norm
    except Exception:  # no triton (CPU installs), or a triton that cannot build here
        return None
    return pool_norm


@functools.lru_cache(maxsize=None)
def _cuda_device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def pool_launch(x: torch.Tensor, pool: nn.Module | None, norm: nn.Module | None, thw: tuple[int, int, int],
                has_cls: bool, backend: str = "auto", table: PoolTable | None = None) -> LaunchConfig | None:
    """The Triton kernel's launch for this pool, or None for the torch path: "triton" always runs the
    kernel (the table's config for the shape, else the default); "auto" only where ``table`` (default:
    the committed models/mvit_triton_configs.json: the H200's MViTv2-L pools at 312x374) marks the shape as a kernel win, on a
    CUDA device of the table's name, with triton importable; "torch" never."""
    if pool is None or norm is None or backend == "torch":
        return None
    table = committed_table() if table is None else table
    cfg = table.shapes.get(shape_key(x.shape[-1], x.shape[1], thw, tuple(pool.kernel_size), tuple(pool.stride),
                                     tuple(pool.padding), has_cls)) if table.shapes else None
    if backend == "triton":
        return cfg or LaunchConfig()
    if cfg is None or not cfg.kernel_wins or not x.is_cuda or _triton_pool_norm() is None:
        return None
    if table.device is not None and _cuda_device_name(x.device.index or 0) != table.device:
        return None
    return cfg


def pool_into(x: torch.Tensor, pool: nn.Module | None, norm: nn.Module | None, thw: tuple[int, int, int],
              has_cls: bool, out: torch.Tensor, out2: torch.Tensor | None = None, scale2: float = 1.0,
              backend: str = "auto", rel: tuple[torch.Tensor, ...] | None = None, zero_pad: int = 0,
              table: PoolTable | None = None) -> bool:
    """``_pool`` (conv pooling + LayerNorm, cls kept and normed) written into ``out`` (and
    ``out2 = out * scale2``), both (B, nh, L', C) views of any strides: the Triton kernel where
    ``pool_launch`` picks it (backend "triton", or "auto" with a measured per-shape ``table``), else the
    torch ops of the other impls (identical arithmetic to them).
    With ``rel`` (gathered Rt, Rh, Rw) the kernel also writes the folded rel-pos channels and
    ``zero_pad`` zeros after out2's C channels; returns whether it did (False on the torch path)."""
    launch = pool_launch(x, pool, norm, thw, has_cls, backend, table)
    if launch is not None:
        kernel = _triton_pool_norm()
        if kernel is None:
            raise RuntimeError("MViT pool backend 'triton' requested but triton does not import")
        kernel(x, pool.weight, norm.weight, norm.bias, norm.eps, thw, pooled_thw(thw, pool), tuple(pool.stride),
               tuple(pool.padding), has_cls, out, out2, scale2, rel=rel, zero_pad=zero_pad, config=launch)
        return rel is not None
    y, _ = _pool(x, pool, thw, has_cls, norm)
    out.copy_(y)
    if out2 is not None:
        out2.copy_(y * scale2)
    return False


def interpolate_rel_pos(table: torch.Tensor, rows: int) -> torch.Tensor:
    """PySlowFast ``get_rel_pos``: a (L, C) table linearly resized to ``rows`` rows (align_corners False)."""
    if table.shape[0] == rows:
        return table
    out = F.interpolate(table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=rows, mode="linear")
    return out.reshape(-1, rows).permute(1, 0)


@functools.lru_cache(maxsize=512)
def rel_pos_index(q: int, k: int, device: str = "cpu") -> torch.Tensor:
    """(q, k) int64 row of the interpolated table for each (query, key) position along one axis.

    The reference computes it in float32 on the CPU (int arange times a Python float ratio, then
    ``.long()``): kept exactly, including the rows it rounds down.
    """
    q_ratio = max(k / q, 1.0)
    k_ratio = max(q / k, 1.0)
    with torch.inference_mode(False):  # a cached tensor must stay usable outside inference mode
        dist = torch.arange(q)[:, None] * q_ratio - torch.arange(k)[None, :] * k_ratio
        dist += (k - 1) * k_ratio
        return dist.long().to(device)  # cached per device: no host-to-device copy per forward


def rel_pos_terms(q: torch.Tensor, q_thw: tuple[int, int, int], k_thw: tuple[int, int, int],
                  rel_pos_h: torch.Tensor | None, rel_pos_w: torch.Tensor | None,
                  rel_pos_t: torch.Tensor | None) -> list[torch.Tensor | None]:
    """[rel_t (B,nh,qt,qh,qw,kt), rel_h (..,kh), rel_w (..,kw)] from the unscaled spatial q (B,nh,qT*qH*qW,c)."""
    B, nh, _, c = q.shape
    qt, qh, qw = q_thw
    kt, kh, kw = k_thw
    dev = str(q.device)
    r_q = q.reshape(B, nh, qt, qh, qw, c)
    out: list[torch.Tensor | None] = [None, None, None]
    if rel_pos_h is not None:
        Rh = interpolate_rel_pos(rel_pos_h, 2 * max(qh, kh) - 1)[rel_pos_index(qh, kh, dev)]  # (qh, kh, c)
        Rw = interpolate_rel_pos(rel_pos_w, 2 * max(qw, kw) - 1)[rel_pos_index(qw, kw, dev)]
        out[1] = torch.einsum("bythwc,hkc->bythwk", r_q, Rh)
        out[2] = torch.einsum("bythwc,wkc->bythwk", r_q, Rw)
    if rel_pos_t is not None:
        Rt = interpolate_rel_pos(rel_pos_t, 2 * max(qt, kt) - 1)[rel_pos_index(qt, kt, dev)]  # (qt, kt, c)
        # as the reference: one matmul per query frame
        r = r_q.permute(2, 0, 1, 3, 4, 5).reshape(qt, B * nh * qh * qw, c)
        rel = torch.matmul(r, Rt.transpose(1, 2)).transpose(0, 1)  # (B*nh*qh*qw, qt, kt)
        out[0] = rel.reshape(B, nh, qh, qw, qt, kt).permute(0, 1, 4, 2, 3, 5)
    return out


def gathered_rel_tables(q_thw: tuple[int, int, int], k_thw: tuple[int, int, int], rel_pos_t: torch.Tensor,
                        rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, device: str) -> tuple[torch.Tensor, ...]:
    """(Rt (qt, kt, c), Rh (qh, kh, c), Rw (qw, kw, c)): each query coordinate's table rows per key coordinate."""
    return tuple(interpolate_rel_pos(table, 2 * max(nq, nk) - 1)[rel_pos_index(nq, nk, device)]
                 for table, nq, nk in zip((rel_pos_t, rel_pos_h, rel_pos_w), q_thw, k_thw))


def rel_pos_terms_into(q: torch.Tensor, q_thw: tuple[int, int, int], k_thw: tuple[int, int, int],
                       rel_pos_h: torch.Tensor | None, rel_pos_w: torch.Tensor | None,
                       rel_pos_t: torch.Tensor | None, out: torch.Tensor) -> None:
    """``rel_pos_terms`` written into ``out`` (B, nh, qT*qH*qW, kt|kh|kw for the enabled terms, any
    strides with a viewable token axis), each term one batched GEMM on views of q (no permute copy)."""
    B, nh, _, c = q.shape
    qt, qh, qw = q_thw
    kt, kh, kw = k_thw
    dev = str(q.device)
    col = 0
    if rel_pos_t is not None:
        Rt = interpolate_rel_pos(rel_pos_t, 2 * max(qt, kt) - 1)[rel_pos_index(qt, kt, dev)]  # (qt, kt, c)
        dst = out[..., col:col + kt].view(B, nh, qt, qh * qw, kt)
        dst.copy_(torch.matmul(q.view(B, nh, qt, qh * qw, c), Rt.transpose(1, 2)))
        col += kt
    if rel_pos_h is not None:
        r_q = q.view(B, nh, qt, qh, qw, c)
        Rh = interpolate_rel_pos(rel_pos_h, 2 * max(qh, kh) - 1)[rel_pos_index(qh, kh, dev)]  # (qh, kh, c)
        Rw = interpolate_rel_pos(rel_pos_w, 2 * max(qw, kw) - 1)[rel_pos_index(qw, kw, dev)]
        out[..., col:col + kh].view(B, nh, qt, qh, qw, kh).copy_(torch.matmul(r_q, Rh.transpose(1, 2)))
        col += kh
        out[..., col:col + kw].view(B, nh, qt, qh, qw, kw).copy_(torch.einsum("bythwc,wkc->bythwk", r_q, Rw))


@functools.lru_cache(maxsize=128)
def _key_onehots(k_thw: tuple[int, int, int], has_cls: bool, which: tuple[bool, bool, bool], device: str,
                 dtype: torch.dtype) -> torch.Tensor:
    """(Nk, kt+kh+kw) one-hot of each key's (t, h, w) for the enabled terms; a zero row for the cls key."""
    kt, kh, kw = k_thw
    with torch.inference_mode(False):  # a cached tensor must stay usable outside inference mode
        t, h, w = torch.meshgrid(torch.arange(kt), torch.arange(kh), torch.arange(kw), indexing="ij")
        parts = [F.one_hot(idx.reshape(-1), n).to(torch.float32)
                 for on, idx, n in zip(which, (t, h, w), (kt, kh, kw)) if on]
        oh = torch.cat(parts, dim=1)
        if has_cls:
            oh = torch.cat((oh.new_zeros(1, oh.shape[1]), oh), dim=0)
        return oh.to(device=device, dtype=dtype)  # 0/1: exact in any dtype


class MultiScaleAttention(nn.Module):
    def __init__(self, spec: BlockSpec, cfg: MViTConfig):
        super().__init__()
        dim, dim_out, nh = spec.dim, spec.att_dim, spec.num_heads
        head_dim = dim_out // nh
        self.num_heads, self.dim_out, self.scale = nh, dim_out, head_dim ** -0.5
        self.has_cls = cfg.cls_embed_on
        self.residual_pooling = cfg.residual_pooling
        self.impl = cfg.attention_impl
        # "fast" switches (MViT.set_attention_impl): pooling kernel, v at its own head dim (an SDPA
        # backend that takes dim(v) != dim(q) then does 72/120 of the PV work), forced SDPA backend
        self.pool_backend = "auto"
        self.narrow_v = False
        self.sdpa_backend: str | None = None
        self.fuse_rel = False  # the Triton q kernel also writes the rel-pos channels (all three terms on)
        self.qkv = nn.Linear(dim, dim_out * 3, bias=cfg.qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        for name, kernel, stride in (("q", spec.kernel_q, spec.stride_q), ("k", spec.kernel_kv, spec.stride_kv),
                                     ("v", spec.kernel_kv, spec.stride_kv)):
            if kernel:
                pad = [k // 2 for k in kernel]
                setattr(self, f"pool_{name}", nn.Conv3d(head_dim, head_dim, kernel, stride=stride, padding=pad,
                                                        groups=head_dim, bias=False))
                setattr(self, f"norm_{name}", nn.LayerNorm(head_dim, eps=LN_EPS))
            else:
                setattr(self, f"pool_{name}", None)
                setattr(self, f"norm_{name}", None)
        size = spec.input_size[1]
        if cfg.rel_pos_spatial:
            if spec.input_size[1] != spec.input_size[2]:
                raise ValueError("MViT: spatial rel-pos needs a square build-time grid")
            q_size = size // spec.stride_q[1] if spec.stride_q else size
            kv_size = size // spec.stride_kv[1] if spec.stride_kv else size
            rows = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(rows, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(rows, head_dim))
        else:
            self.rel_pos_h = self.rel_pos_w = None
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * spec.input_size[0] - 1, head_dim)) if cfg.rel_pos_temporal else None

    def forward(self, x: torch.Tensor, thw: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        # tracing (ONNX export) cannot record the in-place buffer writes: "folded" is the same scores
        if self.impl == "fast" and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return self._fast(x, thw)
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nh, N, hd)
        q, q_thw = _pool(q, self.pool_q, thw, self.has_cls, self.norm_q)
        k, k_thw = _pool(k, self.pool_k, thw, self.has_cls, self.norm_k)
        v, _ = _pool(v, self.pool_v, thw, self.has_cls, self.norm_v)
        s = 1 if self.has_cls else 0
        rel = rel_pos_terms(q[:, :, s:], q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
        if self.impl != "reference":
            x = self._folded(q, k, v, rel, q_thw, k_thw)
        else:
            x = self._reference(q, k, v, rel, q_thw, k_thw)
        if self.residual_pooling:
            x = torch.cat((x[:, :, :s], x[:, :, s:] + q[:, :, s:]), dim=2) if s else x + q
        x = x.transpose(1, 2).reshape(B, -1, self.dim_out)
        return self.proj(x), q_thw

    def _fast(self, x: torch.Tensor, thw: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """The "folded" scores, built in place: every buffer is (B, tokens, nh, width) in memory (the
        layout SDPA kernels use), pooled tokens written into their final slices."""
        B, N, _ = x.shape
        nh, hd = self.num_heads, self.dim_out // self.num_heads
        s = 1 if self.has_cls else 0
        qkv = self.qkv(x).view(B, N, 3, nh, hd)
        q_in, k_in, v_in = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, nh, N, hd) views
        q_thw, k_thw = pooled_thw(thw, self.pool_q), pooled_thw(thw, self.pool_k)
        Nq, Nk = s + math.prod(q_thw), s + math.prod(k_thw)
        spatial = self.rel_pos_h is not None  # h and w terms come together, as in rel_pos_terms
        which = (self.rel_pos_t is not None, spatial, spatial)
        extra = sum(n for on, n in zip(which, k_thw) if on)  # one-hot key channels (t | h | w)
        width = hd + extra
        D = width + (-width % 8)
        Dv = hd if self.narrow_v else D
        qp = x.new_empty(B, Nq, nh, D).transpose(1, 2)
        kp = x.new_empty(B, Nk, nh, D).transpose(1, 2)
        vp = x.new_empty(B, Nk, nh, Dv).transpose(1, 2)
        q = x.new_empty(B, nh, Nq, hd)  # unscaled pooled q: rel-pos terms and residual pooling use it
        tables = None
        if self.fuse_rel and all(which):
            tables = gathered_rel_tables(q_thw, k_thw, self.rel_pos_t, self.rel_pos_h, self.rel_pos_w, str(x.device))
        fused = pool_into(q_in, self.pool_q, self.norm_q, thw, self.has_cls, q, qp[..., :hd], self.scale,
                          self.pool_backend, rel=tables, zero_pad=D - width)
        pool_into(k_in, self.pool_k, self.norm_k, thw, self.has_cls, kp[..., :hd], backend=self.pool_backend)
        pool_into(v_in, self.pool_v, self.norm_v, thw, self.has_cls, vp[..., :hd], backend=self.pool_backend)
        if extra and not fused:
            rel_pos_terms_into(q[:, :, s:], q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t,
                               qp[:, :, s:, hd:width])
            qp[:, :, :s, hd:width].zero_()
        if extra:
            kp[..., hd:width].copy_(_key_onehots(k_thw, bool(s), which, str(x.device), x.dtype))
        if not fused:
            qp[..., width:].zero_()
        kp[..., width:].zero_()
        vp[..., hd:].zero_()
        if self.sdpa_backend is None:
            o = F.scaled_dot_product_attention(qp, kp, vp, scale=1.0)
        else:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel(getattr(SDPBackend, self.sdpa_backend)):
                o = F.scaled_dot_product_attention(qp, kp, vp, scale=1.0)
        o = o[..., :hd].transpose(1, 2)  # (B, Nq, nh, hd)
        if not self.residual_pooling:
            y = o.reshape(B, Nq, nh, hd)
        elif torch.is_grad_enabled():  # out= does not record autograd
            y = torch.cat((o[:, :s], o[:, s:] + q.transpose(1, 2)[:, s:]), dim=1)
        else:  # one pass: the residual add writes the layout proj reads
            y = x.new_empty(B, Nq, nh, hd)
            y[:, :s].copy_(o[:, :s])
            torch.add(o[:, s:], q.transpose(1, 2)[:, s:], out=y[:, s:])
        return self.proj(y.view(B, Nq, self.dim_out)), q_thw

    def _reference(self, q, k, v, rel, q_thw, k_thw) -> torch.Tensor:
        """The materialised score matrix, rel-pos terms added as PySlowFast does (h, w, then t)."""
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, Nq, Nk)
        B, nh = q.shape[:2]
        s = 1 if self.has_cls else 0
        rel_t, rel_h, rel_w = rel
        if rel_h is not None or rel_t is not None:
            body = attn[:, :, s:, s:].reshape(B, nh, *q_thw, *k_thw)
            if rel_h is not None:
                body = body + rel_h[:, :, :, :, :, None, :, None] + rel_w[:, :, :, :, :, None, None, :]
            if rel_t is not None:
                body = body + rel_t[:, :, :, :, :, :, None, None]
            body = body.reshape(B, nh, q.shape[2] - s, k.shape[2] - s)
            if s:
                top = attn[:, :, :1]
                left = attn[:, :, 1:, :1]
                attn = torch.cat((top, torch.cat((left, body), dim=3)), dim=2)
            else:
                attn = body
        return attn.softmax(dim=-1) @ v

    def _folded(self, q, k, v, rel, q_thw, k_thw) -> torch.Tensor:
        """Same scores by one SDPA: rel-pos terms as extra q channels against one-hot key channels."""
        B, nh, Nq, hd = q.shape
        Nk = k.shape[2]
        s = 1 if self.has_cls else 0
        terms = [r.reshape(B, nh, Nq - s, r.shape[-1]) for r in (rel[0], rel[1], rel[2]) if r is not None]
        if not terms:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        extra_q = torch.cat(terms, dim=-1)  # (B, nh, Nq-s, kt+kh+kw)
        if s:
            extra_q = torch.cat((extra_q.new_zeros(B, nh, 1, extra_q.shape[-1]), extra_q), dim=2)
        which = (rel[0] is not None, rel[1] is not None, rel[2] is not None)
        extra_k = _key_onehots(k_thw, bool(s), which, str(k.device), k.dtype)  # (Nk, E)
        width = hd + extra_q.shape[-1]
        pad = -width % 8
        qp = torch.cat((q * self.scale, extra_q, q.new_zeros(B, nh, Nq, pad)), dim=-1)
        kp = torch.cat((k, extra_k.expand(B, nh, Nk, -1), k.new_zeros(B, nh, Nk, pad)), dim=-1)
        vp = torch.cat((v, v.new_zeros(B, nh, Nk, width + pad - hd)), dim=-1)  # flash wants equal head dims
        return F.scaled_dot_product_attention(qp, kp, vp, scale=1.0)[..., :hd]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiScaleBlock(nn.Module):
    def __init__(self, spec: BlockSpec, cfg: MViTConfig):
        super().__init__()
        self.dim, self.dim_out, self.dim_mul_in_att = spec.dim, spec.dim_out, cfg.dim_mul_in_att
        self.has_cls = cfg.cls_embed_on
        self.norm1 = nn.LayerNorm(spec.dim, eps=LN_EPS)
        self.attn = MultiScaleAttention(spec, cfg)
        self.norm2 = nn.LayerNorm(spec.att_dim, eps=LN_EPS)
        self.mlp = Mlp(spec.att_dim, int(spec.att_dim * cfg.mlp_ratio), spec.dim_out)
        if spec.dim != spec.dim_out:
            self.proj = nn.Linear(spec.dim, spec.dim_out)
        stride = spec.stride_q
        if stride and math.prod(stride) > 1:
            kernel = [s + 1 if s > 1 else s for s in stride]
            self.pool_skip = nn.MaxPool3d(kernel, stride, [k // 2 for k in kernel], ceil_mode=False)
        else:
            self.pool_skip = None

    def forward(self, x: torch.Tensor, thw: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x_norm = self.norm1(x)
        x_block, thw_new = self.attn(x_norm, thw)
        if self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        x_res, _ = _pool(x.unsqueeze(1), self.pool_skip, thw, self.has_cls)
        x = x_res.squeeze(1) + x_block
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        return x + x_mlp, thw_new


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MViTConfig):
        super().__init__()
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, stride=cfg.patch_stride,
                              padding=cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = self.proj(x)  # (B, C, T, H, W)
        thw = (x.shape[2], x.shape[3], x.shape[4])
        return x.flatten(2).transpose(1, 2), thw


class ResNetRoIHead(nn.Module):
    """AVA head: temporal mean (config length), RoIAlign, spatial max, Linear + activation."""

    def __init__(self, dim: int, cfg: MViTConfig):
        super().__init__()
        self.temporal_kernel = cfg.temporal_kernel
        self.resolution = cfg.roi_resolution
        self.spatial_scale = 1.0 / cfg.spatial_scale_factor
        self.aligned = cfg.aligned
        self.act = cfg.head_act
        self.projection = nn.Linear(dim, cfg.num_classes)

    def forward(self, fmap: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if fmap.shape[2] != self.temporal_kernel:  # the reference asserts the pooled length is 1
            raise ValueError(f"MViT head: feature map has {fmap.shape[2]} frames, the config's temporal pool "
                             f"takes {self.temporal_kernel} (NUM_FRAMES // patch stride): wrong clip length")
        x = F.avg_pool3d(fmap, (self.temporal_kernel, 1, 1), stride=1).squeeze(2)  # (B, C, H, W)
        x = roi_align(x, boxes, self.resolution, self.spatial_scale, 0, self.aligned)  # float32 inside for bf16/fp16
        feat = F.max_pool2d(x, self.resolution, stride=1).flatten(1)  # (R, C)
        logits = self.projection(feat)
        scores = torch.sigmoid(logits) if self.act == "sigmoid" else torch.softmax(logits, dim=1)
        return feat, scores


class MViT(nn.Module):
    def __init__(self, cfg: MViTConfig):
        super().__init__()
        self.config = cfg
        specs = block_specs(cfg)
        self.patch_embed = PatchEmbed(cfg)
        if cfg.cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(MultiScaleBlock(s, cfg) for s in specs)
        self.norm = nn.LayerNorm(specs[-1].dim_out, eps=LN_EPS)
        self.head = ResNetRoIHead(specs[-1].dim_out, cfg)

    def backbone(self, clip: torch.Tensor) -> torch.Tensor:
        """clip (B, 3, T, H, W) normalised -> (B, C, T', H', W') after the final norm, cls dropped."""
        x, thw = self.run_blocks(*self.embed(clip), 0, len(self.blocks))
        return self.finish(x, thw)

    # The backbone in three parts, so it can run as slices of blocks (realtime/appearance.py ``chunks``).

    def embed(self, clip: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """clip -> tokens (B, [1 +] THW, C0) with the cls token first when the config has one."""
        x, thw = self.patch_embed(clip)  # (B, THW, C0)
        if self.config.cls_embed_on:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x, thw

    def run_blocks(self, x: torch.Tensor, thw: tuple[int, int, int], lo: int,
                   hi: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Blocks ``lo`` .. ``hi - 1`` on tokens x of grid thw."""
        for blk in self.blocks[lo:hi]:
            x, thw = blk(x, thw)
        return x, thw

    def finish(self, x: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
        """Tokens after the last block -> (B, C, T', H', W') after the final norm, cls dropped."""
        x = self.norm(x)
        if self.config.cls_embed_on:
            x = x[:, 1:]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *thw)

    def forward(self, clip: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """clip (B, 3, T, H, W) normalised, H/W any; boxes (R, 5) float [batch_index, x1, y1, x2, y2] in
        clip pixels -> (features (R, feature_dim) before the projection, scores (R, num_classes))."""
        return self.head(self.backbone(clip), boxes)

    def set_attention_impl(self, impl: str, pool_backend: str = "auto", narrow_v: bool = False,
                           sdpa_backend: str | None = None, fuse_rel: bool = False) -> "MViT":
        """Switch every block between "fast", "folded" (SDPA) and "reference" (materialised scores);
        for "fast": the pooling kernel (``POOL_BACKENDS``), v at its own head dim (``narrow_v``, needs
        an SDPA backend that accepts it) and a forced SDPA backend (an ``SDPBackend`` name, e.g.
        "CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"; None: torch's choice); ``fuse_rel``:
        the Triton q kernel writes the rel-pos channels too (no separate GEMMs; torch path: ignored)."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        if pool_backend not in POOL_BACKENDS:
            raise ValueError(f"pool_backend must be one of {POOL_BACKENDS}, got {pool_backend!r}")
        for blk in self.blocks:
            blk.attn.impl = impl
            blk.attn.pool_backend, blk.attn.narrow_v, blk.attn.sdpa_backend = pool_backend, narrow_v, sdpa_backend
            blk.attn.fuse_rel = fuse_rel
        self.config = replace(self.config, attention_impl=impl)
        return self

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> "MViT":
        """Deterministic random weights (no checkpoint): trunc-normal(0.02)-like linear/conv weights,
        0.02 biases, unit LayerNorms, rel-pos and cls ~ N(0, 0.02) as PySlowFast initialises."""
        dev = next(self.parameters()).device
        g = torch.Generator(dev).manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("cls_token") or ".rel_pos_" in name or (p.dim() > 1 and "norm" not in name):
                p.copy_((torch.randn(p.shape, generator=g, device=dev) * 0.02).clamp(-0.04, 0.04))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.fill_(0.02)
        return self

# ----------------------------------------------------------------------------- PySlowFast config


# PySlowFast's defaults (slowfast/config/defaults.py) for every key read below: a yaml that leaves
# a key out gets these, as ``load_config`` would give it.
SLOWFAST_DEFAULTS: dict[str, dict[str, Any]] = {
    "DATA": {"NUM_FRAMES": 8, "SAMPLING_RATE": 8, "TRAIN_CROP_SIZE": 224, "TEST_CROP_SIZE": 256,
             "MEAN": [0.45, 0.45, 0.45], "STD": [0.225, 0.225, 0.225], "INPUT_CHANNEL_NUM": [3, 3]},
    "MODEL": {"MODEL_NAME": "SlowFast", "NUM_CLASSES": 400, "HEAD_ACT": "softmax"},
    "DETECTION": {"ENABLE": False, "ALIGNED": True, "SPATIAL_SCALE_FACTOR": 16, "ROI_XFORM_RESOLUTION": 7},
    "MVIT": {"MODE": "conv", "POOL_FIRST": False, "CLS_EMBED_ON": True, "PATCH_KERNEL": [3, 7, 7],
             "PATCH_STRIDE": [2, 4, 4], "PATCH_PADDING": [2, 4, 4], "PATCH_2D": False, "EMBED_DIM": 96,
             "NUM_HEADS": 1, "MLP_RATIO": 4.0, "QKV_BIAS": True, "LAYER_SCALE_INIT_VALUE": 0.0, "DEPTH": 16,
             "NORM": "layernorm", "DIM_MUL": [], "HEAD_MUL": [], "POOL_KV_STRIDE": [],
             "POOL_KV_STRIDE_ADAPTIVE": None, "POOL_Q_STRIDE": [], "POOL_KVQ_KERNEL": None, "NORM_STEM": False,
             "USE_ABS_POS": True, "REL_POS_SPATIAL": False, "REL_POS_TEMPORAL": False, "RESIDUAL_POOLING": False,
             "DIM_MUL_IN_ATT": False, "SEPARATE_QKV": False, "USE_FIXED_SINCOS_POS": False,
             "REV": {"ENABLE": False}},
}
# options this rebuild implements only at one value (the MViTv2 AVA model's): anything else is refused
_REQUIRED = {("MVIT", "MODE"): "conv", ("MVIT", "POOL_FIRST"): False, ("MVIT", "SEPARATE_QKV"): False,
             ("MVIT", "USE_ABS_POS"): False, ("MVIT", "USE_FIXED_SINCOS_POS"): False, ("MVIT", "NORM"): "layernorm",
             ("MVIT", "NORM_STEM"): False, ("MVIT", "PATCH_2D"): False, ("MVIT", "LAYER_SCALE_INIT_VALUE"): 0.0,
             ("DETECTION", "ENABLE"): True, ("MODEL", "MODEL_NAME"): "MViT"}


def _decode(value: Any) -> Any:
    """yacs decodes string values with literal_eval ("(3, 7, 7)" -> a tuple); other strings stay."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a project dependency
        raise MViTCheckpointError(f"{where}: reading a PySlowFast yaml needs PyYAML (pip install pyyaml)") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MViTCheckpointError(f"{where}: not valid yaml ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise MViTCheckpointError(f"{where}: expected a PySlowFast config (a yaml mapping), got {type(d).__name__}")
    return d


def read_slowfast_yaml(path: str | Path, _depth: int = 0) -> dict[str, Any]:
    """A PySlowFast yaml file as a dict, its ``_BASE_`` chain merged (relative to the file, as fvcore does)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MViT config not found: {path}")
    d = _parse_yaml(path.read_text(errors="replace"), str(path))
    base = d.pop("_BASE_", None)
    if base is not None:
        if _depth > 8:
            raise MViTCheckpointError(f"{path}: _BASE_ chain too deep")
        base_path = Path(str(base)).expanduser()
        base_path = base_path if base_path.is_absolute() else path.parent / base_path
        d = _merge(read_slowfast_yaml(base_path, _depth + 1), d)
    return d


def config_from_slowfast(text_or_dict: str | Mapping[str, Any], where: str = "MViT config",
                         **overrides: Any) -> MViTConfig:
    """MViTConfig from a PySlowFast config (yaml text or dict); see ``MViTConfig.from_slowfast_yaml``."""
    d = _parse_yaml(text_or_dict, where) if isinstance(text_or_dict, str) else dict(text_or_dict)
    if "_BASE_" in d:
        raise MViTCheckpointError(f"{where}: has _BASE_ {d['_BASE_']!r}; pass the yaml file path so it can be resolved")
    cfg = _merge(SLOWFAST_DEFAULTS, {k: v for k, v in d.items() if k in SLOWFAST_DEFAULTS and v is not None})

    def get(section: str, key: str) -> Any:
        return _decode(cfg[section][key])

    bad = [f"{s}.{k}={get(s, k)!r} (need {want!r})" for (s, k), want in _REQUIRED.items() if get(s, k) != want]
    if _decode(cfg["MVIT"].get("REV", {}).get("ENABLE", False)):
        bad.append("MVIT.REV.ENABLE=True (need False)")
    if get("DATA", "TRAIN_CROP_SIZE") != get("DATA", "TEST_CROP_SIZE"):
        bad.append(f"DATA.TRAIN_CROP_SIZE={get('DATA', 'TRAIN_CROP_SIZE')} != TEST_CROP_SIZE="
                   f"{get('DATA', 'TEST_CROP_SIZE')} (PySlowFast's MViT asserts they are equal)")
    if get("MODEL", "HEAD_ACT") not in ("sigmoid", "softmax"):
        bad.append(f"MODEL.HEAD_ACT={get('MODEL', 'HEAD_ACT')!r} (need sigmoid or softmax)")
    if bad:
        raise MViTCheckpointError(f"{where}: not the MViTv2 AVA detection model this rebuild implements: " + "; ".join(bad))

    def tup(v: Any) -> tuple:
        return tuple(tup(x) if isinstance(x, (list, tuple)) else x for x in v)

    kv_adaptive = get("MVIT", "POOL_KV_STRIDE_ADAPTIVE")
    kernel = get("MVIT", "POOL_KVQ_KERNEL")
    kw: dict[str, Any] = dict(
        num_frames=int(get("DATA", "NUM_FRAMES")), sampling_rate=int(get("DATA", "SAMPLING_RATE")),
        crop_size=int(get("DATA", "TRAIN_CROP_SIZE")),
        mean=tuple(float(x) for x in get("DATA", "MEAN")), std=tuple(float(x) for x in get("DATA", "STD")),
        in_chans=int(get("DATA", "INPUT_CHANNEL_NUM")[0]),
        embed_dim=int(get("MVIT", "EMBED_DIM")), num_heads=int(get("MVIT", "NUM_HEADS")),
        depth=int(get("MVIT", "DEPTH")),
        dim_mul=tuple((int(i), float(m)) for i, m in get("MVIT", "DIM_MUL")),
        head_mul=tuple((int(i), float(m)) for i, m in get("MVIT", "HEAD_MUL")),
        pool_q_stride=tup(get("MVIT", "POOL_Q_STRIDE")),
        pool_kvq_kernel=tup(kernel) if kernel is not None else None,
        pool_kv_stride_adaptive=tup(kv_adaptive) if kv_adaptive is not None else None,
        pool_kv_stride=tup(get("MVIT", "POOL_KV_STRIDE")),
        patch_kernel=tup(get("MVIT", "PATCH_KERNEL")), patch_stride=tup(get("MVIT", "PATCH_STRIDE")),
        patch_padding=tup(get("MVIT", "PATCH_PADDING")),
        mlp_ratio=float(get("MVIT", "MLP_RATIO")), qkv_bias=bool(get("MVIT", "QKV_BIAS")),
        dim_mul_in_att=bool(get("MVIT", "DIM_MUL_IN_ATT")), residual_pooling=bool(get("MVIT", "RESIDUAL_POOLING")),
        rel_pos_spatial=bool(get("MVIT", "REL_POS_SPATIAL")), rel_pos_temporal=bool(get("MVIT", "REL_POS_TEMPORAL")),
        cls_embed_on=bool(get("MVIT", "CLS_EMBED_ON")),
        num_classes=int(get("MODEL", "NUM_CLASSES")), head_act=str(get("MODEL", "HEAD_ACT")),
        roi_resolution=int(get("DETECTION", "ROI_XFORM_RESOLUTION")),
        spatial_scale_factor=get("DETECTION", "SPATIAL_SCALE_FACTOR"), aligned=bool(get("DETECTION", "ALIGNED")))
    kw.update(overrides)
    return MViTConfig(**kw)


# ----------------------------------------------------------------------------- loading


def _layout_note(cfg: MViTConfig, keys: set[str]) -> str:
    """When the checkpoint's ``blocks.i.proj`` set is the other DIM_MUL_IN_ATT layout's, say so."""
    have = {int(k.split(".")[1]) for k in keys if k.startswith("blocks.") and k.endswith(".proj.weight")
            and k.count(".") == 3}
    mine = {i for i, s in enumerate(block_specs(cfg)) if s.dim != s.dim_out}
    other = {i for i, s in enumerate(block_specs(replace(cfg, dim_mul_in_att=not cfg.dim_mul_in_att)))
             if s.dim != s.dim_out}
    if have == other and have != mine:
        first = min(have)
        return (f"checkpoint has the MVIT.DIM_MUL_IN_ATT={not cfg.dim_mul_in_att} block layout "
                f"(blocks.{first}.proj.weight present) but the config says {cfg.dim_mul_in_att}; ")
    return ""


def check_mvit_state(model: MViT, sd: Mapping[str, Any], where: str) -> None:
    """Raise MViTCheckpointError (one line naming keys) unless ``sd`` has exactly the model's keys and shapes."""
    not_tensor = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if not_tensor:
        raise MViTCheckpointError(f"{where}: model_state has non-tensor entries: {show_keys(not_tensor)}")
    problems = shape_problems({k: tuple(v.shape) for k, v in model.state_dict().items()},
                              {k: tuple(v.shape) for k, v in sd.items()})
    if problems:
        raise MViTCheckpointError(f"{where}: MViT weights do not match the config: "
                                  + _layout_note(model.config, set(sd)) + "; ".join(problems))


def load_mvit(path: str | Path, config_path: str | Path | None = None, device: str | torch.device = "cpu",
              attention_impl: str = "fast") -> tuple[MViT, MViTConfig]:
    """(model in eval mode, its config) from a PySlowFast ``mvit.pyth`` (``model_state`` + ``cfg``).

    The config comes from ``config_path`` (an mvit.yaml, as the LART demo passes it) when given,
    else from the yaml the checkpoint embeds. Strict: every key used, every shape checked (the
    reference silently skips mismatched shapes; a file of the other block layout is refused here).
    """
    obj = load_pickled(path, "MViT")
    if not isinstance(obj, Mapping) or "model_state" not in obj or not isinstance(obj["model_state"], Mapping):
        top = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise MViTCheckpointError(f"{path}: not a PySlowFast checkpoint (no 'model_state'; top level: {top})")
    if config_path is not None:
        cfg = config_from_slowfast(read_slowfast_yaml(config_path), str(config_path), attention_impl=attention_impl)
        where = f"{path} with {config_path}"
    elif isinstance(obj.get("cfg"), str):
        cfg = config_from_slowfast(obj["cfg"], f"{path} (embedded cfg)", attention_impl=attention_impl)
        where = f"{path} (embedded cfg)"
    else:
        raise MViTCheckpointError(f"{path}: no embedded 'cfg' yaml; pass the mvit.yaml (--appearance-config)")
    sd = dict(obj["model_state"])
    with torch.device("meta"):
        model = MViT(cfg)
    check_mvit_state(model, sd, where)
    # copies onto the device: the file is memory-mapped, the model must not keep pointing into it
    model.load_state_dict({k: v.to(device=device, dtype=torch.float32, copy=True) for k, v in sd.items()},
                          strict=True, assign=True)
    return model.eval(), cfg


def save_mvit(model: MViT, path: str | Path, cfg_yaml: str | None = None) -> Path:
    """A PySlowFast-format file ({"epoch", "model_state", "cfg"}): what tests and tools write."""
    path = Path(path)
    torch.save({"epoch": 0, "model_state": model.state_dict(), "cfg": cfg_yaml if cfg_yaml is not None
                else slowfast_yaml(model.config)}, path)
    return path


def slowfast_yaml(cfg: MViTConfig) -> str:
    """``cfg`` as the PySlowFast yaml keys ``config_from_slowfast`` reads (a yacs-style dump)."""
    import yaml

    def lists(v: Any) -> Any:
        return [lists(x) for x in v] if isinstance(v, (list, tuple)) else v

    d = {"DATA": {"NUM_FRAMES": cfg.num_frames, "SAMPLING_RATE": cfg.sampling_rate, "TRAIN_CROP_SIZE": cfg.crop_size,
                  "TEST_CROP_SIZE": cfg.crop_size, "MEAN": lists(cfg.mean), "STD": lists(cfg.std),
                  "INPUT_CHANNEL_NUM": [cfg.in_chans]},
         "MODEL": {"MODEL_NAME": "MViT", "ARCH": "mvit", "NUM_CLASSES": cfg.num_classes, "HEAD_ACT": cfg.head_act},
         "DETECTION": {"ENABLE": True, "ALIGNED": cfg.aligned, "SPATIAL_SCALE_FACTOR": cfg.spatial_scale_factor,
                       "ROI_XFORM_RESOLUTION": cfg.roi_resolution},
         "MVIT": {"MODE": "conv", "POOL_FIRST": False, "CLS_EMBED_ON": cfg.cls_embed_on,
                  "PATCH_KERNEL": lists(cfg.patch_kernel), "PATCH_STRIDE": lists(cfg.patch_stride),
                  "PATCH_PADDING": lists(cfg.patch_padding), "EMBED_DIM": cfg.embed_dim, "NUM_HEADS": cfg.num_heads,
                  "MLP_RATIO": cfg.mlp_ratio, "QKV_BIAS": cfg.qkv_bias, "DEPTH": cfg.depth,
                  "DIM_MUL": lists(cfg.dim_mul), "HEAD_MUL": lists(cfg.head_mul),
                  "POOL_Q_STRIDE": lists(cfg.pool_q_stride), "POOL_KV_STRIDE": lists(cfg.pool_kv_stride),
                  "POOL_KV_STRIDE_ADAPTIVE": lists(cfg.pool_kv_stride_adaptive) if cfg.pool_kv_stride_adaptive else None,
                  "POOL_KVQ_KERNEL": lists(cfg.pool_kvq_kernel) if cfg.pool_kvq_kernel else None,
                  "USE_ABS_POS": False, "REL_POS_SPATIAL": cfg.rel_pos_spatial,
                  "REL_POS_TEMPORAL": cfg.rel_pos_temporal, "RESIDUAL_POOLING": cfg.residual_pooling,
                  "DIM_MUL_IN_ATT": cfg.dim_mul_in_att, "SEPARATE_QKV": False}}
    return yaml.safe_dump(d)


__all__ = ["ATTENTION_IMPLS", "POOL_BACKENDS", "BlockSpec", "MViT", "MViTCheckpointError", "MViTConfig", "SLOWFAST_DEFAULTS",
           "block_specs", "check_mvit_state", "config_from_slowfast", "load_mvit", "read_slowfast_yaml",
           "rel_pos_index", "roi_align", "round_width", "save_mvit", "slowfast_yaml"]
