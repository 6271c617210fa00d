"""Shared fixtures: real footage where it exists, generated clips everywhere."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PEDESTRIANS = REPO / "tests" / "data" / "pedestrians.mp4"  # 120 real frames, shipped
VTEST = REPO.parent / "shared" / "data" / "vtest.avi"  # full clip, only where ../shared exists


def lart_stream_cmd() -> list[str]:
    """The installed console script, else the module (same code)."""
    exe = shutil.which("lart-stream")
    return [exe] if exe else [sys.executable, "-m", "lart_stream.realtime.cli"]


def run_cli(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*lart_stream_cmd(), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, **kw)


def write_video(path: Path, frames: int = 30, size: tuple[int, int] = (320, 240), fps: float = 10.0,
                fourcc: str = "MJPG") -> Path:
    """A generated clip: a textured background with two moving blobs."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    for i in range(frames):
        image = background.copy()
        cv2.rectangle(image, (10 + 3 * i, 40), (40 + 3 * i, 140), (0, 0, 255), -1)
        cv2.circle(image, (w - 20 - 2 * i, h // 2), 15, (255, 255, 0), -1)
        writer.write(image)
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame a video file decodes to (real decoding, as a user's player would)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _scratch_working_folder(tmp_path_factory):
    """Commands started by the tests run in a scratch working folder, so default outputs
    (lart-stream-out/, lart-stream-bench/) never land in the checkout."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture
def generated_video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "generated.avi")


@pytest.fixture(scope="session")
def pedestrians() -> Path:
    assert PEDESTRIANS.is_file(), "tests/data/pedestrians.mp4 is part of the repo"
    return PEDESTRIANS
