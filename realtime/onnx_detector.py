"""A user's person detector given as an ONNX file (YOLOv8/YOLO11-style or already NMS'd).

Two output layouts are read:

- ``yolo``: ``[1, 4 + C, anchors]`` (Ultralytics YOLOv8/YOLO11 ``export(format="onnx")``):
  rows 0..3 are (cx, cy, w, h) in input pixels, rows 4.. are per-class scores already in [0, 1];
  no objectness. The transposed ``[1, anchors, 4 + C]`` is accepted too.
- ``nms``: ``[N, 6]`` or ``[1, N, 6]`` rows (x1, y1, x2, y2, score, class) in input pixels, as from
  an export with NMS inside the graph (``nms=True``). Zero-score padding rows are dropped.

Post-processing runs in our code (numpy + cv2.dnn.NMSBoxes), not in the graph: it works for any
user file, keeps the graph static-shaped (TensorRT profiles, CUDA-graph capture) and costs well
under a millisecond for the few hundred candidates left after the confidence filter. Steps:
letterbox to the input size (aspect kept, grey 114 padding, like Ultralytics) -> BGR to RGB, /255
-> model -> keep anchors whose best *person-class* score passes ``conf_threshold`` ->
class-agnostic NMS (all kept classes are persons) -> undo the letterbox -> clip to the frame.

``person_classes`` says which class ids are persons: (0,) for COCO models; (0, 1) for a model whose
classes are person states (e.g. Normal/Fall). Every emitted box gets ``class_id`` 0 (person).

Backends (realtime/backends.py): onnxruntime, torch (the graph converted with the optional
onnx2torch package, so it runs on the GPU without onnxruntime-gpu or TensorRT) and tensorrt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from lart_stream.realtime.backends import (BATCH, Backend, ModelIO, OnnxRuntimeBackend, TensorSpec, TorchBackend,
                                           get_buffer, io_from_onnx, resolve_backend, set_buffer, to_numpy)
from lart_stream.realtime.device_frames import StagedFrame
from lart_stream.realtime.records import Detections, Frame

OUTPUT_FORMATS = ("auto", "yolo", "nms")
DETECT_BUCKETS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32)  # frames per batched call (torch: a graph each)


@dataclass(frozen=True)
class OnnxDetectorConfig:
    onnx_path: str
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch
    device: str = "cpu"
    person_classes: tuple[int, ...] = (0,)  # class ids that are persons; (0, 1) for Normal/Fall
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    output_format: str = "auto"  # auto | yolo | nms
    input_size: tuple[int, int] | None = None  # (h, w) for a graph with dynamic H, W; else read from it
    pad_value: int = 114  # letterbox grey, as Ultralytics trains with
    device_letterbox: bool = True  # torch backend: resize and pad on its device (DeviceLetterbox)
    precision: str = "fp32"  # torch backend: fp32 | fp16 | bf16 (autocast; boxes near the threshold may change)
    engine_cache_dir: str | None = None


# ---------------------------------------------------------------------------------------------
# pre-processing


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the network input: input = frame * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: int
    pad_y: int


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (H, W, 3) to fit ``size`` = (h, w) keeping aspect, centred, padded."""
    h, w = image.shape[:2]
    th, tw = size
    (nh, nw), lb = letterbox_geometry((h, w), size)
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((th, tw, 3), pad_value, dtype=np.uint8)
    out[lb.pad_y:lb.pad_y + nh, lb.pad_x:lb.pad_x + nw] = resized
    return out, lb


