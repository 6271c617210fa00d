"""The `lart-stream` command run as a subprocess: real decoding, real exit codes, real messages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VTEST, lart_stream_cmd, read_frames, run_cli, write_video

COMMON = ("--publish", "none", "--log-level", "INFO", "--annotate", "none")


def _summary(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "summary.json"
    proc = run_cli(*COMMON, *args, "--summary-json", str(out), timeout=timeout)
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


class _StderrWatch:
    """Collects a child's stderr in a thread and sets an event once ``marker`` has appeared (no sleeps)."""

    def __init__(self, proc: subprocess.Popen, marker: str):
        self.proc, self.marker = proc, marker
        self.seen = threading.Event()
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            chunk = self.proc.stderr.read1(4096)
            if not chunk:
                self.seen.set()  # ended: whoever waits must not wait forever
                return
            self.chunks.append(chunk.decode(errors="replace"))
            if self.marker in "".join(self.chunks[-3:]):
                self.seen.set()

    def text(self) -> str:
        self.thread.join(timeout=60)
        return "".join(self.chunks)


def test_sigint_stops_cleanly_with_summary_and_leaves_the_status_line(tmp_path, pedestrians):
    out = tmp_path / "s.json"
    proc = subprocess.Popen([*lart_stream_cmd(), "--source", str(pedestrians), "--realtime", *COMMON,
                             "--status", "on", "--summary-json", str(out)], stderr=subprocess.PIPE)
    watch = _StderrWatch(proc, "fps | latency")  # the live status line is up: frames are flowing
    assert watch.seen.wait(timeout=240)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    stderr = watch.text()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["reason"] == "stopped" and summary["stop_signal"] == "SIGINT"
    assert 0 < summary["frames"] < 120
    # the message starts on a line of its own, not glued to the status line (where a terminal echoes ^C)
    [line] = [ln for ln in stderr.split("\n") if "SIGINT received" in ln]
    assert "fps" not in line, line
    assert "stopped by SIGINT" in stderr and "stopped: stopped" not in stderr


