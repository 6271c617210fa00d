"""Publisher and subscribers over real sockets: most tests run them in separate processes.

The publisher runs in a child process that reports on stdout (one JSON object per
line) and takes commands on stdin; the test process is a subscriber itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import ActionsMessage, FrameMessage, StatsMessage
from lart_stream.realtime.publisher import Publisher, PublisherConfig
from lart_stream.realtime.ratelimit import RateLimit
from lart_stream.realtime.records import ActionPredictions, Detections, Frame, FrameResult, People, Tracks
from lart_stream.realtime.subscriber import MAX_SESSIONS, SeqTracker, Subscriber
from lart_stream.realtime.transport_cli import keys_main

REPO = Path(__file__).resolve().parents[1]

# Shared by the child processes: a FrameResult factory and a line-based reporting helper.
PRELUDE = r'''
import json, os, sys, threading, time
import numpy as np
from lart_stream.realtime.records import ActionPredictions, Detections, Frame, FrameResult, People, Tracks
from lart_stream.realtime.publisher import Publisher, PublisherConfig
from lart_stream.realtime.ratelimit import RateLimit
from lart_stream.realtime.subscriber import MAX_SESSIONS, SeqTracker, Subscriber

def make_factory(people, classes=80, size=(64, 48)):
    rng = np.random.default_rng(0)
    image = np.zeros((size[1], size[0], 3), np.uint8)
    xy = rng.uniform(0, 500, (people, 2)).astype(np.float32)
    tracks = Tracks(np.arange(1, people + 1), np.concatenate([xy, xy + 80], 1), np.full(people, 2),
                    np.full(people, 30), np.full(people, 29), np.zeros(people), np.arange(people),
                    cam_t=rng.normal(size=(people, 3)).astype(np.float32))
    scores = rng.uniform(size=(people, classes)).astype(np.float32)
    ids = tuple(range(1, classes + 1))
    names = tuple(f"action number {i}" for i in ids)
    def make(i):
        acts = ActionPredictions(tracks.track_id, np.full(people, i), scores, ids, names, random_weights=False)
        frame = Frame(index=i, t_capture=time.monotonic(), image=image)
        return FrameResult(frame, Detections.empty(), People.empty(size), tracks, acts, {"detect": 1.0},
                           time.monotonic())
    return make

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def say(**kw):
    print(json.dumps(kw), flush=True)

commands = {}
def _read_commands():
    for line in sys.stdin:
        commands[line.strip()] = threading.Event()
        commands[line.strip()].set()
    commands["quit"] = threading.Event()
    commands["quit"].set()
threading.Thread(target=_read_commands, daemon=True).start()

def wait_for(cmd, timeout=120):
    end = time.monotonic() + timeout
    while cmd not in commands and time.monotonic() < end:
        time.sleep(0.01)
'''


class Child:
    """A Python child process running PRELUDE + ``code`` with JSON lines on stdout."""

    def __init__(self, code: str, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", PRELUDE + code, *args], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def read(self, timeout: float = 60) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._sel.select(timeout=0.1):
                line = self.proc.stdout.readline()
                if line:
                    return json.loads(line)
                break
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"child said nothing in {timeout} s; stderr:\n{self.stderr()}")

    def poll_line(self) -> dict | None:
        if self._sel.select(timeout=0):
            line = self.proc.stdout.readline()
            return json.loads(line) if line else None
        return None

    def tell(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


@pytest.fixture
def children():
    started: list[Child] = []
    yield lambda code, *args: started.append(Child(code, *args)) or started[-1]
    for c in started:
        c.stop()


# --- one publisher, a fast, a stalled and a dying subscriber ------------------------------------------

PUBLISH_PACED = r'''
people, n, hwm = (int(a) for a in sys.argv[1:4])
make = make_factory(people)
pub = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", hwm=hwm, stats_interval_s=0))
pub.send(make(0))
rss_start = rss()
say(endpoint=pub.endpoint)
i = 1
while "go" not in commands:  # warm-up while the subscribers connect
    pub.send(make(i)); i += 1; time.sleep(0.01)
first, t0, peak = i, time.monotonic(), rss()
for k in range(n):
    pub.send(make(i)); i += 1
    if k % 250 == 0:
        peak = max(peak, rss())
    time.sleep(0.002)
say(first=first, last=i - 1, seconds=time.monotonic() - t0, rss_start=rss_start, rss_peak=max(peak, rss()),
    dropped=pub.dropped, published=pub.published)
wait_for("quit")
pub.close()
'''

STALLED = r'''
sub = Subscriber(sys.argv[1], ("actions",), hwm=10)
sub.recv(timeout=60)
say(ready="stalled")
time.sleep(3600)  # never reads again
'''

DYING = r'''
sub = Subscriber(sys.argv[1], ("actions",))
sub.recv(timeout=60)
say(ready="dying")
for _ in range(100):
    sub.recv(timeout=60)
os._exit(0)  # vanishes without closing anything
'''


def test_stalled_subscriber_costs_nothing_and_fast_one_gets_everything(children):
    people, n, hwm = 20, 4000, 200
    size = len(protocol.encode(protocol.actions_message(_result(0, people), session=0, seq=0, t_publish_ns=0,
                                                        t_wall_ns=0))[1])
    pub = children(PUBLISH_PACED, str(people), str(n), str(hwm))
    endpoint = pub.read()["endpoint"]
    stalled = children(STALLED, endpoint)
    dying = children(DYING, endpoint)
    with Subscriber(endpoint, ("actions",), hwm=0) as fast:  # hwm 0: unlimited on our side
        fast.recv(timeout=60)
        assert stalled.read()["ready"] == "stalled" and dying.read()["ready"] == "dying"
        pub.tell("go")
        frames: list[int] = []
        summary = None
        end = time.monotonic() + 120
        while time.monotonic() < end:
            summary = summary or pub.poll_line()
            if summary is not None and frames and frames[-1] >= summary["last"]:
                break
            try:
                frames.append(fast.recv(timeout=0.5).frame)
            except TimeoutError:
                continue
        assert summary is not None, pub.stderr()
        missed = fast.stats.missed
    # The fast subscriber got every message of the run, in order.
    run = [f for f in frames if f >= summary["first"]]
    assert run == list(range(summary["first"], summary["last"] + 1))
    assert missed == 0
    # The publisher finished every send (a blocking send would hang on the stalled peer) and lost none.
    assert summary["dropped"] == 0
    # Memory stays bounded while the stalled peer is offered far more than the bound.
    growth = summary["rss_peak"] - summary["rss_start"]
    offered = n * size
    assert offered > 40e6
    assert growth < 16e6, f"publisher grew {growth / 1e6:.1f} MB for {offered / 1e6:.0f} MB offered"
    assert stalled.proc.poll() is None  # it really stalled (alive, not reading) ...
    dying.proc.wait(30)  # ... and the dead one is gone without harm
    print(f"\n{n} x {size} B at {n / summary['seconds']:.0f} msg/s; publisher RSS growth {growth / 1e6:.1f} MB")


# --- late joiner --------------------------------------------------------------------------------------

PUBLISH_THEN_IDLE = r'''
make = make_factory(2)
pub = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0))
for i in range(5):
    pub.send(make(i))
pub.send_stats({"dropped_frames": 7})
time.sleep(0.2)
say(endpoint=pub.endpoint)
wait_for("quit")
pub.close()
'''


def test_late_joiner_gets_latest_state_from_idle_publisher(children):
    pub = children(PUBLISH_THEN_IDLE)
    endpoint = pub.read()["endpoint"]  # everything was published before anyone subscribed
    with Subscriber(endpoint, ("actions", "stats")) as late:
        got = {}
        for _ in range(2):
            msg = late.recv(timeout=10)
            got[msg.topic] = msg
        assert isinstance(got["actions"], ActionsMessage) and got["actions"].frame == 4 and got["actions"].seq == 4
        assert isinstance(got["stats"], StatsMessage) and got["stats"].dropped_frames == 7
        with Subscriber(endpoint, ("stats",)) as later:
            assert later.recv(timeout=10).dropped_frames == 7
            # The re-send for `later` reaches `late` too; it recognises it and does not return it again.
            with pytest.raises(TimeoutError):
                late.recv(timeout=1.5)
            assert late.stats.duplicates == 1


# --- CURVE ------------------------------------------------------------------------------------------

PUBLISH_CURVE = r'''
make = make_factory(2)
pub = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", curve_secret_key=sys.argv[1],
                                curve_allowed_keys=sys.argv[2]))
say(endpoint=pub.endpoint)
i = 0
while "quit" not in commands:
    pub.send(make(i)); i += 1; time.sleep(0.02)
pub.close()
'''


def _curve_keys(tmp_path, capsys):
    """Key pairs for a server and the clients "ok" (allowed) and "stranger"; the allowed-keys folder."""
    for folder, name in (("server", "server"), ("ok", "ok"), ("stranger", "stranger")):
        assert keys_main([str(tmp_path / folder), "--name", name]) == 0
    capsys.readouterr()
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(tmp_path / "ok" / "ok.key", allowed)
    return allowed


def test_curve_allowed_client_receives_others_receive_nothing(children, tmp_path, capsys):
    allowed = _curve_keys(tmp_path, capsys)
    pub = children(PUBLISH_CURVE, str(tmp_path / "server" / "server.key_secret"), str(allowed))
    endpoint = pub.read()["endpoint"]
    server_key = str(tmp_path / "server" / "server.key")
    with Subscriber(endpoint, ("actions",), curve_server_key=server_key, newest_only=True,
                    curve_secret_key=str(tmp_path / "ok" / "ok.key_secret")) as ok, \
         Subscriber(endpoint, ("actions",), curve_server_key=server_key,
                    curve_secret_key=str(tmp_path / "stranger" / "stranger.key_secret")) as stranger, \
         Subscriber(endpoint, ("actions",), curve_server_key=server_key) as ephemeral, \
         Subscriber(endpoint, ("actions",)) as plain:
        before = ok.recv(timeout=20).frame
        for sub in (stranger, ephemeral, plain):
            with pytest.raises(TimeoutError):
                sub.recv(timeout=1.0)
        after = ok.recv(timeout=10).frame  # newest
        assert after > before + 20  # the allowed client kept receiving meanwhile
        assert stranger.stats.received == ephemeral.stats.received == plain.stats.received == 0


class _Waiter(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged (synchronise on a log line)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text, self.event, self.lines = text, threading.Event(), []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if self.text in line:
            self.lines.append(line)
            self.event.set()


@pytest.mark.parametrize("client", ["stranger", "plain"])
def test_publisher_logs_refused_curve_clients(tmp_path, capsys, client):
    allowed = _curve_keys(tmp_path, capsys)
    waiter = _Waiter("refused a subscriber")
    logger = logging.getLogger("lart_stream.realtime.publisher")
    logger.addHandler(waiter)
    try:
        with Publisher(PublisherConfig(address="tcp://127.0.0.1:*", curve_secret_key=str(tmp_path / "server" / "server.key_secret"),
                                       curve_allowed_keys=str(allowed))) as pub:
            keys = {} if client == "plain" else dict(
                curve_server_key=str(tmp_path / "server" / "server.key"),
                curve_secret_key=str(tmp_path / "stranger" / "stranger.key_secret"))
            with Subscriber(pub.endpoint, ("actions",), **keys):
                assert waiter.event.wait(60), "the refused client was never logged"
            assert pub._sender.refused >= 1
    finally:
        logger.removeHandler(waiter)
    why = "not in the allow-list" if client == "stranger" else "no valid CURVE handshake"
    assert why in waiter.lines[0]
    assert len(waiter.lines) <= 2  # it retries every 100 ms; the log says so at most every 10 s


def test_rate_limit_lets_one_through_per_period():
    now = [0.0]
    limit = RateLimit(10.0, clock=lambda: now[0])
    assert [limit.ready() for _ in range(5)] == [True, False, False, False, False]
    now[0] = 9.9
    assert not limit.ready() and limit.take_suppressed() == 5 and limit.take_suppressed() == 0
    now[0] = 10.0
    assert limit.ready() and not limit.ready()


def test_keys_names_the_real_allow_list_flag(tmp_path, capsys):
    from lart_stream.realtime.cli import build_parser

    assert keys_main([str(tmp_path), "--name", "alice"]) == 0
    out = capsys.readouterr().out
    flag = re.search(r"(--curve-allowed-\S+) folder", out).group(1)
    assert flag == "--curve-allowed-keys"
    assert flag in build_parser().format_help()


def test_curve_config_errors(tmp_path, capsys):
    assert keys_main([str(tmp_path), "--name", "server"]) == 0
    capsys.readouterr()
    with pytest.raises(ValueError, match="only a public key"):
        Publisher(PublisherConfig(address="tcp://127.0.0.1:*", curve_secret_key=str(tmp_path / "server.key")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no"):
        Publisher(PublisherConfig(address="tcp://127.0.0.1:*", curve_secret_key=str(tmp_path / "server.key_secret"),
                                  curve_allowed_keys=str(empty)))
    with pytest.raises(ValueError, match="needs the server secret key"):
        PublisherConfig(curve_allowed_keys=str(empty))
    with pytest.raises(ValueError, match="does not exist"):
        Subscriber("tcp://127.0.0.1:5", curve_server_key=str(tmp_path / "missing.key"))


# --- in-process checks over tcp (publisher and subscriber in separate ZeroMQ contexts) ----------------


def _result(i: int, people: int = 2, t_capture: float | None = None, size=(640, 480)) -> FrameResult:
    rng = np.random.default_rng(i)
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:, : size[0] // 2] = (40, 160, 220)  # a half-and-half image: easy to compare after JPEG
    xy = rng.uniform(0, 300, (people, 2)).astype(np.float32)
    tracks = Tracks(np.arange(1, people + 1), np.concatenate([xy, xy + 60], 1), np.full(people, 2),
                    np.full(people, 5), np.full(people, 5), np.zeros(people), np.arange(people))
    classes = 80
    acts = ActionPredictions(tracks.track_id, np.full(people, i), rng.uniform(size=(people, classes)),
                             tuple(range(1, classes + 1)), tuple(f"c{k}" for k in range(1, classes + 1)), True)
    frame = Frame(index=i, t_capture=time.monotonic() if t_capture is None else t_capture, image=image)
    return FrameResult(frame, Detections.empty(), People.empty(size), tracks, acts, {"detect": 2.0}, 0.0)


def _connected(pub: Publisher, sub: Subscriber) -> None:
    """Publish until the subscriber gets a message (ZeroMQ's slow-joiner), then drain."""
    for i in range(500):
        pub.send(_result(10_000 + i))
        try:
            sub.recv(timeout=0.02)
            break
        except TimeoutError:
            continue
    while True:
        try:
            sub.recv(timeout=0.2)
        except TimeoutError:
            return


def test_newest_only_returns_the_newest_message():
    with Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0)) as pub, \
         Subscriber(pub.endpoint, ("actions",), newest_only=True) as sub:
        _connected(pub, sub)
        start = sub.stats.received
        for i in range(50):
            pub.send(_result(i))
        end = time.monotonic() + 20
        while sub.stats.received < start + 50 and time.monotonic() < end:
            time.sleep(0.01)
        assert sub.recv(timeout=1).frame == 49
        with pytest.raises(TimeoutError):
            sub.recv(timeout=0.2)


