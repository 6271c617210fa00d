"""One worker process per GPU, every stream published through one address.

    parent:  StreamProxy: XSUB (loopback, workers connect) <-> zmq proxy <-> XPUB (the publish address)
             supervisor: starts the workers, restarts one that dies (its streams resume)
    worker:  CUDA_VISIBLE_DEVICES=<its GPU>; multistream.serve(its streams), publisher connected to the XSUB

Streams are assigned round-robin. A subscriber connects to the one publish address and sees every
stream (topics ``actions/<stream>``); the proxy forwards subscriptions to every worker, so each
worker's last-value cache answers a late joiner. A worker that dies (signal, crash) is reported and
restarted with the same streams; a file resumes after the last frame the dead worker published, a live
source simply reconnects. A worker whose streams ended (exit 0) or that hit a user error (exit 2) is
not restarted. realtime/cluster.py runs the same worker body as Ray actors.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import zmq

from lart_stream.realtime.config import AppConfig
from lart_stream.realtime.sources import SourceConfig

log = logging.getLogger(__name__)

EXIT_DONE, EXIT_CRASHED, EXIT_USER_ERROR = 0, 1, 2
_ENV_LOCK = threading.Lock()


def assign_round_robin(n_streams: int, n_workers: int) -> list[list[int]]:
    """Stream positions per worker: stream i goes to worker i mod n_workers."""
    return [list(range(w, n_streams, n_workers)) for w in range(n_workers)]


class StreamProxy:
    """XSUB (workers' publishers connect) <-> XPUB (subscribers), zmq.proxy on its own thread."""

    def __init__(self, address: str, inner_host: str = "127.0.0.1"):
        self.ctx = zmq.Context()
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.control = self.ctx.socket(zmq.PAIR)
        for s in (self.xsub, self.xpub, self.control):
            s.setsockopt(zmq.LINGER, 0)
        # every subscription reaches every worker: each one's last-value cache answers it
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            self.xpub.bind(address)
            port = self.xsub.bind_to_random_port(f"tcp://{inner_host}")
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(f"cannot publish on {address}: {exc}") from None
        self.endpoint = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.inner = f"tcp://{inner_host}:{port}"  # what workers connect to
        ctl = f"inproc://lart-proxy-control-{id(self)}"
        self.control.bind(ctl)
        self._ctl_peer = self.ctx.socket(zmq.PAIR)
        self._ctl_peer.setsockopt(zmq.LINGER, 0)
        self._ctl_peer.connect(ctl)
        self.thread = threading.Thread(target=self._run, name="lart-proxy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self.xsub, self.xpub, None, self._ctl_peer)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                log.error("proxy stopped: %s", exc)

    def close(self) -> None:
        if getattr(self, "thread", None) is not None and self.thread.is_alive():
            self.control.send(b"TERMINATE")
            self.thread.join(timeout=5)
        for s in ("xsub", "xpub", "control", "_ctl_peer"):
            if hasattr(self, s):
                getattr(self, s).close(0)
        self.ctx.destroy(0)


def worker_body(cfg: AppConfig, streams: Sequence[SourceConfig], connect_to: str,
                start_frames: Sequence[int], on_frame: Callable[[int, int], None],
                stop: threading.Event) -> int:
    """Serve ``streams`` publishing through the proxy; ``on_frame(position, frame index)`` after each
    published frame. -> an exit code (EXIT_DONE, EXIT_CRASHED, EXIT_USER_ERROR)."""
    from lart_stream.realtime.build import BuildError
    from lart_stream.realtime.multistream import serve
    from lart_stream.realtime.sources import SourceError

    position = {s.stream_id: i for i, s in enumerate(streams)}

    def report(results) -> None:
        for r in results:
            on_frame(position[r.frame.stream_id], int(r.frame.index))

    try:
        summary = serve(cfg, streams, stop=stop, connect_to=connect_to, start_frames=start_frames,
                        on_results=report)
    except (SourceError, BuildError) as exc:
        log.error("worker: %s", exc)
        return EXIT_USER_ERROR
    log.info("worker done (%s): %s", summary.reason,
             ", ".join(f"{k} {v['frames']} frames" for k, v in summary.streams.items()))
    return EXIT_CRASHED if summary.reason == "too many errors" else EXIT_DONE


def _process_main(cfg: AppConfig, streams: list[SourceConfig], connect_to: str, start_frames: list[int],
                  progress, positions: list[int], log_level: str) -> None:
    """A worker process: runs worker_body, exits with its code. SIGTERM stops it after the tick."""
    logging.basicConfig(level=log_level, format=f"%(levelname)s worker[{os.getpid()}] %(name)s: %(message)s",
                        stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def on_frame(i: int, index: int) -> None:
        progress[positions[i]] = index

    sys.exit(worker_body(cfg, streams, connect_to, start_frames, on_frame, stop))


@dataclass
class _Worker:
    number: int
    device: str  # "0", "1", ... (a GPU) or "cpu" or a torch device string
    positions: list[int]  # its streams, as positions in the stream list
    process: mp.process.BaseProcess | None = None
    restarts: int = 0
    exit_code: int | None = None

    def describe(self, ids: list[str]) -> str:
        where = f"gpu {self.device}" if self.device.isdigit() else self.device
        return f"worker {self.number} ({where}; streams {', '.join(ids[p] for p in self.positions)})"


class WorkerPool:
    """Starts one process per device, restarts the ones that die; ``run`` supervises until the end."""

    def __init__(self, cfg: AppConfig, streams: Sequence[SourceConfig], devices: Sequence[str], connect_to: str,
                 max_restarts: int = 5, poll_s: float = 0.2):
        self.ctx = mp.get_context("spawn")  # CUDA cannot be forked; a fresh interpreter per worker
        self.cfg, self.streams, self.connect_to = cfg, list(streams), connect_to
        self.ids = [s.stream_id for s in streams]
        self.progress = self.ctx.Array("q", [-1] * len(streams), lock=False)  # last published frame
        self.workers = [_Worker(n, str(d), pos) for n, (d, pos) in
                        enumerate(zip(devices, assign_round_robin(len(streams), len(devices)))) if pos]
        self.max_restarts, self.poll_s = max_restarts, poll_s
        self.restarts = 0
        self.on_restart: Callable[[_Worker], None] | None = None  # tests wait on this

    def _device_cfg(self, device: str) -> tuple[AppConfig, dict[str, str]]:
        if device.isdigit():
            return (dataclasses.replace(self.cfg, runtime=dataclasses.replace(self.cfg.runtime, device="cuda")),
                    {"CUDA_VISIBLE_DEVICES": device})
        if device == "cpu":
            return (dataclasses.replace(self.cfg, runtime=dataclasses.replace(self.cfg.runtime, device="cpu")),
                    {"CUDA_VISIBLE_DEVICES": ""})
        return dataclasses.replace(self.cfg, runtime=dataclasses.replace(self.cfg.runtime, device=device)), {}

    def start(self, w: _Worker) -> None:
        cfg, env = self._device_cfg(w.device)
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, status="off", summary_json=None))
        streams = [self.streams[p] for p in w.positions]
        start = [int(self.progress[p]) + 1 for p in w.positions]  # resume after the last published frame
        proc = self.ctx.Process(target=_process_main, name=f"lart-worker-{w.number}",
                                args=(cfg, streams, self.connect_to, start, self.progress, w.positions,
                                      logging.getLevelName(logging.getLogger().level)))
        with _ENV_LOCK:  # the child inherits the environment at spawn: set the GPU only around start()
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                proc.start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        w.process, w.exit_code = proc, None
        log.info("%s started (pid %d)", w.describe(self.ids), proc.pid)

    def run(self, stop: threading.Event) -> int:
        """Supervise until every worker is done or ``stop``; -> 0, or 1 when a worker could not be kept up."""
        for w in self.workers:
            self.start(w)
        failed = False
        try:
            while not stop.is_set():
                alive = [w for w in self.workers if w.process is not None and w.exit_code is None]
                if not alive:
                    break
                mp.connection.wait([w.process.sentinel for w in alive], timeout=self.poll_s)
                for w in alive:
                    code = w.process.exitcode
                    if code is None:
                        continue
                    w.exit_code = code
                    if code in (EXIT_DONE, EXIT_USER_ERROR) or stop.is_set():
                        if code == EXIT_USER_ERROR:
                            log.error("%s stopped on a user error (see above); not restarted", w.describe(self.ids))
                            failed = True
                        continue
                    why = f"signal {-code}" if code < 0 else f"exit {code}"
                    if w.restarts >= self.max_restarts:
                        log.error("%s died (%s) %d times; giving up on its streams", w.describe(self.ids), why,
                                  w.restarts + 1)
                        failed = True
                        continue
                    w.restarts += 1
                    self.restarts += 1
                    log.error("%s died (%s); restarting (%d/%d), its streams resume", w.describe(self.ids), why,
                              w.restarts, self.max_restarts)
                    self.start(w)
                    if self.on_restart is not None:
                        self.on_restart(w)
        finally:
            self.stop_all()
        return 1 if failed else 0

    def stop_all(self, timeout: float = 10.0) -> None:
        for w in self.workers:
            if w.process is not None and w.process.is_alive():
                w.process.terminate()  # SIGTERM: the worker stops after its tick and closes cleanly
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if w.process is not None:
                w.process.join(max(0.1, deadline - time.monotonic()))
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(2)


def run_workers(cfg: AppConfig, streams: Sequence[SourceConfig], devices: Sequence[str]) -> int:
    """`lart-stream --gpus 0,1 --source ... --source ...`: the CLI entry. -> exit status."""
    from lart_stream.realtime.multistream import check_stream_ids

    try:
        check_stream_ids([s.stream_id for s in streams])
    except ValueError as exc:
        print(f"lart-stream: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    if cfg.publish.address.lower() == "none":
        print("lart-stream: --gpus/--workers publish through one address: give --publish ADDR", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        proxy = StreamProxy(cfg.publish.address)
    except ValueError as exc:
        print(f"lart-stream: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda signum, _f: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    pool = WorkerPool(cfg, streams, devices, proxy.inner)
    log.info("%d workers, %d streams, publishing on %s", len(pool.workers), len(streams), proxy.endpoint)
    try:
        code = pool.run(stop)
    finally:
        proxy.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    last = {pool.ids[p]: int(pool.progress[p]) for p in range(len(streams))}
    print(f"{len(pool.workers)} workers, {pool.restarts} restarts; last frame per stream: "
          + ", ".join(f"{k} {v}" for k, v in last.items()), file=sys.stderr)
    return code
