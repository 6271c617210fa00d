"""Client library: receive the prediction stream as typed messages.

    with Subscriber("tcp://127.0.0.1:5555", topics=("actions",)) as sub:
        for msg in sub:                     # ActionsMessage, StatsMessage or FrameMessage
            if msg.random_weights: ...      # scores are NOT predictions
            for track in msg.tracks: ...

Two modes. The default receives in the caller's thread and returns every message
in order (up to ``hwm`` queued; beyond that ZeroMQ drops the oldest-to-arrive
for this subscriber only). ``newest_only=True`` is for slow consumers: a
background thread receives all the time and keeps only the newest message per
topic, so ``recv`` never returns stale data.

Malformed, truncated, oversized or wrong-version messages are skipped with a
warning, never raised. Re-sent messages (the publisher's last-value cache answers
every new subscription, so other subscribers see that message twice) are recognised
by their (session, topic, seq) and dropped. A single far jump of ``seq`` is not
trusted until the next message continues from it, so one forged or corrupt number
cannot make every later genuine message look like a duplicate. Per-session state is
bounded (least recently seen sessions are forgotten).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import zmq

from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import Message, ProtocolError
from lart_stream.realtime.ratelimit import RateLimit

log = logging.getLogger(__name__)

_LOUD_WARNINGS = 10  # skipped messages warned one by one; then every 100th
MAX_SEQ_GAP = 100_000  # a larger jump (either way) is trusted only once the next message follows it
REPLAY_WINDOW = 1024  # seq this far behind the newest counts as a re-send (duplicate)
MAX_SESSIONS = 64  # publisher sessions remembered (least recently seen forgotten first)
WARN_PERIOD_S = 60.0  # a repeated warning (random weights, far seq jumps) at most this often


class SeqTracker:
    """Duplicate and gap detection for one (session, topic): numbered steps in ``accept``."""

    def __init__(self, seq: int) -> None:
        self.last = seq  # newest trusted sequence number
        self.candidate: int | None = None  # an implausible jump, trusted once seq candidate+1 arrives

    def accept(self, seq: int) -> tuple[bool, int, bool]:
        """(is_new, messages missed before it, implausible jump) for an arriving ``seq``."""
        # 1. The message after an implausible jump continues it: the jump was genuine.
        if self.candidate is not None and seq == self.candidate + 1:
            self.last, self.candidate = seq, None
            return True, 0, False
        gap = seq - self.last
        # 2. Plausible step forward (gaps are messages dropped on the way).
        if 0 < gap <= MAX_SEQ_GAP:
            self.last, self.candidate = seq, None
            return True, gap - 1, False
        # 3. Recent past: a re-send of something already returned.
        if -REPLAY_WINDOW < gap <= 0:
            return False, 0, False
        # 4. Far jump either way: delivered, but the window stays where it was until confirmed.
        self.candidate = seq
        return True, 0, True


@dataclass(frozen=True)
class SubscriberStats:
    received: int  # valid messages returned or kept
    skipped: int  # malformed, truncated or wrong-version messages
    duplicates: int  # re-sent messages already seen
    missed: int  # gaps in sequence numbers: messages dropped on the way (slow consumer, HWM)
    sessions: int = 0  # publisher sessions currently remembered (at most MAX_SESSIONS)


class SubscriberClosed(RuntimeError):
    pass


class Subscriber:
    def __init__(self, address: str, topics: Sequence[str] = ("actions",), *, newest_only: bool = False,
                 hwm: int = 1000, curve_server_key: str | None = None, curve_secret_key: str | None = None,
                 max_message_bytes: int = 64 << 20, streams: Sequence[str] | None = None) -> None:
        """Connect to a publisher.

        streams: only these stream ids' ``actions``/``frames`` (subscribed by topic prefix
        ``actions/<stream>``; ``stats`` is not per stream). None: every stream.
        max_message_bytes: larger messages are dropped with a warning. The check is ours, not
        libzmq's ZMQ_MAXMSGSIZE, which would silently disconnect this subscriber for good.

        curve_server_key: the server's public .key file (turns CURVE on).
        curve_secret_key: this client's .key_secret file; without it an ephemeral key pair
        is used, which only a publisher without an allow-list accepts.
        Raises ValueError on a bad address, topic or key file.
        """
        unknown = [t for t in topics if t not in protocol.TOPICS]
        if unknown or not topics:
            raise ValueError(f"unknown topic(s) {unknown or '(none given)'}; known: {', '.join(protocol.TOPICS)}")
        if not address.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"address {address!r}: expected tcp://HOST:PORT or ipc://PATH")
        if curve_secret_key is not None and curve_server_key is None:
            raise ValueError("a client key needs the server public key (curve_server_key) too")
        if streams is not None:
            bad = [x for x in streams if not protocol.STREAM_ID.match(str(x))]
            if bad or not streams:
                raise ValueError(f"bad stream id(s) {bad or '(none given)'}: letters, digits, _ . - only")
        self.address, self.topics, self.newest_only = address, tuple(topics), newest_only
        self.streams = None if streams is None else frozenset(str(x) for x in streams)
        self.max_message_bytes = max_message_bytes
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, hwm)
            if curve_server_key is not None:
                self._setup_curve(curve_server_key, curve_secret_key)
            for prefix in self._prefixes():
                self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
            try:
                self._sock.connect(address)
            except zmq.ZMQError as e:
                raise ValueError(f"cannot connect to {address}: {e}") from None
        except BaseException:
            self._sock.close(0)
            self._ctx.destroy(0)
            raise
        self._closed = False
        # session -> wire topic (actions/<stream>: each stream its own seq) -> tracker
        self._seqs: OrderedDict[int, dict[str, SeqTracker]] = OrderedDict()
        self._random_warning = RateLimit(WARN_PERIOD_S)
        self._jump_warning = RateLimit(WARN_PERIOD_S)
        self._received = self._skipped = self._duplicates = self._missed = 0
        self._thread: threading.Thread | None = None
        if newest_only:
            self._cond = threading.Condition()
            self._pending: dict[tuple, Message] = {}  # (topic, stream) -> newest, in order of first arrival
            self._thread = threading.Thread(target=self._receive_forever, name="lart-subscriber", daemon=True)
            self._thread.start()

    # -- public API --------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Message:
        """Next message (newest_only: newest per topic); TimeoutError after ``timeout`` seconds."""
        if self._closed:
            raise SubscriberClosed("subscriber is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.newest_only:
            return self._take_newest(deadline)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no message from {self.address} in {timeout} s")
            # Poll in slices so Ctrl-C is handled promptly.
            if not self._sock.poll(500 if left is None else max(0, min(500, int(left * 1000)))):
                continue
            msg = self._accept(self._sock.recv_multipart())
            if msg is not None:
                return msg

    def __iter__(self) -> Iterator[Message]:
        while not self._closed:
            try:
                yield self.recv(timeout=0.5)
            except TimeoutError:
                continue
            except SubscriberClosed:
                return

    @property
    def stats(self) -> SubscriberStats:
        return SubscriberStats(self._received, self._skipped, self._duplicates, self._missed, len(self._seqs))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            with self._cond:
                self._cond.notify_all()
            self._thread.join(timeout=5)
        else:
            self._sock.close(0)
        self._ctx.destroy(0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _prefixes(self) -> list[bytes]:
        if self.streams is None:
            return [t.encode() for t in self.topics]
        return [protocol.topic_of(t, s) for t in self.topics for s in sorted(self.streams)]

    def _setup_curve(self, server_key: str, secret_key: str | None) -> None:
        from lart_stream.realtime.publisher import load_curve_key

        server_public, _ = load_curve_key(server_key, secret=False)
        if secret_key is None:
            public, secret = zmq.curve_keypair()
        else:
            public, secret = load_curve_key(secret_key, secret=True)
        self._sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        self._sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        self._sock.setsockopt(zmq.CURVE_SECRETKEY, secret)

    def _skip(self, reason: str) -> None:
        self._skipped += 1
        if self._skipped <= _LOUD_WARNINGS or self._skipped % 100 == 0:
            log.warning("skipping invalid message #%d from %s: %s", self._skipped, self.address, reason)

    def _accept(self, parts: list) -> Message | None:
        """Decoded message, or None (with a warning) when it is invalid or a duplicate."""
        size = sum(len(p) for p in parts)
        if size > self.max_message_bytes:
            self._skip(f"{size} bytes, over the {self.max_message_bytes}-byte limit (max_message_bytes)")
            return None
        try:
            msg = protocol.decode(parts)
        except ProtocolError as e:
            self._skip(str(e))
            return None
        if self.streams is not None and _stream_of(msg) not in (None, *self.streams):
            return None  # a longer id sharing the prefix (actions/cam1 vs actions/cam10)
        if not self._is_new(msg):
            self._duplicates += 1
            return None
        if getattr(msg, "weights", None) == "random" and self._random_warning.ready():
            log.warning("publisher %s runs with RANDOM action weights: its scores are NOT predictions",
                        self.address)
        self._received += 1
        return msg

    def _is_new(self, msg: Message) -> bool:
        topics = self._seqs.get(msg.session)
        if topics is None:
            topics = self._seqs[msg.session] = {}
            if len(self._seqs) > MAX_SESSIONS:
                self._seqs.popitem(last=False)
        else:
            self._seqs.move_to_end(msg.session)
        topic = protocol.topic_of(msg.topic, _stream_of(msg) or "").decode()
        tracker = topics.get(topic)
        if tracker is None:
            topics[topic] = SeqTracker(msg.seq)
            return True
        last = tracker.last
        new, missed, implausible = tracker.accept(msg.seq)
        self._missed += missed
        if implausible and self._jump_warning.ready():
            log.warning("%s %s: seq jumped from %d to %d; not trusted until the next message follows it",
                        self.address, topic, last, msg.seq)
        return new

    def _take_newest(self, deadline: float | None) -> Message:
        with self._cond:
            while not self._pending:
                if self._closed:
                    raise SubscriberClosed("subscriber is closed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no message from {self.address}")
                self._cond.wait(0.5 if left is None else min(0.5, left))
            topic = next(iter(self._pending))
            return self._pending.pop(topic)

    def _receive_forever(self) -> None:
        try:
            while not self._closed:
                if not self._sock.poll(100):
                    continue
                while True:  # drain: only the newest of what is queued matters
                    try:
                        parts = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = self._accept(parts)
                    if msg is not None:
                        with self._cond:
                            # replaces, keeps the topic's place in line; one slot per stream
                            self._pending[(msg.topic, getattr(msg, "stream", None))] = msg
                            self._cond.notify_all()
        except zmq.ZMQError as e:
            if e.errno != zmq.ETERM:
                log.error("subscriber thread stopped: %s", e)
        finally:
            self._sock.close(0)


def _stream_of(msg: Message) -> str | None:
    """The stream of a per-stream message (actions, frames); None for stats."""
    return None if isinstance(msg, protocol.StatsMessage) else msg.stream