def test_frames_topic_is_downscaled_and_rate_limited():
    cfg = PublisherConfig(address="tcp://127.0.0.1:*", frames=True, frames_width=320, frames_fps=4,
                          stats_interval_s=0)
    with Publisher(cfg) as pub, Subscriber(pub.endpoint, ("frames",)) as sub:
        for attempt in range(200):  # slow joiner: wait for the first frame
            pub.send(_result(1000 + attempt, t_capture=1000.0 + attempt))
            try:
                sub.recv(timeout=0.05)
                break
            except TimeoutError:
                continue
        for i in range(8):  # capture times 0, 0.125, ... 0.875 s: 4 fps keeps every other one
            pub.send(_result(i, t_capture=2000.0 + i * 0.125))
        got = []
        while True:
            try:
                got.append(sub.recv(timeout=1))
            except TimeoutError:
                break
    assert [m.frame for m in got] == [0, 2, 4, 6]
    m = got[0]
    assert isinstance(m, FrameMessage) and m.image_size == (640, 480) and m.jpeg_size == (320, 240)
    image = m.image()
    assert image.shape == (240, 320, 3)
    assert np.abs(image[100, 40].astype(int) - (40, 160, 220)).max() < 12  # left half colour survives
    assert np.abs(image[100, 280].astype(int)).max() < 12  # right half black