def to_blob(image_bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (1, 3, H, W) float32 RGB in [0, 1]."""
    rgb = image_bgr[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(rgb, dtype=np.float32)[None] / np.float32(255.0)


def to_blob_torch(image_bgr: np.ndarray, device: "torch.device") -> "torch.Tensor":
    """``to_blob`` on the model's device: the uint8 image travels (4x fewer bytes than float32) and the
    flip, transpose and scaling run there. Same values as ``to_blob``."""
    import torch

    t = torch.from_numpy(image_bgr).to(device)  # 1.2 MB at 640x640: pinning it would cost more than it saves
    return t.permute(2, 0, 1).flip(0).unsqueeze(0).float().div_(255.0)


def letterbox_geometry(frame_hw: tuple[int, int], size: tuple[int, int]) -> tuple[tuple[int, int], Letterbox]:
    """((nh, nw), Letterbox) of ``letterbox``: the resized size and where it sits in the input."""
    h, w = frame_hw
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    return (nh, nw), Letterbox(scale, (tw - nw) // 2, (th - nh) // 2)


class DeviceLetterbox:
    """``letterbox`` + ``to_blob`` on the model's device: the frame goes up once as uint8 (through a
    pinned staging buffer on CUDA) and is resized there (bilinear, half-pixel centres: what
    cv2.INTER_LINEAR computes, rounded to uint8 levels like it; OpenCV's fixed-point weights can land
    one level away), padded, flipped to RGB and scaled. No host resize, no host sync.

    ``many`` fills one row of an (N, 3, h, w) batch per frame (each row with its own staging buffers,
    so the uploads of a batch overlap); a row's padding is refilled when its geometry changes."""

    def __init__(self, size: tuple[int, int], device: "torch.device", pad_value: int = 114):
        import torch

        self.size, self.device, self.pad = size, torch.device(device), float(pad_value)
        self.cuda = self.device.type == "cuda"
        self.rows: list[StagedFrame] = []
        self.blob = torch.full((1, 3, *size), self.pad / 255.0, device=self.device)

    def __call__(self, image: np.ndarray, device_image: "torch.Tensor | None" = None) -> tuple["torch.Tensor", Letterbox]:
        lb = self._fill(0, image, device_image)
        return self.blob[:1], lb

    def many(self, images: list[np.ndarray], device_images: "Sequence[torch.Tensor] | None" = None
             ) -> tuple["torch.Tensor", list[Letterbox]]:
        """(N, 3, h, w) batch of every image's letterbox (a view of a buffer reused by the next call).
        ``device_images``: the frames already on the device (realtime/device_frames.py): not uploaded."""
        import torch

        n = len(images)
        if self.blob.shape[0] < n:
            grown = torch.full((n, 3, *self.size), self.pad / 255.0, device=self.device)
            grown[:self.blob.shape[0]] = self.blob
            self.blob = grown
        dev = device_images if device_images is not None else [None] * n
        return self.blob[:n], [self._fill(k, im, d) for k, (im, d) in enumerate(zip(images, dev))]

    def _fill(self, row: int, image: np.ndarray, device_image: "torch.Tensor | None" = None) -> Letterbox:
        import torch
        import torch.nn.functional as F

        h, w = image.shape[:2]
        (nh, nw), lb = letterbox_geometry((h, w), self.size)
        while len(self.rows) <= row:
            self.rows.append(StagedFrame())
        staged = self.rows[row]
        frame = device_image if device_image is not None else staged.upload(image, self.device)
        x = frame.permute(2, 0, 1).unsqueeze(0).float()  # (1, 3, H, W) BGR
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
        blob = self.blob[row:row + 1]
        if staged.geometry != (nh, nw, lb.pad_x, lb.pad_y):  # padding stays at pad/255 while it holds
            blob.fill_(self.pad / 255.0)
            staged.geometry = (nh, nw, lb.pad_x, lb.pad_y)
        blob[:, :, lb.pad_y:lb.pad_y + nh, lb.pad_x:lb.pad_x + nw] = x.flip(1) * (1.0 / 255.0)
        return lb


