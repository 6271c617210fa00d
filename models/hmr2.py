"""HMR 2.0 (4D-Humans, Goel et al. 2023), inference only: ViT-H/16 backbone + SMPL transformer-decoder head.

Module and parameter names equal the keys of the official Lightning checkpoint
(``epoch=35-step=1000000.ckpt``), so its ``state_dict`` loads with strict=True
once the training-only entries (discriminator, ActNorm flag) are dropped by name
and the SMPL body-model buffers (``smpl.*``) are split off for models/smpl.py.

Input: a batch of person crops, (B, 3, 256, 192) float, RGB, ImageNet-normalised
(models/hmr2_crop.py makes them). Output: an ``HMR2Output`` of plain tensors. The
forward has no data-dependent Python control flow so torch.onnx.export and CUDA
graphs can take it with a dynamic batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from lart_stream.models.blocks import FeedForward
from lart_stream.models.checkpoint import CheckpointError, load_pickled  # noqa: F401
from lart_stream.models.checkpoint import shape_problems, show_keys as _show

log = logging.getLogger(__name__)

POSE_VECTOR_DIM = 229  # 9 global orient + 207 body pose + 10 betas + 3 camera (LART pose_shape)
# Layers kept in fp32 when the matmul weights are cast to bf16 (models/precision.py): the readouts of
# the 6D pose, shape and camera (0.2 M weights), whose outputs go into rotation maths and cameras.
FP32_READOUTS = ("smpl_head.decpose", "smpl_head.decshape", "smpl_head.deccam")


# ----------------------------------------------------------------------------------------------
# Backbone: ViTPose-H as hmr2/models/backbones/vit.py builds it (no cls token, no drop path at eval)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: "HMR2Config"):
        super().__init__()
        p = cfg.patch_size
        # Reference padding 4 + 2*(ratio//2 - 1) = 2 for ratio 1: 256x192 -> 16x12 tokens.
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=p, stride=p, padding=cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, C, 16, 12)
        return x.flatten(2).transpose(1, 2)  # (B, 192, C), row-major over the 16x12 grid


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nh, N, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # scale hs**-0.5, as the reference
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: "HMR2Config"):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, cfg: "HMR2Config"):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        # One slot more than tokens: the pretraining cls position, folded into every token below.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.embed_dim))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.last_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, T, C)
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]  # reference: no interpolation, cls slot added
        for blk in self.blocks:
            x = blk(x)
        return self.last_norm(x)  # (B, T, C)


# ----------------------------------------------------------------------------------------------
# SMPL head: hmr2/models/heads/smpl_head.py + components/pose_transformer.py (pre-norm decoder)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # eps 1e-5 (torch default), unlike the backbone
        self.fn = fn

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # Only the query stream is normalised; the context (ViT tokens) enters as is.
        return self.fn(self.norm(x)) if context is None else self.fn(self.norm(x), context)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    B, N, D = t.shape
    return t.reshape(B, N, heads, D // heads).transpose(1, 2)  # (B, h, N, d)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    B, h, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, h * d)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))  # index 0 as in the checkpoint (dropout was 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.to_kv(context).chunk(2, dim=-1)  # (B, T, inner) each; k first, as the reference
        q, k, v = (_split_heads(t, self.heads) for t in (self.to_q(x), k, v))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class TransformerCrossAttn(nn.Module):
    def __init__(self, cfg: "HMR2Config"):
        super().__init__()
        d, h, dh = cfg.head_dim, cfg.head_heads, cfg.head_dim_head
        self.layers = nn.ModuleList([
            nn.ModuleList([
                PreNorm(d, SelfAttention(d, h, dh)),
                PreNorm(d, CrossAttention(d, cfg.embed_dim, h, dh)),
                PreNorm(d, FeedForward(d, cfg.head_mlp_dim)),
            ]) for _ in range(cfg.head_depth)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for self_attn, cross_attn, ff in self.layers:
            x = self_attn(x) + x
            x = cross_attn(x, context) + x
            x = ff(x) + x
        return x


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: "HMR2Config"):
        super().__init__()
        self.to_token_embedding = nn.Linear(cfg.token_dim, cfg.head_dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, 1, cfg.head_dim))
        self.transformer = TransformerCrossAttn(cfg)

    def forward(self, token: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.to_token_embedding(token) + self.pos_embedding  # (B, 1, D)
        return self.transformer(x, context)


class SMPLTransformerDecoderHead(nn.Module):
    def __init__(self, cfg: "HMR2Config"):
        super().__init__()
        self.cfg = cfg
        npose = 6 * (cfg.num_body_joints + 1)  # 6D rotation per joint, global orient first
        self.transformer = TransformerDecoder(cfg)
        self.decpose = nn.Linear(cfg.head_dim, npose)
        self.decshape = nn.Linear(cfg.head_dim, 10)
        self.deccam = nn.Linear(cfg.head_dim, 3)
        # Mean params (smpl_mean_params.npz) live in the checkpoint. Without one: identity rotations,
        # zero shape and the SPIN mean camera (s=0.9), so random weights still give finite cameras.
        self.register_buffer("init_body_pose", torch.tensor([[1.0, 0, 0, 0, 1, 0] * (cfg.num_body_joints + 1)]))
        self.register_buffer("init_betas", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.tensor([[0.9, 0.0, 0.0]]))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B = feats.shape[0]
        # IEF_ITERS 1 (reference default): one pass. TRANSFORMER_INPUT 'zero' (default, token_dim 1) feeds
        # a zero token; 'mean_shape' (token_dim 157) feeds the mean pose, shape and camera.
        if self.cfg.token_dim == 1:
            token = feats.new_zeros(B, 1, 1)
        else:
            token = torch.cat([self.init_body_pose, self.init_betas, self.init_cam], dim=1).expand(B, -1)[:, None]
        t = self.transformer(token, context=feats).squeeze(1)  # (B, D)
        pose6d = self.decpose(t) + self.init_body_pose  # (B, 144)
        betas = self.decshape(t) + self.init_betas  # (B, 10)
        cam = self.deccam(t) + self.init_cam  # (B, 3) weak perspective (s, tx, ty)
        return pose6d, betas, cam


# ----------------------------------------------------------------------------------------------
# Geometry (batched, traceable)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3). The 6 numbers are two 3-vectors a1, a2; Gram-Schmidt gives the columns."""
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def crop_cam_t(pred_cam: torch.Tensor, focal_length: float, crop_size: int) -> torch.Tensor:
    """Camera translation in the 256-px crop: (tx, ty, 2f / (256 s)), as 4D-Humans forward_step."""
    s, tx, ty = pred_cam.unbind(-1)
    return torch.stack([tx, ty, 2 * focal_length / (crop_size * s + 1e-9)], dim=-1)


