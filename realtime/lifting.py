"""Lifter stage: one frame's person boxes -> 3D people with HMR 2.0, in one batched call.

    Frame, Detections -> crops (torch, on the stage's device) -> HMR2 -> full-frame cameras -> People

Everything after the boxes stays on the device until one copy to numpy at the end. The network runs
through realtime/backends.py (``backend``): the torch module (on CUDA: CUDA graphs per batch
bucket), or the exported ``hmr2.onnx`` under onnxruntime / TensorRT when ``export_dir`` holds one.
Without a checkpoint the weights are random: ``random_weights`` is True and a WARNING says so; such
output is never a prediction.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from models.hmr2 import (HMR2, HMR2Config, HMR2Output, body_origin_location, cam_crop_to_full, check_state_dict,
                         config_for_state_dict, full_frame_focal, load_hmr2_with_smpl, pose_vector, project_to_frame,
                         read_checkpoint, split_state_dict)
from models.hmr2_crop import CropConfig, crop_people, image_to_tensor
from realtime.records import Detections, Frame, People

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Runner = Callable[[torch.Tensor], Sequence[torch.Tensor]]  # crops (B, 3, 256, 192) -> HMR2Output fields


@dataclass(frozen=True)
class HMRLifterConfig:
    checkpoint: str | None = None  # 4D-Humans Lightning checkpoint; None = random weights (loud warning)
    size: str = "tiny"  # "official" (ViT-H, a GPU for real time) or "tiny" (CPU default, random weights)
    device: str = "cpu"
    smpl_path: str | None = None  # SMPL_NEUTRAL.pkl: 3D joints and 2D keypoints
    smpl_joint_regressor: str | None = None  # SMPL_to_J19.pkl: the 19 extra joints (44 in all)
    smpl_from_checkpoint: bool = True  # without smpl_path, use the checkpoint's own smpl.* buffers
    max_batch: int = 16  # crops per network call; more people run in chunks
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 | bf16 | fp16
    cuda_graphs: bool = True  # torch backend on CUDA: replay a captured graph per batch bucket
    antialias: bool = True  # the reference's blur of large boxes before the crop
    backend: str = "auto"  # auto | torch | onnxruntime | tensorrt (realtime/backends.py)
    export_dir: str | None = None  # `lart-stream export --out DIR`: its hmr2.onnx for onnxruntime/TensorRT
    seed: int = 0  # random-weights init


class HMRLifter:
    """realtime.stages.Lifter: HMR 2.0 on all people of a frame at once.

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
        self.runner = runner
        self.backend_info = backend_info
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

    def warmup(self, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16)) -> None:
        """Run the network once per batch size (on CUDA this captures the graphs) before the stream starts."""
        shape = (3, self.model_cfg.image_height, self.model_cfg.image_width)
        for b in batch_sizes:
            self.run_crops(torch.zeros((b, *shape), device=self.device))

    @torch.no_grad()
    def __call__(self, frame: Frame, detections: Detections) -> People:
        W, H = frame.size
        mc = self.model_cfg
        image = image_to_tensor(frame.image, self.device)  # (3, H, W) RGB
        crops, center, side = crop_people(image, detections.xyxy, self.crop_cfg)  # (n, 3, 256, 192)
        out = self.run_crops(crops)
        n, dev = crops.shape[0], self.device
        image_size = torch.tensor([W, H], dtype=torch.float32, device=dev).expand(n, 2)
        focal = full_frame_focal(image_size, mc.focal_length, mc.crop_size)  # (n,) full-frame px
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
    from export.onnx_export import hmr2_io
    from realtime.backends import BackendUnavailable, resolve_exported

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
        from export.onnx_export import read_manifest

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
    from models.smpl import SMPL  # smplx only when 3D joints are wanted

    if cfg.smpl_path:
        smpl = SMPL.from_files(cfg.smpl_path, cfg.smpl_joint_regressor)
    else:
        if smpl_sd is None:  # an engine ran, the network was not built: read just the buffers (mmap)
            smpl_sd = split_state_dict(read_checkpoint(cfg.checkpoint))[1]  # type: ignore[arg-type]
        if not smpl_sd:
            return None
        smpl = SMPL.from_state_dict(smpl_sd)
    return smpl.to(cfg.device).eval()