def undo_letterbox(xyxy: np.ndarray, lb: Letterbox, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes from network-input pixels back to frame pixels, clipped; frame_size = (W, H)."""
    out = xyxy.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad_x) / lb.scale
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad_y) / lb.scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, frame_size[0])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, frame_size[1])
    return out


# ---------------------------------------------------------------------------------------------
# post-processing


def detect_format(shape: tuple[int, ...]) -> str:
    """"yolo" or "nms" from an output shape; ValueError when it is neither.

    [1, 4+C, A] with A > 4+C is YOLO; [N, 6] / [1, N, 6] with N <= 1000 is NMS'd (exports pad to
    e.g. 300 rows; YOLO anchor counts are 525 at 160 px and thousands above); [1, A, 4+C] is a
    transposed YOLO output.
    """
    s = tuple(int(d) for d in shape)
    if len(s) == 3 and s[0] == 1:
        s = s[1:]
    if len(s) == 2:
        r, c = s
        if c == 6 and r <= 1000:
            return "nms"
        if min(r, c) >= 5 and r != c:
            return "yolo"
    raise ValueError(f"detector output shape {tuple(shape)} is neither [1, 4+C, anchors] nor [N, 6]")


def decode_yolo(out: np.ndarray, person_classes: tuple[int, ...], conf: float) -> tuple[np.ndarray, np.ndarray]:
    """[1, 4+C, A] (or [1, A, 4+C]) -> (xyxy (k, 4), score (k,)) for anchors whose best person score > conf."""
    a = np.asarray(out, dtype=np.float32).reshape(out.shape[-2:])
    if a.shape[0] > a.shape[1]:  # [A, 4+C] layout
        a = a.T
    check_person_classes(a.shape[0] - 4, person_classes)
    return decode_yolo_rows(a, person_classes, conf)


def check_person_classes(n_cls: int, person_classes: tuple[int, ...]) -> None:
    bad = [c for c in person_classes if not 0 <= c < n_cls]
    if bad:
        raise ValueError(f"person_classes {bad} out of range: the model has {n_cls} classes")


def decode_yolo_rows(a: np.ndarray, person_classes: Sequence[int], conf: float) -> tuple[np.ndarray, np.ndarray]:
    """(4+C, A) float32 rows (cx, cy, w, h, class scores) -> (xyxy, score) of the anchors passing ``conf``."""
    scores = a[4 + np.asarray(person_classes)].max(axis=0)
    keep = scores > conf
    cx, cy, w, h = a[:4, keep]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy, scores[keep]


def yolo_candidates(out: "torch.Tensor", person_classes: tuple[int, ...], conf: float
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``decode_yolo`` of every frame of a batched YOLO output (N, 4+C, A) (or (N, A, 4+C)) still on the
    device: the confidence filter runs there and only the candidates' box and person-score rows come
    back (one small sync for their count, one copy), instead of the whole output. The host then decodes
    them exactly as decode_yolo does (the device keeps a superset: scores >= float32(conf))."""
    import torch

    a = out if out.shape[1] <= out.shape[2] else out.transpose(1, 2)
    check_person_classes(a.shape[1] - 4, person_classes)
    sel = a[:, [0, 1, 2, 3, *(4 + c for c in person_classes)], :].float()  # (N, 4+P, A)
    floor = torch.tensor(conf, dtype=torch.float32).item()  # conf rounded to float32
    frame, anchor = (sel[:, 4:, :].amax(dim=1) >= floor).nonzero(as_tuple=True)  # the sync
    rows = sel[frame, :, anchor].cpu().numpy()  # (K, 4+P), frames in order, anchors ascending in each
    ends = np.searchsorted(frame.cpu().numpy(), np.arange(1, len(a) + 1))
    person = tuple(range(len(person_classes)))  # the score rows of ``rows``, in person_classes' order
    return [decode_yolo_rows(np.ascontiguousarray(rows[s:e].T), person, conf)
            for s, e in zip(np.concatenate([[0], ends[:-1]]), ends)]


def decode_nms(out: np.ndarray, person_classes: tuple[int, ...], conf: float) -> tuple[np.ndarray, np.ndarray]:
    """[N, 6] or [1, N, 6] (x1, y1, x2, y2, score, class) -> person rows with score > conf."""
    a = np.asarray(out, dtype=np.float32).reshape(-1, 6)
    keep = (a[:, 4] > conf) & np.isin(np.rint(a[:, 5]).astype(np.int64), np.asarray(person_classes))
    return a[keep, :4], a[keep, 4]