def test_stats_counts_drops_and_merges_runtime_values():
    with Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0)) as pub, \
         Subscriber(pub.endpoint, ("stats",)) as sub:
        for i in (0, 1, 5):  # frames 2, 3 and 4 never reached the publisher
            pub.send(_result(i))
        pub.send_stats({})
        own = sub.recv(timeout=10)
        assert (own.frame_count, own.dropped_frames, own.weights) == (3, 3, "random")
        assert set(own.stage_ms) == {"detect", "publish"} and own.stage_ms["detect"].p50 == 2.0
        assert own.latency_ms is not None and own.latency_ms.max >= own.latency_ms.p50 >= 0
        pub.send(_result(6))
        pub.send_stats({"dropped_frames": 9, "tracks": 2, "stage_ms": {"track": 1.5, "detect": 99.0},
                        "label": "x"})
        given = sub.recv(timeout=10)
        assert given.dropped_frames == 9 and given.extra == {"tracks": 2.0} and given.frame_count == 4
        assert given.stage_ms["detect"].mean == 2.0  # the publisher's own summary of the same frames wins
        assert given.stage_ms["track"] == protocol.Summary(1.5, 1.5, 1.5)  # only the runtime knows this one
        assert given.seq == own.seq + 1
        pub.send_stats({"stage_ms": {"detect": 99.0}})  # no frame since: the runtime's value is all there is
        assert sub.recv(timeout=10).stage_ms["detect"].mean == 99.0


