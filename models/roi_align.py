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
kernel's order (the same bins, validity and clamping decisions), accumulated in float32. All
shapes are static (see ``_axis_weights``): CUDA-graph capturable and exportable with a dynamic
number of boxes.
"""

from __future__ import annotations

import torch


WINDOW = 8  # candidate samples per (bin, row): covers the <= 5 samples a row's support (h-1, h+1] can hold


def _axis_weights(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, out: int,
                  length: int, dtype: torch.dtype, window: int = WINDOW) -> torch.Tensor:
    """(R, out, length) summed bilinear weights of each bin's samples along one axis.

    start, bin_size: (R,) float32; grid: (R,) int64 samples per bin (may be 0). Static shapes (no
    loop over a data-dependent sample count, so CUDA graphs and ONNX/TensorRT take it): a sample
    reaches row h only from (h-1, h+1] (clamped edges included), which holds at most 5 samples
    when the grid is adaptive (spacing bin/ceil(bin) >= 0.5 cell once there are 2 or more), so
    each (bin, row) sums ``window`` consecutive candidate samples around it; extra candidates add
    exact zeros. Sample positions use the kernel's float32 formula and order.
    """
    dev = start.device
    p = torch.arange(out, device=dev).to(torch.float32)
    rows = torch.arange(length, device=dev).to(torch.float32)
    gf = grid.to(torch.float32).clamp(min=1.0)
    base = start[:, None] + p[None, :] * bin_size[:, None]  # (R, out): start + p*bin
    step = bin_size / gf
    safe = torch.where(step > 0, step, torch.ones_like(step))
    x = (rows[None, None, :] - 1.0 - base[..., None]) / safe[:, None, None] - 0.5  # sample index at h-1
    first = torch.floor(x) - 1.0
    first = torch.minimum(first, (grid - window).clamp(min=0).to(torch.float32)[:, None, None]).clamp(min=0.0)
    i = first[..., None] + torch.arange(window, device=dev).to(torch.float32)  # (R, out, L, K)
    pos = base[..., None, None] + (i + 0.5) * bin_size[:, None, None, None] / gf[:, None, None, None]
    valid = (i < grid.to(torch.float32)[:, None, None, None]) & (pos >= -1.0) & (pos <= float(length))
    clamped = pos.clamp(min=0.0, max=float(length - 1)).to(dtype)  # weights in the accumulation dtype
    low = torch.floor(clamped)
    frac = clamped - low
    h = rows.to(dtype)[None, None, :, None]
    w = torch.where(low == h, 1.0 - frac, torch.zeros_like(frac)) + torch.where(low + 1.0 == h, frac, torch.zeros_like(frac))
    return (w * valid.to(dtype)).sum(dim=-1)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float,
              sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """features (B, C, H, W), boxes (R, 5) [batch_index, x1, y1, x2, y2] in input pixels
    -> (R, C, output_size, output_size) in features' dtype (accumulated in at least float32)."""
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
    acc = torch.promote_types(features.dtype, torch.float32)  # float64 stays float64 (tests)
    window = max(WINDOW, sampling_ratio + 2)  # a fixed grid can be denser than the adaptive one
    ay = _axis_weights(y1, bin_h, grid_h, output_size, height, acc, window)  # (R, out, H)
    ax = _axis_weights(x1, bin_w, grid_w, output_size, width, acc, window)  # (R, out, W)
    f = features.to(acc)[b[:, 0].to(torch.int64)]  # (R, C, H, W)
    out = torch.matmul(torch.matmul(ay[:, None], f), ax[:, None].transpose(-1, -2))  # (R, C, out, out)
    return (out / count.to(acc)[:, None, None, None]).to(features.dtype)


__all__ = ["roi_align"]
