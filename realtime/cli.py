"""The `lart-stream` command.

    lart-stream --camera 0 | --source PATH|URL [options]   run the pipeline
    lart-stream listen|view|keys|export|bench ...          subcommands

User errors (missing file, camera that can't be opened, bad config) print one
line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Subcommands live in their own modules and are imported only when used.
SUBCOMMANDS = {
    "listen": ("lart_stream.realtime.transport_cli", "listen_main", "print predictions from a publisher"),
    "view": ("lart_stream.realtime.transport_cli", "view_main", "draw predictions on the frames topic"),
    "keys": ("lart_stream.realtime.transport_cli", "keys_main", "make CURVE key pairs"),
    "export": ("lart_stream.export.cli", "main", "export models to ONNX / TensorRT and check parity"),
    "bench": ("lart_stream.benchmarks.bench", "main", "latency benchmark of the pipeline"),
    "cluster": ("lart_stream.realtime.cluster", "main", "one worker per GPU on a Ray cluster (extra [cluster])"),
}

USAGE_EXAMPLES = """examples:
  lart-stream --source video.mp4                 annotated video in lart-stream-out/video.mp4
  lart-stream --camera 0 --annotate none         a camera, predictions published on ZeroMQ only
  lart-stream --source video.mp4 --print-config  the resolved settings (config file + flags)
