"""models/roi_align.py against a one-sample-at-a-time float64 port of torchvision's compiled kernel.

Bound: each output is a weighted mean of feature values (weights >= 0 summing to <= 1), computed
here as two float32 matmuls over the map's H and W; its rounding error is at most about
(H + W) float32 ulps of max|F| (generously: 4 (H + W) eps32 max|F|).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lart_stream.models.roi_align import roi_align
from mvit_reference import roi_align_loop

EPS32 = float(np.finfo(np.float32).eps)


def _fmap(B: int = 3, C: int = 4, H: int = 6, W: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed))


def _check(fmap: torch.Tensor, boxes: list[list[float]], out: int = 7, scale: float = 1 / 16, **kw) -> np.ndarray:
    b = torch.tensor(boxes, dtype=torch.float32)
    got = roi_align(fmap, b, out, scale, **kw).numpy()
    want = roi_align_loop(fmap.numpy(), b.numpy(), out, scale, **kw)
    H, W = fmap.shape[2:]
    bound = 4 * (H + W) * EPS32 * float(fmap.abs().max())
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)
    return want


def test_edge_case_boxes_match_the_kernel() -> None:
    """Map 6 x 9 cells at stride 16 = 96 x 144 px; boxes in image pixels."""
    f = _fmap()
    want = _check(f, [
        [0, 10.0, 12.0, 90.0, 70.0],       # inside
        [1, -40.0, 30.0, 60.0, 130.0],     # crossing the left and bottom borders
        [2, -300.0, -200.0, 500.0, 400.0],  # much larger than the image
        [0, 33.0, 41.0, 37.5, 44.0],       # sub-cell
        [1, 50.0, 50.0, 50.0, 50.0],       # zero size
        [2, 80.0, 60.0, 40.0, 20.0],       # negative size
        [0, -200.0, -200.0, -120.0, -100.0],  # entirely more than one cell outside
        [2, 130.0, 80.0, 200.0, 120.0],    # crossing the right and bottom borders
    ])
    assert np.all(want[4] == 0) and np.all(want[5] == 0)  # empty sampling grid: exactly 0
    assert np.all(want[6] == 0)  # every sample beyond -1 cell: zero, not the clamped edge value
    assert np.abs(want[2]).max() > 0 and np.abs(want[1]).max() > 0


def test_samples_within_one_cell_outside_take_the_edge_value() -> None:
    """A sub-cell box centred half a cell left of the map: its samples (x in [-1, 0)) clamp to
    column 0, so the output is the bilinear value at x = 0 (the Python fallback would differ)."""
    f = _fmap(1, 2, 4, 4, seed=3)
    # aligned: x = 16 * (px/16 - 0.5) ... pick px so every sample has x = -0.5 (y inside)
    want = _check(f, [[0, 0.0 - 0.01, 24.0, 0.0 + 0.01, 24.02]], out=1)
    y = 24.01 / 16 - 0.5
    yl = int(y)
    edge = (1 - (y - yl)) * f[0, :, yl, 0].double() + (y - yl) * f[0, :, yl + 1, 0].double()
    np.testing.assert_allclose(want[0, :, 0, 0], edge.numpy(), atol=1e-5)


@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 0), (False, 0), (True, 2), (False, 3)])
def test_random_boxes_several_images_non_square(aligned: bool, sampling_ratio: int) -> None:
    g = torch.Generator().manual_seed(7)
    f = _fmap(2, 5, 5, 8, seed=1)
    xy = torch.rand(12, 2, generator=g) * torch.tensor([180.0, 110.0]) - 30
    wh = torch.rand(12, 2, generator=g) * 120
    boxes = torch.cat([torch.randint(0, 2, (12, 1), generator=g).float(), xy, xy + wh], dim=1)
    _check(f, boxes.tolist(), out=3, scale=1 / 16, aligned=aligned, sampling_ratio=sampling_ratio)


def test_bf16_features_computed_in_float32_and_empty_box_list() -> None:
    f = _fmap(1, 3, 5, 5)
    b = torch.tensor([[0, 5.0, 5.0, 60.0, 70.0]])
    got = roi_align(f.bfloat16(), b, 7, 1 / 16)
    assert got.dtype == torch.bfloat16
    ref = roi_align(f.bfloat16().float(), b, 7, 1 / 16)
    torch.testing.assert_close(got.float(), ref, atol=0.0, rtol=2 ** -8)
    assert roi_align(f, torch.zeros(0, 5), 7, 1 / 16).shape == (0, 3, 7, 7)
    with pytest.raises(ValueError, match=r"\(R, 5\)"):
        roi_align(f, torch.zeros(3, 4), 7, 1 / 16)


@pytest.mark.parametrize("sampling_ratio", [0, 5])
def test_boxes_of_every_scale_take_every_sample(sampling_ratio: int) -> None:
    """Boxes from sub-cell to 6x the map (up to ~12 samples per bin side): the static candidate
    window of the implementation must never miss a sample."""
    g = torch.Generator().manual_seed(11)
    f = _fmap(1, 2, 6, 9, seed=4)
    n = 40
    scale = torch.exp(torch.rand(n, 1, generator=g) * 7 - 3.5)  # ~0.03x .. 33x a 16-px cell ... 6x map
    wh = scale * torch.tensor([[30.0, 20.0]]) * (0.5 + torch.rand(n, 2, generator=g))
    c = torch.rand(n, 2, generator=g) * torch.tensor([144.0, 96.0])
    boxes = torch.cat([torch.zeros(n, 1), c - wh / 2, c + wh / 2], dim=1)
    assert float(wh.max()) > 6 * 144
    _check(f, boxes.tolist(), out=7, scale=1 / 16, sampling_ratio=sampling_ratio)