# Runs the command with an import hook that signals the process when it first imports numpy, i.e.
# while the heavy modules load: the signal arrives at a known point, without timing.
SIGNAL_DURING_IMPORTS = """
import os, signal, sys
class SignalOnImport:
    sent = False
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "cv2", "torch") and not self.sent:
            SignalOnImport.sent = True
            os.kill(os.getpid(), signal.{sig})
        return None
sys.meta_path.insert(0, SignalOnImport())
from lart_stream.realtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_during_imports_ends_cleanly(tmp_path, pedestrians, sig):
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-c", SIGNAL_DURING_IMPORTS.format(sig=sig), "--source", str(pedestrians),
                           *COMMON, "--summary-json", str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"stopped by {sig} during start-up" in proc.stderr
    summary = json.loads(out.read_text())
    assert summary["frames"] == 0 and summary["reason"] == "stopped" and summary["stop_signal"] == sig


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
    proc = run_cli("export", "--out", str(export), "--models", "hmr2", "--model-size", "tiny")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, summary = _summary(tmp_path, "--source", str(pedestrians), "--max-frames", "8", "--backend", "onnxruntime",
                             "--export-dir", str(export))
    assert "HMR stage: onnxruntime" in proc.stderr
    assert "LART; running it in PyTorch" in proc.stderr  # said at start-up, not implied
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


def _one_line_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lart-stream") and text in last, proc.stderr[-3000:]


@pytest.mark.parametrize("target, message", [("/proc/out.mp4", "cannot write video"),
                                             ("{tmp}/out.gif", "unknown container '.gif'")])
def test_annotated_video_that_cannot_be_written_fails_at_start_up(tmp_path, generated_video, target, message):
    proc = run_cli("--source", str(generated_video), "--publish", "none", "--annotate", target.format(tmp=tmp_path))
    _one_line_error(proc, message)
    assert "wrote" not in proc.stderr and "frames in" not in proc.stderr  # no frame was processed
    assert not list(tmp_path.glob("*.gif")) and not list(tmp_path.glob(".*probe*"))


@pytest.mark.parametrize("target, message", [("/proc/x/s.json", "does not exist"), ("/proc/s.json", "cannot be written"),
                                             ("{tmp}", "is a folder")])
def test_summary_json_that_cannot_be_written_fails_at_start_up(tmp_path, generated_video, target, message):
    proc = run_cli("--source", str(generated_video), *COMMON, "--summary-json", target.format(tmp=tmp_path))
    _one_line_error(proc, message)
    assert "frames in" not in proc.stderr


@pytest.mark.parametrize("flag, value, message", [("--detector-confidence", "7", "in [0, 1]"),
                                                  ("--threads", "-1", "integer >= 0"),
                                                  ("--window", "-3", "integer >= 0"),
                                                  ("--max-frames", "ten", "integer >= 0"),
                                                  ("--stride", "0", "integer >= 1")])
def test_numbers_are_checked_when_parsed(flag, value, message):
    proc = run_cli("--source", "x.mp4", flag, value)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line, not the usage block
    assert flag in proc.stderr and message in proc.stderr


def test_version_and_defaults_in_help():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("lart-stream ")
    text = " ".join(run_cli("--help").stdout.split())  # argparse wraps lines
    assert "(default: tcp://127.0.0.1:5555)" in text and "(default: 0.3)" in text and "0 = no limit" in text
    for sub in ("export", "bench"):
        text = " ".join(run_cli(sub, "--help").stdout.split())
        assert "--model-size" in text and "(default: " in text, sub
        assert run_cli(sub, "--version").stdout.startswith(f"lart-stream {sub} ")


def test_old_flag_names_still_work_and_warn():
    proc = run_cli("--mode", "window", "--print-config")
    assert proc.returncode == 0 and 'mode = "window"' in proc.stdout
    assert "--mode is deprecated, use --action-mode" in proc.stderr
    proc = run_cli("--model-size", "official", "--lart-size", "tiny", "--print-config")
    assert 'size = "official"' in proc.stdout and 'size = "tiny"' in proc.stdout  # hmr / actions
    for sub, old, new in (("export", "--hmr2-checkpoint", "--hmr-checkpoint"), ("export", "--size", "--model-size"),
                          ("bench", "--size", "--frame-size"), ("bench", "--mode", "--action-mode")):
        help_text = run_cli(sub, "--help").stdout
        assert new in help_text and f"{old} " not in help_text, (sub, old)  # hidden
    proc = run_cli("export", "--size", "tiny", "--hmr2-checkpoint", "/nonexistent.ckpt", "--models", "hmr2")
    assert proc.returncode == 2 and "--size is deprecated" in proc.stderr
    assert "--hmr-checkpoint: no such file: /nonexistent.ckpt" in proc.stderr


def test_first_run_writes_a_video_to_look_at_and_top_actions(tmp_path, pedestrians):
    out = tmp_path / "s.json"
    proc = run_cli("--source", str(pedestrians), "--max-frames", "12", "--publish", "none", "--status", "on",
                   "--summary-json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    video = tmp_path / "lart-stream-out" / "pedestrians.mp4"
    assert len(read_frames(video)) == 12
    assert "annotated video: lart-stream-out/pedestrians.mp4 (12 frames" in proc.stderr
    summary = json.loads(out.read_text())
    status = proc.stderr.split("\x1b[2K")[1:]  # the status line's updates (text mode turns \r into \n)
    assert status and "frame " in status[0] and "/12" in status[0] and "latency" in status[0]
    if "actions" in summary["stages_ms"]:  # random weights: labelled so in the summary and on the status line
        assert summary["random_weights"] and summary["people"]
        assert "RANDOM WEIGHTS" in status[0]
        assert "top actions per person" in proc.stderr and "RANDOM #" in proc.stderr
        first = summary["people"][0]
        assert first["frames"] >= 1 and len(first["actions"]) == 3
    proc = run_cli("--source", str(pedestrians), "--max-frames", "2", "--publish", "none", "--annotate", "none",
                   cwd=tmp_path / "lart-stream-out")
    assert proc.returncode == 0 and "annotated video" not in proc.stderr
    assert not (tmp_path / "lart-stream-out" / "lart-stream-out").exists()


def test_garbage_lart_checkpoint_is_one_line(tmp_path, generated_video):
    bad = tmp_path / "lart.ckpt"
    bad.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    proc = run_cli("--source", str(generated_video), *COMMON, "--lart-checkpoint", str(bad))
    _one_line_error(proc, "not a PyTorch checkpoint")
    assert "weights_only" not in proc.stderr


def test_status_text_for_a_file_has_progress_eta_latency_and_the_random_marker():
    from lart_stream.realtime.engine import Pipeline, _status_text, expected_frames
    from lart_stream.realtime.records import Detections, Frame, FrameResult, People, Tracks

    class RandomStage:
        random_weights = True
        name = "random"

    pipeline = Pipeline(detector=None, lifter=RandomStage())
    pipeline.stats.add("latency", 40.0)
    frame = Frame(9, 0.0, np.zeros((4, 4, 3), np.uint8))
    result = FrameResult(frame, Detections.empty(), People.from_detections(Detections.empty(), (4, 4)),
                         Tracks.empty(), None, {}, 0.0)
    text = _status_text(pipeline, result, fps=5.0, dropped=0, done=10, total=110)
    assert text.startswith("frame 10/110 ETA 0:20 |") and "latency 40 ms" in text and "RANDOM WEIGHTS" in text

    class File:
        frame_count, live = 120, False

    assert expected_frames(File()) == 120 and expected_frames(File(), max_frames=40) == 40
