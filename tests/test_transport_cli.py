"""`lart-stream listen | view | keys` against a live publisher on loopback."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import cv2
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from conftest import read_frames

from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import ActionScore, ActionsMessage, TrackAction, TrackPrediction
from lart_stream.realtime.publisher import Publisher, PublisherConfig
from lart_stream.realtime.records import ActionPredictions, Detections, Frame, FrameResult, People, Tracks
from lart_stream.realtime.transport_cli import format_actions, keys_main, listen_lines, listen_main, view_main


def make_result(i: int, random_weights: bool) -> FrameResult:
    image = np.full((240, 320, 3), 90, np.uint8)
    tracks = Tracks([4, 8], [[20, 30, 100, 200], [150, 40, 230, 220]], [2, 2], [9, 9], [9, 9], [0, 0], [0, 1])
    scores = np.tile(np.linspace(0.1, 0.9, 5, dtype=np.float32), (2, 1))
    acts = ActionPredictions([4, 8], [i, i], scores, (1, 3, 5, 7, 9), ("bend", "crouch", "dance", "fall", "jump"),
                             random_weights)
    frame = Frame(index=i, t_capture=time.monotonic(), image=image)
    return FrameResult(frame, Detections.empty(), People.empty((320, 240)), tracks, acts, {"detect": 3.0}, 0.0)


@pytest.fixture
def live_publisher():
    running = []

    def start(random_weights: bool = True, frames: bool = False) -> str:
        pub = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", frames=frames, frames_fps=100,
                                        stats_interval_s=0.2))
        stop = threading.Event()

        def loop() -> None:
            i = 0
            while not stop.is_set():
                pub.send(make_result(i, random_weights))
                i += 1
                time.sleep(0.02)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        running.append((pub, stop, thread))
        return pub.endpoint

    yield start
    for pub, stop, thread in running:
        stop.set()
        thread.join()
        pub.close()


def test_listen_random_weights_are_marked_on_every_line(live_publisher, capsys, caplog):
    endpoint = live_publisher(random_weights=True)
    assert listen_main([endpoint, "--count", "3", "--timeout", "30", "--topics", "actions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("!! RANDOM WEIGHTS - scores are NOT predictions !!") for line in lines)
    assert all("random: jump=0.90 fall=0.70 dance=0.50" in line for line in lines)
    assert "RANDOM action weights" in caplog.text


def test_listen_count_counts_actions_messages_only():
    stats = protocol.StatsMessage(session=1, seq=0, stream="0", t_publish_ns=0, t_wall_ns=0, weights="none",
                                  window_s=1.0, fps=0.0, frame_count=0, dropped_frames=0, latency_ms=None,
                                  stage_ms={}, published=0, publish_dropped=0)
    actions = [protocol.actions_message(make_result(i, False), session=1, seq=i, t_publish_ns=0, t_wall_ns=0)
               for i in range(3)]
    stream = [stats, actions[0], stats, stats, actions[1], stats, actions[2], stats]
    lines = list(listen_lines(iter(stream), count=2))
    assert [line.split()[1] for line in lines] == ["stats", "frame", "stats", "stats", "frame"]
    assert len(list(listen_lines(iter(stream)))) == len(stream)  # no --count: everything


def test_listen_official_weights_and_stats(live_publisher, capsys):
    endpoint = live_publisher(random_weights=False)
    assert listen_main([endpoint, "--count", "20", "--timeout", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not any("RANDOM" in line for line in lines)
    actions = [line for line in lines if " track(s)" in line]
    assert actions and "#4 conf (20,30,100,200) jump=0.90 fall=0.70 dance=0.50" in actions[-1]
    assert any(" stats fps " in line for line in lines)  # stats every 0.2 s, 20 frames = 0.4 s


def test_listen_json_lines_follow_the_schema(live_publisher, capsys):
    endpoint = live_publisher(random_weights=True)
    assert listen_main([endpoint, "--json", "--count", "12", "--timeout", "30", "--topics", "actions,stats"]) == 0
    schema = protocol.load_schema()
    topics = set()
    for line in capsys.readouterr().out.splitlines():
        obj = json.loads(line)
        topic = obj.pop("topic")
        topics.add(topic)
        Draft202012Validator({"$ref": f"#/$defs/{topic}", "$defs": schema["$defs"]}).validate(obj)
        assert obj["weights"] == "random"
    assert topics == {"actions", "stats"}


def test_format_actions_by_hand():
    track = TrackPrediction(id=3, box=(1.4, 2.6, 50.0, 60.0), cam_t=None, state="confirmed", age=5, hits=5,
                            time_since_update=0,
                            action=TrackAction(frame=9, top=(ActionScore(12, "stand", 0.875),), scores=None))
    msg = ActionsMessage(session=1, seq=0, stream="0", frame=10, t_capture_ns=0, t_publish_ns=0,
                         t_wall_ns=1_000_000_000, image_size=(64, 64), weights="official", class_ids=(12,),
                         class_names=("stand",), stage_ms={}, tracks=(track,))
    assert format_actions(msg, now_wall_ns=1_002_500_000) == \
        "[0] frame 10 lag 2.5ms 1 track(s) | #3 conf (1,3,50,60) stand=0.88 @9"


def test_listen_user_errors(capsys):
    assert listen_main(["tcp://127.0.0.1:notaport"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lart-stream listen: error: cannot connect") and "\n" not in err
    assert listen_main(["tcp://127.0.0.1:5555", "--topics", "faces"]) == 2
    assert "unknown topic" in capsys.readouterr().err
    assert listen_main(["tcp://127.0.0.1:9", "--timeout", "0.3"]) == 1
    assert "nothing received" in capsys.readouterr().err


def test_view_writes_video_with_loud_random_banner(live_publisher, tmp_path, capsys):
    endpoint = live_publisher(random_weights=True, frames=True)
    out = tmp_path / "view.mp4"
    assert view_main([endpoint, "--output", str(out), "--count", "4", "--timeout", "30"]) == 0
    frames = read_frames(out)
    assert len(frames) == 4 and frames[0].shape == (240, 320, 3)
    b, g, r = (int(v) for v in frames[-1][4, 160])  # the banner across the top is red
    assert r > 180 and g < 80 and b < 80
    assert not np.array_equal(frames[-1][100, 20], frames[-1][100, 60])  # box edge drawn at x=20


def test_view_user_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert view_main(["tcp://127.0.0.1:5555"]) == 2
    assert "--output" in capsys.readouterr().err
    assert view_main(["tcp://127.0.0.1:5555", "--output", str(tmp_path / "no" / "such" / "v.mp4")]) == 2


def test_keys(tmp_path, capsys):
    folder = tmp_path / "keys"
    assert keys_main([str(folder), "--name", "client-1"]) == 0
    public, secret = folder / "client-1.key", folder / "client-1.key_secret"
    assert "public-key" in public.read_text() and "secret-key" not in public.read_text()
    assert "secret-key" in secret.read_text()
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    before = secret.read_text()
    capsys.readouterr()
    assert keys_main([str(folder), "--name", "client-1"]) == 2  # never overwrites silently
    assert "exists" in capsys.readouterr().err and secret.read_text() == before
    assert keys_main([str(folder), "--name", "client-1", "--force"]) == 0
    assert secret.read_text() != before
    assert keys_main([str(folder), "--name", "../evil"]) == 2


def test_listen_and_view_default_to_the_default_address(capsys):
    # Nothing publishes there in the test (or if something does, listen prints it and times out later).
    assert listen_main(["--timeout", "0.3", "--topics", "frames"]) == 1
    assert "nothing received from tcp://127.0.0.1:5555" in capsys.readouterr().err
    assert view_main(["--timeout", "0.3", "--output", os.devnull]) == 1
    assert "nothing received from tcp://127.0.0.1:5555" in capsys.readouterr().err


def test_listen_ends_when_the_publisher_ends(capsys):
    pub = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0))
    done: list[int] = []
    listener = threading.Thread(target=lambda: done.append(listen_main([pub.endpoint, "--timeout", "120"])),
                                daemon=True)
    listener.start()
    out = ""
    try:
        for i in range(100_000):  # until listen has printed a line: it is subscribed
            pub.send(make_result(i, False))
            out += capsys.readouterr().out
            if " track(s)" in out or not listener.is_alive():
                break
            time.sleep(0.01)
    finally:
        pub.close()  # sends the final stats
    listener.join(120)
    assert done == [0], capsys.readouterr().err
    assert " track(s)" in out