def nms_numpy(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    area = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    kept = []
    while order.size:
        i = order[0]
        kept.append(i)
        rest = order[1:]
        ix1 = np.maximum(xyxy[i, 0], xyxy[rest, 0])
        iy1 = np.maximum(xyxy[i, 1], xyxy[rest, 1])
        ix2 = np.minimum(xyxy[i, 2], xyxy[rest, 2])
        iy2 = np.minimum(xyxy[i, 3], xyxy[rest, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return np.asarray(kept, dtype=np.int64)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Class-agnostic NMS with OpenCV (cv2.dnn.NMSBoxes), numpy as the fallback."""
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    try:
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, float(iou)), np.int64).reshape(-1)
    except (cv2.error, AttributeError):
        keep = nms_numpy(xyxy, scores, iou)
    return keep[:max_det]


def postprocess(out: np.ndarray, fmt: str, lb: Letterbox, frame_size: tuple[int, int],
                cfg: OnnxDetectorConfig) -> Detections:
    """Raw model output -> Detections in frame pixels (class_id 0 = person)."""
    decode = decode_yolo if fmt == "yolo" else decode_nms
    xyxy, scores = decode(out, tuple(cfg.person_classes), cfg.conf_threshold)
    return finish_detections(xyxy, scores, fmt, lb, frame_size, cfg)


def finish_detections(xyxy: np.ndarray, scores: np.ndarray, fmt: str, lb: Letterbox, frame_size: tuple[int, int],
                      cfg: OnnxDetectorConfig) -> Detections:
    """Decoded candidates -> NMS (yolo) or the best rows (nms) -> frame pixels -> Detections."""
    if fmt == "yolo":
        keep = nms(xyxy, scores, cfg.iou_threshold, cfg.max_detections)
    else:
        keep = np.argsort(-scores, kind="stable")[: cfg.max_detections]
    xyxy = undo_letterbox(xyxy[keep], lb, frame_size)
    ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # boxes entirely in the padding vanish
    return Detections(xyxy[ok], scores[keep][ok], np.zeros(int(ok.sum()), np.int32))


# ---------------------------------------------------------------------------------------------
# the stage


class OnnxDetector:
    """lart_stream.realtime.stages.Detector over a user's ONNX file."""

    def __init__(self, config: OnnxDetectorConfig, backend: Backend | None = None) -> None:
        if config.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {config.output_format!r}")
        path = Path(config.onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"detector ONNX not found: {path}")
        self.config = config
        self.io: ModelIO = io_from_onnx(path, "detector")
        if len(self.io.inputs) != 1:
            raise ValueError(f"{path.name}: expected one image input, got {list(self.io.input_names)}")
        self.input_name = self.io.inputs[0].name
        self.input_size = self._input_size(self.io.inputs[0].shape, config.input_size)
        if backend is None:
            backend, self.backend_reason = resolve_backend(config.backend, "detector", config.device, onnx_path=path,
                                                           io=self._concrete_io(),
                                                           engine_cache_dir=config.engine_cache_dir,
                                                           precision=config.precision)
        else:
            self.backend_reason = "given"
        self.backend = backend
        self.output_name = self.io.outputs[0].name
        out_shape = self.io.outputs[0].shape
        fixed = all(isinstance(d, int) for d in out_shape)
        self.format = config.output_format if config.output_format != "auto" else (
            detect_format(tuple(out_shape)) if fixed else "")  # decided on the first output otherwise
        self.name = f"onnx:{path.name}"
        self._device_lb = (DeviceLetterbox(self.input_size, self.backend.device, config.pad_value)
                           if isinstance(self.backend, TorchBackend) and config.device_letterbox else None)
        self._batched, self.batch_mode = self._batch_backend()

    def _concrete_io(self, batch: int | str = 1) -> ModelIO:
        """The I/O with the image input's shape made concrete (a static graph for graphs/engines);
        ``batch`` = BATCH: the leading axis of the input and of every 3-d output left symbolic."""
        spec = self.io.inputs[0]
        outputs = self.io.outputs if batch == 1 else tuple(
            TensorSpec(o.name, (BATCH, *o.shape[1:]), o.dtype) for o in self.io.outputs)
        return ModelIO("detector", (TensorSpec(spec.name, (batch, 3, *self.input_size), spec.dtype),), outputs)

    def _batch_backend(self) -> tuple[Backend | None, str]:
        """The backend ``detect_many`` runs a whole batch of frames on (None: one call per frame) and
        how, in words. onnxruntime: the session itself when the graph's batch axis is dynamic. torch:
        the same module behind buckets of DETECT_BUCKETS (a CUDA graph each); a graph exported for
        batch 1 gets its Reshape constants' leading 1 made -1 and is kept only if a batch of two
        random images gives what two single calls give."""
        lead = self.io.inputs[0].shape[0]
        dynamic = not isinstance(lead, int) or lead != 1
        if any(len(o.shape) != 3 for o in self.io.outputs):
            return None, "per frame (outputs without a batch axis)"
        if isinstance(self.backend, OnnxRuntimeBackend):
            return (self.backend, "batched (dynamic batch axis)") if dynamic else (
                None, "per frame (the graph's batch axis is fixed at 1)")
        if not isinstance(self.backend, TorchBackend):
            return None, f"per frame ({self.backend.name}: built for batch 1)"
        b = self.backend
        batched = TorchBackend(b.module, self._concrete_io(BATCH), b.device, cuda_graphs=b.cuda_graphs,
                               buckets=DETECT_BUCKETS, precision=b.precision)
        if dynamic:
            return batched, "batched (dynamic batch axis)"
        x = parity_images(self.input_size, b.device)
        before = single_outputs(b, self.input_name, self.output_name, x)
        changed = batchify_reshapes(b.module)
        why = batch_parity(batched, b, self.input_name, self.output_name, x, before)
        if why:
            unbatchify_reshapes(b.module, changed)
            return None, f"per frame (fixed batch 1; made dynamic it {why})"
        return batched, f"batched (fixed batch 1 made dynamic: {len(changed)} Reshape constants; checked)"

    @staticmethod
    def _input_size(shape: tuple[Any, ...], override: tuple[int, int] | None) -> tuple[int, int]:
        if len(shape) != 4:
            raise ValueError(f"detector input must be [1, 3, H, W], got {shape}")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            if override is not None and tuple(override) != (h, w):
                raise ValueError(f"input_size {override} differs from the graph's fixed size {(h, w)}")
            return h, w
        return tuple(override) if override is not None else (640, 640)

    def describe(self) -> str:
        return f"{self.name}: {self.backend.describe()} [{self.backend_reason}], several frames {self.batch_mode}"

    @property
    def image_device(self) -> "torch.device | None":
        """The device ``detect_many`` reads frames on when given them there (``device_images``; the
        device letterbox of the torch backend); None: it takes numpy frames only."""
        import torch

        return torch.device(self.backend.device) if self._device_lb is not None else None

    def raw(self, frame: Frame) -> tuple[np.ndarray, Letterbox]:
        """The model's raw output for a frame, and the letterbox used (for tests and debugging)."""
        out, lb = self._run_one(frame)
        return to_numpy(out), lb

    def _run_one(self, frame: Frame, device_image: Any = None) -> tuple[Any, Letterbox]:
        """The output of one frame (on the torch backend's device for torch), and its letterbox."""
        if self._device_lb is not None:
            blob, lb = self._device_lb(frame.image, device_image)
        else:
            img, lb = letterbox(frame.image, self.input_size, self.config.pad_value)
            torch_backend = isinstance(self.backend, TorchBackend)  # preprocess on its device
            blob = to_blob_torch(img, self.backend.device) if torch_backend else to_blob(img)
        return self.backend.run({self.input_name: blob})[self.output_name], lb

    def __call__(self, frame: Frame) -> Detections:
        out, lb = self._run_one(frame)
        return self._post_many(out, [lb], [frame])[0]

    def detect_many(self, frames: Sequence[Frame], device_images: "Sequence[torch.Tensor] | None" = None
                    ) -> list[Detections]:
        """Detections of several frames (one per stream): one network call over all of them when the
        model takes a batch (``batch_mode``), else one per frame. The same boxes as ``self(frame)``.
        ``device_images``: the frames as (H, W, 3) uint8 on ``image_device`` (realtime/device_frames.py),
        read instead of uploading ``frames``' images again (ignored when ``image_device`` is None)."""
        dev = list(device_images) if device_images is not None and self._device_lb is not None else None
        if self._batched is None or len(frames) <= 1:
            ones = [self._run_one(f, None if dev is None else dev[k]) for k, f in enumerate(frames)]
            return [self._post_many(out, [lb], [f])[0] for (out, lb), f in zip(ones, frames)]
        blob, lbs = self._blobs(frames, dev)
        return self._post_many(self._batched.run({self.input_name: blob})[self.output_name], lbs, frames)

    def _blobs(self, frames: Sequence[Frame], device_images: Any = None) -> tuple[Any, list[Letterbox]]:
        """(N, 3, h, w) input of a batch of frames (on the torch backend's device for torch)."""
        if self._device_lb is not None:
            return self._device_lb.many([f.image for f in frames], device_images)
        images, lbs = zip(*(letterbox(f.image, self.input_size, self.config.pad_value) for f in frames))
        if isinstance(self.backend, TorchBackend):
            import torch

            return torch.cat([to_blob_torch(im, self.backend.device) for im in images]), list(lbs)
        return np.concatenate([to_blob(im) for im in images]), list(lbs)

    def _post_many(self, out: Any, lbs: Sequence[Letterbox], frames: Sequence[Frame]) -> list[Detections]:
        """Output rows (N, ...) -> Detections per frame. A YOLO output still on the torch device is
        filtered there (``yolo_candidates``); anything else comes back whole and decodes per frame."""
        one = len(frames) == 1  # then ``out`` is the model's own output, whatever its rank
        if not self.format:
            self.format = detect_format(tuple(out.shape) if one else (1, *tuple(out.shape)[1:]))
        cfg = self.config
        if self.format == "yolo" and not isinstance(out, np.ndarray) and len(out.shape) == 3:
            found = yolo_candidates(out, tuple(cfg.person_classes), cfg.conf_threshold)
            return [finish_detections(xyxy, sc, "yolo", lb, f.size, cfg) for (xyxy, sc), lb, f in zip(found, lbs, frames)]
        out = to_numpy(out)
        if one:
            return [postprocess(out, self.format, lbs[0], frames[0].size, cfg)]
        return [postprocess(out[k:k + 1], self.format, lb, f.size, cfg) for k, (lb, f) in enumerate(zip(lbs, frames))]


def _reshape_constants(module: Any) -> list[str]:
    """Buffers an onnx2torch module feeds to its Reshape nodes as the target shape."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return []
    out = []
    for node in graph.nodes:
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ != "OnnxReshape":
            continue
        if len(node.args) > 1 and getattr(node.args[1], "op", None) == "get_attr":
            out.append(node.args[1].target)
    return out


def batchify_reshapes(module: Any) -> dict[str, Any]:
    """An onnx2torch graph exported for batch 1: each Reshape target shape [1, d1, ...] gets a leading
    -1 (or 0, "the input's leading size", when it has a -1 already): the same shape for one image,
    the batch's for N when the leading axis is the batch (``batch_parity`` checks). Returns the
    originals (``unbatchify_reshapes`` puts them back)."""
    changed = {}
    for name in _reshape_constants(module):
        shape = get_buffer(module, name)
        if shape.ndim == 1 and len(shape) > 1 and int(shape[0]) == 1:
            changed[name] = shape
            new = shape.clone()
            new[0] = 0 if bool((shape == -1).any()) else -1
            set_buffer(module, name, new)
    return changed


def unbatchify_reshapes(module: Any, originals: dict[str, Any]) -> None:
    for name, shape in originals.items():
        set_buffer(module, name, shape)


def parity_images(size: tuple[int, int], device: Any) -> "torch.Tensor":
    """Two random images (2, 3, h, w) for ``batch_parity``."""
    import torch

    return torch.rand((2, 3, *size), generator=torch.Generator().manual_seed(0)).to(device)


def single_outputs(backend: Backend, input_name: str, output_name: str, x: Any) -> np.ndarray:
    """Each image of ``x`` through ``backend`` alone, outputs concatenated."""
    return np.concatenate([to_numpy(backend.run({input_name: x[k:k + 1]})[output_name]) for k in range(len(x))])


def batch_parity(batched: Backend, single: Backend, input_name: str, output_name: str, x: Any,
                 before: np.ndarray) -> str:
    """"" when ``x`` through ``batched`` at once, and each image through ``single``, give ``before`` (the
    single outputs of the unchanged model) within 2% of the output's scale (batched convolutions may
    pick other kernels, bf16 rounds more); else why not."""
    try:
        got = {"batched": to_numpy(batched.run({input_name: x})[output_name]),
               "single": single_outputs(single, input_name, output_name, x)}
    except Exception as exc:  # noqa: BLE001 - any failure means: run it per frame
        text = str(exc).strip()
        return f"fails ({type(exc).__name__}: {text.splitlines()[0][:120] if text else ''})"
    scale = max(1.0, float(np.abs(before).max()))
    for how, out in got.items():
        if out.shape != before.shape:
            return f"gives {how} shape {out.shape}, not {before.shape}"
        err = float(np.abs(out - before).max())
        if err > 0.02 * scale:
            return f"differs {how} from the unchanged single calls by {err:.3g} (scale {scale:.3g})"
    return ""


__all__ = ["DETECT_BUCKETS", "DeviceLetterbox", "batch_parity", "batchify_reshapes", "parity_images", "single_outputs",
           "unbatchify_reshapes", "Letterbox", "letterbox_geometry", "OnnxDetector", "OnnxDetectorConfig", "decode_nms", "decode_yolo", "decode_yolo_rows", "detect_format",
           "finish_detections", "yolo_candidates",
           "letterbox", "nms", "nms_numpy", "postprocess", "to_blob", "to_blob_torch", "undo_letterbox"]
