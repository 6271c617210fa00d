"""Person detectors: the embedded OpenCV HOG default, or a user's ONNX model.

HOG needs nothing downloaded (its SVM ships inside OpenCV 4) and runs at tens
of fps on two CPU cores; it misses small, sitting and occluded people. A user
who has a YOLO-style person detector passes ``--detector model.onnx``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from lart_stream.realtime.records import Detections, Frame

log = logging.getLogger(__name__)


class DetectorError(Exception):
    """A detector that cannot be built (user error)."""


@dataclass(frozen=True)
class DetectorConfig:
    model: str = "hog"  # "hog" or a path to an ONNX detector
    confidence: float = 0.3  # HOG: minimum SVM-score probability; ONNX: minimum class score
    max_width: int = 800  # HOG: frames wider than this are downscaled first (speed)
    scale: float = 1.1  # HOG: image pyramid step
    min_height: int = 0  # drop boxes shorter than this (pixels of the full frame)
    person_classes: str = "0"  # ONNX: comma-separated class ids that are people (e.g. "0,1")
    device: str = "cpu"
    backend: str = "auto"
    precision: str = "fp32"  # ONNX on the torch backend: fp32 | fp16 | bf16


class HOGDetector:
    """OpenCV's Dalal-Triggs pedestrian detector (64x128 window, upright people)."""

    name = "hog"

    def __init__(self, cfg: DetectorConfig = DetectorConfig()):
        if not hasattr(cv2, "HOGDescriptor"):
            raise DetectorError(
                f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 dropped it): "
                "install opencv-python<5 or pass --detector model.onnx")
        self.cfg = cfg
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, frame: Frame) -> Detections:
        image = frame.image
        h, w = image.shape[:2]
        factor = min(1.0, self.cfg.max_width / w) if self.cfg.max_width else 1.0
        if factor < 1.0:
            image = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        rects, weights = self.hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=self.cfg.scale)
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / factor
        # The 64x128 window holds the person with ~8 px of margin each side (of 64): trim it.
        xyxy = np.stack([rects[:, 0] + 0.125 * rects[:, 2], rects[:, 1] + 0.0625 * rects[:, 3],
                         rects[:, 0] + 0.875 * rects[:, 2], rects[:, 1] + 0.9375 * rects[:, 3]], axis=1)
        score = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float32).reshape(-1)))  # SVM margin -> (0, 1)
        keep = (score >= self.cfg.confidence) & (xyxy[:, 3] - xyxy[:, 1] >= self.cfg.min_height)
        return Detections(xyxy[keep], score[keep], np.zeros(int(keep.sum()), np.int32))


def build_detector(cfg: DetectorConfig):
    """The embedded HOG detector, or an ONNX detector from a user's file."""
    if cfg.model == "hog":
        return HOGDetector(cfg)
    from pathlib import Path

    path = Path(cfg.model).expanduser()
    if path.suffix.lower() != ".onnx":
        raise DetectorError(f"--detector takes 'hog' or a .onnx file, got {cfg.model!r}")
    if not path.is_file():
        raise DetectorError(f"detector model not found: {path}")
    try:
        from lart_stream.realtime.onnx_detector import OnnxDetector, OnnxDetectorConfig
    except ImportError as exc:  # pragma: no cover - lands with the export issue
        raise DetectorError(f"ONNX detectors are not available in this build: {exc}") from exc
    try:
        classes = tuple(int(c) for c in cfg.person_classes.split(","))
    except ValueError:
        raise DetectorError(f"person classes must be comma-separated integers, got {cfg.person_classes!r}") from None
    try:
        detector = OnnxDetector(OnnxDetectorConfig(onnx_path=str(path), backend=cfg.backend, device=cfg.device,
                                                   person_classes=classes, conf_threshold=cfg.confidence,
                                                   precision=cfg.precision))
    except Exception as exc:  # a file onnxruntime can't load, a graph of the wrong shape
        raise DetectorError(f"cannot use detector {path}: {exc}") from exc
    log.info("detector: %s", detector.describe())
    return detector
