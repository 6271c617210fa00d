"""RoIAlign in plain torch, matching torchvision's compiled kernel (the op detectron2's ``ROIAlign``
and so PySlowFast's AVA head call), which does not load with the CPU torch used here.

Kernel semantics (torchvision csrc/ops/{cpu,cuda}/roi_align*): box corners are scaled by
``spatial_scale`` and, when ``aligned``, shifted by -0.5; each of the out x out bins averages a grid
of ``ceil(roi_size / out)`` x ... bilinear samples (``sampling_ratio`` <= 0: adaptive per RoI, so a
zero-size box has an empty grid and gives exactly 0). A sample more than one cell outside the map
(y < -1 or y > H, same for x) contributes 0; otherwise coordinates below 0 are clamped to 0 and
at or past the last row/column snap to it. Without ``aligned`` the RoI is at least 1 x 1 cell.

Bilinear weights factor into a row weight times a column weight, and the in-bin grid is the
product of a row grid and a column grid, so each RoI's output is ``Ay @ F @ Ax^T / count`` with
``Ay`` (out, H) the summed row weights of the bin's row samples (zero for invalid ones): two small
matmuls instead of a gather per sample, with the sample coordinates computed in float32 in the
kernel's order (the same bins, validity and clamping decisions), accumulated in float32.
"""

from __future__ import annotations

import torch


def _axis_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, out: int,
                  length: int) -> torch.Tensor:
    """(R, out, length) summed bilinear weights of each bin's samples along one axis.

    start, bin_size: (R,) float32; grid: (R,) int64 samples per bin (may be 0).
    """
    g = torch.clamp(grid.max(), min=1) if grid.numel() else torch.ones((), dtype=torch.int64)
    i = torch.arange(g, device=start.device).to(torch.float32)  # (G,) sample index within a bin
    p = torch.arange(out, device=start.device).to(torch.float32)  # (out,) bin index
    gf = grid.to(torch.float32).clamp(min=1.0)[:, None, None]
    # kernel order: start + p*bin + (i + .5)*bin / grid
    pos = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]) \
        + (i[None, None, :] + 0.5) * bin_size[:, None, None] / gf  # (R, out, G)
    valid = (i[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (pos <= float(length))
    clamped = pos.clamp(min=0.0, max=float(length - 1))
    low = torch.floor(clamped)
    frac = clamped - low
    cells = torch.arange(length, device=start.device).to(torch.float32)  # (L,)
    w = (cells == low[..., None]).to(torch.float32) * (1.0 - frac)[..., None] \
        + (cells == low[..., None] + 1.0).to(torch.float32) * frac[..., None]  # (R, out, G, L)
    return (w * valid[..., None].to(torch.float32)).sum(dim=2)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float,
              sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """features (B, C, H, W), boxes (R, 5) [batch_index, x1, y1, x2, y2] in input pixels
    -> (R, C, output_size, output_size) in features' dtype (computed in float32)."""
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"roi_align: boxes must be (R, 5) [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}")
    _, _, height, width = features.shape
    b = boxes.to(torch.float32)
    offset = 0.5 if aligned else 0.0
    scale = torch.tensor(spatial_scale, dtype=torch.float32)  # the kernel takes it as T (float)
    x1, y1 = b[:, 1] * scale - offset, b[:, 2] * scale - offset
    x2, y2 = b[:, 3] * scale - offset, b[:, 4] * scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # legacy mode forces malformed RoIs to 1 x 1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / output_size, roi_h / output_size
    if sampling_ratio > 0:
        grid_w = torch.full_like(bin_w, sampling_ratio, dtype=torch.int64)
        grid_h = torch.full_like(bin_h, sampling_ratio, dtype=torch.int64)
    else:  # ceil of a negative size is <= 0: an empty grid, output 0
        grid_w = torch.ceil(roi_w / output_size).clamp(min=0).to(torch.int64)
        grid_h = torch.ceil(roi_h / output_size).clamp(min=0).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(torch.float32)
    ay = _axis_weights(y1, bin_h, grid_h, output_size, height)  # (R, out, H)
    ax = _axis_weights(x1, bin_w, grid_w, output_size, width)  # (R, out, W)
    f = features.to(torch.float32)[b[:, 0].to(torch.int64)]  # (R, C, H, W)
    out = torch.matmul(torch.matmul(ay[:, None], f), ax[:, None].transpose(-1, -2))  # (R, C, out, out)
    return (out / count[:, None, None, None]).to(features.dtype)


__all__ = ["roi_align"]