"""

log = logging.getLogger("lart_stream")


def build_parser() -> argparse.ArgumentParser:
    from lart_stream.realtime.cli_args import (HelpFormatter, Parser, add_alias, add_defaults_to_help,
                                               non_negative_int, positive_float, positive_int, probability)

    p = Parser(
        prog="lart-stream", formatter_class=HelpFormatter,
        description="Live per-person action recognition: detector -> HMR 2.0 -> 3D tracking -> LART -> ZeroMQ.",
        epilog=USAGE_EXAMPLES + "\nsubcommands: " + "; ".join(f"{k}: {v[2]}" for k, v in SUBCOMMANDS.items())
        + " (lart-stream SUB --help)")
    p.add_version()
    src = p.add_argument_group("input")
    src.add_argument("--camera", action=_AppendInput, metavar="[NAME=]N",
                     help="camera index; repeat (with --source too) for several streams in one pipeline")
    src.add_argument("--source", action=_AppendInput, metavar="[NAME=]PATH|URL",
                     help="video file, folder of images, rtsp:// or http(s):// stream; repeat for several streams "
                          "(ids s0, s1, ... or NAME=)")
    src.add_argument("--realtime", action="store_true", default=None, help="pace files to their frame rate")
    src.add_argument("--fps", type=positive_float, help="pacing rate for image folders with --realtime")
    src.add_argument("--max-frames", type=non_negative_int, metavar="N",
                     help="stop after N processed frames; 0 = no limit (run to the end of the input)")
    src.add_argument("--stall-timeout", type=positive_float, metavar="S",
                     help="reopen a network stream that sends no frame for S seconds (default 5)")
    models = p.add_argument_group("models (random tiny weights unless checkpoints are given)")
    models.add_argument("--detector", metavar="hog|MODEL.onnx", help="person detector (hog: OpenCV's HOG)")
    models.add_argument("--detector-confidence", type=probability, metavar="P", help="minimum person score")
    models.add_argument("--person-classes", metavar="IDS", help="ONNX detector: class ids that are people, e.g. 0,1")
    models.add_argument("--hmr-checkpoint", metavar="CKPT", help="4D-Humans HMR 2.0 checkpoint")
    models.add_argument("--model-size", choices=["auto", "tiny", "official"],
                        help="HMR and LART size at once (default: auto, official with a checkpoint, tiny without)")
    models.add_argument("--hmr-size", choices=["auto", "tiny", "official"], help="HMR size (overrides --model-size)")
    models.add_argument("--smpl", metavar="SMPL_NEUTRAL.pkl", help="SMPL model file (joints and keypoints)")
    models.add_argument("--tracker", choices=["auto", "lart", "phalp-reference", "phalp", "iou"],
                        help="auto: lart with real HMR weights, iou without; phalp-reference: PHALP as published "
                             "(phalp: its old name)")
    models.add_argument("--lart-checkpoint", metavar="CKPT", help="LART checkpoint")
    models.add_argument("--lart-dim-head", type=positive_int, metavar="N",
                        help="LART attention head size (unset: read from the checkpoint, which the reference's "
                             "Lightning files record)")
    models.add_argument("--lart-mean-std", metavar="NPY", help="LART pose normalisation statistics (mean_std.npy)")
    models.add_argument("--lart-size", choices=["auto", "tiny", "official"], help="LART size (overrides --model-size)")
    models.add_argument("--no-actions", action="store_true", default=None, help="stop after tracking")
    mode = models.add_argument("--action-mode", choices=["auto", "causal", "window"],
                               help="auto: window with a LART checkpoint, causal without")
    add_alias(models, "--mode", mode)
    models.add_argument("--window", type=non_negative_int, metavar="T",
                        help="frames per action window (0: the model's)")
    models.add_argument("--stride", type=positive_int, metavar="S", help="window mode: run every S frames")
    models.add_argument("--lookahead", type=non_negative_int, metavar="K",
                        help="window mode: predict frame t-K at frame t")
    models.add_argument("--top-k", type=positive_int, metavar="K", help="actions per person in each message")
    app = p.add_argument_group("appearance (MViT features for LART; a tiny random MViT without a checkpoint)")
    app.add_argument("--appearance", choices=["auto", "off"], help="auto: when LART takes appearance features")
    app.add_argument("--appearance-checkpoint", metavar="mvit.pyth", help="PySlowFast MViTv2 AVA checkpoint")
    app.add_argument("--appearance-config", metavar="mvit.yaml", help="its config (default: the one it embeds)")
    app.add_argument("--appearance-every", type=positive_int, metavar="K", help="a keyframe pass every K frames (default 6)")
    app.add_argument("--appearance-lookahead", type=non_negative_int, metavar="N",
                     help="let the clip see N future frames (up to half the clip): output N frames later")
    out = p.add_argument_group("output")
    out.add_argument("--publish", metavar="ADDR", help="ZeroMQ PUB address ('none' to disable)")
    out.add_argument("--frames-topic", action="store_true", default=None, help="also publish JPEG frames for viewers")
    out.add_argument("--curve-secret-key", metavar="FILE", help="enable CURVE with this server secret key file")
    out.add_argument("--curve-allowed-keys", metavar="DIR", help="folder of allowed client public keys")
    out.add_argument("--summary-json", metavar="FILE", help="write the run summary as JSON")
    out.add_argument("--annotate", metavar="VIDEO|auto|none",
                     help="write an annotated video (.mp4, .mkv, .mov or .avi); auto: lart-stream-out/NAME.mp4 "
                          "for a file or folder source, nothing for a camera or stream")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", metavar="auto|cpu|cuda", help="auto: cuda when available")
    rt.add_argument("--backend", choices=["auto", "tensorrt", "onnxruntime", "torch"],
                    help="for HMR and the ONNX detector; LART always runs in PyTorch")
    rt.add_argument("--export-dir", metavar="DIR",
                    help="models exported by `lart-stream export` (onnxruntime/TensorRT)")
    rt.add_argument("--threads", type=non_negative_int, metavar="N",
                    help="CPU threads for torch and OpenCV (0: one per core; 1 is steadier on a busy machine)")
    rt.add_argument("--hmr-precision", choices=["auto", "fp32", "bf16", "fp16"],
                    help="HMR network precision; bf16/fp16 cast the weights once (default on CUDA: bf16)")
    rt.add_argument("--lart-precision", choices=["auto", "fp32", "bf16"],
                    help="LART transformer matmuls; bf16 casts them once, the rest stays fp32 (default on CUDA: bf16)")
    rt.add_argument("--compile", action="store_true", default=None,
                    help="torch.compile the HMR network inside its CUDA graphs (cold: minutes per batch size; "
                         "cached on disk for the next start)")
    rt.add_argument("--compile-cache", metavar="DIR", help="compile cache folder (default ~/.cache/lart-stream/inductor)")
    rt.add_argument("--compile-batches", metavar="LIST",
                    help="people counts to compile, e.g. 1-6 (default: every batch size up to 16, then 20-32 by 4; "
                         "other counts run uncompiled)")
    rt.add_argument("--fp8", action="store_true", default=None,
                    help="HMR's ViT linears in FP8 (Hopper/Ada GPUs; small accuracy cost, see the README)")
    rt.add_argument("--backbone-bf16", action="store_true", default=None,
                    help="HMR's whole ViT in bf16, residual stream and LayerNorms too (faster, more rounding)")
    rt.add_argument("--inflight", type=positive_int, metavar="N",
                    help="frames in flight (1-3): 1 one frame at a time; 2 detection of the next frame beside "
                         "the rest; 3 detection, lifting and tracking+actions+publishing of three frames at once "
                         "(throughput up, latency up to N-1 frames)")
    rt.add_argument("--late-read", action="store_true", default=None,
                    help="with --inflight 3: read a frame only when lifting is about to be free (less latency)")
    rt.add_argument("--overlap", action="store_true", default=None, help="same as --inflight 2")
    rt.add_argument("--gpus", metavar="LIST", help="one worker process per entry (e.g. 0,1 or cpu,cpu), streams "
                    "assigned round-robin, all published through one address (a ZeroMQ proxy)")
    rt.add_argument("--workers", type=int, metavar="N", help="N worker processes on the --device (like --gpus)")
    rt.add_argument("--config", metavar="FILE.toml", help="config file ([[streams]]: several streams); flags override it")
    rt.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    rt.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log messages shown")
    rt.add_argument("--status", choices=["auto", "on", "off"], help="live status line (auto: on a TTY)")
    add_defaults_to_help(p, _config_defaults())
    return p


def _config_defaults() -> dict[str, object]:
    """Each flag's value when it is not given: the AppConfig default it overrides."""
    from lart_stream.realtime.config import AppConfig

    cfg = AppConfig()
    return {flag: getattr(getattr(cfg, section), key) for flag, (section, key) in FLAG_TO_SETTING.items()}


