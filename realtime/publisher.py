"""ZeroMQ publisher of the prediction stream (the pipeline's ResultSink).

    pipeline thread                      sender thread (owns the XPUB socket)
    send(result) -> encode -> PAIR --inproc--> PAIR -> XPUB.bind(address) -> subscribers
                                                  ^ subscriptions (XPUB_VERBOSE): re-send
                                                    the last message of the topic

Why a sender thread: a subscriber that joins while the pipeline is idle must
still get the latest state at once (last-value cache), and only the thread that
owns the XPUB socket may read its subscription messages.

Why it never blocks: every send is zmq.NOBLOCK. The inproc queue and each
subscriber's queue hold at most ``hwm`` messages; a full inproc queue drops the
message (counted in ``dropped``) and a full subscriber queue makes ZeroMQ drop
messages for that subscriber only (PUB semantics, without XPUB_NODROP), so a
stalled or dead subscriber costs neither memory nor frame rate and never makes
the others lose messages.

Heartbeat and end: while no frame is sent for ``stats_interval_s`` (a stalled or
reconnecting source), a heartbeat thread publishes `stats` with the source state
(``watch_source``); ``close`` publishes a last `stats` with ``final=True``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import numpy as np
import zmq

from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import FrameMessage, StatsMessage, Summary
from lart_stream.realtime.ratelimit import RateLimit
from lart_stream.realtime.records import FrameResult

log = logging.getLogger(__name__)

_FORWARD, _JPEG, _QUIT = b"M", b"J", b"Q"  # kinds of messages on the inproc pipe
_WINDOW_MAX = 4096  # samples kept per stats window
DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"  # loopback: nothing exposed unless asked
_FINAL_LINGER_MS = 500  # on close, time given to the final message to leave the socket
REFUSED_LOG_PERIOD_S = 10.0  # refused CURVE clients retry every 100 ms: one log line per period
_NO_CURVE = "no valid CURVE handshake (a client without --curve-server-key, or with another server's key)"
_HANDSHAKE_FAILURES = {  # socket monitor events -> why a client was refused
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its key is not in the allow-list (--curve-allowed-keys)",
    # A client without CURVE, or with another server's key, ends in either of these two.
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: _NO_CURVE,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: _NO_CURVE,
}


@dataclass(frozen=True)
class PublisherConfig:
    address: str = DEFAULT_ADDRESS
    hwm: int = 100  # messages queued per subscriber (and on the inproc pipe) before dropping
    top_k: int = 5  # best classes sent per track, with names
    full_scores: bool = True  # also send every class's score per track
    frames: bool = False  # publish the `frames` topic (JPEG) for viewers
    frames_width: int = 640  # JPEG frames are downscaled to this width (never upscaled)
    jpeg_quality: int = 80
    frames_fps: float = 10.0  # at most this many frames per second, by capture time
    stats_interval_s: float = 1.0  # automatic `stats` (and heartbeat without frames); 0 = only send_stats()
    curve_secret_key: str | None = None  # server's .key_secret: turns CURVE encryption on
    curve_allowed_keys: str | None = None  # folder of client *.key public keys (allow-list)
    connect: bool = False  # connect to a proxy's XSUB (realtime/workers.py) instead of binding the address

    def __post_init__(self) -> None:
        if not self.address.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"publish address {self.address!r}: expected tcp://HOST:PORT or ipc://PATH")
        if self.address.startswith("tcp://"):
            _check_tcp_port(self.address)
        if self.hwm < 1:
            raise ValueError(f"hwm must be >= 1, got {self.hwm}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.frames_width < 16 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"frames_width >= 16 and 1 <= jpeg_quality <= 100, got "
                             f"{self.frames_width}, {self.jpeg_quality}")
        if not self.frames_fps > 0 or not self.stats_interval_s >= 0:
            raise ValueError("frames_fps must be > 0 and stats_interval_s >= 0")
        if self.curve_allowed_keys and not self.curve_secret_key:
            raise ValueError("an allow-list of client keys (curve_allowed_keys) needs the server secret key "
                             "(curve_secret_key)")


def _check_tcp_port(address: str) -> None:
    """libzmq takes any number as a port and silently binds it modulo 65536: refuse that here."""
    host, sep, port = address[len("tcp://"):].rpartition(":")
    if not sep or not host:
        raise ValueError(f"publish address {address!r}: expected tcp://HOST:PORT (PORT 1-65535, or * for any)")
    if port != "*" and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"publish address {address!r}: port {port!r} is not in 1-65535 (or * for any free port)")


def is_loopback(address: str) -> bool:
    if not address.startswith("tcp://"):
        return True  # ipc:// and inproc:// never leave the host
    host = address[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def load_curve_key(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) Z85 keys from a zmq.auth certificate file; ValueError naming the problem."""
    import zmq.auth

    if not os.path.isfile(path):
        raise ValueError(f"CURVE key file {path} does not exist (make one with `lart-stream keys`)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except Exception as e:
        raise ValueError(f"CURVE key file {path} is not a ZeroMQ certificate: {e}") from None
    if secret and not secret_key:
        raise ValueError(f"CURVE key file {path} holds only a public key; give the .key_secret file")
    return public, secret_key


class Publisher:
    """Publishes one message per FrameResult; see the module docstring. Use from one thread."""

    def __init__(self, config: PublisherConfig = PublisherConfig()) -> None:
        self.config = config
        self.session = secrets.randbits(32)
        self.dropped = 0  # messages dropped on the pipeline side (queue full)
        self._sent = 0
        self._seq: dict[str, int] = {}  # per wire topic: actions/<stream> counts its own messages
        self._lock = threading.Lock()
        self._closed = False
        self._stats = _StatsWindow()
        self._last_frame_t: float | None = None
        self._external_stats_ns = -(1 << 62)  # last send_stats() call
        self._last_send_ns = time.monotonic_ns()  # last frame sent (the heartbeat fills silences)
        self._source_state: Callable[[], str | None] | None = None
        self._heartbeat_stop = threading.Event()
        self._ctx = zmq.Context()
        self._auth = None
        xpub = inner = None
        try:
            xpub = self._ctx.socket(zmq.XPUB)
            xpub.setsockopt(zmq.LINGER, 0)
            xpub.setsockopt(zmq.SNDHWM, config.hwm)
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription reaches us, not only the first
            self._setup_curve(xpub)
            try:
                (xpub.connect if config.connect else xpub.bind)(config.address)
            except zmq.ZMQError as e:
                hint = ""
                if e.errno == zmq.EADDRINUSE:
                    hint = ("; another program (another lart-stream?) uses it: publish on another port "
                            "(--publish tcp://127.0.0.1:PORT) or turn publishing off (--publish none)")
                raise ValueError(f"cannot publish on {config.address}: {e.strerror}{hint}") from None
            self.endpoint = config.address if config.connect else xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            log.info("publishing on %s%s", self.endpoint, " (through the proxy)" if config.connect else "")
            inner = self._ctx.socket(zmq.PAIR)
            inner.setsockopt(zmq.LINGER, 0)
            inner.setsockopt(zmq.RCVHWM, config.hwm)
            pipe = f"inproc://lart-publisher-{id(self)}-{self.session}"
            inner.bind(pipe)
            self._push = self._ctx.socket(zmq.PAIR)
            self._push.setsockopt(zmq.LINGER, 0)
            self._push.setsockopt(zmq.SNDHWM, config.hwm)
            self._push.connect(pipe)
        except BaseException:
            for s in (xpub, inner):
                if s is not None:
                    s.close(0)
            self._shutdown_context()
            raise
        if config.curve_secret_key is None and not config.connect and not is_loopback(config.address):
            log.warning("publishing on %s without CURVE: predictions are readable, unencrypted, by anyone "
                        "who can reach this address (see `lart-stream keys`)", config.address)
        monitor = None
        if config.curve_secret_key is not None:  # refused clients are logged, not silently ignored
            monitor = xpub.get_monitor_socket(sum(_HANDSHAKE_FAILURES))
        self._sender = _Sender(xpub, inner, config.jpeg_quality, monitor)
        self._thread = threading.Thread(target=self._sender.run, name="lart-publisher", daemon=True)
        self._thread.start()
        self._heartbeat: threading.Thread | None = None
        if config.stats_interval_s > 0:
            self._heartbeat = threading.Thread(target=self._beat, name="lart-heartbeat", daemon=True)
            self._heartbeat.start()

    def watch_source(self, state: Callable[[], str | None]) -> None:
        """Every `stats` from now on carries ``state()`` (one of protocol.SOURCE_STATES) as ``source``."""
        self._source_state = state

    # -- ResultSink --------------------------------------------------------------------------

    def send(self, result: FrameResult) -> None:
        """Queue the frame's messages; never blocks, drops (and counts) when the queue is full."""
        with self._lock:
            if self._closed:
                return
            t_ns, wall_ns = time.monotonic_ns(), time.time_ns()
            self._last_send_ns = t_ns
            wire = protocol.actions_wire(result, session=self.session,
                                         seq=self._next(f"actions/{result.frame.stream_id}"),
                                         t_publish_ns=t_ns, t_wall_ns=wall_ns, top_k=self.config.top_k,
                                         full_scores=self.config.full_scores)
            self._queue([_FORWARD, *protocol.encode_actions_wire(wire)])
            self._stats.add(result, t_ns)
            if self.config.frames:
                self._maybe_send_frame(result, t_ns, wall_ns)
            # Automatic stats only while nobody calls send_stats(): the caller then owns the cadence.
            interval_ns = self.config.stats_interval_s * 1e9
            if (interval_ns > 0 and t_ns - self._stats.last_sent_ns >= interval_ns
                    and t_ns - self._external_stats_ns >= 2 * interval_ns):
                self._send_stats_locked({}, t_ns)
            if "publish" not in result.stage_ms:  # our own cost, as seen by the pipeline thread
                self._stats.add_stage("publish", (time.monotonic_ns() - t_ns) / 1e6)

    def send_stats(self, stats: dict[str, Any]) -> None:
        """Publish a `stats` message now: the publisher's own window, overridden by ``stats``.

        Known keys: fps, window_s, frame_count, dropped_frames (numbers override the
        publisher's own), stage_ms ({stage: ms or {mean, p50, max}}) and latency_ms (ms or
        {mean, p50, max}), used where the publisher has no summary of its own (its own
        cover the same frames and carry p50 and max; a bare number fills all three).
        Any other numeric key goes to ``extra``; other values are ignored.
        """
        with self._lock:
            if not self._closed:
                self._external_stats_ns = t_ns = time.monotonic_ns()
                self._send_stats_locked(stats, t_ns)

    def close(self) -> None:
        """Publish the final `stats` (``final=True``), let it leave, and release the sockets."""
        with self._lock:
            if self._closed:
                return
            self._send_stats_locked({}, time.monotonic_ns(), final=True)
            self._closed = True
            try:
                self._push.send(_QUIT, zmq.NOBLOCK)  # behind everything queued: those go out first
            except zmq.ZMQError:
                self._sender.stop.set()  # queue full: stop at the next poll instead
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._sender.stop.set()
            self._thread.join(timeout=1)
        self._push.close(0)
        self._shutdown_context()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def published(self) -> int:
        """Messages the sender thread handed to the socket (all topics)."""
        return self._sender.sent

    # -- internals ---------------------------------------------------------------------------

    def _setup_curve(self, xpub: zmq.Socket) -> None:
        cfg = self.config
        if cfg.curve_secret_key is None:
            return
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = load_curve_key(cfg.curve_secret_key, secret=True)
        allowed = cfg.curve_allowed_keys
        if allowed is not None:
            if not os.path.isdir(allowed):
                raise ValueError(f"allowed client keys folder {allowed} does not exist")
            if not zmq.auth.load_certificates(allowed):
                raise ValueError(f"allowed client keys folder {allowed} holds no *.key public key: "
                                 "no client could connect")
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".auth"))
        self._auth.start()
        if allowed is None:
            log.warning("CURVE without an allow-list: traffic is encrypted but any client that knows the "
                        "server public key may subscribe")
            self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        else:
            self._auth.configure_curve(domain="*", location=allowed)
        xpub.setsockopt(zmq.CURVE_SERVER, 1)
        xpub.setsockopt(zmq.CURVE_PUBLICKEY, public)
        xpub.setsockopt(zmq.CURVE_SECRETKEY, secret)

    def _shutdown_context(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.destroy(linger=0)

    def _next(self, topic: str) -> int:
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        return seq

    def _queue(self, parts: list) -> None:
        try:
            self._push.send_multipart(parts, zmq.NOBLOCK, copy=False)
            self._sent += 1
        except zmq.Again:
            self.dropped += 1
        except zmq.ZMQError as e:  # context torn down under us: never raise into the pipeline
            self.dropped += 1
            log.debug("publisher queue error: %s", e)

    def _maybe_send_frame(self, result: FrameResult, t_ns: int, wall_ns: int) -> None:
        frame = result.frame
        if self._last_frame_t is not None and frame.t_capture - self._last_frame_t < 1.0 / self.config.frames_fps:
            return
        self._last_frame_t = frame.t_capture
        import cv2

        w, h = frame.size
        scale = min(1.0, self.config.frames_width / w)
        jw, jh = max(1, round(w * scale)), max(1, round(h * scale))
        small = frame.image if scale == 1.0 else cv2.resize(frame.image, (jw, jh), interpolation=cv2.INTER_AREA)
        header = FrameMessage(session=self.session, seq=self._next(f"frames/{frame.stream_id}"),
                              stream=str(frame.stream_id),
                              frame=int(frame.index), t_capture_ns=protocol.seconds_to_ns(frame.t_capture),
                              t_publish_ns=t_ns, t_wall_ns=wall_ns, image_size=(w, h), jpeg_size=(jw, jh))
        # JPEG encoding happens on the sender thread; the pixels travel as a raw buffer.
        self._queue([_JPEG, *protocol.encode_frame(header)[:2], np.ascontiguousarray(small)])

    def _send_stats_locked(self, given: dict[str, Any], t_ns: int, final: bool = False) -> None:
        msg = self._stats.message(given, t_ns, session=self.session, seq=self._next("stats"),
                                  published=self._sender.sent,
                                  publish_dropped=self.dropped + self._sender.dropped,
                                  source=self._current_source_state(), final=final)
        self._queue([_FORWARD, *protocol.encode_stats(msg)])

    def _current_source_state(self) -> str | None:
        if self._source_state is None:
            return None
        try:
            state = self._source_state()
        except Exception as e:  # a broken callback must not stop the stats
            log.debug("source state: %s", e)
            return None
        return state if state in protocol.SOURCE_STATES else None

    def _beat(self) -> None:
        """Heartbeat thread: `stats` while no frame is sent, so subscribers can tell stalled from gone."""
        interval_ns = self.config.stats_interval_s * 1e9
        while not self._heartbeat_stop.wait(self.config.stats_interval_s / 4):
            with self._lock:
                if self._closed:
                    return
                t_ns = time.monotonic_ns()
                if t_ns - self._last_send_ns >= interval_ns and t_ns - self._stats.last_sent_ns >= interval_ns:
                    self._send_stats_locked({}, t_ns)


class _Sender:
    """Runs on the publisher thread: forwards queued messages, answers new subscriptions."""

    def __init__(self, xpub: zmq.Socket, inner: zmq.Socket, jpeg_quality: int,
                 monitor: zmq.Socket | None = None) -> None:
        self.xpub, self.inner, self.jpeg_quality, self.monitor = xpub, inner, jpeg_quality, monitor
        self.refused = 0  # CURVE clients refused since start
        self._refused_log = RateLimit(REFUSED_LOG_PERIOD_S)
        self.stop = threading.Event()
        self.sent = 0
        self.dropped = 0
        self.last: dict[bytes, list] = {}  # last-value cache: topic -> frames of its last message

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.inner, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor, zmq.POLLIN)
        linger = 0
        try:
            while not self.stop.is_set():
                ready = dict(poller.poll(100))
                if self.monitor is not None and self.monitor in ready:
                    self._log_refused()
                if self.xpub in ready:
                    self._answer_subscriptions()
                if self.inner in ready and not self._forward_queued():
                    linger = _FINAL_LINGER_MS  # asked to quit: let the final message leave
                    break
        except zmq.ZMQError as e:
            if e.errno != zmq.ETERM:
                log.error("publisher thread stopped: %s", e)
        finally:
            if self.monitor is not None:
                self.xpub.disable_monitor()
                self.monitor.close(0)
            self.xpub.close(linger)
            self.inner.close(0)

    def _log_refused(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            why = _HANDSHAKE_FAILURES.get(event["event"])
            if why is None:
                continue
            self.refused += 1
            if self._refused_log.ready():
                more = self._refused_log.take_suppressed()
                log.warning("refused a subscriber on %s: %s%s", event["endpoint"].decode(errors="replace"), why,
                            f" ({more} more refusals since the last report)" if more else "")

    def _answer_subscriptions(self) -> None:
        while True:
            try:
                event = self.xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] != b"\x01":
                continue  # unsubscription
            prefix = event[1:]
            for topic, parts in self.last.items():
                if topic.startswith(prefix):
                    self._send(parts)

    def _forward_queued(self) -> bool:
        """Forward everything queued; False when asked to quit."""
        for _ in range(1000):  # bounded so subscriptions get answered under a flood
            try:
                parts = self.inner.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            kind = parts[0].bytes
            if kind == _QUIT:
                return False
            if kind == _JPEG:
                out = self._jpeg(parts)
                if out is None:
                    continue
            else:
                out = [p.bytes for p in parts[1:]]
            self.last[out[0]] = out
            self._send(out)
        return True

    def _jpeg(self, parts: list) -> list | None:
        import cv2

        topic, header = parts[1].bytes, parts[2].bytes
        w, h = msgpack.unpackb(header)["jpeg_size"]
        pixels = np.frombuffer(parts[3].buffer, np.uint8).reshape(h, w, 3)
        ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            self.dropped += 1
            return None
        return [topic, header, jpeg.tobytes()]

    def _send(self, parts: list) -> None:
        try:
            self.xpub.send_multipart(parts, zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:  # PUB semantics drop per subscriber silently; kept for safety
            self.dropped += 1


class _StatsWindow:
    """Per-window accumulators behind the `stats` topic (pipeline thread only)."""

    def __init__(self) -> None:
        self.last_sent_ns = time.monotonic_ns()
        self.frame_count = 0
        self.dropped_frames = 0
        self.weights = "none"
        self.stream = "0"
        self._last_index: dict[str, int] = {}
        # Bounded: with automatic stats off and no send_stats() calls the window never closes.
        self._latency: deque[float] = deque(maxlen=_WINDOW_MAX)
        self._stages: dict[str, deque[float]] = {}
        self._frames_in_window = 0

    def add(self, result: FrameResult, t_ns: int) -> None:
        frame = result.frame
        self.frame_count += 1
        self._frames_in_window += 1
        self.weights = protocol.weights_of(result)
        self.stream = str(frame.stream_id)
        last = self._last_index.get(self.stream)
        if last is not None and frame.index > last + 1:
            self.dropped_frames += frame.index - last - 1  # the capture kept only the newest frame
        self._last_index[self.stream] = frame.index
        self._latency.append((t_ns - protocol.seconds_to_ns(frame.t_capture)) / 1e6)
        for k, v in result.stage_ms.items():
            self.add_stage(str(k), float(v))

    def add_stage(self, name: str, ms: float) -> None:
        self._stages.setdefault(name, deque(maxlen=_WINDOW_MAX)).append(ms)

    def message(self, given: dict[str, Any], t_ns: int, *, session: int, seq: int, published: int,
                publish_dropped: int, source: str | None = None, final: bool = False) -> StatsMessage:
        window_s = max(0.0, (t_ns - self.last_sent_ns) / 1e9)
        fields: dict[str, Any] = dict(
            window_s=window_s, fps=self._frames_in_window / window_s if window_s > 0 else 0.0,
            frame_count=self.frame_count, dropped_frames=self.dropped_frames,
            latency_ms=_summary(list(self._latency)),
            stage_ms={k: _summary(list(v)) for k, v in self._stages.items() if v})
        extra: dict[str, float] = {}
        for key, value in given.items():
            if key in ("fps", "window_s") and _is_number(value):
                fields[key] = max(0.0, float(value))
            elif key in ("frame_count", "dropped_frames") and _is_number(value):
                fields[key] = max(0, int(value))
            elif key == "latency_ms":
                if fields[key] is None:
                    fields[key] = _as_summary(value)
            elif key == "stage_ms" and isinstance(value, dict):
                for k, v in value.items():
                    if str(k) not in fields[key] and (s := _as_summary(v)) is not None:
                        fields[key][str(k)] = s
            elif _is_number(value):
                extra[str(key)] = float(value)
            else:
                log.warning("stats: ignoring %r (not a number)", key)
        self.last_sent_ns = t_ns
        self._latency.clear()
        self._stages.clear()
        self._frames_in_window = 0
        return StatsMessage(session=session, seq=seq, stream=self.stream, t_publish_ns=t_ns,
                            t_wall_ns=time.time_ns(), weights=self.weights, published=published,
                            publish_dropped=publish_dropped, extra=extra, source=source, final=final, **fields)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(float(x))


def _summary(values: list[float]) -> Summary | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return Summary(float(a.mean()), float(np.median(a)), float(a.max()))


def _as_summary(value: Any) -> Summary | None:
    if _is_number(value):
        return Summary(float(value), float(value), float(value))
    if isinstance(value, Summary):
        return value
    if isinstance(value, dict) and all(_is_number(value.get(k)) for k in ("mean", "p50", "max")):
        return Summary(float(value["mean"]), float(value["p50"]), float(value["max"]))
    return None
