"""Publish-to-receive latency of the prediction stream over loopback.

    python benchmarks/transport_latency.py                 # all cases, writes benchmarks/results/
    python benchmarks/transport_latency.py --quick         # a smoke run, prints only

The publisher (this process) sends `actions` messages for P people and 80 AVA
classes (full score vectors and top-5 with names) at a camera-like rate. A
subscriber in another process receives them with realtime.subscriber.Subscriber.
Latency is the subscriber's time.monotonic_ns() once recv() has returned the
decoded, typed message, minus the message's t_publish_ns. The publisher stamps
t_publish_ns in Publisher.send() before it encodes the message, so the latency
includes encoding, the hand-off to the sender thread, ZeroMQ on both sides, the
loopback socket and decoding. Both processes read the same CLOCK_MONOTONIC.
`send ms` is the cost of Publisher.send() on the calling (pipeline) thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from lart_stream.realtime.publisher import Publisher, PublisherConfig  # noqa: E402
from lart_stream.realtime.records import ActionPredictions, Detections, Frame, FrameResult, People, Tracks  # noqa: E402

MEASURED = 1_000_000  # frame indices from here on are measured; lower ones are warm-up


def make_factory(people: int, classes: int = 80):
    from lart_stream.models.ava import AVA_ACTIONS_80

    rng = np.random.default_rng(0)
    image = np.zeros((48, 64, 3), np.uint8)  # frames topic off: the image size does not matter
    xy = rng.uniform(0, 1200, (people, 2)).astype(np.float32)
    tracks = Tracks(np.arange(1, people + 1), np.concatenate([xy, xy + 200], 1), np.full(people, 2),
                    np.full(people, 100), np.full(people, 95), np.zeros(people), np.arange(people),
                    cam_t=rng.normal(size=(people, 3)).astype(np.float32))
    ids = tuple(range(1, classes + 1))
    names = tuple(AVA_ACTIONS_80[(i - 1) % 80] for i in ids)

    def make(index: int) -> FrameResult:
        scores = rng.uniform(size=(people, classes)).astype(np.float32)
        acts = ActionPredictions(tracks.track_id, np.full(people, index), scores, ids, names, random_weights=False)
        frame = Frame(index=index, t_capture=time.monotonic(), image=image)
        return FrameResult(frame, Detections.empty(), People.empty((1920, 1080)), tracks, acts,
                           {"detect": 10.0, "lift": 20.0, "track": 1.0, "actions": 5.0}, time.monotonic())

    return make


# -- child roles ----------------------------------------------------------------------------------


def run_subscriber(args: argparse.Namespace) -> int:
    from lart_stream.realtime.subscriber import Subscriber

    last = MEASURED + args.count - 1
    lat: list[int] = []
    with Subscriber(args.address, ("actions",), hwm=0, curve_server_key=args.curve_server_key,
                    curve_secret_key=args.curve_secret_key) as sub:
        sub.recv(timeout=60)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            try:
                msg = sub.recv(timeout=10)
            except TimeoutError:
                break
            now = time.monotonic_ns()
            if msg.frame >= MEASURED:
                lat.append(now - msg.t_publish_ns)
                if msg.frame >= last:
                    break
        stats = sub.stats
    print(json.dumps({"latency_ns": lat, "missed": stats.missed, "skipped": stats.skipped}), flush=True)
    return 0


def run_stalled(args: argparse.Namespace) -> int:
    from lart_stream.realtime.subscriber import Subscriber

    sub = Subscriber(args.address, ("actions",), hwm=10)
    sub.recv(timeout=60)
    print(json.dumps({"ready": True}), flush=True)
    time.sleep(3600)  # never reads again; the parent kills it
    return 0


def _child(role: str, address: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--role", role, "--address", address, *extra],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


# -- one case -------------------------------------------------------------------------------------


def run_case(name: str, address: str, people: int, count: int, rate: float, warmup: int,
             curve: bool = False, stalled: bool = False) -> dict:
    keys = None
    extra: list[str] = []
    cfg = dict(address=address, hwm=100, stats_interval_s=0)
    if curve:
        import zmq.auth

        keys = tempfile.TemporaryDirectory()
        server_pub, server_sec = zmq.auth.create_certificates(keys.name, "server")
        allowed = Path(keys.name) / "allowed"
        allowed.mkdir()
        client_pub, client_sec = zmq.auth.create_certificates(keys.name, "client")
        os.replace(client_pub, allowed / "client.key")
        cfg.update(curve_secret_key=server_sec, curve_allowed_keys=str(allowed))
        extra = ["--curve-server-key", server_pub, "--curve-secret-key", client_sec]
    make = make_factory(people)
    pub = Publisher(PublisherConfig(**cfg))
    children = []
    try:
        sub = _child("subscriber", pub.endpoint, "--count", str(count), *extra)
        children.append(sub)
        if stalled:
            children.append(_child("stalled", pub.endpoint))
        # Warm up until every child got a message, then `warmup` more.
        sel = selectors.DefaultSelector()
        for c in children:
            sel.register(c.stdout, selectors.EVENT_READ)
        ready, i = 0, 0
        while ready < len(children):
            pub.send(make(i))
            i += 1
            for key, _ in sel.select(timeout=1.0 / rate):
                if not key.fileobj.readline():
                    raise RuntimeError("a subscriber process died during warm-up")
                sel.unregister(key.fileobj)
                ready += 1
        for _ in range(warmup):
            pub.send(make(i))
            i += 1
            time.sleep(1.0 / rate)
        send_ms = []
        t0 = time.monotonic()
        for k in range(count):
            result = make(MEASURED + k)
            t = time.perf_counter()
            pub.send(result)
            send_ms.append((time.perf_counter() - t) * 1e3)
            delay = t0 + (k + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        out = json.loads(sub.stdout.readline())
        sub.wait(30)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
            c.wait(10)
        dropped = pub.dropped
        pub.close()
        if keys is not None:
            keys.cleanup()
    size, encode_ms, decode_ms = codec_cost(make)
    lat = np.asarray(out["latency_ns"], np.float64) / 1e6
    send = np.asarray(send_ms)
    return {
        "case": name, "address": address.split("://")[0], "people": people, "classes": 80, "payload_bytes": size,
        "messages": count, "received": int(lat.size), "missed": out["missed"], "publisher_dropped": dropped,
        "rate_hz": rate, "curve": curve, "stalled_subscriber": stalled,
        "latency_ms": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99),
                       "max": float(lat.max()) if lat.size else None},
        "send_ms": {"p50": _pct(send, 50), "p99": _pct(send, 99)},
        "codec_ms": {"encode_p50": encode_ms, "decode_p50": decode_ms},
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other jobs on the machine while this case ran
    }


def codec_cost(make, n: int = 200) -> tuple[int, float, float]:
    """Payload bytes and median in-process encode / decode ms of one message (no sockets)."""
    from lart_stream.realtime import protocol

    result = make(0)
    enc, dec = [], []
    for _ in range(n):
        t = time.perf_counter()
        parts = protocol.encode(protocol.actions_message(result, session=0, seq=0, t_publish_ns=0, t_wall_ns=0))
        t2 = time.perf_counter()
        protocol.decode(parts)
        dec.append(time.perf_counter() - t2)
        enc.append(t2 - t)
    return len(parts[1]), float(np.median(enc)) * 1e3, float(np.median(dec)) * 1e3


def _pct(a: np.ndarray, q: float) -> float | None:
    return float(np.percentile(a, q)) if a.size else None


def machine_info() -> dict:
    import msgpack
    import zmq

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "msgpack": ".".join(map(str, msgpack.version)),
            "numpy": np.__version__, "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def to_markdown(results: list[dict], info: dict, args: argparse.Namespace) -> str:
    rows = ["| case | people | payload | received | p50 ms | p90 ms | p99 ms | max ms | send() p50 / p99 ms "
            "| encode / decode ms | load |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lat, send, codec = r["latency_ms"], r["send_ms"], r["codec_ms"]
        rows.append(f"| {r['case']} | {r['people']} | {r['payload_bytes'] / 1024:.1f} KiB | "
                    f"{r['received']}/{r['messages']} | {lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | "
                    f"{lat['max']:.3f} | {send['p50']:.3f} / {send['p99']:.3f} | "
                    f"{codec['encode_p50']:.3f} / {codec['decode_p50']:.3f} | {r['load_avg_1m']:.2f} |")
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    return "\n".join([
        "# Transport latency: publish to receive over loopback",
        "",
        f"`python benchmarks/transport_latency.py --messages {args.messages} --rate {args.rate:g}`: "
        f"{args.messages} `actions` messages per case at {args.rate:g} Hz after a warm-up, 80 AVA classes "
        "(full score vector and top-5 with names per person), publisher and subscriber in separate processes. "
        "Latency = subscriber `time.monotonic_ns()` after `Subscriber.recv()` returned the decoded message "
        "minus `t_publish_ns` (stamped in `Publisher.send()` before encoding): encode + hand-off to the "
        "sender thread + ZeroMQ + loopback + decode. `send()` is the cost on the pipeline thread. "
        "`encode / decode` is the in-process median of the pure protocol functions for one such message "
        "(no sockets): most of the latency is Python encoding and decoding, not the transport.",
        "",
        *rows,
        "",
        f"Machine: {machine}.",
        "",
        "Notes: a 2-core CPU machine shared with other jobs; `load` is the 1-minute load average when the "
        "case ended. The tails (p99, max) grow with that load; the medians barely move. "
        "`stalled` adds a second subscriber that never reads: the fast subscriber still receives every "
        "message. `curve` is CURVE encryption with an allow-list.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--rate", type=float, default=30.0, help="messages per second (a camera's frame rate)")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="100 messages per case, print only")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "transport_latency"),
                   help="writes OUT.md and OUT.json")
    p.add_argument("--role", choices=["subscriber", "stalled"], help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--curve-server-key", help=argparse.SUPPRESS)
    p.add_argument("--curve-secret-key", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "subscriber":
        return run_subscriber(args)
    if args.role == "stalled":
        return run_stalled(args)
    if args.quick:
        args.messages, args.rate = 100, 100.0
    ipc = f"ipc://{tempfile.gettempdir()}/lart-bench-{os.getpid()}.sock"
    cases = [
        ("tcp, 5 people", "tcp://127.0.0.1:*", 5, {}),
        ("tcp, 20 people", "tcp://127.0.0.1:*", 20, {}),
        ("ipc, 5 people", ipc, 5, {}),
        ("ipc, 20 people", ipc, 20, {}),
        ("tcp, 20 people, curve", "tcp://127.0.0.1:*", 20, {"curve": True}),
        ("tcp, 20 people, stalled", "tcp://127.0.0.1:*", 20, {"stalled": True}),
    ]
    info = machine_info()
    results = []
    for name, address, people, kw in cases:
        r = run_case(name, address, people, args.messages, args.rate, args.warmup, **kw)
        results.append(r)
        lat = r["latency_ms"]
        print(f"{name:26s} {r['payload_bytes']:6d} B  recv {r['received']}/{r['messages']}  "
              f"p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  max {lat['max']:.3f} ms  "
              f"send p50 {r['send_ms']['p50']:.3f} ms", flush=True)
    info["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    if not args.quick:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(to_markdown(results, info, args))
        out.with_suffix(".json").write_text(json.dumps({"machine": info, "args": {"messages": args.messages,
                                                        "rate_hz": args.rate, "warmup": args.warmup},
                                                        "results": results}, indent=2) + "\n")
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
