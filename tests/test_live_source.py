"""Live sources against a real stream: ffmpeg serving MJPEG over HTTP on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import free_port, lart_stream_cmd
from lart_stream.realtime.sources import LiveSource, SourceConfig, SourceError, open_source

FFMPEG = shutil.which("ffmpeg")
if FFMPEG is None and os.environ.get("CI"):
    raise RuntimeError("ffmpeg is required in CI (.ci/run installs it)")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install ffmpeg)")


class StreamServer:
    """ffmpeg reading a clip in a loop at ``speed`` x its rate and serving it on http://127.0.0.1:port/feed."""

    def __init__(self, clip, port: int, speed: float = 1.0):
        self.cmd = [FFMPEG, "-loglevel", "error", "-nostdin", "-readrate", str(speed), "-stream_loop", "-1",
                    "-i", str(clip), "-an", "-c:v", "mjpeg", "-q:v", "6", "-f", "mpjpeg", "-listen", "1",
                    f"http://127.0.0.1:{port}/feed"]
        self.url = f"http://127.0.0.1:{port}/feed"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "StreamServer":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.7)  # let it listen
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def server_factory():
    servers = []

    def make(clip, speed=1.0):
        server = StreamServer(clip, free_port(), speed)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.kill()


def test_unreachable_stream_is_a_clear_error():
    with pytest.raises(SourceError, match="cannot open stream http://127.0.0.1"):
        open_source(SourceConfig(path=f"http://127.0.0.1:{free_port()}/feed"))


def test_fast_stream_slow_consumer_drops_instead_of_queueing(server_factory, pedestrians):
    """A 10 fps clip served at 8x (80 fps) into a consumer that takes 100 ms a frame."""
    server = server_factory(pedestrians, speed=8.0).start()
    source = open_source(SourceConfig(path=server.url), threading.Event())
    assert isinstance(source, LiveSource)
    ages, indices = [], []
    try:
        for frame in source:
            ages.append(time.monotonic() - frame.t_capture)  # age of the frame when processing starts
            indices.append(frame.index)
            time.sleep(0.1)
            if len(ages) == 30:
                break
    finally:
        source.close()
    assert source.dropped > 30, f"only {source.dropped} dropped: frames are being queued"
    assert max(ages) < 0.25, f"frame age grew to {max(ages):.2f} s: a queue is building up"
    # Indices count frames read from the stream, so drops show as gaps.
    assert indices == sorted(indices) and indices[-1] - indices[0] > 2 * len(indices)


def test_pipeline_reconnects_after_stream_restart(tmp_path, server_factory, pedestrians):
    server = server_factory(pedestrians, speed=1.0).start()
    out = tmp_path / "s.json"
    proc = subprocess.Popen([*lart_stream_cmd(), "--source", server.url, "--max-frames", "60", "--publish", "none",
                             "--summary-json", str(out)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    running = threading.Event()

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if "pipeline:" in line:
                running.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert running.wait(120), "".join(lines)
        time.sleep(2.0)  # ~20 frames at 10 fps
        server.kill()  # the stream dies mid-run
        time.sleep(2.0)
        server.start()  # ... and comes back on the same address
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = "".join(lines)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["frames"] == 60
    assert "stream stopped; reconnecting" in stderr
    assert "reconnected after" in stderr
