"""What each of our models takes and returns (names, shapes, dtypes), shared by the exporter and the runtime.

The ONNX files, TensorRT profiles and CUDA-graph buckets are all built from these specs; the
runtime reads them here and never imports the exporter.
"""

from __future__ import annotations

from typing import Any, Sequence

from lart_stream.realtime.backends import BATCH, ModelIO, TensorSpec


def hmr2_io(cfg: Any, output_fields: Sequence[str]) -> ModelIO:
    """crops (batch, 3, H, W) -> HMR2Output fields; shapes of the known fields written out."""
    known = {"global_orient": (BATCH, 3, 3), "body_pose": (BATCH, cfg.num_body_joints, 3, 3),
             "betas": (BATCH, 10), "pred_cam": (BATCH, 3), "pred_cam_t": (BATCH, 3),
             "appearance": (BATCH, cfg.embed_dim)}
    missing = [f for f in output_fields if f not in known]
    if missing:
        raise ValueError(f"hmr2: output fields {missing} have no export shape; add them to lart_stream.realtime.model_io.hmr2_io")
    return ModelIO("hmr2", (TensorSpec("crops", (BATCH, 3, cfg.image_height, cfg.image_width)),),
                   tuple(TensorSpec(f, known[f]) for f in output_fields))


LART_CACHE_PAIRS = {"k_cache_out": "k_cache", "v_cache_out": "v_cache", "key_bias_out": "key_bias"}


def _lart_features(cfg: Any, lead: tuple[int | str, ...]) -> tuple[TensorSpec, ...]:
    specs = [TensorSpec("pose", (*lead, 229))]
    if cfg.has_joints:
        specs.append(TensorSpec("joints", (*lead, 135)))
    if cfg.has_appearance:
        specs.append(TensorSpec("appearance", (*lead, cfg.app_dim)))
    specs.append(TensorSpec("valid", lead, "bool"))
    return tuple(specs)


def lart_window_io(cfg: Any) -> ModelIO:
    """Trailing window of T = cfg.window frames x N = cfg.max_people slots per track; batch = tracks."""
    lead = (BATCH, cfg.window, cfg.max_people)
    return ModelIO("lart_window", _lart_features(cfg, lead), (TensorSpec("logits", (BATCH, cfg.window, cfg.ava_classes)),))


def lart_step_io(cfg: Any) -> ModelIO:
    """One new frame per track against a ring cache of window x N keys per layer; batch = tracks."""
    rows = cfg.window * cfg.max_people
    cache = (cfg.depth, BATCH, cfg.heads, rows, cfg.dim_head)
    ins = (*_lart_features(cfg, (BATCH, cfg.max_people)), TensorSpec("positions", (BATCH,), "int64"),
           TensorSpec("k_cache", cache), TensorSpec("v_cache", cache), TensorSpec("key_bias", (BATCH, rows)))
    outs = (TensorSpec("logits", (BATCH, cfg.ava_classes)), TensorSpec("k_cache_out", cache),
            TensorSpec("v_cache_out", cache), TensorSpec("key_bias_out", (BATCH, rows)))
    return ModelIO("lart_step", ins, outs)


def mvit_io(cfg: Any, height: int | None = None, width: int | None = None) -> ModelIO:
    """MViT backbone + AVA head: one clip (1, 3, T, H, W) (H, W fixed at export: the rel-pos
    interpolation and index tables depend on them; default the config's square crop) and a
    dynamic number of boxes [batch_index, x1, y1, x2, y2] -> RoI features and class scores."""
    h, w = height or cfg.crop_size, width or cfg.crop_size
    return ModelIO("mvit", (TensorSpec("clip", (1, cfg.in_chans, cfg.num_frames, h, w)), TensorSpec("boxes", (BATCH, 5))),
                   (TensorSpec("features", (BATCH, cfg.feature_dim)), TensorSpec("scores", (BATCH, cfg.num_classes))))
