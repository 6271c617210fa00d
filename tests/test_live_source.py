"""Live sources against a real stream: ffmpeg serving MJPEG over HTTP on loopback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from conftest import free_port, lart_stream_cmd, run_cli
from lart_stream.realtime.publisher import Publisher, PublisherConfig
from lart_stream.realtime.sources import LiveSource, SourceConfig, SourceError, open_source
from lart_stream.realtime.subscriber import Subscriber

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


class _MjpegHandler(BaseHTTPRequestHandler):
    """multipart/x-mixed-replace JPEG stream; the first connection goes silent once ``stall`` is set."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: StallingMjpegServer = self.server  # type: ignore[assignment]
        number = server.connected()
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(server.jpeg)
                + server.jpeg + b"\r\n")
        try:
            while not server.closing.is_set():
                if number == 1 and server.stall.is_set():
                    server.stalled_after = server.sent
                    server.silent.set()
                    server.closing.wait()  # connection open, nothing sent: a stalled camera
                    return
                self.wfile.write(part)
                self.wfile.flush()
                server.sent += number == 1
                server.closing.wait(0.02)  # ~50 fps
        except (BrokenPipeError, ConnectionResetError):
            pass


class StallingMjpegServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _MjpegHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/feed"
        self.jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 100, np.uint8))[1].tobytes()
        self.stall, self.silent = threading.Event(), threading.Event()
        self.closing, self.reopened = threading.Event(), threading.Event()
        self.connections = 0
        self.sent = 0  # frames sent on the first connection
        self.stalled_after: int | None = None  # frames the first connection sent before going silent
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def connected(self) -> int:
        with self._lock:
            self.connections += 1
            if self.connections >= 2:
                self.reopened.set()
            return self.connections

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()


def test_stalled_stream_gives_heartbeat_stats_and_is_reopened(caplog):
    server = StallingMjpegServer()
    source = open_source(SourceConfig(path=server.url, stall_timeout_s=3.0, reconnect_initial_s=0.1))
    try:
        with caplog.at_level(logging.WARNING, logger="lart_stream.realtime.sources"), \
             Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0.1)) as pub, \
             Subscriber(pub.endpoint, ("stats",), hwm=0) as sub:
            pub.watch_source(lambda: source.state)
            frames = iter(source)
            first = next(frames)
            server.stall.set()  # the camera goes silent with its connection open
            assert server.silent.wait(60)
            states: list[str] = []
            end = time.monotonic() + 120  # failure guard only
            while not server.reopened.is_set() and time.monotonic() < end:
                states.append(sub.recv(timeout=60).source)  # heartbeats: no frame reaches the publisher
            assert server.reopened.is_set(), f"the stalled stream was never reopened; states {states}"
            assert "stalled" in states, states
            # Frames flow again on the new connection: indices count frames read, so an index past what
            # the first connection sent can only come from the second.
            after = next(f for f in frames if f.index >= server.stalled_after)
            assert after.index > first.index and source.reconnects >= 1
            states.append(_recv_state(sub, "live"))
    finally:
        source.close()
        server.close()
    assert "with the connection open (--stall-timeout); reconnecting" in caplog.text
    assert "reconnected after" in caplog.text


def _recv_state(sub: Subscriber, want: str) -> str:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if (state := sub.recv(timeout=60).source) == want:
            return state
    raise AssertionError(f"no stats with source {want!r}")


def test_broken_file_gives_exactly_one_line_on_stderr(tmp_path, pedestrians):
    """FFmpeg's own "moov atom not found" and decoder messages stay out of the user's terminal."""
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(pedestrians.read_bytes()[:20_000])  # the index (moov) is cut off
    r = run_cli("--source", str(truncated), "--publish", "none")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"lart-stream: cannot open video {truncated}: not a video file OpenCV can "
                                     "decode"], r.stderr


def test_corrupt_frames_do_not_leak_decoder_messages(tmp_path, pedestrians):
    data = bytearray(pedestrians.read_bytes())
    for i in range(5000, len(data), 997):  # damage the H.264 payload, keep the container readable
        data[i] = 0
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    r = run_cli("--source", str(corrupt), "--publish", "none", "--max-frames", "5", "--status", "off",
                "--log-level", "WARNING")
    assert r.returncode == 0, r.stderr
    native = [line for line in r.stderr.splitlines() if line.startswith("[") or " @ 0x" in line]
    assert not native, "\n".join(native[:5])
