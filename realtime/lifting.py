"""Lifter stage: one frame's person boxes -> 3D people with HMR 2.0, in one batched call.

    Frame, Detections -> crops (torch, on the model's device) -> HMR2 -> full-frame cameras -> People

Everything after the boxes stays on the model's device until one copy to numpy at the end. On CUDA
the network runs from CUDA graphs captured per batch size (1..max_batch, lazily or in ``warmup``).
With no checkpoint the weights are random: ``random_weights`` is True and a WARNING says so; such
output is never a prediction.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from models.hmr2 import (HMR2, HMR2Config, HMR2Output, body_origin_location, cam_crop_to_full, full_frame_focal,
                         load_hmr2, pose_vector, project_to_frame)
from models.hmr2_crop import CropConfig, crop_people, image_to_tensor
from realtime.records import Detections, Frame, People

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class HMRLifterConfig:
    checkpoint: str | None = None  # 4D-Humans Lightning checkpoint; None = random weights (loud warning)
    size: str = "tiny"  # "official" (ViT-H, needs a GPU for real time) or "tiny" (CPU default, random)
    device: str = "cpu"
    smpl_path: str | None = None  # SMPL_NEUTRAL.pkl: 3D joints and 2D keypoints
    smpl_joint_regressor: str | None = None  # SMPL_to_J19.pkl: the 19 extra joints (44 in all)
    smpl_from_checkpoint: bool = True  # without smpl_path, use the checkpoint's own smpl.* buffers
    max_batch: int = 16  # crops per network call; more people are run in chunks
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 | bf16 | fp16
    cuda_graphs: bool = True  # CUDA only: replay a captured graph per batch size
    antialias: bool = True  # reference blur of large boxes before the crop
    backend: str = "auto"  # auto | torch; onnxruntime | tensorrt run torch until export/ hands a runner
    seed: int = 0  # random-weights init


class CudaGraphRunner:
    """Replays one CUDA graph per batch size for ``fn(x) -> tuple of tensors``.

    Graphs share one memory pool (they never run concurrently). Inputs are copied into a static
    buffer; outputs are cloned so the next replay cannot overwrite what the caller holds.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], sample_shape: Sequence[int],
                 device: torch.device, dtype: torch.dtype | None = None):
        self.fn = fn
        self.sample_shape = tuple(sample_shape)
        self.device = device
        self.dtype = dtype  # autocast dtype, None for fp32
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        # The autocast weight cache must be off while capturing (its casts would live outside the graph).
        return torch.autocast("cuda", dtype=self.dtype, cache_enabled=False)

    def capture(self, batch: int) -> None:
        static_in = torch.zeros((batch, *self.sample_shape), device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad(), self._autocast():
            for _ in range(3):  # warm-up: cuBLAS/cuDNN pick kernels outside the capture
                self.fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool), torch.no_grad(), self._autocast():
            static_out = tuple(self.fn(static_in))
        self.graphs[batch] = (graph, static_in, static_out)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = x.shape[0]
        if batch not in self.graphs:
            self.capture(batch)
        graph, static_in, static_out = self.graphs[batch]
        static_in.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)


