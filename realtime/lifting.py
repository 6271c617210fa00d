"""Lifter stage: one frame's person boxes -> 3D people with HMR 2.0, in one batched call.

    Frame, Detections -> crops (torch, on the stage's device) -> HMR2 -> full-frame cameras -> People

Everything after the boxes stays on the device until one copy to numpy at the end. The network runs
through realtime/backends.py (``backend``): the torch module, or the exported ``hmr2.onnx`` under
onnxruntime / TensorRT when ``export_dir`` holds one. Without a checkpoint the weights are random:
``random_weights`` is True and a WARNING says so; such output is never a prediction.

Two paths compute the same People:

- eager: crop_people -> the network (or the backend's runner) -> post-processing, each a few small
  kernels (the path for onnxruntime / TensorRT, and the CPU default);
- fused (default for the torch network on CUDA): static buffers and two CUDA graphs per frame. The
  frame goes once into a pinned staging buffer and a preallocated device buffer (only the rows the
  crops read); the boxes go up as one small (B, 5) tensor. Graph 1, per (batch, frame size, blur
  bucket): crops of all people (crop_people_static: one grid_sample, the reference blur as fixed-size
  separable taps), normalisation. Graph 2, per batch: network + full-frame camera + pose vector +
  location + SMPL joints, packed into one (B, D) tensor that comes back in one device->host copy.
  Batch sizes are exact up to 16 (then 20, 24, 28, 32), so nobody pays for padding people; the
  graphs share one memory pool (one runs at a time). On the CPU (or with ``cuda_graphs=False``) the
  same code runs with each capture replaced by a plain call; tests check it equals the eager path.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lart_stream.models.hmr2 import (FP32_READOUTS, HMR2, HMR2Config, HMR2Output, body_origin_location, cam_crop_to_full, check_state_dict,
                         config_for_state_dict, full_frame_focal, load_hmr2_with_smpl, pose_vector, project_to_frame,
                         read_checkpoint, split_state_dict)
from lart_stream.models.hmr2_crop import (CropConfig, blur_radius, blur_rows, blur_sigma, box_center_size, crop_people,
                              crop_people_static, image_to_tensor, normalisation, radius_bucket)
from lart_stream.models.precision import cast_matmul_weights_, fp8_linears_
from lart_stream.realtime.records import Detections, Frame, People

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Runner = Callable[[torch.Tensor], Sequence[torch.Tensor]]  # crops (B, 3, 256, 192) -> HMR2Output fields
# Batch sizes the fused path captures: exact up to 16 (one more crop costs ~0.75 ms of ViT-H on an H100,
# more than a graph's memory), then steps of 4. Capped at max_batch, which is always one of them.
HMR_BUCKETS = tuple(range(1, 17)) + (20, 24, 28, 32)
# Several streams in one pipeline (realtime/multistream.py) batch every stream's crops in one call:
# buckets up to 128 crops (steps of 8, then 16), so 8 streams x 10 people run as one graph.
MULTI_STREAM_BUCKETS = HMR_BUCKETS + (40, 48, 56, 64, 80, 96, 112, 128)


def multi_stream_max_batch(streams: int, people_per_stream: int = 16) -> int:
    """The largest batch a pipeline of ``streams`` streams needs: a multi-stream bucket, at least 16."""
    need = max(16, streams * people_per_stream)
    return next((b for b in MULTI_STREAM_BUCKETS if b >= need), MULTI_STREAM_BUCKETS[-1])


@dataclass(frozen=True)
class HMRLifterConfig:
    checkpoint: str | None = None  # 4D-Humans Lightning checkpoint; None = random weights (loud warning)
    size: str = "tiny"  # "official" (ViT-H, a GPU for real time) or "tiny" (CPU default, random weights)
    device: str = "cpu"
    smpl_path: str | None = None  # SMPL_NEUTRAL.pkl: 3D joints and 2D keypoints
    smpl_joint_regressor: str | None = None  # SMPL_to_J19.pkl: the 19 extra joints (44 in all)
    smpl_from_checkpoint: bool = True  # without smpl_path, use the checkpoint's own smpl.* buffers
    max_batch: int = 16  # crops per network call; more people run in chunks
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU; or fp32 | bf16 | fp16
    # bf16/fp16: cast the matmul weights once (models/precision.py; LayerNorm, residual stream and the
    # pose/shape/camera readouts stay fp32), or False: fp32 weights under autocast, re-cast every call
    cast_weights: bool = True
    # with cast weights: the ViT's residual stream, LayerNorms and position embedding in bf16 too (the
    # whole backbone cast; -0.3 ms at 5 crops on an H200, more rounding: see hmr_precision.py)
    backbone_bf16: bool = False
    # torch.compile the network (fused path), captured in our graphs per batch bucket; compiled
    # artefacts cached on disk (realtime/compiled.py). Compiling takes minutes per bucket when cold.
    compile: bool = False
    fp8: bool = False  # the ViT's linears in FP8 e4m3 with row-wise scales (torch._scaled_mm; Hopper/Ada)
    compile_cache_dir: str | None = None  # None: ~/.cache/lart-stream/inductor
    compile_backend: str = "inductor"  # "eager": the same path without compiling (CPU tests)
    compile_batches: tuple[int, ...] = ()  # batch buckets whose network is compiled (others plain); () all
    cuda_graphs: bool = True  # torch backend on CUDA: replay a captured graph per batch bucket
    antialias: bool = True  # the reference's blur of large boxes before the crop
    backend: str = "auto"  # auto | torch | onnxruntime | tensorrt (realtime/backends.py)
    export_dir: str | None = None  # `lart-stream export --out DIR`: its hmr2.onnx for onnxruntime/TensorRT
    seed: int = 0  # random-weights init
    fused: bool | None = None  # static-buffer path (see module doc); None: on for the torch network on CUDA
    buckets: tuple[int, ...] = HMR_BUCKETS  # batch sizes of the fused path's graphs (and max_batch)


class HMRLifter:
    """lart_stream.realtime.stages.Lifter: HMR 2.0 on all people of a frame at once.

    ``model`` is the torch network (None when an exported engine runs: then ``runner`` is required);
    ``runner`` maps crops to the HMR2Output fields (None: call ``model`` eagerly).
    """

    name = "hmr"

    def __init__(self, cfg: HMRLifterConfig, model: HMR2 | None, smpl: torch.nn.Module | None = None,
                 random_weights: bool = True, runner: Runner | None = None, backend_info: str = "torch eager",
                 model_cfg: HMR2Config | None = None):
        if model is None and runner is None:
            raise ValueError("HMRLifter needs a model or a runner")
        self.cfg = cfg
        self.model = model.eval() if model is not None else None
        self.model_cfg = model_cfg or model.cfg  # type: ignore[union-attr]
        self.smpl = smpl
        self.random_weights = random_weights
        self.device = torch.device(cfg.device)
        self.crop_cfg = CropConfig(crop_size=self.model_cfg.crop_size, crop_width=self.model_cfg.image_width,
                                   antialias=cfg.antialias)
        self.dtype = _resolve_precision(cfg.precision, self.device)
        # Weights cast once: no autocast (and no per-call weight cast) on the torch network's paths.
        self.weights_cast = self.model is not None and self.dtype != torch.float32 and cfg.cast_weights
        if self.weights_cast:
            cast_matmul_weights_(self.model, self.dtype, keep=FP32_READOUTS)
            if cfg.backbone_bf16:
                self.model.backbone.to(self.dtype)  # type: ignore[union-attr]
        elif cfg.backbone_bf16:
            raise ValueError("HMR stage: backbone_bf16 needs bf16/fp16 precision with the weights cast")
        self.fp8 = cfg.fp8
        if cfg.fp8:
            if not self.weights_cast or self.dtype != torch.bfloat16:
                raise ValueError("HMR stage: --fp8 needs bf16 precision with the weights cast (the torch network)")
            fp8_linears_(self.model, "backbone.blocks")
        self.runner = runner
        self.backend_info = backend_info
        self.rows_upload = self.device.type == "cuda"  # lift_many: upload only the rows crops read
        self._many_frames: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}  # batch position -> buffers
        fused = cfg.fused if cfg.fused is not None else (
            model is not None and self.device.type == "cuda" and cfg.cuda_graphs)
        if fused and model is None:
            raise ValueError("HMR stage: the fused path needs the torch network (backend torch)")
        if cfg.compile and not fused:
            raise ValueError("HMR stage: --compile needs the fused torch path (backend torch, CUDA graphs on)")
        self._fused = _FusedStage(self, capture=self.device.type == "cuda" and cfg.cuda_graphs) if fused else None
        if self._fused is not None:  # "<backend> [<why chosen>]" -> "<fused path> [<why chosen>]"
            why = backend_info[backend_info.find(" ["):] if " [" in backend_info else ""
            self.backend_info = self._fused.describe() + why
        if random_weights:
            log.warning("HMR stage (%s): random weights: predictions are meaningless (pass an HMR 2.0 "
                        "checkpoint for real poses)", cfg.size)

    @classmethod
    def from_config(cls, cfg: HMRLifterConfig) -> "HMRLifter":
        if cfg.max_batch < 1:
            raise ValueError(f"HMR stage: max_batch must be >= 1, got {cfg.max_batch}")
        dtype = _resolve_precision(cfg.precision, torch.device(cfg.device))
        model_cfg = HMR2Config.from_size(cfg.size)
        if cfg.checkpoint:  # a wrong file fails here, clearly, whatever the backend (mmap: cheap)
            model_sd = split_state_dict(read_checkpoint(cfg.checkpoint))[0]
            model_cfg = config_for_state_dict(model_sd, model_cfg)
            with torch.device("meta"):
                check_state_dict(HMR2(model_cfg), model_sd)
        built: dict = {}

        def build() -> torch.nn.Module:
            """The torch network, built only when the torch backend runs it."""
            if cfg.checkpoint:
                built["model"], built["smpl_sd"] = load_hmr2_with_smpl(cfg.checkpoint, model_cfg, cfg.device)
            else:
                with torch.device(cfg.device):  # built in place: the official size is 670 M numbers
                    built["model"] = HMR2(model_cfg).init_random_(cfg.seed).eval()
            return _TupleForward(built["model"])

        runner, info, engine_random = _resolve_runner(cfg, model_cfg, build, dtype)
        log.info("HMR stage: %s", info)
        model = built.get("model")
        random_weights = engine_random if model is None else not cfg.checkpoint
        smpl = _build_smpl(cfg, built.get("smpl_sd"))
        return cls(cfg, model, smpl, random_weights, runner, info, model_cfg)

    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def run_crops(self, crops: torch.Tensor) -> HMR2Output:
        """Network only, on pre-made crops (N, 3, 256, 192), in chunks of max_batch."""
        outs = []
        for start in range(0, crops.shape[0], self.cfg.max_batch):
            chunk = crops[start:start + self.cfg.max_batch]
            if self.runner is not None:
                outs.append(tuple(t.float() for t in self.runner(chunk)))
            else:
                with self._autocast():
                    outs.append(tuple(self.model(chunk)))  # type: ignore[misc]
        if not outs:  # nobody in the frame: the network is not run, shapes still hold
            outs.append(tuple(self._empty_output()))
        return HMR2Output(*(torch.cat([o[i] for o in outs]) for i in range(len(HMR2Output._fields))))

    @torch.no_grad()
    def warmup(self, batch_sizes: Sequence[int] | None = None, frame_size: tuple[int, int] | None = None) -> None:
        """Capture / run everything once before the stream starts, so no frame pays for it.

        Fused path: the network graphs for ``batch_sizes`` (default: every bucket up to max_batch) and,
        given ``frame_size`` (W, H), the crop graphs for frames of that size (else captured on the first
        frame of each batch size: a few ms). Eager path: one network call per size (default 1, 2, 4, 8, 16).
        """
        if self._fused is not None:
            self._fused.warmup(batch_sizes, frame_size)
            return
        shape = (3, self.model_cfg.image_height, self.model_cfg.image_width)
        for b in batch_sizes or (1, 2, 4, 8, 16):
            self.run_crops(torch.zeros((b, *shape), device=self.device))

    @torch.no_grad()
    def __call__(self, frame: Frame, detections: Detections) -> People:
        if self._fused is not None and frame.image.dtype == np.uint8:
            return self._fused(frame, detections)
        return self.eager(frame, detections)

    @property
    def image_device(self) -> torch.device:
        """The device ``lift_many`` reads frames on when given them there (``device_images``)."""
        return self.device

    @torch.no_grad()
    def lift_many(self, frames: Sequence[Frame], detections: Sequence[Detections],
                  device_images: Sequence[torch.Tensor] | None = None) -> list[People]:
        """People of several frames (one per stream) with ONE network call over all their crops
        (chunks of max_batch). Fused path: each frame's rows up into its own buffer, its crops cut
        straight into the shared crop buffer (crop_people_static, uncaptured: the people per frame
        vary), then the network + post-processing graph of the total's bucket. Eager path: crops cut
        per frame, one network call. ``last_parts()`` has the fused path's parts.

        ``device_images``: the frames as (H, W, 3) uint8 on ``image_device`` (realtime/device_frames.py):
        the crops are cut from them and nothing is uploaded (the same crops: the same pixels)."""
        if len(frames) != len(detections):
            raise ValueError(f"lift_many: {len(frames)} frames but {len(detections)} detection sets")
        if device_images is not None and len(device_images) != len(frames):
            raise ValueError(f"lift_many: {len(frames)} frames but {len(device_images)} device images")
        if len(frames) == 1 and device_images is None:
            return [self(frames[0], detections[0])]
        if self._fused is not None and all(f.image.dtype == np.uint8 for f in frames):
            return self._fused.many(frames, detections, device_images)
        crops, center, side, sizes = [], [], [], []
        for k, (frame, det) in enumerate(zip(frames, detections)):
            if not len(det):
                continue
            image = (self._frame_tensor(k, frame, det) if device_images is None
                     else device_images[k].permute(2, 0, 1).flip(0).float())
            c, ce, si = crop_people(image, det.xyxy, self.crop_cfg)
            crops.append(c)
            center.append(ce)
            side.append(si)
            sizes.append(np.tile(np.asarray(frame.size, np.float32), (len(det), 1)))
        n = sum(len(d) for d in detections)
        shape = (0, 3, self.model_cfg.image_height, self.model_cfg.image_width)
        all_crops = torch.cat(crops) if crops else torch.zeros(shape, device=self.device)
        cat = lambda xs, tail: np.concatenate(xs) if xs else np.zeros((0, *tail), np.float32)  # noqa: E731
        center_np, side_np, size_np = cat(center, (2,)), cat(side, ()), cat(sizes, (2,))
        if self._fused is not None and n:
            arrays = self._fused.rows_of_crops(all_crops, center_np, side_np, size_np)
        else:
            out = self.run_crops(all_crops)
            dev = self.device
            fields = people_fields(out, torch.as_tensor(center_np, device=dev), torch.as_tensor(side_np, device=dev),
                                   torch.as_tensor(size_np, device=dev), self.model_cfg, self.smpl)
            arrays = {k: v.float().cpu().numpy() for k, v in fields.items()}
        people, at = [], 0
        for frame, det in zip(frames, detections):
            rows = slice(at, at + len(det))
            at += len(det)
            people.append(People(det.xyxy, det.confidence, image_size=frame.size,
                                 **{k: v[rows] for k, v in arrays.items()}))
        return people

    def _frame_tensor(self, k: int, frame: Frame, det: Detections) -> torch.Tensor:
        """(3, H, W) float RGB of frame ``k`` of a lift_many batch. On CUDA only the rows the crops read
        travel, through pinned memory, into a device buffer kept per batch position (the rest of it
        holds an older frame, never read): the same crops as image_to_tensor of the whole frame."""
        if not self.rows_upload or frame.image.dtype != np.uint8:
            return image_to_tensor(frame.image, self.device)
        W, H = frame.size
        buffers = self._many_frames
        if k not in buffers or tuple(buffers[k][1].shape) != (H, W, 3):
            cuda = self.device.type == "cuda"
            buffers[k] = (torch.zeros((H, W, 3), dtype=torch.uint8).pin_memory() if cuda else None,
                          torch.zeros((H, W, 3), dtype=torch.uint8, device=self.device))
        host, dev = buffers[k]
        center, side = box_center_size(det.xyxy, self.crop_cfg.aspect)
        sigma = blur_sigma(side, self.crop_cfg)
        R = radius_bucket(int(blur_radius(sigma[sigma > 0]).max())) if (sigma > 0).any() else 0
        upload_rows(frame.image, _rows_read(center, side, R, H), host, dev)
        return dev.permute(2, 0, 1).flip(0).float()

    @torch.no_grad()
    def eager(self, frame: Frame, detections: Detections) -> People:
        """The eager path (see module doc): what the fused path is checked against."""
        W, H = frame.size
        image = image_to_tensor(frame.image, self.device)  # (3, H, W) RGB
        crops, center, side = crop_people(image, detections.xyxy, self.crop_cfg)  # (n, 3, 256, 192)
        out = self.run_crops(crops)
        n, dev = crops.shape[0], self.device
        image_size = torch.tensor([W, H], dtype=torch.float32, device=dev).expand(n, 2)
        fields = people_fields(out, torch.as_tensor(center, device=dev), torch.as_tensor(side, device=dev),
                               image_size, self.model_cfg, self.smpl)
        arrays = {k: v.float().cpu().numpy() for k, v in fields.items()}  # device->host, a copy per field
        return People(detections.xyxy, detections.confidence, image_size=(W, H), **arrays)

    @property
    def sync_ms(self) -> float | None:
        """Wall ms the last fused call waited for the device (0 on the CPU); None on the other paths,
        whose read-backs wait inside torch calls."""
        return self._fused.sync_ms if self._fused is not None else None

    def profile(self, on: bool = True) -> None:
        """Fused path: time its parts on every call (CUDA events; host clock on the CPU), see ``last_parts``."""
        if self._fused is None:
            raise ValueError("HMR stage: per-part timing exists for the fused path only")
        self._fused.profiling = on

    def last_parts(self) -> dict[str, float]:
        """ms per part of the last fused call with ``profile()`` on: upload, crops, network+post, d2h."""
        return self._fused.parts() if self._fused is not None else {}

    # ------------------------------------------------------------------------------------------

    def _autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """Autocast for the fp32-weight path; nothing when fp32 or the weights are cast already.
        cache=False: no weight-cast cache (it must not outlive a CUDA-graph capture)."""
        if self.dtype == torch.float32 or self.weights_cast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=cache)

    def _empty_output(self) -> HMR2Output:
        z = lambda *s: torch.zeros(s, device=self.device)  # noqa: E731
        c = self.model_cfg
        return HMR2Output(z(0, 3, 3), z(0, c.num_body_joints, 3, 3), z(0, 10), z(0, 3), z(0, 3), z(0, c.embed_dim))


class _TupleForward(torch.nn.Module):
    """HMR2 with a plain tuple out (what the backends and graph capture take)."""

    def __init__(self, model: HMR2):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_tuple(crops)


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"HMR stage: precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    return PRECISIONS[precision]


def _resolve_runner(cfg: HMRLifterConfig, model_cfg: HMR2Config, build: Callable[[], torch.nn.Module],
                    dtype: torch.dtype) -> tuple[Runner | None, str, bool]:
    """(runner or None for eager torch on the CPU, one line saying what runs, whether an engine's
    weights are random). Backends are realtime/backends.py's; ``build`` makes the torch module."""
    from lart_stream.realtime.model_io import hmr2_io
    from lart_stream.realtime.backends import BackendUnavailable, resolve_exported

    fields = HMR2Output._fields
    precision = {v: k for k, v in PRECISIONS.items()}[dtype]
    on_cuda = torch.device(cfg.device).type == "cuda"
    try:
        backend, reason = resolve_exported(cfg.backend, "hmr2", cfg.device, cfg.export_dir, module=build,
                                           io=hmr2_io(model_cfg, fields), cuda_graphs=cfg.cuda_graphs and on_cuda,
                                           precision=precision)
    except (BackendUnavailable, ValueError) as exc:  # a backend the user asked for that cannot run here
        raise ValueError(f"HMR stage: {exc}") from exc
    info = f"{backend.describe()} [{reason}]"
    engine_random = True
    if backend.name != "torch":
        from lart_stream.realtime.manifest import read_manifest

        entry = read_manifest(cfg.export_dir).get("hmr2", {})
        engine_random = bool(entry.get("random_weights", True))
        if entry.get("config", {}).get("size", cfg.size) != cfg.size:
            raise ValueError(f"HMR stage: {cfg.export_dir} holds a {entry['config']['size']} hmr2, "
                             f"the stage is configured for {cfg.size}")
    elif not on_cuda:
        return None, info, engine_random  # eager on the CPU: the lifter calls the model itself

    def run(crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = backend.run({"crops": crops})
        return tuple(torch.as_tensor(out[f], device=crops.device) for f in fields)

    return run, info, engine_random


def _build_smpl(cfg: HMRLifterConfig, smpl_sd: dict[str, torch.Tensor] | None) -> torch.nn.Module | None:
    """SMPL from the given file, else from the checkpoint's smpl.* buffers, else None (no joints)."""
    if not cfg.smpl_path and not (cfg.checkpoint and cfg.smpl_from_checkpoint):
        return None
    from lart_stream.models.smpl import SMPL  # smplx only when 3D joints are wanted

    if cfg.smpl_path:
        smpl = SMPL.from_files(cfg.smpl_path, cfg.smpl_joint_regressor)
    else:
        if smpl_sd is None:  # an engine ran, the network was not built: read just the buffers (mmap)
            smpl_sd = split_state_dict(read_checkpoint(cfg.checkpoint))[1]  # type: ignore[arg-type]
        if not smpl_sd:
            return None
        smpl = SMPL.from_state_dict(smpl_sd)
    return smpl.to(cfg.device).eval()


# ----------------------------------------------------------------------------------------------
# Post-processing shared by both paths


def people_fields(out: HMR2Output, center: torch.Tensor, side: torch.Tensor, image_size: torch.Tensor,
                  mc: HMR2Config, smpl: torch.nn.Module | None,
                  joints_fn: Callable[..., torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """HMR2 outputs -> People's 3D fields, on the device. center (n, 2) px, side (n,) crop side px,
    image_size (n, 2) = (W, H). ``joints_fn(global_orient, body_pose, betas)`` replaces ``smpl``'s
    forward for the joints (the fused path's capture-safe twin)."""
    focal = full_frame_focal(image_size, mc.focal_length, mc.crop_size)  # (n,) full-frame px
    cam_t = cam_crop_to_full(out.pred_cam, center, side, image_size, focal)  # (n, 3)
    fields = {
        "pose_vector": pose_vector(out.global_orient, out.body_pose, out.betas, cam_t),
        "global_orient": out.global_orient, "body_pose": out.body_pose, "betas": out.betas,
        "pred_cam": out.pred_cam, "cam_t": cam_t,
        "location": body_origin_location(cam_t, focal, image_size),
        "appearance": out.appearance,
    }
    if smpl is not None:
        if joints_fn is not None:
            joints = joints_fn(out.global_orient, out.body_pose, out.betas)
        else:
            _, joints = smpl(out.global_orient, out.body_pose, out.betas)  # (n, J, 3) body frame
        fields["joints_3d"] = joints
        fields["keypoints_2d"] = project_to_frame(joints, cam_t, focal, image_size)
    return fields


def smpl_joints_static(smpl: torch.nn.Module, parents: Sequence[int], global_orient: torch.Tensor,
                       body_pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """lart_stream.models.smpl.SMPL's joints (B, J, 3), the same smplx operations in the same order, with the
    kinematic chain walked over host ints: smplx indexes a Python list with a device tensor (a host
    sync, which a CUDA-graph capture refuses). ``parents`` = smpl.parents.tolist()."""
    from smplx.lbs import blend_shapes, transform_mat, vertices2joints

    B = global_orient.shape[0]
    full_pose = torch.cat([global_orient.float()[:, None].reshape(-1, 1, 3, 3),
                           body_pose.float().reshape(-1, smpl.NUM_BODY_JOINTS, 3, 3)], dim=1)  # (B, 24, 3, 3)
    betas = betas.float()
    dtype, device = betas.dtype, betas.device
    v_shaped = smpl.v_template + blend_shapes(betas, smpl.shapedirs)  # (B, V, 3)
    J = vertices2joints(smpl.J_regressor, v_shaped)  # (B, 24, 3)
    ident = torch.eye(3, dtype=dtype, device=device)
    pose_feature = full_pose[:, 1:].view(B, -1, 3, 3) - ident
    rot_mats = full_pose.view(B, -1, 3, 3)
    v_posed = torch.matmul(pose_feature.view(B, -1), smpl.posedirs).view(B, -1, 3) + v_shaped
    # batch_rigid_transform
    joints = torch.unsqueeze(J, dim=-1)  # (B, 24, 3, 1)
    rel_joints = joints.clone()
    rel_joints[:, 1:] -= joints[:, smpl.parents[1:]]
    transforms_mat = transform_mat(rot_mats.reshape(-1, 3, 3), rel_joints.reshape(-1, 3, 1)).reshape(
        -1, joints.shape[1], 4, 4)
    chain = [transforms_mat[:, 0]]
    for i in range(1, len(parents)):
        chain.append(torch.matmul(chain[parents[i]], transforms_mat[:, i]))
    transforms = torch.stack(chain, dim=1)
    posed_joints = transforms[:, :, :3, 3]
    joints_homogen = F.pad(joints, [0, 0, 0, 1])
    A = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0, 0, 0, 0, 0, 0, 0])
    # skinning
    W = smpl.lbs_weights.unsqueeze(dim=0).expand([B, -1, -1])
    T = torch.matmul(W, A.view(B, smpl.J_regressor.shape[0], 16)).view(B, -1, 4, 4)
    homogen_coord = torch.ones([B, v_posed.shape[1], 1], dtype=dtype, device=device)
    v_posed_homo = torch.cat([v_posed, homogen_coord], dim=2)
    vertices = torch.matmul(T, torch.unsqueeze(v_posed_homo, dim=-1))[:, :, :3, 0]  # (B, V, 3)
    joints = smpl.vertex_joint_selector(vertices, posed_joints)
    if smpl.joint_mapper is not None:
        joints = smpl.joint_mapper(joints)
    joints = joints[:, smpl.joint_map]  # (B, 25, 3) OpenPose order
    if smpl.joint_regressor_extra is not None:
        extra = torch.einsum("jv,bvc->bjc", smpl.joint_regressor_extra, vertices)  # (B, 19, 3)
        joints = torch.cat([joints, extra], dim=1)
    return joints


# ----------------------------------------------------------------------------------------------
# Fused path: static buffers, one crop graph + one network graph per frame, one copy back


class _Step:
    """``fn()`` on static buffers: captured once as a CUDA graph and replayed, or (CPU, graphs off)
    called plainly. Outputs of a replay live in the graph's pool: read them before the next replay."""

    def __init__(self, fn: Callable[[], Any], pool: Any = None, stream: Any = None, warmup: int = 0):
        self.fn = fn
        self.graph = None
        self.out: Any = None
        if pool is None:
            return
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # cuBLAS / cuDNN workspaces and autotuning happen outside capture
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # One pool and one capture stream for every graph: only one replays at a time, so they can
        # share intermediate memory (each graph's outputs stay allocated while referenced).
        # thread_local: the overlapped detector (realtime/engine.py) may use the GPU while we capture.
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            self.out = fn()
        self.graph = graph

    def __call__(self) -> Any:
        if self.graph is None:
            self.out = self.fn()
        else:
            self.graph.replay()
        return self.out


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


class _FusedStage:
    """The fused path of HMRLifter (module doc). Host side per frame: box geometry in numpy (the same
    functions as crop_people), the frame rows the crops read copied to the pinned staging buffer and
    up, one (B, 5) box tensor up (+ a small blur table when someone is large), two graph replays, one
    copy back, one sync."""

    BOX = 5  # box row: centre x, centre y, crop side, frame W, frame H (post-processing reads all five)

    def __init__(self, lifter: HMRLifter, capture: bool):
        self.model, self.smpl = lifter.model, lifter.smpl
        self.mc, self.cc, self.dtype = lifter.model_cfg, lifter.crop_cfg, lifter.dtype
        self.autocast = lifter._autocast
        self.weights_cast = lifter.weights_cast
        self.fp8 = lifter.fp8
        self.backbone_bf16 = lifter.cfg.backbone_bf16
        self.network: Callable[[torch.Tensor], HMR2Output] = self.model  # type: ignore[assignment]
        self.compiled = lifter.cfg.compile
        self.compile_batches = frozenset(lifter.cfg.compile_batches)  # empty: every bucket
        self.compile_log: list = []  # CompileRecord per batch bucket (seconds, cold or warm)
        if self.compiled:
            from lart_stream.realtime.compiled import CompileConfig, compile_network

            # The ViT only: 97 % of the FLOPs, 5 GEMM shapes to autotune (the head's dozen more small
            # ones would double a cold start for ~0.1 ms); its graph capture covers the rest.
            backbone = compile_network(self.model.backbone, CompileConfig(  # type: ignore[union-attr]
                backend=lifter.cfg.compile_backend, cache_dir=lifter.cfg.compile_cache_dir))
            self.network = functools.partial(self.model, backbone=backbone)  # type: ignore[arg-type]
        self.device = dev = lifter.device
        self.cuda = dev.type == "cuda"
        self.capture = capture
        mb = lifter.cfg.max_batch
        self.buckets = tuple(sorted({b for b in lifter.cfg.buckets if 1 <= b < mb} | {mb}))
        self.mean, self.std = normalisation(dev)
        self.crops = torch.zeros(mb, 3, self.cc.crop_size, self.cc.crop_width, device=dev)  # graph 1 -> 2
        self.boxes: dict[int, torch.Tensor] = {}  # bucket -> (B, 5) device box rows
        self.blur_in: dict[tuple[int, int, int], torch.Tensor] = {}  # (B, nb, R) -> (nb, 4 + 2R + 1)
        self.prep: dict[tuple[int, ...], _Step] = {}  # (B, H, W, nb, R) -> crops into self.crops[:B]
        self.net: dict[int, _Step] = {}  # B -> packed (B, D) outputs
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.stream = torch.cuda.Stream(dev) if capture else None
        self.parents = self.smpl.parents.tolist() if self.smpl is not None else []
        self.layout = self._layout()
        self.width = sum(math.prod(shape) for _, shape in self.layout)
        self.frame_dev: torch.Tensor | None = None  # (H, W, 3) uint8, what graph 1 reads
        self.frame_host: torch.Tensor | None = None  # pinned staging (CUDA only)
        self.host_in = self._host(torch.zeros(1024, dtype=torch.float32))  # box rows + blur tables
        self.host_out = self._host(torch.zeros(mb, self.width, dtype=torch.float32))
        self.profiling = False
        self._marks: list[tuple[str, Any]] = []
        self.positions: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}  # lift_many's frames
        self.many_in: torch.Tensor | None = None
        self.big_crops: torch.Tensor | None = None
        self.sync_ms = 0.0  # wall ms the last call waited for the device (its one sync)
        self.pad_box = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], device=self.device)  # lift_many's padding row

    def describe(self) -> str:
        mode = "CUDA graphs" if self.capture else "plain calls"
        prec = {v: k for k, v in PRECISIONS.items()}[self.dtype]
        if self.dtype != torch.float32:
            prec += " weights" if self.weights_cast else " autocast"
        if self.backbone_bf16:
            prec += ", ViT residual " + prec.split()[0]
        if self.fp8:
            prec += ", ViT linears fp8"
        if self.compiled:
            prec += ", compiled"
        return (f"torch ({self.device}, fused crops + network + post, {mode} per batch "
                f"{_ranges(self.buckets)}, {prec})")

    # -- buffers --------------------------------------------------------------------------------

    def _host(self, t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory() if self.cuda else t

    def _layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Packed output columns, in People field order (pose_vector first)."""
        lay = [("pose_vector", (229,)), ("global_orient", (3, 3)), ("body_pose", (self.mc.num_body_joints, 3, 3)),
               ("betas", (10,)), ("pred_cam", (3,)), ("cam_t", (3,)), ("location", (3,)),
               ("appearance", (self.mc.embed_dim,))]
        if self.smpl is not None:
            J = self.smpl.num_joints
            lay += [("joints_3d", (J, 3)), ("keypoints_2d", (J, 2))]
        return lay

    def _bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def _frame_buffers(self, H: int, W: int) -> None:
        if self.frame_dev is not None and tuple(self.frame_dev.shape) == (H, W, 3):
            return
        self.prep.clear()  # crop graphs hold the old buffer's address
        self.frame_dev = torch.zeros((H, W, 3), dtype=torch.uint8, device=self.device)
        self.frame_host = self._host(torch.zeros((H, W, 3), dtype=torch.uint8)) if self.cuda else None

    def _boxes_for(self, B: int) -> torch.Tensor:
        if B not in self.boxes:
            t = torch.zeros(B, self.BOX, device=self.device)
            t[:, 2] = 1.0  # padding rows: a finite 1-px box
            self.boxes[B] = t
        return self.boxes[B]

    # -- graphs ---------------------------------------------------------------------------------

    def _step(self, fn: Callable[[], Any], warmup: int) -> _Step:
        if self.capture:
            try:
                return _Step(fn, self.pool, self.stream, warmup)
            except RuntimeError as exc:  # keep the stream running: same buffers, plain calls
                log.warning("HMR stage: CUDA-graph capture failed (%s); running the fused path without graphs",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                torch.cuda.synchronize(self.device)
                self.capture = False
        return _Step(fn)

    def _prep_step(self, B: int, nb: int, R: int) -> _Step:
        H, W, _ = self.frame_dev.shape  # type: ignore[union-attr]
        key = (B, H, W, nb, R)
        if key not in self.prep:
            frame, boxes, out = self.frame_dev, self._boxes_for(B), self.crops[:B]
            blur = None
            if nb:
                blur = self.blur_in.setdefault((B, nb, R), torch.zeros(nb, 4 + 2 * R + 1, device=self.device))
            mean, std, cc = self.mean, self.std, self.cc
            self.prep[key] = self._step(
                lambda: crop_people_static(frame, boxes[:, 0:3], blur, out, mean, std, cc), warmup=1)
        return self.prep[key]

    def _net_step(self, B: int) -> _Step:
        if B not in self.net:
            crops, boxes = self.crops[:B], self._boxes_for(B)
            network = self.model
            if self.compiled and (not self.compile_batches or B in self.compile_batches):
                from lart_stream.realtime.compiled import timed_first_call

                network = self.network  # compiled here, timed (cold, or warm from the disk cache)
                self.compile_log.append(
                    timed_first_call(lambda: self._network_post(network, crops, boxes), f"batch {B}")[1])
            self.net[B] = self._step(lambda: self._network_post(network, crops, boxes), warmup=3)
        return self.net[B]

    def _network_post(self, network: Callable[[torch.Tensor], HMR2Output], crops: torch.Tensor,
                      boxes: torch.Tensor) -> torch.Tensor:
        """crops (B, 3, 256, 192), boxes (B, 5) -> packed (B, D) float32: everything People needs."""
        with self.autocast(cache=False):
            out = network(crops)
        return self.post_pack(out, boxes)

    def post_pack(self, out: HMR2Output, boxes: torch.Tensor) -> torch.Tensor:
        """Post-processing of network outputs into the packed (B, D) rows (also timed alone by the benchmark)."""
        B = boxes.shape[0]
        joints_fn = None
        if self.smpl is not None:
            joints_fn = lambda go, bp, be: smpl_joints_static(self.smpl, self.parents, go, bp, be)  # noqa: E731
        fields = people_fields(out, boxes[:, 0:2], boxes[:, 2], boxes[:, 3:5], self.mc, self.smpl, joints_fn)
        return torch.cat([fields[name].float().reshape(B, -1) for name, _ in self.layout], dim=1)

    def warmup(self, batch_sizes: Sequence[int] | None, frame_size: tuple[int, int] | None) -> None:
        sizes = sorted({self._bucket(min(max(b, 1), self.buckets[-1])) for b in (batch_sizes or self.buckets)},
                       reverse=True)  # largest first: the shared pool is sized once
        if frame_size is not None:
            self._frame_buffers(int(frame_size[1]), int(frame_size[0]))
        for B in sizes:
            self._net_step(B)
            if frame_size is not None:
                self._prep_step(B, 0, 0)
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # -- per frame ------------------------------------------------------------------------------

    def _mark(self, name: str) -> None:
        if not self.profiling:
            return
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._marks.append((name, ev))
        else:
            self._marks.append((name, time.perf_counter()))

    def parts(self) -> dict[str, float]:
        """ms between consecutive marks of the last call, summed per part name."""
        out: dict[str, float] = {}
        for (_, a), (name, b) in zip(self._marks, self._marks[1:]):
            ms = a.elapsed_time(b) if self.cuda else 1e3 * (b - a)
            out[name] = out.get(name, 0.0) + ms
        return out

    def _upload(self, image: np.ndarray, rows: tuple[int, int]) -> None:
        """Frame rows [lo, hi) -> staging buffer -> device buffer. Rows outside are never read by
        the crops (weights there are zero), so they may hold an older frame."""
        upload_rows(image, rows, self.frame_host, self.frame_dev)  # type: ignore[arg-type]

    def rows_of_crops(self, crops: torch.Tensor, center: np.ndarray, side: np.ndarray,
                      image_size: np.ndarray) -> dict[str, np.ndarray]:
        """Pre-cut crops (n, 3, 256, 192) of any frames (center (n, 2), side (n,), image_size (n, 2) per
        crop) -> People's 3D fields (numpy): the network graphs of the buckets, in chunks of max_batch."""
        n, mb = crops.shape[0], self.buckets[-1]
        if self.host_out.shape[0] < n:
            self.host_out = self._host(torch.zeros(n, self.width, dtype=torch.float32))
        boxes = np.concatenate([center, side[:, None], image_size], axis=1).astype(np.float32)  # (n, 5)
        for s in range(0, n, mb):
            e = min(s + mb, n)
            B = self._bucket(e - s)
            rows = torch.zeros(B, self.BOX)
            rows[:, 2] = 1.0  # padding rows: a finite 1-px box in a 1x1 frame
            rows[:, 3:5] = 1.0
            rows[:e - s] = torch.from_numpy(boxes[s:e])
            self._boxes_for(B).copy_(rows)
            self.crops[:e - s].copy_(crops[s:e])
            packed = self._net_step(B)()
            self.host_out[s:e].copy_(packed[:e - s], non_blocking=True)
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        return self._unpack(n)

    def many(self, frames: Sequence[Frame], detections: Sequence[Detections],
             device_images: Sequence[torch.Tensor] | None = None) -> list[People]:
        """HMRLifter.lift_many on this path: per frame the box geometry (numpy), its rows up (a buffer
        per batch position; none with ``device_images``) and its crops cut eagerly into the crop buffer
        at its offset; every box row and blur table up in one copy; then per chunk of max_batch one
        network graph and one copy back."""
        n = sum(len(d) for d in detections)
        if n == 0:
            return [self(f, d) for f, d in zip(frames, detections)]
        self._marks = []
        self._mark("start")
        mb = self.buckets[-1]
        crops = self.crops if n <= mb else self._many_crops(n)
        geometry, need = {}, n * self.BOX  # batch position -> the crop geometry of its people
        for k, det in enumerate(detections):
            if len(det):
                geometry[k] = center, side, sigma, blurred, R = self._crop_geometry(det.xyxy)
                need += len(blurred) * (4 + 2 * R + 1)
        if self.host_in.numel() < need:
            self.host_in = self._host(torch.zeros(need, dtype=torch.float32))
        if self.host_out.shape[0] < n:
            self.host_out = self._host(torch.zeros(n, self.width, dtype=torch.float32))
        host = self.host_in.numpy()
        # box rows of every person first (contiguous: the network's rows), then the blur tables
        boxes_np = host[:n * self.BOX].reshape(n, self.BOX)
        blur_at, o, cuts = n * self.BOX, 0, []
        for k, (center, side, sigma, blurred, R) in geometry.items():
            b, (W, H) = len(center), frames[k].size
            boxes_np[o:o + b, 0:2], boxes_np[o:o + b, 2], boxes_np[o:o + b, 3], boxes_np[o:o + b, 4] = center, side, W, H
            blur = None
            if len(blurred):
                cols = 4 + 2 * R + 1
                tab = host[blur_at:blur_at + len(blurred) * cols].reshape(len(blurred), cols)
                tab[:, 0], tab[:, 1:3], tab[:, 3] = blurred, center[blurred], side[blurred]
                tab[:, 4:] = blur_rows(sigma[blurred], R)
                blur = (blur_at, len(blurred), cols)
                blur_at += len(blurred) * cols
            cuts.append((k, o, b, blur, R))
            o += b
        dev_in = self._many_in(blur_at)
        dev_in.copy_(self.host_in[:blur_at], non_blocking=True)  # one copy up for every box and blur row
        boxes_dev = dev_in[:n * self.BOX].view(n, self.BOX)
        self._mark("boxes")
        for k, o, b, blur, R in cuts:
            frame = frames[k]
            W, H = frame.size
            center, side = geometry[k][:2]
            if device_images is not None:
                dev_k = device_images[k]
            else:
                host_k, dev_k = self._position_buffers(k, H, W)
                upload_rows(frame.image, _rows_read(center, side, R, H), host_k, dev_k)
            self._mark("upload")
            tab = None if blur is None else dev_in[blur[0]:blur[0] + blur[1] * blur[2]].view(blur[1], blur[2])
            crop_people_static(dev_k, boxes_dev[o:o + b, 0:3], tab, crops[o:o + b], self.mean, self.std, self.cc)
            self._mark("crops")
        for s in range(0, n, mb):
            e = min(s + mb, n)
            B = self._bucket(e - s)
            box_rows = self._boxes_for(B)
            box_rows[:e - s].copy_(boxes_dev[s:e])
            if B > e - s:  # padding rows: a finite 1-px box in a 1x1 frame
                box_rows[e - s:].copy_(self.pad_box)  # a finite 1-px box in a 1x1 frame
            if crops is not self.crops:
                self.crops[:e - s].copy_(crops[s:e])
            packed = self._net_step(B)()
            self._mark("network+post")
            self.host_out[s:e].copy_(packed[:e - s], non_blocking=True)
            self._mark("d2h")
        arrays = self._wait_and_unpack(n)
        people, o = [], 0
        for frame, det in zip(frames, detections):
            rows = slice(o, o + len(det))
            o += len(det)
            people.append(People(det.xyxy, det.confidence, image_size=frame.size, **{k: v[rows] for k, v in arrays.items()}))
        return people

    def _many_crops(self, n: int) -> torch.Tensor:
        """A crop buffer for more than max_batch people (lift_many's chunks copy out of it)."""
        if self.big_crops is None or self.big_crops.shape[0] < n:
            self.big_crops = torch.zeros(_pow2_at_least(n), *self.crops.shape[1:], device=self.device)
        return self.big_crops

    def _many_in(self, numel: int) -> torch.Tensor:
        """lift_many's device twin of host_in: box rows and blur tables of a batch, in one copy."""
        if self.many_in is None or self.many_in.numel() < numel:
            self.many_in = torch.zeros(max(numel, 1024), device=self.device)
        return self.many_in[:numel]

    def _position_buffers(self, k: int, H: int, W: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(pinned staging or None, device (H, W, 3) uint8) of batch position k: rows outside those
        the crops read hold an older frame, never read."""
        buf = self.positions.get(k)
        if buf is None or tuple(buf[1].shape) != (H, W, 3):
            buf = self.positions[k] = (self._host(torch.zeros((H, W, 3), dtype=torch.uint8)) if self.cuda else None,
                                       torch.zeros((H, W, 3), dtype=torch.uint8, device=self.device))
        return buf

    def _crop_geometry(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Boxes -> (center, side) as crop_people computes them, the blur sigmas, the blurred people and
        their radius bucket R."""
        center, side = box_center_size(xyxy, self.cc.aspect)
        sigma = blur_sigma(side, self.cc)
        blurred = np.flatnonzero(sigma > 0)
        R = radius_bucket(int(blur_radius(sigma[blurred]).max())) if len(blurred) else 0
        return center, side, sigma, blurred, R

    def _wait_and_unpack(self, n: int) -> dict[str, np.ndarray]:
        """The call's one device sync (its wall time in ``sync_ms``), then the first n packed rows."""
        self.sync_ms = 0.0
        if self.cuda:
            t = time.perf_counter()
            torch.cuda.current_stream(self.device).synchronize()
            self.sync_ms = (time.perf_counter() - t) * 1e3
        return self._unpack(n)

    def _unpack(self, n: int) -> dict[str, np.ndarray]:
        flat = self.host_out.numpy()[:n]
        arrays, c = {}, 0
        for name, shape in self.layout:
            w = math.prod(shape)
            arrays[name] = flat[:, c:c + w].reshape(n, *shape).copy()  # the staging buffer is reused
            c += w
        return arrays

    def __call__(self, frame: Frame, detections: Detections) -> People:
        W, H = frame.size
        n = len(detections)
        self.sync_ms = 0.0
        if n == 0:  # nothing to run: no upload, no graph
            z = {name: np.zeros((0, *shape), np.float32) for name, shape in self.layout}
            return People(detections.xyxy, detections.confidence, image_size=(W, H), **z)
        self._marks = []
        self._mark("start")
        center, side, sigma, blurred, R = self._crop_geometry(detections.xyxy)
        kernels = blur_rows(sigma[blurred], R) if len(blurred) else None
        self._frame_buffers(H, W)
        self._upload(frame.image, _rows_read(center, side, R, H))
        # host rows for every chunk first (a non_blocking copy reads its pinned source later)
        mb = self.buckets[-1]
        chunks = [(s, min(s + mb, n)) for s in range(0, n, mb)]
        need = len(chunks) * mb * (self.BOX + 4 + 2 * R + 1)
        if self.host_in.numel() < need:
            self.host_in = self._host(torch.zeros(need, dtype=torch.float32))
        if self.host_out.shape[0] < n:
            self.host_out = self._host(torch.zeros(n, self.width, dtype=torch.float32))
        host = self.host_in.numpy()
        at, plan = 0, []
        for s, e in chunks:
            b = e - s
            B = self._bucket(b)
            rows = host[at:at + B * self.BOX].reshape(B, self.BOX)
            rows[:b, 0:2], rows[:b, 2] = center[s:e], side[s:e]
            rows[b:, 0:2], rows[b:, 2] = 0.0, 1.0
            rows[:, 3], rows[:, 4] = W, H
            box_at, at = at, at + B * self.BOX
            mine = np.flatnonzero((blurred >= s) & (blurred < e))
            nb = min(_pow2_at_least(len(mine)), B) if len(mine) else 0
            blur_at = at
            if nb:
                cols = 4 + 2 * R + 1
                tab = host[at:at + nb * cols].reshape(nb, cols)
                idx = blurred[mine]
                tab[:len(mine), 0] = idx - s
                tab[:len(mine), 1:3], tab[:len(mine), 3] = center[idx], side[idx]
                tab[:len(mine), 4:] = kernels[mine]  # type: ignore[index]
                tab[len(mine):] = tab[0]  # padding repeats a real person (same values written twice)
                at += nb * cols
            plan.append((s, e, B, nb, box_at, blur_at))
        for s, e, B, nb, box_at, blur_at in plan:
            self._boxes_for(B).copy_(self.host_in[box_at:box_at + B * self.BOX].view(B, self.BOX), non_blocking=True)
            if nb:
                dst = self.blur_in.get((B, nb, R))
                if dst is None:
                    dst = self.blur_in[(B, nb, R)] = torch.zeros(nb, 4 + 2 * R + 1, device=self.device)
                dst.copy_(self.host_in[blur_at:blur_at + dst.numel()].view_as(dst), non_blocking=True)
            self._mark("upload")
            self._prep_step(B, nb, R if nb else 0)()
            self._mark("crops")
            packed = self._net_step(B)()
            self._mark("network+post")
            self.host_out[s:e].copy_(packed[:e - s], non_blocking=True)  # the one device->host copy
            self._mark("d2h")
        return People(detections.xyxy, detections.confidence, image_size=(W, H), **self._wait_and_unpack(n))


UPLOAD_CHUNK = 2 << 20  # bytes of frame rows per staging memcpy + transfer


def upload_rows(image: np.ndarray, rows: tuple[int, int], host: torch.Tensor | None, dev: torch.Tensor) -> None:
    """Frame rows [lo, hi) -> (pinned ``host`` staging, CUDA) -> ``dev`` (H, W, 3) uint8. Rows outside
    are left as they are (the crops never read them)."""
    lo, hi = rows
    if hi <= lo:
        return
    if host is not None:
        staging = host.numpy()
        step = max(1, UPLOAD_CHUNK // max(1, staging.shape[1] * 3))
        for a in range(lo, hi, step):  # the memcpy of a chunk overlaps the transfer of the one before
            b = min(a + step, hi)
            np.copyto(staging[a:b], image[a:b])
            dev[a:b].copy_(host[a:b], non_blocking=True)
    else:
        dev[lo:hi].copy_(torch.from_numpy(np.ascontiguousarray(image[lo:hi])))


def _rows_read(center: np.ndarray, side: np.ndarray, radius: int, H: int) -> tuple[int, int]:
    """Frame rows [lo, hi) any crop can read: the boxes' vertical extent, the bilinear tap, the blur
    radius, and 2 rows for float rounding of the sampling positions."""
    top = float(np.min(center[:, 1] - side / 2))
    bottom = float(np.max(center[:, 1] + side / 2))
    if not (math.isfinite(top) and math.isfinite(bottom)):
        return 0, H
    lo = min(max(math.floor(top) - radius - 2, 0), H)
    hi = min(max(math.floor(bottom) + radius + 4, 0), H)
    return lo, hi


def _ranges(xs: Sequence[int]) -> str:
    """(1, 2, 3, 4, 8, 12) -> '1-4,8,12'."""
    parts, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        parts.append(f"{xs[i]}-{xs[j]}" if j > i + 1 else ",".join(str(x) for x in xs[i:j + 1]))
        i = j + 1
    return ",".join(parts)
