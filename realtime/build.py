"""Turn the user's AppConfig into the stages' own configs and a Pipeline.

This is the only place that knows both the config tree and the stages; each
stage is built from its own small config and never sees the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lart_stream.realtime.config import AppConfig
from lart_stream.realtime.detectors import DetectorError, build_detector
from lart_stream.realtime.engine import Pipeline

log = logging.getLogger(__name__)


class BuildError(Exception):
    """A stage that can't be built from the given config (user error)."""


def resolve_device(device: str) -> str:
    if device != "auto":
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise BuildError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _need_file(path: str | None, what: str) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise BuildError(f"{what} not found: {path}")


def build_pipeline(cfg: AppConfig, streams: int = 1) -> Pipeline:
    """The stages of ``cfg``. ``streams`` > 1: sized for that many streams in one batched pipeline
    (realtime/multistream.py): HMR and LART buckets for every stream's people; trackers come from
    ``build_trackers``."""
    device = resolve_device(cfg.runtime.device)
    if cfg.runtime.export_dir and not Path(cfg.runtime.export_dir).expanduser().is_dir():
        raise BuildError(f"export folder not found: {cfg.runtime.export_dir} (make it with `lart-stream export`)")
    _check_appearance_section(cfg)
    for path, what in ((cfg.hmr.checkpoint, "HMR checkpoint"), (cfg.hmr.smpl, "SMPL model file"),
                       (cfg.actions.checkpoint, "LART checkpoint"), (cfg.actions.mean_std, "LART mean_std file"),
                       (cfg.appearance.checkpoint, "MViT checkpoint"), (cfg.appearance.config, "MViT config")):
        _need_file(path, what)
    # Bind the publish address before any model loads: a port in use is found in a moment, not after 10 s.
    sinks = _build_sinks(cfg)
    try:
        return _build_stages(cfg, device, sinks, streams)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise


def _build_stages(cfg: AppConfig, device: str, sinks: list, streams: int = 1) -> Pipeline:
    try:
        detector = build_detector(_replace(cfg.detector, device=device, backend=cfg.runtime.backend))
    except DetectorError as exc:
        raise BuildError(str(exc)) from exc

    lifter = _build_lifter(cfg, device, streams)
    tracker = _build_tracker(cfg, lifter)
    run_actions = cfg.actions.enabled and lifter is not None
    appearance = None
    if run_actions and streams > 1 and cfg.appearance.mode != "off":
        # the MViT stage follows one stream's frames (its lookahead buffer): not batched across streams yet
        log.warning("appearance: MViT features run for single-stream pipelines only; %d streams get none",
                    streams)
    elif run_actions:
        appearance = _build_appearance(cfg, device)
    actions = _build_actions(cfg, device, appearance, streams) if run_actions else None
    appearance = _keep_appearance(cfg, appearance, actions)
    video = annotation_path(cfg)
    if video is not None:
        from lart_stream.realtime.annotate import AnnotatedVideoWriter, AnnotationError

        try:  # opened (probed) now: a path or container that can't be written fails before any frame
            sinks.append(AnnotatedVideoWriter(video, fps=_source_fps(cfg), top_k=min(3, cfg.actions.top_k)))
        except AnnotationError as exc:
            raise BuildError(str(exc)) from exc
    return Pipeline(detector, lifter, tracker, actions, sinks, appearance=appearance)


DEFAULT_ANNOTATION_DIR = "lart-stream-out"  # under the working folder, never inside the input's folder


def annotation_path(cfg: AppConfig) -> Path | None:
    """Where the annotated video goes: the given path; none for "none"; for "auto", a file or folder
    source gets lart-stream-out/NAME.mp4 (made if missing), a camera or stream gets none."""
    choice = cfg.runtime.annotate
    if not choice or choice.lower() == "none":
        return None
    if choice.lower() != "auto":
        return Path(choice).expanduser()
    path = cfg.source.path
    if cfg.source.camera is not None or not path or not Path(path).expanduser().exists():
        return None
    out = Path(DEFAULT_ANNOTATION_DIR)
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot make {out.resolve()} for the annotated video ({exc.strerror}); "
                         "pass --annotate PATH or --annotate none") from exc
    return out / f"{Path(path).expanduser().resolve().stem or 'frames'}.mp4"


def _source_fps(cfg: AppConfig) -> float:
    """The frame rate an annotated video is written at: the file's own, else the pacing rate."""
    return _known_fps(cfg) or 10.0