def _raw_publisher() -> tuple[zmq.Context, zmq.Socket, str]:
    """A bare PUB socket on a random loopback port: sends whatever bytes a test gives it, never drops."""
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SNDHWM, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    return ctx, raw, f"tcp://127.0.0.1:{port}"


def _handshake(raw: zmq.Socket, sub: Subscriber, session: int = 77) -> None:
    """Slow-joiner handshake: send valid probes until the subscriber has received one, then drain.

    A PUB socket drops what it sends before the subscription reaches it; once one probe
    has arrived, everything sent afterwards on this connection arrives, in order.
    """
    probe = protocol.actions_message(_result(0, people=0), session=session, seq=0, t_publish_ns=0, t_wall_ns=0)
    wire = protocol.to_wire(probe)
    for seq in range(100_000):
        raw.send_multipart([b"actions", msgpack.packb({**wire, "seq": seq}, use_single_float=True)])
        try:
            sub.recv(timeout=0.05)
            break
        except TimeoutError:
            continue
    else:
        raise AssertionError("the subscriber never received a probe")
    while True:  # probes still queued: received and returned, never counted as skipped
        try:
            sub.recv(timeout=0.2)
        except TimeoutError:
            return


def _recv_until(sub: Subscriber, done, guard_s: float = 60.0) -> list:
    """Messages until ``done(msg)``; the timeout only guards against a hang."""
    got = []
    end = time.monotonic() + guard_s
    while time.monotonic() < end:
        msg = sub.recv(timeout=max(0.01, end - time.monotonic()))
        got.append(msg)
        if done(msg):
            return got
    raise AssertionError(f"gave up after {guard_s} s with {len(got)} messages")


