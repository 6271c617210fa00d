"""Appearance stage: MViTv2 + AVA RoI head (models/mvit.py) on a shared clip -> per-track features.

    Frame, Tracks, People -> AppearanceStep (tracks, people and AppearanceFeatures of frame t - N)

What LART's demo feeds as "appearance" (brjathu/LART ``add_slowfast_features``, see
shared/reference/appearance_backbone.md §1 and §7), made live:

- Preprocessing, exactly as the demo: centre crop to aspect <= 1.2 (>= 0.8) with the demo's integer
  offset ``l = int((w - 1.2 h) // 2)``, slice ``[:, l:-l]``; short side -> ``crop_size`` with
  cv2.INTER_LINEAR on the uint8 frame (long side ``floor(long / short * size)``); BGR -> RGB; /255;
  ``(x - mean) / std`` in float32. Boxes: x, y, w, h truncated to int32 before the corners (the
  demo's cast), shifted by the crop offset, then multiplied by ``new_long / long`` for x AND y
  (SlowFast's ``scale_boxes`` scales by the width factor in both axes for a landscape frame).
  Each frame is prepared once into a ring of the last ``num_frames * sampling_rate + 1`` frames on
  the stage's device. The resize runs on the host with cv2 and the uint8 result is uploaded: torch's
  bilinear interpolation rounds differently from cv2's fixed-point uint8 path (off by one grey level
  at many pixels), and the resized uint8 frame is ~6x smaller to upload than the full one. BGR->RGB,
  /255 and mean/std run on the device as one lookup in a 3 x 256 table computed on the CPU with the
  reference's float32 operations: bit-equal to the reference on any device (CUDA's division by a
  scalar is a multiplication by its reciprocal, one bit off at some levels: measured on an H200).
- Keyframe passes every ``every`` frames (K, default 6 as the demo): ONE backbone pass over the clip
  of the last S+1 frames (S = num_frames * sampling_rate), sampled with
  ``torch.linspace(0, S, num_frames).long()`` as SlowFast's ``process_cv2_inputs``, clamped at the
  stream start (the first frame repeats), shared by every track detected at the keyframe: one
  RoIAlign over all their boxes. The demo runs one pass per track and clamps at the track's ends.
- Causal by default: the keyframe is the newest frame (clip ends there). ``lookahead`` N: the
  keyframe is frame t - N, so the clip reaches N frames past it; N = S // 2 is the demo's centred
  clip. Everything downstream then runs N frames late (the stage hands the action stage frame t - N):
  N / fps seconds of latency.
- A track's feature is held until its next pass (the demo copies it to the frames of its segment);
  ``age`` counts the frames since its keyframe. A track born after the last pass has NO feature
  (``valid`` False) until the next one. A track not detected at a keyframe keeps its older feature.
- Threads: on CUDA (``threaded`` auto) frame preparation and passes run in a worker thread on its own
  CUDA stream at the lowest priority, so a keyframe pass does not stall the per-frame path, which
  only queues work and reads the latest finished features (their age says how old). The lowest
  priority (0) is also the default stream's: only a per-frame path on a higher-priority stream is
  scheduled ahead of a pass's kernels (benchmarks/device/appearance_stage.py measures both). On the
  H200, MViTv2-L at 312x374 (bf16): a 75 ms pass raised the per-frame p99 of a stand-in workload from
  1.7 ms to 12 ms threaded, 77 ms inline. A pass still
  waiting when a newer one is queued is skipped (the worker fell behind). ``threaded`` off (the CPU
  default) runs everything inline: deterministic.

Frames are read, never modified; the worker may read a frame's image after ``update`` returned.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from lart_stream.realtime.records import AppearanceFeatures, AppearanceStep, Frame, People, Tracks

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CROP_MAX_ASPECT = 1.2  # the demo's th_1: wider frames are centre-cropped to this width / height
CROP_MIN_ASPECT = 0.8  # th_2: taller frames are centre-cropped to this


@dataclass(frozen=True)
class AppearanceStageConfig:
    checkpoint: str | None = None  # mvit.pyth (PySlowFast); None = tiny random MViT (announced)
    config: str | None = None  # mvit.yaml; None = the checkpoint's embedded cfg
    every: int = 6  # K: a keyframe pass every K frames
    lookahead: int = 0  # N: keyframe N frames behind the newest frame (<= S // 2); output N frames late
    device: str = "cpu"
    threaded: str = "auto"  # auto (on with CUDA) | on | off: worker thread (+ own CUDA stream) or inline
    dtype: str = "float32"  # float32 | bfloat16 | float16
    # auto (on with CUDA) | on | off: the backbone pass replays a CUDA graph captured per clip shape
    # (one launch instead of ~1500: the worker's Python holds the GIL far less); the RoI head stays eager
    graphs: str = "auto"
    seed: int = 0  # random-weight initialisation

    def __post_init__(self) -> None:
        checks = [(self.every >= 1, f"every must be >= 1, got {self.every}"),
                  (self.lookahead >= 0, f"lookahead must be >= 0, got {self.lookahead}"),
                  (self.threaded in ("auto", "on", "off"), f"threaded must be auto|on|off, got {self.threaded!r}"),
                  (self.graphs in ("auto", "on", "off"), f"graphs must be auto|on|off, got {self.graphs!r}"),
                  (self.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}"),
                  (self.config is None or self.checkpoint is not None, "a config file needs a checkpoint")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"AppearanceStageConfig: {msg}")


# ----------------------------------------------------------------------------- preprocessing (pure)


@dataclass(frozen=True)
class ClipGeometry:
    """How frames of one size become clip frames: crop ``[y0:y0+height, x0:x0+width]``, then resize to
    ``size`` (w, h); ``box_scale`` multiplies box coordinates (None: no resize)."""

    x0: int
    y0: int
    width: int
    height: int
    size: tuple[int, int]
    box_scale: float | None


def clip_geometry(width: int, height: int, crop_size: int) -> ClipGeometry:
    """The demo's centre crop (LART wrapper_pyslowfast, ``center_crop=True``) and SlowFast's
    short-side ``scale``/``scale_boxes`` for a ``width`` x ``height`` frame."""
    x0 = y0 = 0
    w, h = width, height
    if w / h > CROP_MAX_ASPECT and w > h:
        left = int((w - h * CROP_MAX_ASPECT) // 2)
        if left > 0:  # the demo's slice [:, 0:-0] would be empty: such a frame stays uncropped here
            x0, w = left, w - 2 * left
    elif w / h < CROP_MIN_ASPECT and w < h:
        top = int((h - w / CROP_MIN_ASPECT) // 2)
        if top > 0:
            y0, h = top, h - 2 * top
    if (w <= h and w == crop_size) or (h <= w and h == crop_size):
        return ClipGeometry(x0, y0, w, h, (w, h), None)
    if w < h:
        new_w, new_h = crop_size, int(math.floor((float(h) / w) * crop_size))
        scale = float(new_h) / h
    else:
        new_w, new_h = int(math.floor((float(w) / h) * crop_size)), crop_size
        scale = float(new_w) / w  # applied to y as well: SlowFast's scale_boxes
    return ClipGeometry(x0, y0, w, h, (new_w, new_h), scale)


def crop_resize(image: np.ndarray, geom: ClipGeometry) -> np.ndarray:
    """(H, W, 3) uint8 frame -> the cropped, resized uint8 clip frame (channel order kept: cv2's
    INTER_LINEAR treats channels independently, so resizing before BGR->RGB gives the same pixels)."""
    crop = image[geom.y0:geom.y0 + geom.height, geom.x0:geom.x0 + geom.width]
    if geom.box_scale is None:
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, geom.size, interpolation=cv2.INTER_LINEAR)


def normalise(frame_bgr: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(h, w, 3) uint8 BGR -> (3, h, w) float32 RGB, (x / 255 - mean) / std as SlowFast computes it
    (on the CPU: CUDA divides by a Python scalar as a multiplication by its reciprocal, which differs
    in the last bit; the device path uses ``level_table`` instead)."""
    x = frame_bgr.flip(-1).permute(2, 0, 1).float() / 255
    return (x - mean[:, None, None]) / std[:, None, None]