def full_frame_focal(image_size: torch.Tensor, focal_length: float = 5000.0, crop_size: int = 256) -> torch.Tensor:
    """Focal length in full-frame pixels: f / 256 * max(W, H) (4D-Humans demo). image_size (..., 2) = (W, H)."""
    return focal_length / crop_size * image_size.max(dim=-1).values


def cam_crop_to_full(pred_cam: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor,
                     image_size: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
    """Crop weak-perspective camera -> full-frame translation (4D-Humans utils/renderer.py formula).

    pred_cam (B, 3) = (s, tx, ty); box_center (B, 2) px; box_size (B,) crop side px;
    image_size (B, 2) = (W, H); focal (B,) full-frame px. Returns (B, 3) = (tx, ty, tz).
    """
    s, tx, ty = pred_cam.unbind(-1)
    bs = box_size * s + 1e-9
    tz = 2 * focal / bs
    tx = 2 * (box_center[:, 0] - image_size[:, 0] / 2) / bs + tx
    ty = 2 * (box_center[:, 1] - image_size[:, 1] / 2) / bs + ty
    return torch.stack([tx, ty, tz], dim=-1)


def project_to_frame(points: torch.Tensor, cam_t: torch.Tensor, focal: torch.Tensor,
                     image_size: torch.Tensor) -> torch.Tensor:
    """Pinhole projection, principal point at the frame centre. points (B, J, 3) body frame -> (B, J, 2) px."""
    p = points + cam_t[:, None, :]
    xy = p[..., :2] / p[..., 2:3]
    return xy * focal[:, None, None] + image_size[:, None, :] / 2


def body_origin_location(cam_t: torch.Tensor, focal: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """(B, 3) = (x px, y px, log depth) of the SMPL origin: PHALP's location cue (its joint 44)."""
    xy = project_to_frame(cam_t.new_zeros(cam_t.shape[0], 1, 3), cam_t, focal, image_size)[:, 0]
    # Depth is positive for any sane camera; the clamp keeps random weights from producing NaN.
    return torch.cat([xy, cam_t[:, 2:3].clamp_min(1e-6).log()], dim=-1)


def pose_vector(global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor,
                cam_t: torch.Tensor) -> torch.Tensor:
    """LART / PHALP pose_shape vector (B, 229), PHALP smpl_to_pose_camera_vector order.

    global_orient (B, 3, 3) row-major 9, body_pose (B, 23, 3, 3) row-major 207, betas 10, then the
    full-frame camera translation (tx, ty, tz / 200). Unnormalised (LART applies mean_std itself).
    """
    B = global_orient.shape[0]
    # A scalar, not new_tensor([1, 1, 1/200]): a host->device copy cannot be captured in a CUDA graph.
    cam = torch.cat([cam_t[:, :2], cam_t[:, 2:3] * (1.0 / 200.0)], dim=-1)
    return torch.cat([global_orient.reshape(B, 9), body_pose.reshape(B, 207), betas, cam], dim=-1)


# ----------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class HMR2Config:
    # Backbone (hmr2 backbones/vit.py `vit()`; ViTPose-H).
    image_height: int = 256
    image_width: int = 192  # 4D-Humans crops 256x256 and feeds columns 32:-32
    patch_size: int = 16
    patch_padding: int = 2
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    # SMPL head (experiment/hmr_vit_transformer.yaml); head_dim is the decoder width `dim`.
    head_dim: int = 1024
    head_depth: int = 6
    head_heads: int = 8
    head_dim_head: int = 64
    head_mlp_dim: int = 1024
    token_dim: int = 1  # 1: zero input token (TRANSFORMER_INPUT 'zero'); 157: mean params ('mean_shape')
    num_body_joints: int = 23
    # Camera (EXTRA.FOCAL_LENGTH, MODEL.IMAGE_SIZE): the crop camera lives in a 256-px square.
    focal_length: float = 5000.0
    crop_size: int = 256

    @classmethod
    def official(cls) -> "HMR2Config":
        return cls()

    @classmethod
    def tiny(cls) -> "HMR2Config":
        """Same code, few and narrow layers: CPU tests and the embedded random-weights default."""
        return cls(embed_dim=64, depth=2, num_heads=4, head_dim=64, head_depth=2, head_heads=2,
                   head_dim_head=16, head_mlp_dim=64)

    @classmethod
    def from_size(cls, size: str) -> "HMR2Config":
        if size not in ("official", "tiny"):
            raise ValueError(f"HMR2 size must be 'official' or 'tiny', got {size!r}")
        return getattr(cls, size)()

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (rows, cols) the padded patch conv produces: 16x12 at 256x192."""
        p, pad = self.patch_size, self.patch_padding
        return ((self.image_height + 2 * pad - p) // p + 1, (self.image_width + 2 * pad - p) // p + 1)

    @property
    def num_patches(self) -> int:
        """pos_embed rows minus one, as the reference counts them (unpadded image // patch)."""
        return (self.image_height // self.patch_size) * (self.image_width // self.patch_size)


class HMR2Output(NamedTuple):
    """Per-crop outputs (a tuple of tensors, so export and CUDA graphs take it as is)."""

    global_orient: torch.Tensor  # (B, 3, 3)
    body_pose: torch.Tensor  # (B, 23, 3, 3)
    betas: torch.Tensor  # (B, 10)
    pred_cam: torch.Tensor  # (B, 3) weak perspective (s, tx, ty) in the crop
    pred_cam_t: torch.Tensor  # (B, 3) translation in the 256-px crop camera (focal 5000)
    appearance: torch.Tensor  # (B, C) mean of the ViT's final tokens, L2-normalised


class HMR2(nn.Module):
    def __init__(self, cfg: HMR2Config = HMR2Config()):
        super().__init__()
        if cfg.grid[0] * cfg.grid[1] != cfg.num_patches:
            raise ValueError(f"token grid {cfg.grid} does not match pos_embed's {cfg.num_patches} patches")
        self.cfg = cfg
        self.backbone = ViT(cfg)
        self.smpl_head = SMPLTransformerDecoderHead(cfg)

    def forward(self, crops: torch.Tensor, backbone: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> HMR2Output:
        """crops (B, 3, 256, 192) normalised RGB -> HMR2Output. Outputs are float32 under autocast too.
        ``backbone``: a stand-in for self.backbone with the same weights (e.g. its torch.compile)."""
        B = crops.shape[0]
        feats = (self.backbone if backbone is None else backbone)(crops)  # (B, 192, C)
        pose6d, betas, cam = self.smpl_head(feats)
        pose6d, betas, cam = pose6d.float(), betas.float(), cam.float()
        rotmats = rot6d_to_rotmat(pose6d.reshape(B, -1, 6))  # (B, 24, 3, 3)
        appearance = F.normalize(feats.float().mean(dim=1), dim=-1)  # (B, C)
        return HMR2Output(rotmats[:, 0], rotmats[:, 1:], betas, cam,
                          crop_cam_t(cam, self.cfg.focal_length, self.cfg.crop_size), appearance)

    def forward_tuple(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Same as forward, as a plain tuple (for exporters that want no NamedTuple)."""
        return tuple(self(crops))

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> "HMR2":
        """Deterministic random init (no checkpoint). The readout layers get xavier(gain 0.01), the
        reference's INIT_DECODER_XAVIER option, so outputs sit near the mean params."""
        dev = next(self.parameters()).device
        g = torch.Generator(dev).manual_seed(seed)  # on the model's device: the official size is 670M numbers
        for name, p in self.named_parameters():
            if "pos_embed" in name:  # backbone pos_embed and head pos_embedding
                p.copy_(torch.randn(p.shape, generator=g, device=dev) * 0.02)
            elif p.dim() > 1:
                gain = 0.01 if name.startswith(("smpl_head.decpose", "smpl_head.deccam", "smpl_head.decshape")) else 1.0
                receptive = p[0][0].numel()  # kernel area for the patch conv, 1 for Linear
                bound = gain * math.sqrt(6.0 / ((p.shape[0] + p.shape[1]) * receptive))
                p.copy_(torch.rand(p.shape, generator=g, device=dev) * 2 * bound - bound)
            elif name.endswith("weight"):  # LayerNorm scale
                p.fill_(1.0)
            else:
                p.zero_()
        return self


# ----------------------------------------------------------------------------------------------
# Checkpoint loading

MODEL_PREFIXES = ("backbone.", "smpl_head.")
SMPL_PREFIX = "smpl."  # SMPL body-model buffers (smplx SMPLLayer + joint_map, J19 regressor): models/smpl.py
DROP_PREFIXES = (
    "discriminator.",  # adversarial pose/shape prior, training only
    "keypoint_3d_loss.", "keypoint_2d_loss.", "smpl_parameter_loss.",  # loss modules (no state today)
)
DROP_KEYS = ("initialized",)  # ActNorm initialisation flag, training only


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state_dict of a checkpoint file: a Lightning {'state_dict': ...} or a bare dict.

    Tensors are memory-mapped (the official file is GBs, most of it optimizer state we never touch).
    """
    obj = load_pickled(path, "HMR2")
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a Lightning checkpoint with a 'state_dict' of tensors")
    if not sd:
        raise CheckpointError(f"HMR2 checkpoint {path}: the state dict is empty (the file holds no weights)")
    return dict(sd)


def split_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a checkpoint state_dict into (network keys, SMPL buffers with 'smpl.' stripped).

    Training-only keys are dropped by name (DROP_PREFIXES, DROP_KEYS); any other key that is neither
    network nor SMPL is an error, so a checkpoint of some other model never half-loads. Network keys
    keep their names: the reference module is the HMR2 LightningModule itself, nothing to strip.
    """
    model_sd, smpl_sd, unknown = {}, {}, []
    for k, v in sd.items():
        if k.startswith(MODEL_PREFIXES):
            model_sd[k] = v
        elif k.startswith(SMPL_PREFIX):
            smpl_sd[k[len(SMPL_PREFIX):]] = v
        elif k in DROP_KEYS or k.startswith(DROP_PREFIXES):
            continue
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"unexpected checkpoint keys (not backbone/smpl_head/smpl/training-only): "
                              f"{_show(unknown)}")
    return model_sd, smpl_sd


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped keys (expected vs got)."""
    problems = shape_problems({k: tuple(v.shape) for k, v in model.state_dict().items()},
                              {k: tuple(v.shape) for k, v in sd.items()})
    if problems:
        raise CheckpointError("HMR2 state_dict does not match the model: " + "; ".join(problems))


def config_for_state_dict(sd: Mapping[str, torch.Tensor], cfg: HMR2Config) -> HMR2Config:
    """``cfg`` with what the weights themselves say: the released model_config.yaml does not come with
    them, so the decoder's input token width (TRANSFORMER_INPUT) is read from the checkpoint."""
    w = sd.get("smpl_head.transformer.to_token_embedding.weight")
    npose = 6 * (cfg.num_body_joints + 1)
    if w is not None and w.dim() == 2 and w.shape[1] != cfg.token_dim and w.shape[1] in (1, npose + 13):
        log.info("HMR2 checkpoint: decoder input token of width %d", w.shape[1])
        return dataclasses.replace(cfg, token_dim=int(w.shape[1]))
    return cfg


def load_hmr2_with_smpl(path: str | Path, cfg: HMR2Config = HMR2Config(), device: str | torch.device = "cpu"
                        ) -> tuple[HMR2, dict[str, torch.Tensor]]:
    """Build HMR2 from a 4D-Humans checkpoint: (model in eval mode, the SMPL buffers with 'smpl.' stripped, or {})."""
    model_sd, smpl_sd = split_state_dict(read_checkpoint(path))
    cfg = config_for_state_dict(model_sd, cfg)
    with torch.device("meta"):
        model = HMR2(cfg)
    check_state_dict(model, model_sd)
    model.load_state_dict(model_sd, strict=True, assign=True)  # assign: no second copy of 2.5 GB
    return model.float().to(device).eval(), smpl_sd


def load_hmr2(path: str | Path, cfg: HMR2Config = HMR2Config(), device: str | torch.device = "cpu") -> HMR2:
    """Build HMR2 from a 4D-Humans checkpoint (network only), in eval mode."""
    return load_hmr2_with_smpl(path, cfg, device)[0]
