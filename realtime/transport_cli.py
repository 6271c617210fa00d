"""`lart-stream listen | view | keys`: command-line clients of the prediction stream.

Each ``*_main(argv) -> int`` builds its own parser; realtime/cli.py dispatches to
them. Exit codes: 0 done (count reached, the publisher ended, Ctrl-C), 1 nothing
received before --timeout, 2 user error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from typing import Callable, Iterable, Iterator


from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import ActionsMessage, FrameMessage, Message, StatsMessage
from lart_stream.realtime.drawing import RANDOM_BANNER, draw
from lart_stream.realtime.publisher import DEFAULT_ADDRESS
from lart_stream.realtime.subscriber import Subscriber



class _UserError(Exception):
    pass


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", nargs="?", default=DEFAULT_ADDRESS,
                   help="publisher address, e.g. tcp://HOST:PORT or ipc:///tmp/lart.sock (default %(default)s)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N actions messages (listen; stats lines come on top) or N frames (view)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="give up (exit 1) when nothing arrives for S seconds")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="actions shown per person")
    p.add_argument("--streams", metavar="IDS", help="only these streams, e.g. door,s0 (default: all)")
    p.add_argument("--curve-server-key", metavar="FILE", help="the publisher's public .key file (CURVE)")
    p.add_argument("--curve-secret-key", metavar="FILE", help="this client's .key_secret file (CURVE)")


def _run(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad usage
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(args)
    except _UserError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _subscribe(args: argparse.Namespace, topics: tuple[str, ...], newest_only: bool) -> Subscriber:
    try:
        streams = [x.strip() for x in args.streams.split(",")] if args.streams else None
        return Subscriber(args.address, topics, newest_only=newest_only, curve_server_key=args.curve_server_key,
                          curve_secret_key=args.curve_secret_key, streams=streams)
    except ValueError as e:  # bad address, topic or key file
        raise _UserError(str(e)) from None


def _messages(sub: Subscriber, timeout: float | None):
    """Messages until Ctrl-C; raises TimeoutError when nothing arrives for ``timeout`` s."""
    while True:
        yield sub.recv(timeout)


# ---------------------------------------------------------------------------------------------
# listen


def format_actions(msg: ActionsMessage, top_k: int = 3, now_wall_ns: int | None = None) -> str:
    """One compact line per frame. Random-weight scores are marked on every line."""
    lag = ""
    if now_wall_ns is not None:
        lag = f" lag {(now_wall_ns - msg.t_wall_ns) / 1e6:.1f}ms"
    head = f"[{msg.stream}] frame {msg.frame}{lag} {len(msg.tracks)} track(s)"
    if msg.weights == "random":
        head = f"!! {RANDOM_BANNER} !! {head}"
    elif msg.weights == "none":
        head += " (no action model)"
    parts = [head]
    for t in msg.tracks:
        x1, y1, x2, y2 = t.box
        item = f"#{t.id} {t.state[:4]} ({x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f})"
        if t.action is not None:
            acts = " ".join(f"{a.name}={a.score:.2f}" for a in t.action.top[:top_k])
            late = f" @{t.action.frame}" if t.action.frame != msg.frame else ""
            item += f" {'random: ' if msg.random_weights else ''}{acts}{late}"
        parts.append(item)
    return " | ".join(parts)


def format_stats(msg: StatsMessage) -> str:
    lat = "" if msg.latency_ms is None else f" latency p50 {msg.latency_ms.p50:.1f}ms max {msg.latency_ms.max:.1f}ms"
    stages = " ".join(f"{k} {v.mean:.1f}" for k, v in msg.stage_ms.items())
    text = (f"[{msg.stream}] stats fps {msg.fps:.1f} frames {msg.frame_count} dropped {msg.dropped_frames}"
            f"{lat} | stage ms: {stages or '-'} | publisher dropped {msg.publish_dropped}")
    if msg.weights == "random":
        text = f"!! {RANDOM_BANNER} !! {text}"
    return text


def format_frame(msg: FrameMessage) -> str:
    w, h = msg.jpeg_size
    return f"[{msg.stream}] jpeg frame {msg.frame} {w}x{h} {len(msg.jpeg) / 1024:.1f} KiB"


def to_json(msg: Message) -> str:
    """The payload as JSON (the schema's shape), with the topic added; JPEG bytes left out."""
    obj = {"topic": msg.topic, **protocol.to_wire(msg)}
    if isinstance(msg, FrameMessage):
        obj["jpeg_bytes"] = len(msg.jpeg)
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def format_message(msg: Message, top_k: int = 3, as_json: bool = False) -> str:
    if as_json:
        return to_json(msg)
    if isinstance(msg, ActionsMessage):
        return format_actions(msg, top_k, time.time_ns())
    if isinstance(msg, StatsMessage):
        return format_stats(msg)
    return format_frame(msg)


def listen_lines(messages: Iterable[Message], count: int | None = None, top_k: int = 3,
                 as_json: bool = False, topics: tuple[str, ...] = protocol.TOPICS) -> Iterator[str]:
    """One line per message of ``topics``; stops after ``count`` actions messages (stats and frames
    lines are extra) or after the publisher's final `stats` (shown only when ``stats`` is in topics)."""
    actions = 0
    for msg in messages:
        if msg.topic in topics:
            yield format_message(msg, top_k, as_json)
        actions += isinstance(msg, ActionsMessage)
        if (count is not None and actions >= count) or _is_final(msg):
            return


def _is_final(msg: Message) -> bool:
    return isinstance(msg, StatsMessage) and msg.final


def _listen(args: argparse.Namespace) -> int:
    topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    if not topics:
        raise _UserError(f"--topics: give one or more of {','.join(protocol.TOPICS)}")
    # `stats` always: its final message says the publisher has ended.
    with _subscribe(args, tuple(dict.fromkeys((*topics, "stats"))), args.newest_only) as sub:
        try:
            for line in listen_lines(_messages(sub, args.timeout), args.count, args.top_k, args.json, topics):
                print(line, flush=True)
        except TimeoutError:
            print(f"{args.prog}: nothing received from {args.address} for {args.timeout} s", file=sys.stderr)
            return 1
        except BrokenPipeError:  # e.g. `| head`
            sys.stderr.close()
            return 0
    return 0


def listen_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lart-stream listen",
                                description="Print the prediction stream: one line per message.")
    _add_client_args(p)
    p.add_argument("--topics", default="actions,stats",
                   help=f"comma-separated, from {','.join(protocol.TOPICS)} (default %(default)s)")
    p.add_argument("--json", action="store_true", help="JSON lines (the payload as documented) instead")
    p.add_argument("--newest-only", action="store_true", help="skip to the newest message when falling behind")
    p.set_defaults(prog=p.prog)
    return _run(_listen, p, argv)


