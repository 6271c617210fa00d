"""LART action transformer (Rajasegaran et al. 2023), rebuilt for live inference.

Architecture (facts from brjathu/LART, see shared/reference/reference_models.md §1):
per person-frame token = concat(pose_shape_encoder(229-d SMPL pose vector, normalised),
joint_encoder(135-d 3D joints), apperance_encoder(D-d MViT/Hiera ROI feature)) -> in_feat;
tokens of undetected person-frames are replaced by the learned ``mask_token``; a learned
positional table ``pos_embedding`` [in_feat, 250 frames, 10 person slots] is added (token
order t*N + p, slot 0 = the person of interest); a pre-norm transformer (no final norm);
``action_head_ava.0`` maps every token to 60 AVA logits. Masked tokens are excluded as keys by
*replacing* their attention scores with -1e3 (they still produce outputs). The module and
parameter names equal the checkpoint's ``encoder.*`` keys, including the modules the reference
builds but never uses for AVA (``class_token``, ``conv_en``/``conv_de``, ``smpl_head``,
``loca_head``, ``action_head_kinetics``) and the duplicate ``pe`` buffer of ``pos_embedding``.

Entry points (plain tensors in and out, no data-dependent Python control flow, so each can be
wrapped for torch.onnx.export; ``exact`` and ``inplace`` are build-time flags):

``forward_window(pose, joints, appearance, valid) -> logits``  (alias ``forward``)
    pose (B,T,N,229) unnormalised, joints (B,T,N,135), appearance (B,T,N,D) (None when the
    config has no such encoder), valid (B,T,N) bool -> logits (B,T,60) of slot 0.
    Bidirectional; frame p uses table column p, slot n column n: the reference computation.
    B (number of tracks of interest) may be dynamic; T <= 250, N <= 10.

``forward_causal(pose, joints, appearance, valid, positions, window) -> logits``
    Same inputs over S frames plus positions (B,S) int64. A query at frame i sees the keys of
    frames j with i - window < j <= i (a sliding band). This is the full recompute that
    ``step`` reproduces exactly.

``step(pose, joints, appearance, valid, positions, k_cache, v_cache, key_bias)
        -> (logits, k_cache, v_cache, key_bias)``
    One new frame per sequence: pose (B,N,229), joints (B,N,135), appearance (B,N,D),
    valid (B,N) bool, positions (B,) int64 in [0, window) = the ring row of the new frame.
    k_cache, v_cache (L,B,H,window*N,dh); key_bias (B,window*N) float: 0 = valid key,
    -1e3 = masked key (undetected or empty slot), -inf = never written. The new frame's keys,
    values and bias are written at rows positions*N + n by scatter (in place by default;
    ``inplace=False`` returns new tensors, for export), then its N queries attend to all
    window*N cache rows. Returns logits (B,60) of slot 0 of the new frame. Cost per step:
    O(B*N new tokens x window*N keys) per layer.

Causal position scheme (why ring positions): the learned table is indexed by a frame's place in
the window, so with "place = age in the window" every cached key would need a new position when
the window slides. Instead a frame takes column (t - t_start) mod window when it arrives and
keeps it for its whole life in the cache; the cache row is the same ring slot, so the newest
frame overwrites exactly the frame that left the window. For the first ``window`` frames this is
the reference's left-aligned layout (track start at column 0). Relative order is not encoded by
the columns after wrap-around; the band mask supplies causality. Because every layer's cached
keys were computed while older frames were still visible, the step equals ``forward_causal`` over
the sequence's whole history (receptive field grows by window-1 frames per layer), not a causal
forward over only the last ``window`` frames. The released checkpoints were trained
bidirectionally: accuracy of this causal mode with them is unknown.

Attention kernels: ``exact=True`` computes scores explicitly and replaces masked scores by -1e3
as the reference does; ``exact=False`` uses scaled_dot_product_attention with the same bias
*added*. They agree (to rounding) whenever a query sees at least one valid key; when it sees
none the reference averages all values uniformly while the SDPA path weights by raw scores.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lart_stream.models.blocks import FeedForward
from lart_stream.models.checkpoint import checked_file, load_failure

log = logging.getLogger(__name__)

MASKED = -1e3  # the reference's score for a masked key (replaces the score)
POSE_DIM = 229
JOINTS_DIM = 135
NUM_AVA = 60


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LARTConfig:
    dim: int = 512  # in_feat: token width = pose_en + joints_en + app_en
    depth: int = 16
    heads: int = 16
    dim_head: int = 64  # not recoverable from shapes (only heads*dim_head is)
    mlp_dim: int = 512  # feed-forward hidden width (ratio 1 in the reference)
    pos_frames: int = 250  # rows of the learned positional table
    pos_slots: int = 10  # person-slot columns of the table
    pose_mid: int = 229
    pose_en: int = 128
    joints_mid: int = 256  # 0 = no joint_encoder (pose-only)
    joints_en: int = 128
    app_dim: int = 1152  # appearance width D: 1152 MViT demo ckpt, 2048 Hiera; 0 = none
    app_mid: int = 512
    app_en: int = 256
    num_smpl_heads: int = 1  # copies of smpl_head / loca_head / action_head_ava
    ava_classes: int = NUM_AVA
    kinetics_classes: int = 400
    smpl_hidden: int = 1024
    npose: int = 144  # 24 joints x 6D in the (unused) SMPL head
    conv_kernel: int = 7  # unused conv_en/conv_de: kernel = stride + 2*pad
    conv_stride: int = 5
    conv_pad: int = 1
    window: int = 125  # frame_length T used by the runtime (<= pos_frames)
    max_people: int = 5  # person slots N used by the runtime (<= pos_slots)

    def __post_init__(self) -> None:
        enc = self.pose_en + (self.joints_en if self.joints_mid else 0) + (self.app_en if self.app_dim else 0)
        if enc != self.dim:
            raise ValueError(f"LARTConfig: encoder widths sum to {enc}, expected dim={self.dim}")
        if self.dim % 4:
            raise ValueError(f"LARTConfig: dim must be a multiple of 4 (2D sin/cos table), got {self.dim}")
        if not 1 <= self.window <= self.pos_frames:
            raise ValueError(f"LARTConfig: window must be in 1..{self.pos_frames}, got {self.window}")
        if not 1 <= self.max_people <= self.pos_slots:
            raise ValueError(f"LARTConfig: max_people must be in 1..{self.pos_slots}, got {self.max_people}")
        if self.conv_kernel != self.conv_stride + 2 * self.conv_pad:
            raise ValueError("LARTConfig: conv_kernel must equal conv_stride + 2*conv_pad")

    @property
    def has_joints(self) -> bool:
        return self.joints_mid > 0

    @property
    def has_appearance(self) -> bool:
        return self.app_dim > 0

    @classmethod
    def official_mvit(cls, **kw) -> "LARTConfig":
        """lart_mvit.ckpt: pose + joints + MViTv2-L ROI feature (D=1152, unverified: from shapes)."""
        return cls(**kw)

    @classmethod
    def official_hiera(cls, **kw) -> "LARTConfig":
        """lart_hiera (epoch_002-EMA.ckpt): appearance D=2048 (configs/lart.yaml)."""
        return cls(**{"app_dim": 2048, **kw})

    @classmethod
    def pose_only(cls, **kw) -> "LARTConfig":
        """extra_feat.enable='' with in_feat=128 (no checkpoint released)."""
        return cls(**{"dim": 128, "joints_mid": 0, "joints_en": 0, "app_dim": 0, "app_mid": 0, "app_en": 0, **kw})

    @classmethod
    def tiny(cls, **kw) -> "LARTConfig":
        """Same structure, small widths: for CPU tests."""
        base = dict(dim=32, depth=2, heads=2, dim_head=8, mlp_dim=32, pos_frames=250, pos_slots=10, pose_mid=24,
                    pose_en=16, joints_mid=16, joints_en=8, app_dim=24, app_mid=16, app_en=8, kinetics_classes=8,
                    smpl_hidden=32, window=16, max_people=3)
        return cls(**{**base, **kw})


# ----------------------------------------------------------------------------- layers


def sinusoid_table_2d(dim: int, frames: int, slots: int) -> torch.Tensor:
    """(dim, frames, slots) sin/cos table: channels [0, dim/2) encode the slot, [dim/2, dim) the
    frame; even channels sin, odd cos, frequency exp(-k ln(1e4) / (dim/2)) for k = 0, 2, 4, ..."""
    half = dim // 2
    freq = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * (-math.log(10000.0) / half))
    s = torch.arange(slots, dtype=torch.float32)[:, None] * freq  # (S, half/2)
    t = torch.arange(frames, dtype=torch.float32)[:, None] * freq  # (F, half/2)
    pe = torch.zeros(dim, frames, slots)
    pe[0:half:2] = torch.sin(s).T[:, None, :]
    pe[1:half:2] = torch.cos(s).T[:, None, :]
    pe[half::2] = torch.sin(t).T[:, :, None]
    pe[half + 1::2] = torch.cos(t).T[:, :, None]
    return pe


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, exact: bool) -> torch.Tensor:
    """q (B,H,Sq,dh), k/v (B,H,Sk,dh), bias broadcastable to (B,H,Sq,Sk): 0 / MASKED / -inf."""
    bias = bias.to(q.dtype)  # bf16 projections (precision bf16) next to an fp32 residual stream
    if exact:
        s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        s = torch.where(bias == 0, s, bias)  # the reference replaces masked scores
        return torch.softmax(s, dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim))  # to_out.0 (dropout dropped)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, S, _ = x.shape
        qkv = self.to_qkv(x).view(B, S, 3, self.heads, self.dim_head)  # (B, S, 3, H, dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, S, dh)
        return q, k, v

    def out(self, y: torch.Tensor) -> torch.Tensor:
        B, H, S, dh = y.shape
        return self.to_out(y.transpose(1, 2).reshape(B, S, H * dh))  # (B, S, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, exact: bool = False) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return self.out(attend(q, k, v, bias, exact))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        return self.fn(self.norm(x), **kw)


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, Attention(dim, heads, dim_head)), PreNorm(dim, FeedForward(dim, mlp_dim))])
            for _ in range(depth))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, exact: bool = False) -> torch.Tensor:
        for attn, ff in self.layers:  # pre-norm; drop_path is identity at inference
            x = x + attn(x, bias=bias, exact=exact)
            x = x + ff(x)
        return x


class SMPLHead(nn.Module):
    """PHALP's iterative SMPL regressor head: carried for strict loading, not run here."""

    def __init__(self, in_dim: int, hidden: int, npose: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim + npose + 13, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.decpose = nn.Linear(hidden, npose)
        self.decshape = nn.Linear(hidden, 10)
        self.deccam = nn.Linear(hidden, 3)
        self.register_buffer("init_body_pose", torch.zeros(1, npose))
        self.register_buffer("init_betas", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.zeros(1, 3))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- model


class LART(nn.Module):
    def __init__(self, config: LARTConfig):
        super().__init__()
        c = self.config = config
        self.mask_token = nn.Parameter(torch.randn(c.dim))
        self.class_token = nn.Parameter(torch.randn(1, 1, c.dim))  # unused (prepended after the transformer)
        self.pos_embedding = nn.Parameter(sinusoid_table_2d(c.dim, c.pos_frames, c.pos_slots))
        # The reference registers the same tensor again as buffer `pe`; the checkpoint holds both keys.
        self.register_buffer("pe", self.pos_embedding.detach().clone())
        self.transformer = Transformer(c.dim, c.depth, c.heads, c.dim_head, c.mlp_dim)
        self.conv_en = nn.Conv1d(c.dim, c.dim, c.conv_kernel, stride=c.conv_stride, padding=c.conv_pad)  # unused
        self.conv_de = nn.ConvTranspose1d(c.dim, c.dim, c.conv_kernel, stride=c.conv_stride, padding=c.conv_pad)
        self.pose_shape_encoder = _mlp([POSE_DIM, c.pose_mid, c.pose_en])
        self.joint_encoder = _mlp([JOINTS_DIM, c.joints_mid, c.joints_mid, c.joints_en]) if c.has_joints else None
        self.apperance_encoder = _mlp([c.app_dim, c.app_mid, c.app_mid, c.app_en]) if c.has_appearance else None
        self.smpl_head = nn.ModuleList(SMPLHead(c.dim, c.smpl_hidden, c.npose) for _ in range(c.num_smpl_heads))
        self.loca_head = nn.ModuleList(_mlp([c.dim, c.dim, c.dim, 3]) for _ in range(c.num_smpl_heads))
        self.action_head_ava = nn.ModuleList(
            nn.Sequential(nn.Linear(c.dim, c.ava_classes)) for _ in range(c.num_smpl_heads))
        self.action_head_kinetics = _mlp([c.dim, c.dim, c.dim, c.kinetics_classes])
        # Pose normalisation (mean_std.npy), not part of the checkpoint. Identity until set.
        self.register_buffer("pose_mean", torch.zeros(POSE_DIM), persistent=False)
        self.register_buffer("pose_std", torch.ones(POSE_DIM), persistent=False)

    def set_pose_stats(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        self.pose_mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)).reshape(POSE_DIM))
        self.pose_std.copy_(torch.as_tensor(np.asarray(std, np.float32)).reshape(POSE_DIM))

    # -- tokens

    def embed(self, pose: torch.Tensor, joints: torch.Tensor | None, appearance: torch.Tensor | None,
              valid: torch.Tensor) -> torch.Tensor:
        """(..., F) features -> (..., dim) tokens; invalid person-frames become mask_token."""
        parts = [self.pose_shape_encoder((pose - self.pose_mean) / (self.pose_std + 1e-10))]
        if self.joint_encoder is not None:
            parts.append(self.joint_encoder(joints))
        if self.apperance_encoder is not None:
            parts.append(self.apperance_encoder(appearance))
        x = torch.cat(parts, dim=-1)
        return torch.where(valid[..., None], x, self.mask_token.to(x.dtype))

    def pos_table(self) -> torch.Tensor:
        return self.pos_embedding.permute(1, 2, 0)  # (frames, slots, dim)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.action_head_ava[0](x)  # (..., 60)

    # -- entry points

    def forward_window(self, pose: torch.Tensor, joints: torch.Tensor | None, appearance: torch.Tensor | None,
                       valid: torch.Tensor, exact: bool = False) -> torch.Tensor:
        B, T, N = valid.shape
        x = self.embed(pose, joints, appearance, valid)  # (B, T, N, dim)
        x = x + self.pos_table()[:T, :N]  # frame p -> column p, slot n -> column n
        x = x.reshape(B, T * N, -1)  # token t*N + n
        bias = torch.where(valid.reshape(B, 1, 1, T * N), 0.0, MASKED).to(x.dtype)  # (B, 1, 1, TN)
        x = self.transformer(x, bias, exact)  # (B, TN, dim)
        return self.head(x.view(B, T, N, -1)[:, :, 0])  # (B, T, 60)

    forward = forward_window

    def forward_causal(self, pose: torch.Tensor, joints: torch.Tensor | None, appearance: torch.Tensor | None,
                       valid: torch.Tensor, positions: torch.Tensor, window: int,
                       exact: bool = False) -> torch.Tensor:
        B, S, N = valid.shape
        x = self.embed(pose, joints, appearance, valid)  # (B, S, N, dim)
        x = x + self.pos_table()[positions][:, :, :N]  # (B, S, N, dim)
        x = x.reshape(B, S * N, -1)
        f = torch.arange(S, device=x.device).repeat_interleave(N)  # frame of each token
        lag = f[:, None] - f[None, :]
        visible = (lag >= 0) & (lag < window)  # (SN, SN) sliding band
        key_ok = valid.reshape(B, 1, 1, S * N)
        bias = torch.where(visible, torch.where(key_ok, 0.0, MASKED), float("-inf")).to(x.dtype)  # (B,1,SN,SN)
        x = self.transformer(x, bias, exact)
        return self.head(x.view(B, S, N, -1)[:, :, 0])  # (B, S, 60)

    def step(self, pose: torch.Tensor, joints: torch.Tensor | None, appearance: torch.Tensor | None,
             valid: torch.Tensor, positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             key_bias: torch.Tensor, exact: bool = False,
             inplace: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N = valid.shape
        L, _, H, TN, dh = k_cache.shape
        x = self.embed(pose, joints, appearance, valid)  # (B, N, dim)
        x = x + self.pos_table()[positions][:, :N]  # (B, N, dim)
        idx = positions[:, None] * N + torch.arange(N, device=x.device)  # (B, N) cache rows
        new_bias = torch.where(valid, 0.0, MASKED).to(key_bias.dtype)
        key_bias = key_bias.scatter_(1, idx, new_bias) if inplace else key_bias.scatter(1, idx, new_bias)
        bias = key_bias[:, None, None, :].to(x.dtype)  # (B, 1, 1, TN)
        idx4 = idx[:, None, :, None].expand(B, H, N, dh)
        ks, vs = [], []
        for l, (attn, ff) in enumerate(self.transformer.layers):
            q, k, v = attn.fn.qkv(attn.norm(x))  # (B, H, N, dh)
            if inplace:
                kc = k_cache[l].scatter_(2, idx4, k.to(k_cache.dtype))  # (B, H, TN, dh)
                vc = v_cache[l].scatter_(2, idx4, v.to(v_cache.dtype))
            else:
                kc = k_cache[l].scatter(2, idx4, k.to(k_cache.dtype))
                vc = v_cache[l].scatter(2, idx4, v.to(v_cache.dtype))
                ks.append(kc)
                vs.append(vc)
            x = x + attn.fn.out(attend(q, kc.to(q.dtype), vc.to(q.dtype), bias, exact))
            x = x + ff(x)
        if not inplace:
            k_cache, v_cache = torch.stack(ks), torch.stack(vs)
        return self.head(x[:, 0]), k_cache, v_cache, key_bias  # logits (B, 60)

    def new_cache(self, batch: int, window: int, people: int, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Empty (k_cache, v_cache, key_bias) for ``step``: nothing written yet (bias -inf)."""
        c = self.config
        dtype = dtype or self.mask_token.dtype
        device = device or self.mask_token.device
        shape = (c.depth, batch, c.heads, window * people, c.dim_head)
        k = torch.zeros(shape, dtype=dtype, device=device)
        return k, torch.zeros_like(k), torch.full((batch, window * people), float("-inf"), dtype=dtype, device=device)


# ----------------------------------------------------------------------------- loading


class _Stub(dict):
    """Stands in for classes a checkpoint pickles besides tensors (omegaconf configs, Lightning's
    AttributeDict, paths...). Keeps their pickled state and items, so the hyper-parameters can be
    read back as plain values without importing (or running) omegaconf or Lightning."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def __setstate__(self, state) -> None:
        self.__dict__["pickled_state"] = state


# Where the reference records the attention head size: LART_LitModule(cfg) calls
# save_hyperparameters(), so the Lightning file holds hyper_parameters["cfg"] (the hydra DictConfig)
# and the encoder is built with dim_head=cfg.transformer.dim_head. A bare cfg is accepted too.
DIM_HEAD_PATHS = (("cfg", "transformer", "dim_head"), ("transformer", "dim_head"))
DIM_HEAD_HELP = ("the checkpoint does not record the attention head size (hyper_parameters cfg.transformer.dim_head) "
                 "and tensor shapes give only heads x dim_head: pass it with --lart-dim-head N (64 for the "
                 "released LART models)")
# plain types that a checkpoint may pickle as values; torch names them without the builtins prefix
_PLAIN_TYPES = {t.__name__: t for t in (dict, list, tuple, set, frozenset, int, float, str, bool, bytes)}
SMPL_PREFIX = "smpl."  # the LightningModule's SMPL body-model buffers: not part of the encoder


def _load_file(path: str | Path) -> dict:
    """The unpickled checkpoint (Lightning dict or plain state dict), read with torch's weights-only
    unpickler; every non-tensor class it names becomes an inert _Stub."""
    path = checked_file(path, "LART")  # CheckpointError is a ValueError
    stubs: list = []
    named: list[str] = []
    for _ in range(256):
        try:
            with torch.serialization.safe_globals(stubs):
                obj = torch.load(path, map_location="cpu", weights_only=True)
            break
        except pickle.UnpicklingError as exc:
            m = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if not m or any(name == m.group(1) for name in named):
                raise ValueError(load_failure(path, "LART checkpoint", exc)) from None
            named.append(m.group(1))
            if m.group(1) in _PLAIN_TYPES:  # a type as a value (omegaconf metadata's object_type=dict)
                stubs.append(_PLAIN_TYPES[m.group(1)])
            else:
                stubs.append((type(m.group(1).rsplit(".", 1)[-1], (_Stub,), {}), m.group(1)))
        except (RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
            raise ValueError(load_failure(path, "LART checkpoint", exc)) from None
    else:
        raise ValueError(f"{path}: too many non-tensor classes in checkpoint")
    if not isinstance(obj, dict):
        raise ValueError(f"LART checkpoint {path}: expected a Lightning checkpoint or a state dict, "
                         f"got a {type(obj).__name__}")
    return obj


def _state_dict_of(obj: dict, path: str | Path) -> dict[str, torch.Tensor]:
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: no tensor state_dict found (top-level keys: {list(obj)[:10]})")
    if not sd:
        raise ValueError(f"LART checkpoint {path}: the state dict is empty (the file holds no weights)")
    return sd


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensor state dict of a LART checkpoint (Lightning .ckpt or a plain state dict).

    Loads with torch's weights-only unpickler. Non-tensor objects the Lightning file carries
    (hyper-parameters as omegaconf objects, ...) are replaced by inert stubs, so neither their
    packages nor arbitrary code are needed.
    """
    return _state_dict_of(_load_file(path), path)


def _plain(obj, depth: int = 0):
    """Pickled hyper-parameter objects as plain values: omegaconf containers keep their items in
    ``_content``, its value nodes their value in ``_val``; back-references (``_parent``) are skipped."""
    if depth > 64:
        return None
    if isinstance(obj, _Stub):
        state = obj.__dict__.get("pickled_state")
        if isinstance(state, dict) and "_content" in state:
            return _plain(state["_content"], depth + 1)
        if isinstance(state, dict) and "_val" in state:
            return _plain(state["_val"], depth + 1)
        if len(obj):  # a dict subclass (Lightning's AttributeDict)
            return {k: _plain(v, depth + 1) for k, v in obj.items()}
        return _plain(state, depth + 1) if isinstance(state, dict) else None
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items() if k not in ("_parent", "_metadata")}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return obj


def dim_head_from_hyper_parameters(obj: dict) -> int | None:
    """``cfg.transformer.dim_head`` of a Lightning checkpoint's hyper_parameters, if it is there."""
    hp = _plain(obj.get("hyper_parameters"))
    for keys in DIM_HEAD_PATHS:
        node = hp
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int) and not isinstance(node, bool) and node > 0:
            return node
    return None


def split_encoder_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Lightning's `encoder.*` keys without the prefix, and the `smpl.*` keys (ignored: SMPL buffers
    of the LightningModule). Any other key is an error, as in the HMR loader, so a checkpoint of
    some other model never half-loads. A plain state dict without the prefix passes as is (its keys
    are checked against the model strictly)."""
    if any(k.startswith("encoder.") for k in sd):
        unknown = sorted(k for k in sd if not k.startswith(("encoder.", SMPL_PREFIX)))
        if unknown:
            more = f" ... and {len(unknown) - 8} more" if len(unknown) > 8 else ""
            raise ValueError(f"unexpected checkpoint keys (neither encoder.* nor smpl.*): "
                             f"{', '.join(unknown[:8])}{more}")
        enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
        return enc, sorted(k for k in sd if k.startswith(SMPL_PREFIX))
    return dict(sd), []


def config_from_state_dict(sd: dict[str, torch.Tensor], **overrides) -> LARTConfig:
    """Sizes read from tensor shapes (the checkpoints' config files are not available)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise ValueError(f"checkpoint lacks {key!r}: not a LART encoder state dict")
        return tuple(sd[key].shape)

    def count(pattern: str, what: str) -> int:
        found = [int(m.group(1)) for k in sd if (m := re.match(pattern, k))]
        if not found:
            raise ValueError(f"checkpoint has no {what} keys: not a LART encoder state dict")
        return 1 + max(found)

    dim, frames, slots = shape("pos_embedding")
    depth = count(r"transformer\.layers\.(\d+)\.", "transformer.layers.*")
    inner = shape("transformer.layers.0.0.fn.to_qkv.weight")[0] // 3
    dim_head = overrides.pop("dim_head", None)
    if dim_head is None:
        raise ValueError(DIM_HEAD_HELP)
    if dim_head <= 0 or inner % dim_head:
        raise ValueError(f"attention width {inner} (heads x dim_head) is not a multiple of dim_head={dim_head}")
    heads_n = count(r"action_head_ava\.(\d+)\.", "action_head_ava.*")
    kernel = shape("conv_en.weight")[2]
    kw = dict(dim=dim, depth=depth, heads=inner // dim_head, dim_head=dim_head,
              mlp_dim=shape("transformer.layers.0.1.fn.net.0.weight")[0], pos_frames=frames, pos_slots=slots,
              pose_mid=shape("pose_shape_encoder.0.weight")[0], pose_en=shape("pose_shape_encoder.2.weight")[0],
              joints_mid=0, joints_en=0, app_dim=0, app_mid=0, app_en=0, num_smpl_heads=heads_n,
              ava_classes=shape("action_head_ava.0.0.weight")[0],
              kinetics_classes=shape("action_head_kinetics.4.weight")[0],
              smpl_hidden=shape("smpl_head.0.fc1.weight")[0], npose=shape("smpl_head.0.decpose.weight")[0],
              conv_kernel=kernel, conv_pad=1, conv_stride=kernel - 2,
              window=min(125, frames), max_people=min(5, slots))
    if "joint_encoder.0.weight" in sd:
        kw.update(joints_mid=shape("joint_encoder.0.weight")[0], joints_en=shape("joint_encoder.4.weight")[0])
    if "apperance_encoder.0.weight" in sd:
        kw.update(app_dim=shape("apperance_encoder.0.weight")[1], app_mid=shape("apperance_encoder.0.weight")[0],
                  app_en=shape("apperance_encoder.4.weight")[0])
    kw.update(overrides)
    return LARTConfig(**kw)


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Lines describing missing / unexpected / mis-shaped keys (empty when they agree)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    lines = [f"missing: {k} expected {want[k]}" for k in sorted(want.keys() - got.keys())]
    lines += [f"unexpected: {k} got {got[k]}" for k in sorted(got.keys() - want.keys())]
    lines += [f"shape: {k} expected {want[k]} got {got[k]}" for k in sorted(want.keys() & got.keys())
              if want[k] != got[k]]
    return lines


def load_state_dict_strict(model: LART, sd: dict[str, torch.Tensor]) -> None:
    problems = check_state_dict(model, sd)
    if problems:
        raise ValueError("LART checkpoint does not match the model:\n  " + "\n  ".join(problems))
    if "pe" in sd and not torch.equal(sd["pe"], sd["pos_embedding"]):
        # The reference shares one tensor for both; loading copies `pe` last, so its value wins.
        log.warning("checkpoint `pe` differs from `pos_embedding`: using `pe`, as the reference would")
        sd = {**sd, "pos_embedding": sd["pe"]}
    model.load_state_dict(sd, strict=True)


def load_lart(path: str | Path, dim_head: int | None = None, **overrides) -> tuple[LART, list[str]]:
    """Model with a checkpoint's weights (strict) and the checkpoint keys it ignored (``smpl.*``).

    ``dim_head``: the attention head size, which tensor shapes can't give; read from the Lightning
    file's hyper_parameters when not passed. Neither: ValueError saying how to pass it.
    """
    obj = _load_file(path)
    enc, ignored = split_encoder_keys(_state_dict_of(obj, path))
    recorded = dim_head_from_hyper_parameters(obj)
    if dim_head is None:
        dim_head = recorded
    elif recorded is not None and recorded != dim_head:
        log.warning("LART checkpoint records dim_head=%d; using the %d passed in", recorded, dim_head)
    model = LART(config_from_state_dict(enc, dim_head=dim_head, **overrides))
    load_state_dict_strict(model, enc)
    if ignored:
        log.info("LART checkpoint: ignored %d SMPL buffers (%s ...)", len(ignored), ", ".join(ignored[:3]))
    return model, ignored


def load_pose_stats(path: str | Path | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mean (229,), std (229,), found) from mean_std.npy: stacked (mean, std), each (1, d) with
    d <= 229, padded with mean 0 / std 1 as the reference does. Without a file: identity stats."""
    if path is None:
        log.warning("no mean_std.npy given: LART pose inputs are NOT normalised (identity statistics); "
                    "predictions of a real checkpoint will be wrong")
        return np.zeros(POSE_DIM, np.float32), np.ones(POSE_DIM, np.float32), False
    arr = np.load(Path(path).expanduser(), allow_pickle=False)
    if arr.shape[0] != 2 or arr.ndim not in (2, 3) or arr.shape[-1] > POSE_DIM:
        raise ValueError(f"{path}: expected stacked (mean, std) of shape (2, 1, d<=229), got {arr.shape}")
    mean = np.zeros(POSE_DIM, np.float32)
    std = np.ones(POSE_DIM, np.float32)
    d = arr.shape[-1]
    mean[:d] = arr[0].reshape(d)
    std[:d] = arr[1].reshape(d)
    return mean, std, True


__all__ = ["LART", "LARTConfig", "MASKED", "attend", "check_state_dict", "config_from_state_dict", "dim_head_from_hyper_parameters", "load_lart",
           "load_pose_stats", "load_state_dict_strict", "read_checkpoint", "sinusoid_table_2d",
           "split_encoder_keys"]
