"""Where a detector ONNX's time goes on the device: letterbox, preprocessing (numpy vs on-device),
the network, post-processing; end to end per call. Usage:
    python benchmarks/device/detector_timing.py MODEL.onnx --person-classes 0,1 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("onnx")
    p.add_argument("--person-classes", default="0")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="torch")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--out")
    args = p.parse_args()
    import cv2
    import torch

    from lart_stream.realtime.onnx_detector import OnnxDetector, OnnxDetectorConfig, letterbox, postprocess, to_blob, to_blob_torch
    from lart_stream.realtime.records import Frame

    det = OnnxDetector(OnnxDetectorConfig(onnx_path=args.onnx, backend=args.backend, device=args.device,
                                          person_classes=tuple(int(c) for c in args.person_classes.split(","))))
    cap = cv2.VideoCapture("tests/data/pedestrians.mp4")
    image = cv2.resize(cap.read()[1], (1920, 1080))
    frame = Frame(0, time.monotonic(), image)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    device = torch.device(args.device)

    def timed(fn):
        for _ in range(5):
            fn()
        out = []
        for _ in range(args.iters):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            out.append((time.perf_counter() - t) * 1e3)
        return round(statistics.median(out), 3)

    img, lb = letterbox(image, det.input_size)
    blob_np = to_blob(img)
    blob_t = to_blob_torch(img, device)
    raw = det.backend.run({det.input_name: blob_t})[det.output_name]
    rows = {
        "letterbox": timed(lambda: letterbox(image, det.input_size)),
        "blob numpy": timed(lambda: to_blob(img)),
        "blob numpy + upload": timed(lambda: torch.from_numpy(to_blob(img)).to(device)),
        "blob on device (uint8 upload)": timed(lambda: to_blob_torch(img, device)),
        "network (device input)": timed(lambda: det.backend.run({det.input_name: blob_t})),
        "network (numpy input)": timed(lambda: det.backend.run({det.input_name: blob_np})),
        "output to host": timed(lambda: raw.cpu()),
        "postprocess": timed(lambda: postprocess(raw.cpu().numpy(), det.format or "yolo", lb, frame.size, det.config)),
        "detector call end to end": timed(lambda: det(frame)),
    }
    parity = None
    if hasattr(det.backend, "module"):  # the captured graph against the module run eagerly
        with torch.no_grad():
            ref = det.backend.module(blob_t)
        ref = ref[0] if isinstance(ref, (tuple, list)) else ref
        parity = float((torch.as_tensor(raw) - ref).abs().max())
        rows["graph vs eager max |diff|"] = parity
    print(det.describe())
    for k, v in rows.items():
        print(f"{k:<32}{v:8.3f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"describe": det.describe(), "ms_median": rows, "torch": torch.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
