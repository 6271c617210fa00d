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

Malformed, truncated or wrong-version messages are skipped with a warning, never
raised. Re-sent messages (the publisher's last-value cache answers every new
subscription, so other subscribers see that message twice) are recognised by
their (session, topic, seq) and dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import zmq

from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import Message, ProtocolError

log = logging.getLogger(__name__)

_LOUD_WARNINGS = 10  # skipped messages warned one by one; then every 100th


@dataclass(frozen=True)
class SubscriberStats:
    received: int  # valid messages returned or kept
    skipped: int  # malformed, truncated or wrong-version messages
    duplicates: int  # re-sent messages already seen
    missed: int  # gaps in sequence numbers: messages dropped on the way (slow consumer, HWM)


class SubscriberClosed(RuntimeError):
    pass


class Subscriber:
    def __init__(self, address: str, topics: Sequence[str] = ("actions",), *, newest_only: bool = False,
                 hwm: int = 1000, curve_server_key: str | None = None, curve_secret_key: str | None = None,
                 max_message_bytes: int = 64 << 20, streams: Sequence[str] | None = None) -> None:
        """Connect to a publisher.

        streams: only these stream ids' ``actions``/``frames`` (subscribed by topic prefix
        ``actions/<stream>``; ``stats`` is not per stream). None: every stream.
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
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, hwm)
            self._sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # a hostile peer cannot exhaust memory
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
        self._last_seq: dict[tuple[int, str, str | None], int] = {}
        self._warned_random: set[int] = set()
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
        return SubscriberStats(self._received, self._skipped, self._duplicates, self._missed)

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

    def _accept(self, parts: list[bytes]) -> Message | None:
        """Decoded message, or None (with a warning) when it is invalid or a duplicate."""
        try:
            msg = protocol.decode(parts)
        except ProtocolError as e:
            self._skipped += 1
            if self._skipped <= _LOUD_WARNINGS or self._skipped % 100 == 0:
                log.warning("skipping invalid message #%d from %s: %s", self._skipped, self.address, e)
            return None
        stream = None if isinstance(msg, protocol.StatsMessage) else msg.stream
        if stream is not None and self.streams is not None and stream not in self.streams:
            return None  # a longer id sharing the prefix (actions/cam1 vs actions/cam10)
        key = (msg.session, msg.topic, stream)
        last = self._last_seq.get(key)
        if last is not None and msg.seq <= last:
            self._duplicates += 1
            return None
        if last is not None:
            self._missed += msg.seq - last - 1
        self._last_seq[key] = msg.seq
        if getattr(msg, "weights", None) == "random" and msg.session not in self._warned_random:
            self._warned_random.add(msg.session)
            log.warning("publisher %s runs with RANDOM action weights: its scores are NOT predictions",
                        self.address)
        self._received += 1
        return msg

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
