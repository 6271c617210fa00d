"""The whole pipeline publishing to subscribers in other processes: what a user's program sees."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from conftest import free_port, lart_stream_cmd, run_cli
from lart_stream.realtime.protocol import ActionsMessage
from lart_stream.realtime.subscriber import Subscriber


def test_pipeline_messages_reach_a_subscriber_and_listen(pedestrians):
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipeline = subprocess.Popen([*lart_stream_cmd(), "--source", str(pedestrians), "--realtime", "--max-frames", "40",
                                 "--publish", address, "--status", "off"], stderr=subprocess.PIPE, text=True, env=env)
    listen = subprocess.Popen([*lart_stream_cmd(), "listen", address, "--count", "5", "--timeout", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    received: list[ActionsMessage] = []
    try:
        with Subscriber(address, topics=("actions",)) as sub:
            while len(received) < 12:
                msg = sub.recv(timeout=120)
                if isinstance(msg, ActionsMessage):
                    received.append(msg)
        out, err = listen.communicate(timeout=120)
        _, pipeline_err = pipeline.communicate(timeout=180)
    finally:
        for p in (pipeline, listen):
            if p.poll() is None:
                p.kill()
    assert pipeline.returncode == 0, pipeline_err[-2000:]
    assert f"publishing on {address}" in pipeline_err  # the address actually bound is always logged
    frames = [m.frame for m in received]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)  # in order, no repeats
    assert all(m.weights == "random" for m in received)  # never presented as real predictions
    with_tracks = [m for m in received if m.tracks]
    assert with_tracks, "HOG finds the pedestrians, the tracker confirms them"
    for m in with_tracks:
        for t in m.tracks:
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576
            if t.action is not None:
                assert t.action.frame <= m.frame and len(t.action.top) == 5
                assert all(0.0 <= a.score <= 1.0 and a.name for a in t.action.top)
    assert listen.returncode == 0, err
    frame_lines = [l for l in out.splitlines() if " frame " in l]
    assert len(frame_lines) == 5 and all(l.startswith("!! RANDOM WEIGHTS") for l in frame_lines), out


def test_publish_port_in_use_is_one_line_before_any_model_loads(pedestrians):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        r = run_cli("--source", str(pedestrians), "--publish", address, "--max-frames", "1", "--status", "off")
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("lart-stream:")]
    assert len(errors) == 1 and errors[0].count("cannot publish on") == 1, r.stderr
    assert "--publish none" in errors[0] and "another port" in errors[0]
    assert "Traceback" not in r.stderr
    assert not re.search(r"LART stage|HMR|detector", r.stderr), f"models were built first:\n{r.stderr}"


def test_publish_port_out_of_range_is_refused(pedestrians):
    r = run_cli("--source", str(pedestrians), "--publish", "tcp://127.0.0.1:99999", "--max-frames", "1",
                "--status", "off")
    assert r.returncode == 2 and "port '99999' is not in 1-65535" in r.stderr, r.stderr
    assert "publishing on" not in r.stderr
