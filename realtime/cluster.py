"""`lart-stream cluster`: one worker actor per GPU across a Ray cluster, all published through one address.

    lart-stream cluster --address auto --streams streams.toml [--publish tcp://0.0.0.0:5555]

The driver (this process) runs the ZeroMQ proxy (realtime/workers.py's StreamProxy: XSUB on this
node, XPUB on the publish address) and one actor per GPU (``num_gpus=1``; ``--gpus-per-worker 0`` on
CPU machines). Each actor runs realtime/workers.py's worker body on its streams (round-robin) with
its publisher connected to the proxy. An actor that dies is reported and replaced by a new one that
takes its streams (files resume after the last frame the driver saw published; live sources reconnect).

Ray is an optional extra (``pip install -e '.[cluster]'``): nothing else imports this module, and it
imports Ray only when run. The streams file is a normal config file (any section) with ``[[streams]]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from typing import Any, Sequence

from lart_stream.realtime.config import AppConfig
from lart_stream.realtime.sources import SourceConfig
from lart_stream.realtime.workers import EXIT_DONE, EXIT_USER_ERROR, StreamProxy, assign_round_robin, worker_body

log = logging.getLogger(__name__)


def _actor_class(ray: Any) -> Any:
    """The worker actor (defined here so importing this module never needs Ray)."""

    class StreamWorker:
        """Runs worker_body on a thread-capable actor; ``progress`` answers while ``run`` runs."""

        def __init__(self) -> None:
            self._progress: dict[int, int] = {}
            self._stop = threading.Event()

        def pid(self) -> int:
            import os

            return os.getpid()

        def run(self, cfg: AppConfig, streams: list[SourceConfig], connect_to: str, start_frames: list[int]) -> int:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            return worker_body(cfg, streams, connect_to, start_frames, self._progress.__setitem__, self._stop)

        def progress(self) -> dict[int, int]:
            return dict(self._progress)

        def stop(self) -> None:
            self._stop.set()

    return ray.remote(max_concurrency=4)(StreamWorker)


@dataclasses.dataclass
class _Slot:
    number: int
    positions: list[int]  # its streams, as positions in the stream list
    actor: Any = None
    ref: Any = None  # the run() call's result
    restarts: int = 0
    done: bool = False


class ClusterRunner:
    """Driver side: proxy + actors + supervision. ``run(stop)`` returns an exit status."""

    def __init__(self, cfg: AppConfig, streams: Sequence[SourceConfig], *, workers: int = 0,
                 gpus_per_worker: float = 1.0, publish: str | None = None, max_restarts: int = 5,
                 poll_s: float = 0.2):
        import ray

        self.ray = ray
        self.cfg, self.streams = cfg, list(streams)
        self.ids = [s.stream_id for s in streams]
        self.gpus_per_worker, self.max_restarts, self.poll_s = gpus_per_worker, max_restarts, poll_s
        if workers <= 0:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            workers = max(1, int(gpus // gpus_per_worker) if gpus_per_worker > 0 else 1)
        self.actor_cls = _actor_class(ray)
        host = ray.util.get_node_ip_address()
        self.proxy = StreamProxy(publish or cfg.publish.address, inner_host=host)
        self.progress = [-1] * len(streams)  # last published frame per stream, as last seen
        self.slots = [_Slot(n, pos) for n, pos in enumerate(assign_round_robin(len(streams), workers)) if pos]
        self.restarts = 0
        self.changed = threading.Condition()  # notified when progress or the set of actors changes
        device = "cuda" if gpus_per_worker > 0 else "cpu"
        self.worker_cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(
            cfg.runtime, device=device, status="off", summary_json=None))

    def _start(self, slot: _Slot) -> None:
        slot.actor = self.actor_cls.options(num_gpus=self.gpus_per_worker, num_cpus=0).remote()
        streams = [self.streams[p] for p in slot.positions]
        start = [self.progress[p] + 1 for p in slot.positions]
        slot.ref = slot.actor.run.remote(self.worker_cfg, streams, self.proxy.inner, start)
        with self.changed:
            self.changed.notify_all()

    def describe(self, slot: _Slot) -> str:
        return f"worker {slot.number} (streams {', '.join(self.ids[p] for p in slot.positions)})"

    def worker_pid(self, number: int) -> int:
        """The process id of worker ``number``'s actor (tests kill it)."""
        return self.ray.get(self.slots[number].actor.pid.remote(), timeout=120)

    def _poll_progress(self, slot: _Slot) -> None:
        try:
            got = self.ray.get(slot.actor.progress.remote(), timeout=5)
        except Exception:  # dead or busy: its run() result says which
            return
        with self.changed:
            for i, index in got.items():
                p = slot.positions[i]
                self.progress[p] = max(self.progress[p], index)
            self.changed.notify_all()

    def run(self, stop: threading.Event) -> int:
        ray = self.ray
        for slot in self.slots:
            self._start(slot)
        failed = False
        try:
            while not stop.is_set():
                live = [s for s in self.slots if not s.done]
                if not live:
                    break
                ready, _ = ray.wait([s.ref for s in live], num_returns=len(live), timeout=self.poll_s)
                for slot in live:
                    if slot.ref not in ready:
                        self._poll_progress(slot)
                        continue
                    try:
                        code = ray.get(slot.ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                        code, why = None, type(exc).__name__
                    else:
                        why = f"exit {code}"
                    if code in (EXIT_DONE, EXIT_USER_ERROR):
                        self._poll_progress(slot)
                        slot.done = True
                        failed |= code == EXIT_USER_ERROR
                        continue
                    if slot.restarts >= self.max_restarts:
                        log.error("%s died (%s) %d times; giving up on its streams", self.describe(slot), why,
                                  slot.restarts + 1)
                        slot.done = failed = True
                        continue
                    slot.restarts += 1
                    self.restarts += 1
                    log.error("%s died (%s); starting a new actor for its streams (%d/%d)", self.describe(slot),
                              why, slot.restarts, self.max_restarts)
                    self._start(slot)
        finally:
            for slot in self.slots:
                if slot.actor is not None and not slot.done:
                    try:
                        slot.actor.stop.remote()
                    except Exception:
                        pass
            deadline = time.monotonic() + 10
            for slot in self.slots:
                if slot.ref is not None and not slot.done:
                    try:
                        ray.get(slot.ref, timeout=max(0.1, deadline - time.monotonic()))
                    except Exception:
                        ray.kill(slot.actor)
            self.proxy.close()
        return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lart-stream cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="auto", help="Ray cluster address (auto: the running cluster; local: "
                                                    "start a local Ray runtime)")
    p.add_argument("--streams", required=True, metavar="FILE.toml", help="config file with [[streams]]")
    p.add_argument("--publish", metavar="ADDR", help="address subscribers connect to (default: the file's)")
    p.add_argument("--workers", type=int, default=0, help="worker actors (default: GPUs / --gpus-per-worker)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0, help="num_gpus per actor (0: CPU workers)")
    p.add_argument("--max-frames", type=int, default=None, help="per stream")
    p.add_argument("--max-restarts", type=int, default=5)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from lart_stream.realtime.config import ConfigError, apply_overrides, load_file
    from lart_stream.realtime.multistream import streams_from_config

    try:
        raw = load_file(args.streams)
        entries = raw.pop("streams", None)
        cfg = apply_overrides(AppConfig(), raw, args.streams)
        if args.max_frames is not None:
            cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, max_frames=args.max_frames))
        if not entries:
            raise ConfigError(f"{args.streams}: no [[streams]] tables")
        streams = streams_from_config(entries, cfg.source, args.streams)
    except (ConfigError, ValueError) as exc:
        print(f"lart-stream cluster: {exc}", file=sys.stderr)
        return 2
    try:
        import ray
    except ImportError:
        print("lart-stream cluster: Ray is not installed (pip install 'lart-stream[cluster]')", file=sys.stderr)
        return 2
    try:
        ray.init(address=None if args.address == "local" else args.address, log_to_driver=True,
                 include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"lart-stream cluster: cannot reach a Ray cluster at {args.address}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner = ClusterRunner(cfg, streams, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                               publish=args.publish, max_restarts=args.max_restarts)
    except ValueError as exc:
        print(f"lart-stream cluster: {exc}", file=sys.stderr)
        ray.shutdown()
        return 2
    log.info("%d worker actors, %d streams, publishing on %s", len(runner.slots), len(streams), runner.proxy.endpoint)
    try:
        code = runner.run(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        ray.shutdown()
    print(f"{len(runner.slots)} workers, {runner.restarts} restarts; last frame per stream: "
          + ", ".join(f"{i} {f}" for i, f in zip(runner.ids, runner.progress)), file=sys.stderr)
    return code
