"""A stand-in with models/mvit.py's interface whose 'features' say what it was given: for each RoI,
channel 0 of pixel (0, 0) of every clip frame, then the RoI's box. The appearance stage's tests read
back which frames a pass sampled and which boxes it used."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StandInConfig:
    num_frames: int = 4
    sampling_rate: int = 3
    crop_size: int = 20
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # identity normalisation: pixel (0, 0) reads back as v / 255
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    num_classes: int = 80
    roi_resolution: int = 7
    spatial_scale_factor: int = 16
    aligned: bool = True

    @property
    def feature_dim(self) -> int:
        return self.num_frames + 4

    @classmethod
    def tiny(cls) -> "StandInConfig":
        return cls()


class StandInMViT(nn.Module):
    def __init__(self, config: StandInConfig, gate: threading.Event | None = None):
        super().__init__()
        self.config = config
        self.gate = gate  # when set: forward waits for it (a pass that takes long)
        self.entered = threading.Event()
        self.weight = nn.Parameter(torch.ones(()))  # something for .to() and the dtype
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def init_random_(self, seed: int = 0) -> "StandInMViT":
        return self

    def forward(self, clip: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=60), "test gate never opened"
        self.calls.append((clip.clone(), boxes.clone()))
        frames = clip[boxes[:, 0].long(), 0, :, 0, 0]  # (R, T)
        feats = torch.cat([frames, boxes[:, 1:]], dim=1) * self.weight
        return feats, torch.zeros(len(boxes), self.config.num_classes)


def decode_frames(feature, config: StandInConfig) -> list[int]:
    """The pixel values (= frame steps in the tests' clips) a stand-in feature says it saw."""
    return [int(round(float(v) * 255)) for v in feature[: config.num_frames]]


def as_module():
    """A module object standing in for lart_stream.models.mvit (for sys.modules)."""
    import types

    def load_mvit(path, config_path=None, device="cpu"):
        raise ValueError(f"stand-in: cannot load {path}")

    mod = types.ModuleType("lart_stream.models.mvit")
    mod.MViT, mod.MViTConfig, mod.load_mvit = StandInMViT, StandInConfig, load_mvit
    mod.MViTCheckpointError = ValueError
    return mod