# flag -> (section, key); flags left unset (None) don't override the file.
FLAG_TO_SETTING = {
    "camera": ("source", "camera"), "source": ("source", "path"), "realtime": ("source", "realtime"),
    "fps": ("source", "fps"), "max_frames": ("runtime", "max_frames"), "stall_timeout": ("source", "stall_timeout_s"),
    "detector": ("detector", "model"), "detector_confidence": ("detector", "confidence"),
    "person_classes": ("detector", "person_classes"),
    "hmr_checkpoint": ("hmr", "checkpoint"), "hmr_size": ("hmr", "size"), "smpl": ("hmr", "smpl"),
    "hmr_precision": ("hmr", "precision"), "lart_precision": ("actions", "precision"), "compile": ("hmr", "compile"), "compile_cache": ("hmr", "compile_cache"),
    "compile_batches": ("hmr", "compile_batches"),
    "fp8": ("hmr", "fp8"), "backbone_bf16": ("hmr", "backbone_bf16"),
    "tracker": ("tracker", "kind"),
    "lart_checkpoint": ("actions", "checkpoint"), "lart_dim_head": ("actions", "dim_head"),
    "lart_mean_std": ("actions", "mean_std"),
    "lart_size": ("actions", "size"), "action_mode": ("actions", "mode"), "window": ("actions", "window"),
    "stride": ("actions", "stride"), "lookahead": ("actions", "lookahead"), "top_k": ("actions", "top_k"),
    "appearance": ("appearance", "mode"), "appearance_checkpoint": ("appearance", "checkpoint"),
    "appearance_config": ("appearance", "config"), "appearance_every": ("appearance", "every"),
    "appearance_lookahead": ("appearance", "lookahead"),
    "publish": ("publish", "address"), "frames_topic": ("publish", "frames"),
    "curve_secret_key": ("publish", "curve_secret_key"), "curve_allowed_keys": ("publish", "curve_allowed_keys"),
    "summary_json": ("runtime", "summary_json"), "annotate": ("runtime", "annotate"), "device": ("runtime", "device"), "backend": ("runtime", "backend"),
    "export_dir": ("runtime", "export_dir"),
    "log_level": ("runtime", "log_level"), "overlap": ("runtime", "overlap"), "inflight": ("runtime", "inflight"), "late_read": ("runtime", "late_read"), "threads": ("runtime", "threads"), "status": ("runtime", "status"),
}


