"""Layers both reference checkpoints share (4D-Humans' and LART's transformers use the same
vit-pytorch layout), so their parameter names stay identical."""

from __future__ import annotations

import torch
from torch import nn


class FeedForward(nn.Module):
    """Linear-GELU-Linear; indices 0 and 3 are the checkpoint's Linear layers (1 is GELU, 2 was dropout)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