def _known_fps(cfg: AppConfig) -> float:
    """The pacing rate, else a video file's own rate; 0 when unknown (cameras, streams)."""
    if cfg.source.fps > 0:
        return cfg.source.fps
    path = cfg.source.path
    if path and Path(path).is_file():
        import cv2

        cap = cv2.VideoCapture(path)
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        cap.release()
        return fps if 1 <= fps <= 240 else 0.0
    return 0.0


def _replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def build_trackers(cfg: AppConfig, lifter, n: int) -> list:
    """One tracker per stream (each its own id counter and state)."""
    return [_build_tracker(cfg, lifter) for _ in range(n)]


def _build_lifter(cfg: AppConfig, device: str, streams: int = 1):
    try:
        from lart_stream.realtime.lifting import (MULTI_STREAM_BUCKETS, HMRLifter, HMRLifterConfig,
                                                  multi_stream_max_batch)
    except ImportError as exc:
        log.info("HMR stage not available (%s): tracking in 2D, no actions", exc)
        return None
    size = cfg.hmr.size if cfg.hmr.size != "auto" else ("official" if cfg.hmr.checkpoint else "tiny")
    batch = dict(max_batch=multi_stream_max_batch(streams), buckets=MULTI_STREAM_BUCKETS) if streams > 1 else {}
    try:
        from lart_stream.realtime.compiled import parse_batches

        return HMRLifter.from_config(HMRLifterConfig(checkpoint=cfg.hmr.checkpoint, size=size, device=device,
                                                     smpl_path=cfg.hmr.smpl, backend=cfg.runtime.backend,
                                                     export_dir=cfg.runtime.export_dir, precision=cfg.hmr.precision,
                                                     compile=cfg.hmr.compile, compile_cache_dir=cfg.hmr.compile_cache,
                                                     compile_batches=parse_batches(cfg.hmr.compile_batches),
                                                     fp8=cfg.hmr.fp8, backbone_bf16=cfg.hmr.backbone_bf16, **batch))
    except (ValueError, KeyError, OSError) as exc:
        raise BuildError(f"HMR model: {exc}") from exc


def _build_tracker(cfg: AppConfig, lifter):
    try:
        from lart_stream.realtime.tracking import TrackerConfig, build_tracker
    except ImportError as exc:
        log.info("tracking stage not available (%s)", exc)
        return None
    kind = cfg.tracker.kind
    if kind == "auto":
        real_3d = lifter is not None and not lifter.random_weights
        kind = "lart" if real_3d else "iou"
        if not real_3d:
            log.info("tracker: 2D IoU baseline (the 3D trackers need real HMR weights)")
    try:
        tracker = build_tracker(kind, TrackerConfig())
    except ValueError as exc:  # an unknown tracker.kind in a config file
        raise BuildError(f"tracker: {exc}") from exc
    tracker.warmup()  # scipy's imports and first solve now, not on the first frame with people
    return tracker


def _check_appearance_section(cfg: AppConfig) -> None:
    a = cfg.appearance
    if a.mode not in ("auto", "off"):
        raise BuildError(f"appearance mode must be auto or off, got {a.mode!r}")
    if a.every < 1:
        raise BuildError(f"--appearance-every must be >= 1, got {a.every}")
    if a.chunks < 0:
        raise BuildError(f"appearance chunks must be >= 0 (0: auto), got {a.chunks}")
    if a.lookahead < 0:
        raise BuildError(f"--appearance-lookahead must be >= 0, got {a.lookahead}")
    if a.config is not None and a.checkpoint is None:
        raise BuildError("--appearance-config needs --appearance-checkpoint")


def appearance_precision(dtype: str, chunks: int, device: str) -> dict:
    """The MViT stage's dtype and slicing with "auto" (dtype) and 0 (chunks) resolved for ``device``:
    bfloat16 in 4 slices on CUDA, float32 in one piece elsewhere."""
    cuda = str(device).startswith("cuda")
    return {"dtype": ("bfloat16" if cuda else "float32") if dtype == "auto" else dtype,
            "chunks": (4 if cuda else 1) if chunks == 0 else chunks}


