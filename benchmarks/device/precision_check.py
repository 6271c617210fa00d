"""What reduced precision changes in LART's scores and the detector's boxes (issue 16), on one GPU.

    python benchmarks/device/precision_check.py --detector .carry/yolov8_fall.onnx --out $OUT/precision.json
    python benchmarks/device/precision_check.py --cpu-smoke --out /tmp/precision.json   # path check, tiny

LART (official size, causal stage, random weights, fixed seed): the same 5 tracks over 90 frames (inputs
drawn once: pose, joints, appearance ~ N(0, 1)) through the fp32 stage and the bf16-matmul stage
(``precision="bf16"``: the transformer's Linears cast once, the rest fp32). Reported: max and mean
|score difference|, and how often the top-5 classes of a track agree as a set; plus each stage's
GPU time per update (CUDA events, median). Random weights make the logits of plausible magnitude
(LART's init) but not of a trained model: the figures bound rounding, not accuracy.

Detector: the ONNX detector on frames of tests/data/pedestrians.mp4 (resized to 1920x1080), fp32 vs
fp16 autocast: boxes per frame, the IoU of each fp32 box with its best fp16 box, confidence change.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lart_stream.realtime.actions import ActionStage, ActionStageConfig
from lart_stream.realtime.records import Frame, People, Tracks


def lart_runs(size: str, device: str, frames: int, people: int = 5) -> dict:
    rng = np.random.default_rng(0)
    n = people
    pose = rng.normal(size=(frames, n, 229)).astype(np.float32)
    joints = rng.normal(size=(frames, n, 45, 3)).astype(np.float32)
    cam = rng.normal(size=(frames, n, 3)).astype(np.float32)
    out: dict[str, dict] = {}
    scores: dict[str, list] = {}
    for prec in ("fp32", "bf16"):
        st = ActionStage.from_config(ActionStageConfig(size=size, mode="causal", device=device, precision=prec,
                                                       max_tracks=16, pose_only=False))
        if hasattr(st, "warmup"):
            st.warmup()
        ms, got = [], []
        for t in range(frames):
            ppl = People(np.zeros((n, 4), np.float32), np.ones(n, np.float32), image_size=(1920, 1080),
                         pose_vector=pose[t], joints_3d=joints[t], cam_t=cam[t])
            trk = Tracks(np.arange(n), np.zeros((n, 4)), np.full(n, 2), np.zeros(n), np.zeros(n), np.zeros(n, np.int64),
                         np.arange(n))
            if device.startswith("cuda"):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
            t0 = time.perf_counter()
            pred = st.update(trk, ppl, t)
            if device.startswith("cuda"):
                b.record()
                b.synchronize()
                ms.append(a.elapsed_time(b))
            else:
                ms.append((time.perf_counter() - t0) * 1e3)
            got.append(pred)
        scores[prec] = got
        out[prec] = {"update_ms_p50": statistics.median(ms[10:] or ms), "describe": st.describe()}
    diffs, agree, total = [], 0, 0
    for a, b in zip(scores["fp32"], scores["bf16"]):
        if not len(a):
            continue
        assert a.track_id.tolist() == b.track_id.tolist()
        diffs.append(np.abs(a.scores - b.scores))
        for sa, sb in zip(a.scores, b.scores):
            agree += set(np.argsort(-sa)[:5]) == set(np.argsort(-sb)[:5])
            total += 1
    d = np.concatenate(diffs) if diffs else np.zeros(1)
    out["score_diff_max"] = float(d.max())
    out["score_diff_mean"] = float(d.mean())
    out["top5_set_agreement"] = agree / max(total, 1)
    out["predictions_compared"] = total
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def detector_runs(model: str, device: str, source: str, frames: int, size: tuple[int, int]) -> dict:
    import cv2

    from lart_stream.realtime.detectors import DetectorConfig, build_detector

    cap = cv2.VideoCapture(source)
    images = []
    while len(images) < frames:
        ok, img = cap.read()
        if not ok:
            break
        images.append(cv2.resize(img, size))
    dets = {}
    for prec in ("fp32", "fp16"):
        det = build_detector(DetectorConfig(model=model, device=device, person_classes="0,1", precision=prec))
        dets[prec] = [det(Frame(i, time.monotonic(), im)) for i, im in enumerate(images)]
    count_equal, ious, conf = 0, [], []
    for a, b in zip(dets["fp32"], dets["fp16"]):
        count_equal += len(a) == len(b)
        if len(a) and len(b):
            m = iou_matrix(a.xyxy, b.xyxy)
            j = m.argmax(1)
            ious += m.max(1).tolist()
            conf += np.abs(a.confidence - b.confidence[j]).tolist()
        elif len(a):
            ious += [0.0] * len(a)
    return {"frames": len(images), "boxes_fp32": int(sum(len(a) for a in dets["fp32"])),
            "boxes_fp16": int(sum(len(b) for b in dets["fp16"])), "frames_same_count": count_equal,
            "iou_min": float(min(ious)) if ious else None, "iou_p01": float(np.quantile(ious, 0.01)) if ious else None,
            "confidence_diff_max": float(max(conf)) if conf else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--detector", default="")
    p.add_argument("--source", default="tests/data/pedestrians.mp4")
    p.add_argument("--cpu-smoke", action="store_true")
    a = p.parse_args()
    device = "cpu" if a.cpu_smoke else "cuda"
    size = "tiny" if a.cpu_smoke else "official"
    res = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "weights": "random",
           "lart": lart_runs(size, device, 24 if a.cpu_smoke else 90)}
    L = res["lart"]
    print(f"LART {size} causal, 5 tracks: update p50 fp32 {L['fp32']['update_ms_p50']:.2f} ms, bf16 matmuls "
          f"{L['bf16']['update_ms_p50']:.2f} ms; |score diff| max {L['score_diff_max']:.2e} mean "
          f"{L['score_diff_mean']:.2e}; top-5 sets agree {100 * L['top5_set_agreement']:.1f}% of "
          f"{L['predictions_compared']} predictions")
    if a.detector:
        res["detector"] = D = detector_runs(a.detector, device, a.source, 8 if a.cpu_smoke else 60, (1920, 1080))
        print(f"detector fp16 vs fp32 on {D['frames']} frames: boxes {D['boxes_fp32']} / {D['boxes_fp16']}, "
              f"same count in {D['frames_same_count']} frames, IoU min {D['iou_min']}, p01 {D['iou_p01']}, "
              f"confidence diff max {D['confidence_diff_max']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
