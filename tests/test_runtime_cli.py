"""The `lart-stream` command run as a subprocess: real decoding, real exit codes, real messages."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VTEST, lart_stream_cmd, read_frames, run_cli, write_video

COMMON = ("--publish", "none", "--log-level", "INFO")


def _summary(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "summary.json"
    proc = run_cli(*args, *COMMON, "--summary-json", str(out), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_generated_video_runs_end_to_end(tmp_path, generated_video):
    proc, summary = _summary(tmp_path, "--source", str(generated_video))
    assert summary["frames"] == 30
    assert summary["reason"] == "end of input"
    assert summary["stages_ms"]["detect"]["n"] == 30
    assert "detect" in proc.stderr and "fps" in proc.stderr  # the printed summary table


def test_pedestrian_clip_every_stage_timed(tmp_path, pedestrians):
    proc, summary = _summary(tmp_path, "--source", str(pedestrians), "--max-frames", "25")
    assert summary["frames"] == 25 and summary["reason"] == "max frames"
    assert summary["people_max"] >= 1, "HOG finds the pedestrians of vtest"
    for stage, timing in summary["stages_ms"].items():
        assert timing["n"] == 25 and timing["mean"] > 0, stage
    # Whatever stages have landed are timed; the random-weight warning is loud when models run.
    if "lift" in summary["stages_ms"]:
        assert "RANDOM WEIGHTS" in proc.stderr
    assert summary["latency_ms"]["max"] >= summary["latency_ms"]["p50"] > 0


@pytest.mark.skipif(not VTEST.is_file(), reason="../shared/data/vtest.avi not on this machine")
def test_vtest_avi(tmp_path):
    _, summary = _summary(tmp_path, "--source", str(VTEST), "--max-frames", "40")
    assert summary["frames"] == 40 and summary["people_max"] >= 2


def test_missing_path_is_one_line_error(tmp_path):
    proc = run_cli("--source", str(tmp_path / "nope.mp4"), *COMMON)
    assert proc.returncode == 2
    assert "source not found" in proc.stderr and "Traceback" not in proc.stderr


def test_no_input_given():
    proc = run_cli(*COMMON)
    assert proc.returncode == 2 and "no input" in proc.stderr and "Traceback" not in proc.stderr


def test_camera_that_cannot_be_opened():
    proc = run_cli("--camera", "57", *COMMON, timeout=60)
    assert proc.returncode == 2
    assert "cannot open camera 57" in proc.stderr and "Traceback" not in proc.stderr


def test_garbage_file_is_not_a_video(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    proc = run_cli("--source", str(bad), *COMMON)
    assert proc.returncode == 2
    assert ("cannot open video" in proc.stderr or "cannot decode video" in proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_truncated_video_keeps_the_good_frames(tmp_path):
    whole = write_video(tmp_path / "whole.avi", frames=40)
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])  # the index says 40 frames, half the data is there
    out = tmp_path / "s.json"
    proc = run_cli("--source", str(cut), *COMMON, "--summary-json", str(out))
    assert proc.returncode == 0, proc.stderr
    frames = json.loads(out.read_text())["frames"]
    assert 5 <= frames < 40
    assert "Traceback" not in proc.stderr


def test_image_folder_with_size_change_and_unreadable_image(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    (folder / "004.jpg").write_bytes(b"not a jpeg")
    for i in range(5, 8):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    out = tmp_path / "s.json"
    proc = run_cli("--source", str(folder), *COMMON, "--summary-json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["frames"] == 7
    assert "skipping unreadable image" in proc.stderr and "004.jpg" in proc.stderr
    assert "frame size changed from 320x240 to 400x300" in proc.stderr


def test_empty_folder(tmp_path):
    proc = run_cli("--source", str(tmp_path), *COMMON)
    assert proc.returncode == 2 and "no images" in proc.stderr


def test_print_config_resolves_file_then_flags(tmp_path):
    conf = tmp_path / "run.toml"
    conf.write_text('[actions]\nmode = "window"\nwindow = 64\n[detector]\nconfidence = 0.6\n')
    proc = run_cli("--config", str(conf), "--window", "32", "--print-config")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert 'mode = "window"' in text  # from the file
    assert "window = 32" in text  # the flag wins over the file
    assert "confidence = 0.6" in text
    assert 'address = "tcp://127.0.0.1:5555"' in text  # default: loopback only


@pytest.mark.parametrize("content, message", [
    ('[detector]\nconfidenc = 0.5\n', "unknown setting detector.confidenc"),
    ('[nonsense]\na = 1\n', "unknown section [nonsense]"),
    ('[actions]\nwindow = "long"\n', "actions.window: expected int"),
    ('[actions\n', "cannot parse config file"),
])
def test_bad_config_file(tmp_path, content, message):
    conf = tmp_path / "bad.toml"
    conf.write_text(content)
    proc = run_cli("--config", str(conf), "--source", "x.mp4")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_checkpoint_is_named(tmp_path, generated_video):
    proc = run_cli("--source", str(generated_video), "--lart-checkpoint", str(tmp_path / "lart.ckpt"), *COMMON)
    assert proc.returncode == 2
    assert "LART checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr


def test_sigint_stops_cleanly_with_summary(tmp_path, pedestrians):
    out = tmp_path / "s.json"
    proc = subprocess.Popen([*lart_stream_cmd(), "--source", str(pedestrians), "--realtime", *COMMON,
                             "--summary-json", str(out)], stderr=subprocess.PIPE, text=True)
    time.sleep(8.0)  # start-up (torch import, models) plus a few paced frames
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(out.read_text())
    assert summary["reason"] == "stopped"
    assert 0 < summary["frames"] < 120
    assert "SIGINT received" in stderr


def test_annotated_video_is_written_with_the_random_weights_banner(tmp_path, pedestrians):
    video = tmp_path / "annotated.mp4"
    proc, summary = _summary(tmp_path, "--source", str(pedestrians), "--max-frames", "12", "--annotate", str(video))
    assert "annotate" in summary["stages_ms"]
    frames = read_frames(video)
    assert len(frames) == 12 and frames[0].shape == (576, 768, 3)
    if "lift" in summary["stages_ms"]:  # models with random weights: the red banner is on every frame
        banner = frames[-1][2:20, 300:700].reshape(-1, 3).mean(axis=0)
        assert banner[2] > 180 and banner[0] < 90, banner  # BGR: red


def test_annotate_into_missing_folder_is_a_user_error(tmp_path, generated_video):
    proc = run_cli("--source", str(generated_video), *COMMON, "--annotate", str(tmp_path / "no" / "a.mp4"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_hmr_runs_from_an_exported_onnx_through_onnxruntime(tmp_path, pedestrians):
    export = tmp_path / "exported"
    proc = run_cli("export", "--out", str(export), "--models", "hmr2", "--size", "tiny")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, summary = _summary(tmp_path, "--source", str(pedestrians), "--max-frames", "8", "--backend", "onnxruntime",
                             "--export-dir", str(export))
    assert "HMR stage: onnxruntime" in proc.stderr
    assert summary["frames"] == 8 and summary["stages_ms"]["lift"]["n"] == 8


def test_missing_export_dir_is_named(tmp_path, generated_video):
    proc = run_cli("--source", str(generated_video), *COMMON, "--export-dir", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "export folder not found" in proc.stderr and "Traceback" not in proc.stderr


def test_threads_flag_is_applied(tmp_path, generated_video):
    proc, summary = _summary(tmp_path, "--source", str(generated_video), "--threads", "1")
    assert summary["frames"] == 30
    assert "CPU threads: torch 1, OpenCV 1" in proc.stderr
    proc = run_cli("--threads", "1", "--print-config")
    assert "threads = 1" in proc.stdout
