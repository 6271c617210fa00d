"""Person boxes -> HMR 2.0 input crops, for all people of a frame at once, in torch on any device.

Same result as 4D-Humans' ViTDetDataset (datasets/vitdet_dataset.py, datasets/utils.py), without
OpenCV or a per-person loop:

1. centre = box centre; side b = the box grown to aspect 192:256 (w:h), its longer side: max(h, 4/3 w).
2. If f = b / 512 > 1.1 (the crop downsamples by more than 2.2x), Gaussian-blur the image first with
   sigma = (f - 1) / 2 (skimage ``gaussian``: scipy kernel, radius int(4 sigma + 0.5), 'nearest' edges).
3. Affine warp of the b x b square around the centre to 256 x 256, bilinear, zero outside the frame
   (cv2.warpAffine, BORDER_CONSTANT). Without blur the reference warps uint8 to uint8: we round the same way.
4. Keep columns 32:-32 (256 x 192), BGR -> RGB, (x - 255 mean) / (255 std) with ImageNet mean/std.

The warp is one ``grid_sample`` over every person's sampling grid. Blurred people (large boxes) get
a native-resolution patch each, gathered and blurred as one batch with per-person kernels.

``crop_people_static`` is the same function with fixed shapes (CUDA-graph capturable): box parameters
are device tensors, the blur of a person is folded into the bilinear taps (one separable weight per
output row/column over 2R+2 source pixels, R a bucketed radius) and computed for every frame row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_MEAN = (0.485, 0.456, 0.406)  # RGB, times 255 below (MODEL.IMAGE_MEAN)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CropConfig:
    crop_size: int = 256  # MODEL.IMAGE_SIZE: the square the box is warped to
    crop_width: int = 192  # the backbone sees columns 32:-32 of that square
    aspect: tuple[float, float] = (192.0, 256.0)  # BBOX_SHAPE (w, h) the box is grown to
    antialias: bool = True  # reference blur for large boxes (PHALP's own crop has none)
    blur_threshold: float = 1.1  # blur when b / (2 * crop_size) exceeds this
    round_like_uint8: bool = True  # the reference's unblurred warp outputs uint8


def box_center_size(xyxy: np.ndarray, aspect: tuple[float, float] = (192.0, 256.0)) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) boxes -> centres (N, 2) and crop sides (N,), both float32, as ViTDetDataset computes them."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    center = (xyxy[:, 0:2] + xyxy[:, 2:4]) / 2.0
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    w_t, h_t = aspect
    # expand_to_aspect_ratio: grow the short side to the target aspect, then take the longer side.
    grow_h = h / np.maximum(w, 1e-12) < h_t / w_t
    side = np.where(grow_h, np.maximum(w * h_t / w_t, h), np.maximum(np.maximum(h * w_t / h_t, w), h))
    return center.astype(np.float32), side.astype(np.float32)


def blur_sigma(side: np.ndarray, cfg: CropConfig = CropConfig()) -> np.ndarray:
    """(N,) Gaussian sigma of the anti-alias blur, 0 where the reference does not blur."""
    f = np.asarray(side, np.float64) / cfg.crop_size / 2.0
    return np.where(cfg.antialias & (f > cfg.blur_threshold), (f - 1.0) / 2.0, 0.0)


def image_to_tensor(image_bgr: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 BGR frame -> (3, H, W) float32 RGB in [0, 255] on ``device`` (uint8 goes over the bus)."""
    t = torch.from_numpy(np.ascontiguousarray(image_bgr)).to(device, non_blocking=True)
    return t.permute(2, 0, 1).flip(0).float()