def level_table(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(3, 256) float32: the normalised value of every uint8 level per RGB channel, computed on the
    CPU with the reference's operations. A lookup gives the reference's values bit for bit on any
    device (a uint8 frame has only 256 levels per channel)."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 256, 1).expand(1, 256, 3)  # as a 1 x 256 BGR image
    return normalise(levels, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))[:, 0]


def normalise_by_table(frame_bgr: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(h, w, 3) uint8 BGR -> (3, h, w) float32 RGB through ``level_table`` (on the table's device)."""
    h, w, _ = frame_bgr.shape
    idx = frame_bgr.flip(-1).permute(2, 0, 1).reshape(3, h * w).long()
    return table.gather(1, idx).view(3, h, w)


def clip_boxes(xyxy: np.ndarray, geom: ClipGeometry) -> np.ndarray:
    """(n, 4) full-frame x1, y1, x2, y2 -> (n, 4) float32 boxes in clip pixels, as the demo: x, y, w, h
    truncated to int32, corners, minus the crop offset, times the resize factor in float32."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    xy = xyxy[:, :2].astype(np.int32)
    wh = (xyxy[:, 2:] - xyxy[:, :2]).astype(np.int32)
    corners = np.concatenate([xy, xy + wh], axis=1)
    corners -= np.array([geom.x0, geom.y0, geom.x0, geom.y0], np.int32)
    boxes = torch.from_numpy(corners).float()
    if geom.box_scale is not None:
        boxes *= geom.box_scale  # float32 tensor times a Python float, as scale_boxes does
    return boxes.numpy()


def clip_steps(step: int, num_frames: int, sampling_rate: int, first: int = 0) -> np.ndarray:
    """Frame steps of the clip ending at ``step``: ``num_frames`` picked from the S+1 frames
    [step - S, step] by torch.linspace(0, S, num_frames).long(), clamped to >= ``first``."""
    span = num_frames * sampling_rate
    pick = torch.linspace(0, span, num_frames).long().numpy()
    return np.maximum(step - span + pick, first)


def keyframe_at(step: int, every: int, lookahead: int) -> int | None:
    """The keyframe whose pass runs at ``step`` (every ``every`` frames, ``lookahead`` behind), or None."""
    c = step - lookahead
    return c if c >= 0 and c % every == 0 else None


# ----------------------------------------------------------------------------- device work


class _ClipRing:
    """The last S+1 prepared frames on the device and the backbone pass over them. Used from one
    thread only (the worker's, or the caller's when inline)."""

    # The graph class for backbone captures, called as realtime.backends._Graph: None = that CUDA-graph
    # capture. Tests set an uncaptured stand-in, which runs the graph path on the CPU.
    graph_cls: Any = None

    def __init__(self, model: torch.nn.Module, mcfg: Any, device: torch.device, dtype: torch.dtype,
                 graphs: bool = False):
        self.model, self.device, self.dtype = model, device, dtype
        # the model's backbone / head split (models/mvit.py) is what a graph captures
        self.graphs = graphs and hasattr(model, "backbone") and hasattr(model, "head")
        self._captured: dict[tuple[int, ...], Any] = {}  # clip shape -> graph
        self.slots = mcfg.num_frames * mcfg.sampling_rate + 1
        self.table = level_table(mcfg.mean, mcfg.std).to(device)
        self.frames: torch.Tensor | None = None  # (slots, 3, h, w) float32

    def prepare(self, step: int, image: np.ndarray, geom: ClipGeometry) -> None:
        small = crop_resize(image, geom)
        h, w = small.shape[:2]
        if self.frames is None or self.frames.shape[2:] != (h, w):
            self.frames = torch.zeros(self.slots, 3, h, w, dtype=torch.float32, device=self.device)
        self.frames[step % self.slots] = normalise_by_table(torch.from_numpy(small).to(self.device), self.table)

    def features(self, steps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """One pass over the frames at ``steps`` with RoIs ``boxes`` (n, 4) -> (n, D) float32."""
        assert self.frames is not None, "a pass before any frame"
        slots = torch.from_numpy(steps % self.slots).to(self.device)
        clip = self.frames.index_select(0, slots).permute(1, 0, 2, 3).unsqueeze(0).to(self.dtype)
        b = torch.from_numpy(np.ascontiguousarray(boxes, np.float32))
        # float32 boxes whatever the model's dtype (bfloat16 would round x = 300 to a 2 px grid)
        rois = torch.cat([torch.zeros(len(b), 1), b], dim=1).to(self.device)
        if self.graphs:
            graph = self._captured.get(tuple(clip.shape))
            if graph is None:
                graph = self._captured[tuple(clip.shape)] = self._capture(clip)
            graph.static_in[0].copy_(clip)
            graph.launch()
            feats, _ = self.model.head(graph.static_out[0], rois)
        else:
            feats, _ = self.model(clip, rois)
        return feats.float().cpu().numpy()

    def _capture(self, clip: torch.Tensor) -> Any:
        from lart_stream.realtime.backends import UncapturedGraph, _Graph

        def backbone(x: torch.Tensor) -> tuple[torch.Tensor]:
            return (self.model.backbone(x),)

        static = [clip.clone()]
        try:
            return (self.graph_cls or _Graph)(backbone, static, [None])
        except RuntimeError as exc:
            log.warning("appearance: CUDA-graph capture of the %s clip failed (%s); running it eagerly",
                        "x".join(map(str, clip.shape)), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return UncapturedGraph(backbone, static, [None])


@dataclass
class _Prepare:
    step: int
    image: np.ndarray
    geom: ClipGeometry


@dataclass
class _Pass:
    step: int  # when it was queued
    keyframe: int
    track_id: np.ndarray
    steps: np.ndarray  # the clip's frame steps
    boxes: np.ndarray  # (n, 4) clip pixels


@dataclass
class _Result:
    keyframe: int
    track_id: np.ndarray
    feature: np.ndarray  # (n, D)


class _Worker:
    """Runs preparation and passes in queue order in its own thread (and CUDA stream)."""

    def __init__(self, ring: _ClipRing, on_result, device: torch.device):
        self.ring, self.on_result = ring, on_result
        self.queue: queue.Queue = queue.Queue()
        self.newest_pass = -1  # step of the newest pass queued (written by the caller's thread)
        self.skipped = 0
        self.closing = False  # set by close(): what is still queued is dropped
        self.error: BaseException | None = None
        # The lowest priority there is (0; more negative is higher): per-frame kernels go first.
        self.stream = torch.cuda.Stream(device, priority=0) if device.type == "cuda" else None
        if self.stream is not None:
            torch.cuda.synchronize(device)  # the weights' copies and init ran on another stream
        self.thread = threading.Thread(target=self._loop, name="appearance", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            while True:
                item = self.queue.get()
                try:
                    if item is None:
                        return
                    if self.closing:
                        continue
                    if isinstance(item, _Pass) and item.step < self.newest_pass:
                        self.skipped += 1  # behind: a newer pass is queued, this one would be stale
                        continue
                    _execute(self.ring, item, self.on_result)
                except BaseException as exc:  # handed to the caller's thread, which raises it
                    self.error = exc
                finally:
                    self.queue.task_done()

    def submit(self, item: _Prepare | _Pass) -> None:
        if isinstance(item, _Pass):
            self.newest_pass = item.step
        self.queue.put(item)

    def close(self) -> None:
        self.closing = True
        self.queue.put(None)
        self.thread.join(timeout=30.0)


def _execute(ring: _ClipRing, item: _Prepare | _Pass, on_result) -> None:
    if isinstance(item, _Prepare):
        ring.prepare(item.step, item.image, item.geom)
    else:
        on_result(_Result(item.keyframe, item.track_id, ring.features(item.steps, item.boxes)))


# ----------------------------------------------------------------------------- the stage


class AppearanceStage:
    """MViT appearance features for the live tracks (see the module docstring)."""

    name = "mvit"

    def __init__(self, model: torch.nn.Module, mcfg: Any, cfg: AppearanceStageConfig, random_weights: bool):
        self.model, self.mcfg, self.cfg, self.random_weights = model, mcfg, cfg, random_weights
        self.span = mcfg.num_frames * mcfg.sampling_rate  # S
        if cfg.lookahead > self.span // 2:
            raise ValueError(f"appearance lookahead {cfg.lookahead} > {self.span // 2} (half the clip: "
                             f"{mcfg.num_frames} frames x {mcfg.sampling_rate})")
        self.dim = int(mcfg.feature_dim)
        self.device = torch.device(cfg.device)
        threaded = cfg.threaded == "on" or (cfg.threaded == "auto" and self.device.type == "cuda")
        graphs = cfg.graphs == "on" or (cfg.graphs == "auto" and self.device.type == "cuda")
        self._ring = _ClipRing(model, mcfg, self.device, _DTYPES[cfg.dtype], graphs)
        self._results: list[_Result] = []
        self._lock = threading.Lock()
        self._worker = _Worker(self._ring, self._on_result, self.device) if threaded else None
        self._step = 0  # frames seen
        self._first = 0  # first step of the current frame size (clips are clamped there)
        self._size: tuple[int, int] | None = None
        self._geoms: dict[tuple[int, int], ClipGeometry] = {}
        self._delay: collections.deque = collections.deque()  # (step, frame index, tracks, people, geom)
        self._held: dict[int, tuple[np.ndarray, int]] = {}  # track id -> (feature, keyframe step)
        self.passes = 0

    @classmethod
    def from_config(cls, cfg: AppearanceStageConfig) -> "AppearanceStage":
        from lart_stream.models.mvit import MViT, MViTConfig, load_mvit

        if cfg.checkpoint:
            model, mcfg = load_mvit(cfg.checkpoint, cfg.config, device=cfg.device)
            random_weights = False
        else:
            mcfg = MViTConfig.tiny()
            model = MViT(mcfg).init_random_(cfg.seed)
            random_weights = True
            log.warning("=" * 72 + "\nMViT appearance: NO CHECKPOINT - RANDOM WEIGHTS (tiny size). Its features "
                        "are meaningless.\n" + "=" * 72)
        model = model.to(device=cfg.device, dtype=_DTYPES[cfg.dtype]).eval()
        return cls(model, mcfg, cfg, random_weights)

    @property
    def threaded(self) -> bool:
        return self._worker is not None

    def describe(self) -> str:
        m, c = self.mcfg, self.cfg
        timing = "causal" if not c.lookahead else f"lookahead {c.lookahead} frames"
        how = "worker thread" + (", own CUDA stream" if self.device.type == "cuda" else "") if self.threaded \
            else "inline"
        return (f"MViT {m.num_frames}x{m.sampling_rate} at {m.crop_size} ({self.dim}-d), a pass every {c.every} "
                f"frames, {timing} (torch {self.device}, {how}, {c.dtype})")

    def latency_note(self, fps: float) -> str | None:
        """What the lookahead costs, or None without one."""
        n = self.cfg.lookahead
        if not n:
            return None
        secs = f" = {n / fps:.2f} s at {fps:g} fps" if fps > 0 else ""
        return f"appearance lookahead: actions are published {n} frames late{secs}"

    def warmup(self) -> None:
        """One pass on a blank square clip before the stream (CUDA kernels loaded, memory pools grown),
        on the stream the passes will use. Changes no state."""
        size, dtype = self.mcfg.crop_size, _DTYPES[self.cfg.dtype]
        clip = torch.zeros(1, 3, self.mcfg.num_frames, size, size, device=self.device, dtype=dtype)
        rois = torch.tensor([[0.0, 0.0, 0.0, size / 2, size / 2]], device=self.device)
        stream = self._worker.stream if self._worker is not None else None
        with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
            self.model(clip, rois)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- per frame

    @torch.inference_mode()
    def update(self, frame: Frame, tracks: Tracks, people: People) -> AppearanceStep | None:
        """Queue this frame (and a keyframe pass when one is due); -> frame t - lookahead's tracks,
        people and appearance features, or None while the first ``lookahead`` frames come in."""
        if self._worker is not None and self._worker.error is not None:
            exc, self._worker.error = self._worker.error, None
            raise RuntimeError(f"appearance pass failed: {exc}") from exc
        t = self._step
        self._step += 1
        if frame.size != self._size:
            if self._size is not None:
                log.warning("appearance: frame size changed to %dx%d: the clip restarts", *frame.size)
            self._size, self._first = frame.size, t
        geom = self._geometry(frame.size)
        self._submit(_Prepare(t, frame.image, geom))
        self._delay.append((t, frame.index, tracks, people, geom))
        if len(self._delay) <= self.cfg.lookahead:
            return None
        c, index, tracks_c, people_c, geom_c = self._delay.popleft()
        if keyframe_at(t, self.cfg.every, self.cfg.lookahead) is not None and c >= self._first:
            det = tracks_c.time_since_update == 0
            if det.any():
                steps = clip_steps(t, self.mcfg.num_frames, self.mcfg.sampling_rate, self._first)
                self._submit(_Pass(t, c, tracks_c.track_id[det].copy(), steps, clip_boxes(tracks_c.xyxy[det], geom_c)))
                self.passes += 1
        return AppearanceStep(index, tracks_c, people_c, self._features(tracks_c, c, index))

    def _geometry(self, size: tuple[int, int]) -> ClipGeometry:
        geom = self._geoms.get(size)
        if geom is None:
            geom = self._geoms[size] = clip_geometry(size[0], size[1], self.mcfg.crop_size)
        return geom

    def _submit(self, item: _Prepare | _Pass) -> None:
        if self._worker is None:
            _execute(self._ring, item, self._on_result)
        else:
            self._worker.submit(item)

    def _on_result(self, result: _Result) -> None:
        with self._lock:
            self._results.append(result)

    def _features(self, tracks: Tracks, c: int, index: int) -> AppearanceFeatures:
        """Apply finished passes; the held feature of each track at step c."""
        with self._lock:
            results, self._results = self._results, []
        for r in results:
            for tid, feat in zip(r.track_id.tolist(), r.feature):
                self._held[tid] = (feat, r.keyframe)
        n = len(tracks)
        feature = np.zeros((n, self.dim), np.float32)
        age = np.full(n, -1, np.int32)
        held: dict[int, tuple[np.ndarray, int]] = {}
        for i, tid in enumerate(tracks.track_id.tolist()):
            h = self._held.get(tid)
            if h is not None:
                held[tid] = h
                feature[i], age[i] = h[0], c - h[1]
        self._held = held  # tracks that are gone are forgotten
        return AppearanceFeatures(tracks.track_id, feature, age >= 0, age, index, self.random_weights)

    def flush(self) -> None:
        """Wait until every queued frame and pass is done (tests; end of stream)."""
        if self._worker is not None:
            self._worker.queue.join()

    @property
    def skipped_passes(self) -> int:
        return 0 if self._worker is None else self._worker.skipped

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
