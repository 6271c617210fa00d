"""The run configuration: one frozen dataclass tree, built from defaults, an optional
TOML file, then command-line flags (each later layer overrides the earlier).

Each section is what a user sets; realtime/build.py turns sections into the
stages' own configs, so no stage ever reads this tree.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lart_stream.realtime.detectors import DetectorConfig
from lart_stream.realtime.sources import SourceConfig


class ConfigError(Exception):
    """A config file or value that can't be used (user error)."""


@dataclass(frozen=True)
class HMRSection:
    checkpoint: str | None = None  # 4D-Humans Lightning checkpoint (epoch=35-step=1000000.ckpt)
    size: str = "auto"  # auto: official with a checkpoint, tiny without
    smpl: str | None = None  # SMPL_NEUTRAL.pkl (3D joints and 2D keypoints)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16: weights cast once
    compile: bool = False  # torch.compile the network inside our CUDA graphs (minutes per batch size, cached)
    compile_cache: str | None = None  # inductor cache folder (default ~/.cache/lart-stream/inductor)
    compile_batches: str = ""  # people counts (batch buckets) compiled, e.g. "1-6"; "" every bucket
    fp8: bool = False  # the ViT's linears in FP8 e4m3, row-wise scales (Hopper/Ada; off by default)
    backbone_bf16: bool = False  # the whole ViT in bf16 (residual stream, LayerNorms): faster, more rounding


@dataclass(frozen=True)
class TrackerSection:
    kind: str = "auto"  # auto: lart (3D) with real HMR weights, iou (2D) with random ones; or phalp-reference


@dataclass(frozen=True)
class ActionsSection:
    enabled: bool = True
    checkpoint: str | None = None  # LART checkpoint (lart_mvit.ckpt, epoch_002-EMA.ckpt, ...)
    mean_std: str | None = None  # pose normalisation statistics (mean_std.npy)
    dim_head: int = 0  # attention head size; 0: read from the checkpoint (refused when it isn't there)
    size: str = "auto"  # auto: from the checkpoint, tiny without
    # auto: window (the reference computation) with a checkpoint, since the released weights were
    # trained bidirectionally; causal (KV-cache step, cheapest) with random weights.
    mode: str = "auto"  # auto | causal | window
    window: int = 0  # frames T in the window (0: the model's default)
    max_people: int = 0  # person slots N (0: the model's default)
    stride: int = 1  # run every `stride` frames (window mode)
    lookahead: int = 0  # publish the prediction for frame t-k once frame t arrived (window mode)
    top_k: int = 5
    # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16: the transformer's matmul weights cast once,
    # residual stream, LayerNorms, cache and heads fp32 (error vs fp32: benchmarks/results/h200/)
    precision: str = "auto"


@dataclass(frozen=True)
class AppearanceSection:
    # auto: run the MViT appearance stage for LART's appearance input; a tiny random MViT when neither
    # checkpoint is given; none for a LART checkpoint without an MViT checkpoint (zeros, warned)
    mode: str = "auto"  # auto | off
    checkpoint: str | None = None  # PySlowFast MViTv2 + AVA head (mvit.pyth)
    config: str | None = None  # its config (mvit.yaml); default: the yaml the checkpoint embeds
    every: int = 6  # a keyframe pass every N frames (the demo's cadence)
    lookahead: int = 0  # frames of future the clip may see (up to half the clip); output that much later
    threaded: str = "auto"  # auto (on with CUDA: worker thread, own stream) | on | off (inline, deterministic)
    # auto: bfloat16 on CUDA (an MViTv2-L pass 67 ms on an H200, fast enough for K = 6 at 30 fps), float32
    # (the reference's) on the CPU | float32 | bfloat16 | float16
    dtype: str = "auto"
    graphs: str = "auto"  # auto (on with CUDA) | on | off: replay the backbone pass as a CUDA graph
    # the pass as this many slices of blocks (one launch each, the worker yielding between); 0 = auto:
    # 4 on CUDA (an H200 holds a 30 fps camera at 5 people with p99 35 ms; unsliced it falls to 26 fps), else 1
    chunks: int = 0