def _source_coords(center: torch.Tensor, side: torch.Tensor, cfg: CropConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Source-pixel coordinates each output pixel samples: x (N, 1, Wc), y (N, Hc, 1).

    warpAffine maps the box centre to (S/2, S/2) with scale S / b, so output pixel (u, v) reads
    source (cx + (u - S/2) b / S, cy + (v - S/2) b / S); columns start at (S - Wc) / 2.
    """
    S, Wc = cfg.crop_size, cfg.crop_width
    dev = center.device
    u = torch.arange((S - Wc) // 2, (S + Wc) // 2, device=dev, dtype=torch.float32) - S / 2  # (Wc,)
    v = torch.arange(0, S, device=dev, dtype=torch.float32) - S / 2  # (S,)
    scale = (side / S)[:, None, None]
    x = center[:, 0, None, None] + u[None, None, :] * scale  # (N, 1, Wc)
    y = center[:, 1, None, None] + v[None, :, None] * scale  # (N, S, 1)
    return x, y


def _normalise_grid(x: torch.Tensor, y: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel coordinates -> grid_sample's [-1, 1] (align_corners=True: -1 and 1 are pixel centres)."""
    gx = x * (2.0 / max(width - 1, 1)) - 1.0
    gy = y * (2.0 / max(height - 1, 1)) - 1.0
    gx, gy = torch.broadcast_tensors(gx, gy)
    return torch.stack([gx, gy], dim=-1)  # (N, Hc, Wc, 2)


def _gaussian_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    """(N, 2R+1) scipy.ndimage 1-D Gaussian kernels, each zero beyond its own radius int(4 sigma + 0.5)."""
    offs = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * offs[None] ** 2 / (sigma[:, None] ** 2))
    own = (4.0 * sigma + 0.5).astype(np.int64)
    k = np.where(np.abs(offs)[None] <= own[:, None], k, 0.0)
    return k / k.sum(axis=1, keepdims=True)