def test_malformed_messages_on_the_wire_are_skipped_with_a_warning(caplog):
    ctx, raw, address = _raw_publisher()
    good = protocol.actions_message(_result(3), session=1, seq=0, t_publish_ns=0, t_wall_ns=0)
    wrong_version = msgpack.packb({**protocol.to_wire(good), "v": 99})
    bad = [[b"actions", b"\xc1\xc1"], [b"actions", protocol.encode(good)[1][:40]], [b"actions", wrong_version],
           [b"actions"], [b"actions", b"", b"", b""]]
    try:
        with caplog.at_level(logging.WARNING, logger="lart_stream.realtime.subscriber"), \
             Subscriber(address, ("actions",)) as sub:
            _handshake(raw, sub)
            assert sub.stats.skipped == 0
            for parts in bad:
                raw.send_multipart(parts)
            raw.send_multipart(protocol.encode(good))
            got = _recv_until(sub, lambda m: m.session == 1)
            assert [m.frame for m in got] == [3]  # the valid one, after every malformed one
            assert sub.stats.skipped == len(bad)
    finally:
        raw.close(0)
        ctx.term()
    text = caplog.text
    assert "skipping invalid message" in text and "schema version 99" in text and "not valid msgpack" in text


def test_every_message_is_either_published_or_counted_as_dropped():
    pub = Publisher(PublisherConfig(address="tcp://127.0.0.1:*", hwm=5, stats_interval_s=0))
    results = [_result(i) for i in range(300)]
    for r in results:  # a burst into a 5-message queue: some are dropped, none blocks
        pub.send(r)
    end = time.monotonic() + 20
    while pub.published + pub.dropped < 300 and time.monotonic() < end:
        time.sleep(0.01)
    assert pub.published + pub.dropped == 300
    pub.close()
    pub.close()  # idempotent
    pub.send(results[0])  # after close: ignored, no error
    pub.send_stats({})