def _build_appearance(cfg: AppConfig, device: str):
    a = cfg.appearance
    if a.mode == "off":
        return None
    if a.checkpoint is None and cfg.actions.checkpoint is not None:
        # random MViT features would only corrupt a trained LART: it gets zeros instead (warned by LART)
        log.info("appearance: no --appearance-checkpoint, so no MViT features for the LART checkpoint")
        return None
    try:
        from lart_stream.realtime.appearance import AppearanceStage, AppearanceStageConfig

        stage = AppearanceStage.from_config(AppearanceStageConfig(
            checkpoint=a.checkpoint, config=a.config, every=a.every, lookahead=a.lookahead, device=device,
            threaded=a.threaded, graphs=a.graphs, **appearance_precision(a.dtype, a.chunks, device)))
    except ImportError as exc:
        log.info("appearance stage not available (%s)", exc)
        return None
    except (ValueError, KeyError, OSError) as exc:
        raise BuildError(f"MViT model: {exc}") from exc
    return stage


def _keep_appearance(cfg: AppConfig, appearance, actions):
    """The appearance stage when the action model takes its features, else None (closed)."""
    if appearance is None:
        return None
    if actions is None or not actions.model.config.has_appearance:
        if actions is not None:
            (log.warning if cfg.appearance.checkpoint else log.info)(
                "the LART model takes no appearance input: appearance stage not run")
        appearance.close()
        return None
    log.info("appearance stage: %s", appearance.describe())
    note = appearance.latency_note(_known_fps(cfg))
    if note:
        log.info("%s", note)
    return appearance


def lart_precision(choice: str, device: str) -> str:
    """auto: bf16 matmuls on CUDA (kernels of a causal step at 5 tracks 2.85 -> ~1 ms on an H200), fp32 on the CPU."""
    return ("bf16" if str(device).startswith("cuda") else "fp32") if choice == "auto" else choice


def _build_actions(cfg: AppConfig, device: str, appearance=None, streams: int = 1):
    try:
        from lart_stream.realtime.actions import ActionStage, ActionStageConfig
    except ImportError as exc:
        log.info("action stage not available (%s)", exc)
        return None
    a = cfg.actions
    size = a.size if a.size != "auto" else ("official" if a.checkpoint else "tiny")
    mode = a.mode if a.mode != "auto" else ("window" if a.checkpoint else "causal")
    kwargs = dict(checkpoint=a.checkpoint, dim_head=a.dim_head, mean_std=a.mean_std, size=size, mode=mode,
                  stride=a.stride, lookahead=a.lookahead, device=device, top_k=a.top_k, backend=cfg.runtime.backend,
                  precision=lart_precision(a.precision, device),
                  # Random weights: no joints input without an SMPL file (zeros would only add noise to a
                  # meaningless output); an appearance input only when the appearance stage feeds one.
                  pose_only=a.checkpoint is None and cfg.hmr.smpl is None,
                  appearance_dim=appearance.dim if appearance is not None else 0)
    if a.window:
        kwargs["window"] = a.window
    if a.max_people:
        kwargs["max_people"] = a.max_people
    if streams > 1:
        from lart_stream.realtime.multistream import STREAM_SHIFT, multi_stream_tracks

        kwargs.update(multi_stream_tracks(streams), group_shift=STREAM_SHIFT)
    try:
        stage = ActionStage.from_config(ActionStageConfig(**kwargs))
    except (ValueError, KeyError, OSError) as exc:
        raise BuildError(f"LART model: {exc}") from exc
    log.info("LART stage: %s", stage.describe())
    if cfg.runtime.export_dir and cfg.runtime.backend == "auto":  # (other backends: the stage warns itself)
        log.info("LART runs in PyTorch: the LART ONNX files in %s are for export and parity checks, not used "
                 "at run time", cfg.runtime.export_dir)
    return stage


def _build_sinks(cfg: AppConfig) -> list:
    p = cfg.publish
    if p.address.lower() == "none":
        return []
    try:
        from lart_stream.realtime.publisher import Publisher, PublisherConfig
    except ImportError as exc:
        log.info("publisher not available (%s)", exc)
        return []
    try:
        return [Publisher(PublisherConfig(address=p.address, top_k=cfg.actions.top_k, frames=p.frames,
                                          frames_width=p.frames_width,
                                          frames_fps=p.frames_fps, hwm=p.hwm, curve_secret_key=p.curve_secret_key,
                                          curve_allowed_keys=p.curve_allowed_keys))]
    except ValueError as exc:  # address in use, bad address or key files: the message says what to do
        raise BuildError(str(exc)) from None
    except Exception as exc:  # any other zmq error is a user error here too
        raise BuildError(f"cannot publish on {p.address}: {exc}") from exc