def _blurred_crops(image: torch.Tensor, center: np.ndarray, side: np.ndarray, sigma: np.ndarray,
                   cfg: CropConfig) -> torch.Tensor:
    """Crops of blurred people: blur a native-resolution patch around each box, then warp it."""
    _, H, W = image.shape
    dev = image.device
    n = len(side)
    R = int((4.0 * sigma + 0.5).astype(np.int64).max())  # scipy's truncate=4 radius (largest person)
    half_w = side * (cfg.crop_width / 2) / cfg.crop_size
    half_h = side / 2
    # Blurred region = every source pixel the bilinear taps touch; the patch adds R around it.
    x0 = np.floor(center[:, 0] - half_w).astype(np.int64) - 1
    y0 = np.floor(center[:, 1] - half_h).astype(np.int64) - 1
    pw = int((np.ceil(center[:, 0] + half_w).astype(np.int64) + 2 - x0).max())
    ph = int((np.ceil(center[:, 1] + half_h).astype(np.int64) + 2 - y0).max())
    xs = torch.as_tensor(x0, device=dev)[:, None] + torch.arange(-R, pw + R, device=dev)[None]  # (n, pw+2R)
    ys = torch.as_tensor(y0, device=dev)[:, None] + torch.arange(-R, ph + R, device=dev)[None]  # (n, ph+2R)
    # Clamped gather = scipy's 'nearest' edge mode for the blur.
    patch = image[:, ys.clamp(0, H - 1)[:, :, None], xs.clamp(0, W - 1)[:, None, :]]  # (3, n, ph+2R, pw+2R)
    patch = patch.transpose(0, 1)  # (n, 3, ph+2R, pw+2R)
    k = torch.as_tensor(_gaussian_kernels(sigma, R), device=dev, dtype=torch.float32)[:, :, None, None, None]
    # Separable blur as 2R+1 shifted, weighted slices per axis (each person its own kernel).
    patch = sum(k[:, i] * patch[:, :, i:i + ph, :] for i in range(2 * R + 1))  # (n, 3, ph, pw+2R)
    patch = sum(k[:, i] * patch[:, :, :, i:i + pw] for i in range(2 * R + 1))  # (n, 3, ph, pw)
    # The blurred frame ends at the frame edge: outside it the warp reads zeros (BORDER_CONSTANT).
    xs, ys = xs[:, R:R + pw], ys[:, R:R + ph]
    inside = ((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]  # (n, ph, pw)
    patch = patch * inside[:, None].to(patch.dtype)
    x, y = _source_coords(torch.as_tensor(center, device=dev), torch.as_tensor(side, device=dev), cfg)
    x = x - torch.as_tensor(x0, device=dev, dtype=torch.float32)[:, None, None]
    y = y - torch.as_tensor(y0, device=dev, dtype=torch.float32)[:, None, None]
    return F.grid_sample(patch, _normalise_grid(x, y, pw, ph), mode="bilinear", padding_mode="zeros",
                         align_corners=True)  # (n, 3, S, Wc)


def crop_people(image: torch.Tensor, xyxy: np.ndarray, cfg: CropConfig = CropConfig()
                ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """All people of a frame -> (crops (N, 3, 256, 192) normalised RGB, centres (N, 2), sides (N,)).

    image: (3, H, W) float RGB in [0, 255] from ``image_to_tensor``, on the model's device.
    """
    _, H, W = image.shape
    dev = image.device
    center, side = box_center_size(xyxy, cfg.aspect)
    n = len(side)
    out = torch.empty(n, 3, cfg.crop_size, cfg.crop_width, device=dev, dtype=torch.float32)
    sigma = blur_sigma(side, cfg)
    sharp = np.flatnonzero(sigma == 0)
    if len(sharp):
        x, y = _source_coords(torch.as_tensor(center[sharp], device=dev), torch.as_tensor(side[sharp], device=dev), cfg)
        grid = _normalise_grid(x, y, W, H)  # (m, S, Wc, 2)
        m = len(sharp)
        # One grid_sample for everyone: stack the m grids along the output's rows.
        g = grid.reshape(1, m * cfg.crop_size, cfg.crop_width, 2)
        crops = F.grid_sample(image[None], g, mode="bilinear", padding_mode="zeros", align_corners=True)
        crops = crops.reshape(3, m, cfg.crop_size, cfg.crop_width).permute(1, 0, 2, 3)
        if cfg.round_like_uint8:
            crops = torch.floor(crops + 0.5)  # cv2's fixed-point rounding (half up) to uint8
        out[torch.as_tensor(sharp, device=dev)] = crops
    blurred = np.flatnonzero(sigma > 0)
    if len(blurred):
        out[torch.as_tensor(blurred, device=dev)] = _blurred_crops(image, center[blurred], side[blurred],
                                                                   sigma[blurred], cfg)
    mean = torch.tensor(IMAGE_MEAN, device=dev)[None, :, None, None] * 255.0
    std = torch.tensor(IMAGE_STD, device=dev)[None, :, None, None] * 255.0
    return (out - mean) / std, center, side


# ----------------------------------------------------------------------------------------------
# Fixed-shape twin of crop_people: every shape depends only on (B, H, W, nb, R), never on the values,
# so it can be captured once per such key and replayed with new boxes (realtime/lifting.py).


def normalisation(device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) (1, 3, 1, 1) x 255, computed as crop_people computes them (made before any capture:
    a host->device copy cannot be captured)."""
    mean = torch.tensor(IMAGE_MEAN, device=device)[None, :, None, None] * 255.0
    std = torch.tensor(IMAGE_STD, device=device)[None, :, None, None] * 255.0
    return mean, std


def blur_radius(sigma: np.ndarray) -> np.ndarray:
    """(N,) scipy's truncate=4 kernel radius int(4 sigma + 0.5) per person."""
    return (4.0 * np.asarray(sigma, np.float64) + 0.5).astype(np.int64)


def radius_bucket(radius: int) -> int:
    """Kernel radius a fixed-shape blur is built for: the next power of two >= radius (at least 1)."""
    r = 1
    while r < radius:
        r *= 2
    return r


def blur_rows(sigma: np.ndarray, radius: int) -> np.ndarray:
    """(N, 2 radius + 1) float32 per-person kernels of the reference blur, zero-padded to ``radius``."""
    return _gaussian_kernels(np.asarray(sigma, np.float64), radius).astype(np.float32)


def _blur_taps(pos: torch.Tensor, kernel: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear sampling of a blurred signal as one weighted sum over K = 2R+2 source pixels.

    pos (n, L) source coordinates, kernel (n, 2R+1), size = source length. Returns weights (n, L, K)
    and clamped source indices (n, L, K): tap t in {0, 1} of pixel floor(pos) + t reads the blurred
    value sum_a k[a] src[clamp(floor(pos) + t + a)] ('nearest' edges), and counts only inside the
    source (zero border of the warp).
    """
    R = (kernel.shape[1] - 1) // 2
    p0 = torch.floor(pos)
    f = pos - p0
    i0 = p0.long()
    in0 = ((i0 >= 0) & (i0 < size)).to(pos.dtype)
    in1 = ((i0 >= -1) & (i0 < size - 1)).to(pos.dtype)
    zero = kernel.new_zeros(kernel.shape[0], 1)
    k0 = torch.cat([kernel, zero], 1)[:, None, :]  # tap floor(pos): offsets -R..R at slots 0..2R
    k1 = torch.cat([zero, kernel], 1)[:, None, :]  # tap floor(pos)+1: the same kernel one slot on
    w = ((1.0 - f) * in0)[..., None] * k0 + (f * in1)[..., None] * k1  # (n, L, K)
    offs = torch.arange(-R, R + 2, device=pos.device)
    return w, (i0[..., None] + offs).clamp(0, size - 1)


def _blurred_static(img: torch.Tensor, center: torch.Tensor, side: torch.Tensor, kernel: torch.Tensor,
                    cfg: CropConfig) -> torch.Tensor:
    """Blurred people's crops (n, 3, S, Wc), same channels as ``img`` (3, H, W), fixed shapes.

    Separable: first every frame row is blurred and resampled at the crop's columns (H x Wc per
    person: rows are not cut to the box, so the shape does not depend on it), then the crop's rows are
    taken from that. Equals _blurred_crops up to float summation order.
    """
    _, H, W = img.shape
    n = center.shape[0]
    x, y = _source_coords(center, side, cfg)  # (n, 1, Wc), (n, S, 1)
    wx, cols = _blur_taps(x[:, 0, :], kernel, W)  # (n, Wc, K)
    wy, rows = _blur_taps(y[:, :, 0], kernel, H)  # (n, S, K)
    across = (img[:, :, cols] * wx).sum(-1)  # (3, H, n, Wc): each frame row, blurred + sampled along x
    person = torch.arange(n, device=img.device)[:, None, None]
    down = across[:, rows, person, :]  # (3, n, S, K, Wc)
    return (down * wy[None, :, :, :, None]).sum(3).transpose(0, 1)  # (n, 3, S, Wc)


def crop_people_static(frame: torch.Tensor, boxes: torch.Tensor, blur: torch.Tensor | None, out: torch.Tensor,
                       mean: torch.Tensor, std: torch.Tensor, cfg: CropConfig = CropConfig()) -> torch.Tensor:
    """crop_people with fixed shapes, writing into ``out``; capturable in a CUDA graph.

    frame: (H, W, 3) uint8 BGR on the device (the uploaded frame buffer).
    boxes: (B, 3) float32 (centre x, centre y, side) from ``box_center_size``; rows past the real
        people are padding (any finite box) and give crops that are dropped.
    blur:  None, or (nb, 4 + 2R + 1) float32 rows (slot, centre x, centre y, side, kernel from
        ``blur_rows``) for the people the reference blurs; slot is the row in ``boxes``. Rows may
        repeat (padding to a bucket repeats a real one: same values written twice).
    out:   (B, 3, S, Wc) float32, receives the normalised RGB crops. mean, std from ``normalisation``.
    """
    H, W, _ = frame.shape
    B = boxes.shape[0]
    S, Wc = cfg.crop_size, cfg.crop_width
    img = frame.permute(2, 0, 1).float()  # (3, H, W) BGR; keeps the HWC layout (no transposing copy)
    x, y = _source_coords(boxes[:, 0:2], boxes[:, 2], cfg)
    grid = _normalise_grid(x, y, W, H).reshape(1, B * S, Wc, 2)  # the same grid crop_people builds
    crops = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    crops = crops.reshape(3, B, S, Wc).flip(0).permute(1, 0, 2, 3)  # (B, 3, S, Wc) RGB
    if cfg.round_like_uint8:
        crops = torch.floor(crops + 0.5)
    else:
        crops = crops.contiguous()
    if blur is not None:
        blurred = _blurred_static(img, blur[:, 1:3], blur[:, 3], blur[:, 4:], cfg).flip(1)  # BGR -> RGB
        crops.index_copy_(0, blur[:, 0].long(), blurred)
    return torch.div(crops - mean, std, out=out)