def test_bad_addresses_are_value_errors():
    with pytest.raises(ValueError, match="expected tcp"):
        PublisherConfig(address="http://x")
    with Publisher(PublisherConfig(address="tcp://127.0.0.1:*")) as first:
        with pytest.raises(ValueError, match="cannot publish"):
            Publisher(PublisherConfig(address=first.endpoint))
    with pytest.raises(ValueError, match="unknown topic"):
        Subscriber("tcp://127.0.0.1:5555", ("predictions",))
    with pytest.raises(ValueError, match="cannot connect"):
        Subscriber("tcp://no-such-host-name:abc")


def test_ipc_transport(tmp_path):
    address = f"ipc://{tmp_path}/lart.sock"
    with Publisher(PublisherConfig(address=address, stats_interval_s=0)) as pub, Subscriber(address) as sub:
        _connected(pub, sub)
        pub.send(_result(7))
        assert sub.recv(timeout=10).frame == 7


@pytest.fixture
def raw_pub():
    ctx, raw, address = _raw_publisher()
    yield raw, address
    raw.close(0)
    ctx.term()


def _wire_actions(session: int, seq: int, random_weights: bool = True) -> list[bytes]:
    msg = protocol.actions_message(_result(seq, people=1), session=session, seq=seq, t_publish_ns=0, t_wall_ns=0)
    parts = protocol.encode(msg)
    if not random_weights:
        parts[1] = msgpack.packb({**protocol.to_wire(msg), "weights": "official"}, use_single_float=True)
    return parts