@dataclass(frozen=True)
class PublishSection:
    address: str = "tcp://127.0.0.1:5555"  # "none" disables publishing
    frames: bool = False  # also publish downscaled JPEG frames for viewers
    frames_width: int = 640
    frames_fps: float = 10.0
    hwm: int = 100
    curve_secret_key: str | None = None  # server secret key file: enables CURVE
    curve_allowed_keys: str | None = None  # folder of allowed client public keys


@dataclass(frozen=True)
class RuntimeSection:
    device: str = "auto"  # auto: cuda when available, else cpu
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch
    export_dir: str | None = None  # folder written by `lart-stream export` (ONNX files, engines)
    threads: int = 0  # CPU threads for torch and OpenCV (0: their defaults, one per core)
    max_frames: int = 0
    log_level: str = "INFO"
    status: str = "auto"  # auto (on a TTY) | on | off
    summary_json: str | None = None
    overlap: bool = False  # older name for inflight = 2
    inflight: int = 1  # frames in the pipeline at once (1-3): more fps, up to inflight-1 frames more latency
    late_read: bool = False  # inflight 3: read a frame only when lifting is about to be free (less latency)
    # an annotated video (boxes, track ids, top actions): a path, "none", or "auto" (file and folder
    # sources: lart-stream-out/NAME.mp4 under the working folder; cameras and streams: none)
    annotate: str = "auto"


@dataclass(frozen=True)
class AppConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    hmr: HMRSection = field(default_factory=HMRSection)
    tracker: TrackerSection = field(default_factory=TrackerSection)
    actions: ActionsSection = field(default_factory=ActionsSection)
    appearance: AppearanceSection = field(default_factory=AppearanceSection)
    publish: PublishSection = field(default_factory=PublishSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)


def _section_types() -> dict[str, type]:
    return {f.name: f.default_factory().__class__ for f in dataclasses.fields(AppConfig)}  # type: ignore[misc]


def apply_overrides(cfg: AppConfig, overrides: dict[str, dict[str, Any]], origin: str) -> AppConfig:
    """Return ``cfg`` with ``{section: {key: value}}`` applied; unknown names are errors."""
    sections = _section_types()
    changed = {}
    for name, values in overrides.items():
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section [{name}] (valid: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table of settings")
        current = getattr(cfg, name)
        valid = {f.name: f for f in dataclasses.fields(current)}
        for key, value in values.items():
            if key not in valid:
                raise ConfigError(f"{origin}: unknown setting {name}.{key} (valid: {', '.join(valid)})")
            _check_type(f"{origin}: {name}.{key}", value, getattr(current, key), valid[key].type)
        changed[name] = dataclasses.replace(current, **values)
    return dataclasses.replace(cfg, **changed)


def _check_type(where: str, value: Any, default: Any, annotation: Any) -> None:
    allows_none = "None" in str(annotation)
    if value is None:
        if not allows_none:
            raise ConfigError(f"{where} may not be empty")
        return
    text = str(annotation)
    want: tuple[type, ...]
    if "bool" in text:
        want = (bool,)
    elif "float" in text:
        want = (int, float)
    elif "int" in text:
        want = (int,)
    elif "str" in text:
        want = (str,)
    else:
        return
    if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
        raise ConfigError(f"{where}: expected {want[0].__name__}, got {value!r}")


def load_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a TOML (or JSON) config file into ``{section: {key: value}}``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text()
        return json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {p}: {exc}") from exc


def to_toml(cfg: AppConfig) -> str:
    """The resolved config as TOML (None values are written as comments)."""
    out = []
    for section in dataclasses.fields(cfg):
        out.append(f"[{section.name}]")
        for key, value in dataclasses.asdict(getattr(cfg, section.name)).items():
            out.append(f"# {key} = (unset)" if value is None else f"{key} = {json.dumps(value)}")
        out.append("")
    return "\n".join(out)