class _AppendInput(argparse.Action):
    """--source / --camera, in the order given: several make several streams."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.inputs = [*(getattr(namespace, "inputs", None) or []), (self.dest, values)]
        setattr(namespace, self.dest, values)


def resolve_streams(args: argparse.Namespace, cfg, file_streams: list | None) -> list:
    """The streams of a multi-stream run (SourceConfigs), or [] for one stream (today's path)."""
    from lart_stream.realtime.config import ConfigError
    from lart_stream.realtime.multistream import check_stream_ids, parse_input

    inputs = getattr(args, "inputs", None) or []
    try:
        if len(inputs) > 1 or (inputs and (args.gpus or args.workers)):
            streams = [parse_input(kind, str(v), n, cfg.source) for n, (kind, v) in enumerate(inputs)]
        elif not inputs and file_streams:
            streams = file_streams
        else:
            return []
        check_stream_ids([s.stream_id for s in streams])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return streams


def resolve_config(args: argparse.Namespace):
    from lart_stream.realtime.config import AppConfig, ConfigError, apply_overrides, load_file

    cfg = AppConfig()
    args.file_streams = None
    inputs = getattr(args, "inputs", None) or []
    if len(inputs) == 1:  # one stream: today's flags (NAME=... names it)
        from lart_stream.realtime.multistream import parse_input

        try:
            one = parse_input(inputs[0][0], str(inputs[0][1]), 0, cfg.source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        args.camera, args.source = one.camera, one.path
        args.stream_id = one.stream_id if str(inputs[0][1]).startswith(one.stream_id + "=") else None
    elif len(inputs) > 1:
        args.camera = args.source = None  # several streams: resolve_streams takes them
    if args.config:
        raw = load_file(args.config)
        entries = raw.pop("streams", None)
        cfg = apply_overrides(cfg, raw, args.config)
        if entries is not None:
            from lart_stream.realtime.multistream import streams_from_config

            try:
                args.file_streams = streams_from_config(entries, cfg.source, args.config)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    flags: dict[str, dict[str, Any]] = {}
    for flag, (section, key) in FLAG_TO_SETTING.items():
        value = getattr(args, flag)
        if value is not None:
            flags.setdefault(section, {})[key] = value
    if args.no_actions:
        flags.setdefault("actions", {})["enabled"] = False
    if args.model_size is not None:  # both sizes, unless given one by one
        for section, key in (("hmr", "size"), ("actions", "size")):
            flags.setdefault(section, {}).setdefault(key, args.model_size)
    if getattr(args, "stream_id", None):
        flags.setdefault("source", {})["stream_id"] = args.stream_id
    return apply_overrides(cfg, flags, "command line")


class StopRequest:
    """Ctrl-C / SIGTERM. Installed first thing, before the heavy imports (torch, OpenCV), so a signal
    at any time ends the run cleanly: the first one stops after the current frame or start-up step,
    a second one ends the program at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""
        self.status = None  # the live status line: broken before the message, so ^C stays on its own line
        self._previous: dict = {}

    def install(self) -> None:
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.event.is_set():  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if self.status is not None:
            self.status.break_line()
        log.info("%s received: stopping after this frame", self.signal_name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # OpenCV's own warnings (V4L probing, FFmpeg retries) would bury our one-line messages.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if argv and argv[0] in SUBCOMMANDS:
        module, func, _ = SUBCOMMANDS[argv[0]]
        try:
            entry = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            print(f"lart-stream {argv[0]}: not available in this build ({exc})", file=sys.stderr)
            return EXIT_USAGE
        return int(entry(argv[1:]) or 0)
    stop = StopRequest()
    stop.install()
    try:
        return run_main(argv, stop)
    except KeyboardInterrupt:  # the second signal
        print(f"\nlart-stream: interrupted by a second {stop.signal_name or 'signal'}", file=sys.stderr)
        return 128 + int(signal.Signals[stop.signal_name]) if stop.signal_name else 130
    finally:
        stop.restore()


def run_main(argv: list[str], stop: StopRequest | None = None) -> int:
    from lart_stream.realtime.config import ConfigError, to_toml

    stop = stop or StopRequest()
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"lart-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        streams = resolve_streams(args, cfg, args.file_streams)
        gpus = _worker_devices(args, cfg)
    except ConfigError as exc:
        print(f"lart-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        print(to_toml(cfg))
        for s in streams:
            print(f"[[streams]]\nid = {json.dumps(s.stream_id)}\n"
                  + (f"camera = {s.camera}\n" if s.camera is not None else f"path = {json.dumps(s.path)}\n"))
        return EXIT_OK
    if not 1 <= cfg.runtime.inflight <= 3:
        print(f"lart-stream: --inflight takes 1, 2 or 3, got {cfg.runtime.inflight}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=cfg.runtime.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    problem = _unwritable(cfg.runtime.summary_json)
    if problem:  # found now, not after the whole run
        print(f"lart-stream: --summary-json {cfg.runtime.summary_json}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if gpus:
        from lart_stream.realtime.workers import run_workers

        return run_workers(cfg, streams or [cfg.source], gpus)
    return _run(cfg, stop, streams)


def _unwritable(path: str | None) -> str | None:
    """Why a file can't be written at ``path`` (None when it can): tried with a temporary sibling,
    since permission bits say nothing for root or for /proc-like file systems."""
    import tempfile

    if not path:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        return "is a folder"
    if not p.parent.is_dir():
        return f"folder {p.parent} does not exist"
    try:
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp"):
            pass
        if p.exists():
            with open(p, "r+b"):
                pass
    except OSError as exc:
        return f"cannot be written ({exc.strerror or exc})"
    return None


def _stopped_before_start(cfg, stop: StopRequest) -> int:
    """A signal during start-up: no frame was processed; one line, the (empty) summary file, exit 0."""
    print(f"lart-stream: stopped by {stop.signal_name} during start-up, before the first frame", file=sys.stderr)
    if cfg.runtime.summary_json:
        from lart_stream.realtime.engine import RunSummary

        summary = RunSummary(0, 0.0, 0, 0, 0, {}, {}, "stopped", stop_signal=stop.signal_name)
        return _write_summary(cfg.runtime.summary_json, summary) or EXIT_OK
    return EXIT_OK


def _write_summary(path: str, summary) -> int:
    try:
        Path(path).expanduser().write_text(json.dumps(summary.as_dict(), indent=2))
    except OSError as exc:
        print(f"lart-stream: cannot write the summary to {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _worker_devices(args: argparse.Namespace, cfg) -> list[str]:
    """--gpus 0,1 | cpu,cpu -> one device per worker; --workers N -> N of --device; [] = no workers."""
    from lart_stream.realtime.config import ConfigError

    if args.gpus and args.workers:
        raise ConfigError("give either --gpus or --workers, not both")
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        return [cfg.runtime.device] * args.workers
    if not args.gpus:
        return []
    devices = [d.strip() for d in args.gpus.split(",")]
    for d in devices:
        if not (d == "cpu" or d.isdigit()):
            raise ConfigError(f"--gpus {args.gpus!r}: expected GPU indices or cpu, e.g. 0,1 or cpu,cpu")
    return devices


def _run(cfg, stop: StopRequest, streams: list | None = None) -> int:
    if stop.event.is_set():
        return _stopped_before_start(cfg, stop)
    from lart_stream.realtime.build import BuildError, build_pipeline
    from lart_stream.realtime.engine import StatusLine, run
    from lart_stream.realtime.sources import SourceError, open_source

    if cfg.runtime.threads > 0:
        from lart_stream.realtime.multistream import set_threads

        set_threads(cfg.runtime.threads)

    source = pipeline = None
    if streams:
        from lart_stream.realtime.multistream import serve

        status_on = {"on": True, "off": False}.get(cfg.runtime.status)
        status = stop.status = StatusLine(enabled=status_on)
        try:
            summary = serve(cfg, streams, stop=stop.event, status=status)
        except (SourceError, BuildError) as exc:
            print(f"lart-stream: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            stop.status = None
        summary.stop_signal = stop.signal_name
        print(summary.format(), file=sys.stderr)
        return _exit_code(cfg, summary)
    try:
        try:
            source = open_source(cfg.source, stop.event)
            pipeline = build_pipeline(cfg)
        except (SourceError, BuildError) as exc:
            print(f"lart-stream: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if stop.event.is_set():
            return _stopped_before_start(cfg, stop)
        log.info("source: %s%s", source.name, " (live: newest frame only)" if source.live else "")
        log.info("pipeline: %s", pipeline.describe())
        for stage in (pipeline.lifter, pipeline.appearance, pipeline.actions):
            if stage is not None and hasattr(stage, "warmup"):
                stage.warmup()  # CUDA graphs are captured here, not in the middle of the stream
        if stop.event.is_set():
            return _stopped_before_start(cfg, stop)
        if pipeline.random_weights:
            log.warning("RANDOM WEIGHTS: predictions are meaningless (pass --hmr-checkpoint and "
                        "--lart-checkpoint for the official models)")
        status_on = {"on": True, "off": False}.get(cfg.runtime.status)
        status = stop.status = StatusLine(enabled=status_on)
        publisher = next((s for s in pipeline.sinks if hasattr(s, "send_stats")), None)
        if publisher is not None:
            publisher.watch_source(lambda: source.state)  # heartbeat `stats` carry it, frames or not
        summary = run(source, pipeline, max_frames=cfg.runtime.max_frames, stop=stop.event, status=status,
                      on_stats=publisher.send_stats if publisher is not None else None,
                      overlap=cfg.runtime.overlap, inflight=cfg.runtime.inflight,
                      late_read=cfg.runtime.late_read)
        summary.stop_signal = stop.signal_name
    finally:
        stop.status = None
        if pipeline is not None:
            pipeline.close()
        if source is not None:
            source.close()
    print(summary.format(), file=sys.stderr)
    video = next((s for s in pipeline.sinks if hasattr(s, "written")), None)
    if video is not None:
        print(video.written(), file=sys.stderr)
    return _exit_code(cfg, summary)


def _exit_code(cfg, summary) -> int:
    """The summary file written (when asked) and the exit status of a finished run."""
    if cfg.runtime.summary_json and _write_summary(cfg.runtime.summary_json, summary):
        return EXIT_FAILED
    if summary.reason == "too many errors":
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