class HMRLifter:
    """realtime.stages.Lifter: HMR 2.0 on all people of a frame at once."""

    name = "hmr"

    def __init__(self, cfg: HMRLifterConfig, model: HMR2, smpl: torch.nn.Module | None = None,
                 random_weights: bool = True,
                 runner: Callable[[torch.Tensor], Sequence[torch.Tensor]] | None = None):
        self.cfg = cfg
        self.model = model.eval()
        self.smpl = smpl
        self.random_weights = random_weights
        self.device = torch.device(cfg.device)
        self.crop_cfg = CropConfig(crop_size=model.cfg.crop_size, crop_width=model.cfg.image_width,
                                   antialias=cfg.antialias)
        self.dtype = _resolve_precision(cfg.precision, self.device)
        if runner is None and self.device.type == "cuda" and cfg.cuda_graphs:
            runner = CudaGraphRunner(model.forward_tuple, (3, model.cfg.image_height, model.cfg.image_width),
                                     self.device, None if self.dtype == torch.float32 else self.dtype)
        self.runner = runner  # None: eager torch
        if random_weights:
            log.warning("HMR stage (%s): random weights: predictions are meaningless (pass an HMR 2.0 "
                        "checkpoint for real poses)", cfg.size)

    @classmethod
    def from_config(cls, cfg: HMRLifterConfig) -> "HMRLifter":
        if cfg.backend not in ("auto", "torch", "onnxruntime", "tensorrt"):
            raise ValueError(f"HMR stage: unknown backend {cfg.backend!r} (auto, torch, onnxruntime, tensorrt)")
        if cfg.backend in ("onnxruntime", "tensorrt"):
            log.warning("HMR stage: backend %r has no HMR runner yet: running the torch model", cfg.backend)
        if cfg.max_batch < 1:
            raise ValueError(f"HMR stage: max_batch must be >= 1, got {cfg.max_batch}")
        model_cfg = HMR2Config.from_size(cfg.size)
        smpl_sd: dict[str, torch.Tensor] = {}
        if cfg.checkpoint:
            model, smpl_sd = load_hmr2(cfg.checkpoint, model_cfg, cfg.device)
            random_weights = False
        else:
            model = HMR2(model_cfg).to(cfg.device).init_random_(cfg.seed).eval()
            random_weights = True
        smpl = None
        if cfg.smpl_path or (smpl_sd and cfg.smpl_from_checkpoint):
            from models.smpl import SMPL  # smplx only when 3D joints are wanted

            smpl = (SMPL.from_files(cfg.smpl_path, cfg.smpl_joint_regressor) if cfg.smpl_path
                    else SMPL.from_state_dict(smpl_sd))
            smpl = smpl.to(cfg.device).eval()
        return cls(cfg, model, smpl, random_weights)

    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def run_crops(self, crops: torch.Tensor) -> HMR2Output:
        """Network only, on pre-made crops (N, 3, 256, 192): chunks of max_batch, graphs or eager."""
        outs = []
        for start in range(0, crops.shape[0], self.cfg.max_batch):
            chunk = crops[start:start + self.cfg.max_batch]
            if self.runner is not None:
                outs.append(tuple(self.runner(chunk)))
            else:
                with self._autocast():
                    outs.append(tuple(self.model(chunk)))
        if not outs:  # nobody in the frame: the network is not run, shapes still hold
            outs.append(tuple(self._empty_output()))
        return HMR2Output(*(torch.cat([o[i] for o in outs]) for i in range(len(HMR2Output._fields))))

    def warmup(self, batch_sizes: Sequence[int] | None = None) -> None:
        """Run (and on CUDA capture) the network once per batch size so the first frames are not slow."""
        sizes = batch_sizes or range(1, self.cfg.max_batch + 1)
        shape = (3, self.model.cfg.image_height, self.model.cfg.image_width)
        for b in sizes:
            self.run_crops(torch.zeros((b, *shape), device=self.device))

    @torch.no_grad()
    def __call__(self, frame: Frame, detections: Detections) -> People:
        W, H = frame.size
        image = image_to_tensor(frame.image, self.device)  # (3, H, W) RGB
        crops, center, side = crop_people(image, detections.xyxy, self.crop_cfg)  # (n, 3, 256, 192)
        out = self.run_crops(crops)
        n = crops.shape[0]
        dev = self.device
        image_size = torch.tensor([W, H], dtype=torch.float32, device=dev).expand(n, 2)
        focal = full_frame_focal(image_size, self.model.cfg.focal_length, self.model.cfg.crop_size)  # (n,)
        cam_t = cam_crop_to_full(out.pred_cam, torch.as_tensor(center, device=dev),
                                 torch.as_tensor(side, device=dev), image_size, focal)  # (n, 3)
        fields = {
            "pose_vector": pose_vector(out.global_orient, out.body_pose, out.betas, cam_t),
            "global_orient": out.global_orient, "body_pose": out.body_pose, "betas": out.betas,
            "pred_cam": out.pred_cam, "cam_t": cam_t,
            "location": body_origin_location(cam_t, focal, image_size),
            "appearance": out.appearance,
        }
        if self.smpl is not None:
            _, joints = self.smpl(out.global_orient, out.body_pose, out.betas)  # (n, J, 3) body frame
            fields["joints_3d"] = joints
            fields["keypoints_2d"] = project_to_frame(joints, cam_t, focal, image_size)
        arrays = {k: v.float().cpu().numpy() for k, v in fields.items()}  # the one device->host copy
        return People(detections.xyxy, detections.confidence, image_size=(W, H), **arrays)

    # ------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _empty_output(self) -> HMR2Output:
        z = lambda *s: torch.zeros(s, device=self.device)  # noqa: E731
        c = self.model.cfg
        return HMR2Output(z(0, 3, 3), z(0, c.num_body_joints, 3, 3), z(0, 10), z(0, 3), z(0, 3), z(0, c.embed_dim))


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"HMR stage: precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    return PRECISIONS[precision]