# ---------------------------------------------------------------------------------------------
# view


def _has_screen() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _view(args: argparse.Namespace) -> int:
    import cv2

    if args.output is None and not _has_screen():
        raise _UserError("no screen here (DISPLAY is not set): use --output FILE.mp4")
    if args.output is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise _UserError(f"--output {args.output}: folder does not exist")
    recent: OrderedDict[tuple[str, int], ActionsMessage] = OrderedDict()  # (stream, frame) -> actions
    writer = None
    size = None
    n = 0
    log = logging.getLogger("lart_stream.realtime.view")
    # On screen, stay live (newest only); into a file, keep every frame that arrives.
    with _subscribe(args, ("actions", "frames", "stats"), newest_only=args.output is None) as sub:
        try:
            for msg in _messages(sub, args.timeout):
                if _is_final(msg):
                    return 0  # the publisher has ended
                if isinstance(msg, ActionsMessage):
                    recent[(msg.stream, msg.frame)] = msg
                    while len(recent) > 256:
                        recent.popitem(last=False)
                    continue
                if not isinstance(msg, FrameMessage):
                    continue
                try:
                    image = msg.image()
                except protocol.ProtocolError as e:
                    log.warning("skipping frame %d: %s", msg.frame, e)
                    continue
                # The publisher sends a frame's actions before the frame; fall back to the newest older one.
                acts = recent.get((msg.stream, msg.frame))
                if acts is None:
                    older = [a for (s, f), a in recent.items() if s == msg.stream and f <= msg.frame]
                    acts = older[-1] if older else None
                draw(image, msg, acts, args.top_k)
                if args.output is not None:
                    if writer is None:
                        size = (image.shape[1], image.shape[0])
                        writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), args.fps, size)
                        if not writer.isOpened():
                            raise _UserError(f"cannot write video {args.output}")
                    if (image.shape[1], image.shape[0]) != size:
                        image = cv2.resize(image, size)
                    writer.write(image)
                else:
                    cv2.imshow("lart-stream view", image)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        return 0
                n += 1
                if args.count is not None and n >= args.count:
                    return 0
        except TimeoutError:
            print(f"{args.prog}: nothing received from {args.address} for {args.timeout} s "
                  "(does the publisher run with frames on?)", file=sys.stderr)
            return 1
        finally:
            if writer is not None:
                writer.release()
                print(f"wrote {n} frame(s) to {args.output}", file=sys.stderr)
            if args.output is None and n:
                cv2.destroyAllWindows()
    return 0


def view_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lart-stream view",
                                description="Draw boxes, track ids and top actions on the publisher's "
                                            "frames topic (the publisher needs frames on).")
    _add_client_args(p)
    p.add_argument("--output", metavar="FILE.mp4", help="write a video instead of opening a window")
    p.add_argument("--fps", type=float, default=10.0,
                   help="frame rate written to --output; match the publisher's frames rate (default %(default)s)")
    p.set_defaults(prog=p.prog)
    return _run(_view, p, argv)


# ---------------------------------------------------------------------------------------------
# keys


def _keys(args: argparse.Namespace) -> int:
    import zmq.auth

    if not args.name.replace("-", "").replace("_", "").isalnum():
        raise _UserError(f"--name {args.name!r}: use letters, digits, - and _")
    os.makedirs(args.folder, exist_ok=True)
    public = os.path.join(args.folder, f"{args.name}.key")
    secret = public + "_secret"
    existing = [f for f in (public, secret) if os.path.exists(f)]
    if existing and not args.force:
        raise _UserError(f"{existing[0]} exists (use --force to replace it)")
    public, secret = zmq.auth.create_certificates(args.folder, args.name)
    os.chmod(secret, 0o600)
    print(f"public key: {public}\nsecret key: {secret} (keep private)")
    if args.name == "server":
        print("publisher: --curve-secret-key " + secret + " ; give clients " + public +
              " (their --curve-server-key)")
    else:
        print(f"client: --curve-secret-key {secret} ; copy {public} into the publisher's "
              "--curve-allowed-keys folder")
    return 0


def keys_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lart-stream keys",
                                description="Make a CURVE key pair (NAME.key public, NAME.key_secret secret).")
    p.add_argument("folder", help="where to write the key files (created if missing)")
    p.add_argument("--name", default="server", help="file name stem: 'server' or a client name (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    return _run(_keys, p, argv)
