"""The whole pipeline publishing to subscribers in other processes: what a user's program sees."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import free_port, lart_stream_cmd
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