def test_one_far_seq_jump_does_not_make_later_messages_duplicates(raw_pub, caplog):
    raw, address = raw_pub
    session = 12345
    with Subscriber(address, ("actions",), hwm=0) as sub:
        _handshake(raw, sub)
        raw.send_multipart(_wire_actions(session, 0))
        raw.send_multipart(_wire_actions(session, 2 ** 62))  # forged or corrupt, with the live session id
        for seq in range(1, 201):
            raw.send_multipart(_wire_actions(session, seq))
        raw.send_multipart(_wire_actions(session, 1))  # a genuine re-send is still a duplicate
        raw.send_multipart(_wire_actions(session, 201))
        got = _recv_until(sub, lambda m: m.session == session and m.seq == 201)
        assert [m.seq for m in got if m.seq < 2 ** 62] == list(range(0, 202))
        assert sub.stats.duplicates == 1 and sub.stats.missed == 0
    assert "seq jumped from 0 to 4611686018427387904" in caplog.text


def test_seq_tracker_trusts_a_far_jump_once_it_is_continued():
    t = SeqTracker(10)
    assert t.accept(11) == (True, 0, False)
    assert t.accept(14) == (True, 2, False)  # two missed on the way
    assert t.accept(14)[0] is False and t.accept(5)[0] is False  # re-sends
    assert t.accept(10 ** 9) == (True, 0, True)  # delivered, not trusted
    assert t.accept(15) == (True, 0, False) and t.last == 15  # genuine stream goes on
    assert t.accept(10 ** 9) == (True, 0, True)
    assert t.accept(10 ** 9 + 1) == (True, 0, False) and t.last == 10 ** 9 + 1  # continued: a real restart of seq
    assert t.accept(16) == (True, 0, True)  # now the old numbers are the far jump


def test_many_sessions_warn_once_and_state_stays_bounded(raw_pub, caplog):
    raw, address = raw_pub
    wire = protocol.to_wire(protocol.actions_message(_result(0, people=0), session=0, seq=0, t_publish_ns=0,
                                                     t_wall_ns=0))
    assert wire["weights"] == "random"
    with caplog.at_level(logging.WARNING, logger="lart_stream.realtime.subscriber"), \
         Subscriber(address, ("actions",), hwm=0) as sub:
        _handshake(raw, sub)
        for session in range(1000, 21_000):
            raw.send_multipart([b"actions", msgpack.packb({**wire, "session": session}, use_single_float=True)])
        got = _recv_until(sub, lambda m: m.session == 20_999, guard_s=120)
        assert len(got) == 20_000 and sub.stats.duplicates == 0
        assert sub.stats.sessions <= MAX_SESSIONS
    assert caplog.text.count("RANDOM action weights") == 1


def test_oversized_message_is_dropped_with_a_warning_and_the_stream_goes_on(raw_pub, caplog):
    raw, address = raw_pub
    with caplog.at_level(logging.WARNING, logger="lart_stream.realtime.subscriber"), \
         Subscriber(address, ("actions",), hwm=0) as sub:
        _handshake(raw, sub)
        raw.send_multipart([b"actions", bytes(65 << 20)])  # over the 64 MiB default limit
        for seq in range(1000):
            raw.send_multipart(_wire_actions(5, seq, random_weights=False))
        got = _recv_until(sub, lambda m: m.seq == 999, guard_s=120)
        assert [m.seq for m in got] == list(range(1000))
        assert sub.stats.skipped == 1
    assert "over the 67108864-byte limit" in caplog.text


def test_heartbeat_stats_without_frames_carry_the_source_state_and_close_sends_final():
    state = ["live"]
    with Publisher(PublisherConfig(address="tcp://127.0.0.1:*", stats_interval_s=0.05)) as pub, \
         Subscriber(pub.endpoint, ("stats",)) as sub:
        pub.watch_source(lambda: state[0])
        first = sub.recv(timeout=60)  # no frame was ever sent: only the heartbeat publishes
        assert first.fps == 0.0 and first.frame_count == 0 and not first.final
        state[0] = "stalled"
        stalled = _recv_until(sub, lambda m: m.source == "stalled")[-1]
        assert stalled.seq > first.seq
        state[0] = "ended"
        pub.close()
        last = _recv_until(sub, lambda m: m.final)[-1]
        assert last.source == "ended"
