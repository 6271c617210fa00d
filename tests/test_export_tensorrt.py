"""realtime/tensorrt_engine.py without TensorRT: profiles, binding plans, cache keys, the cache, errors."""

from __future__ import annotations

import importlib.util

import pytest

from lart_stream.realtime import tensorrt_engine as tb
from lart_stream.realtime.backends import BATCH, ModelIO, TensorSpec

HMR = ModelIO("hmr2", (TensorSpec("crops", (BATCH, 3, 256, 192)),),
              (TensorSpec("betas", (BATCH, 10)), TensorSpec("body_pose", (BATCH, 23, 3, 3))))
STEP = ModelIO("lart_step",
               (TensorSpec("tokens", (BATCH, 229)), TensorSpec("k_cache", (16, BATCH, 16, "window", 64))),
               (TensorSpec("logits", (BATCH, 60)), TensorSpec("k_cache_out", (16, BATCH, 16, "window", 64))))


def test_profile_for_crops_and_tracks() -> None:
    p = tb.make_profile(HMR)
    r = p["crops"]
    assert (r.min, r.opt, r.max) == ((1, 3, 256, 192), (8, 3, 256, 192), (32, 3, 256, 192))
    p = tb.make_profile(STEP, opt_batch=4, fixed_dims={"window": 125})
    assert p["k_cache"].min == (16, 1, 16, 125, 64) and p["k_cache"].max == (16, 32, 16, 125, 64)
    assert p["tokens"].opt == (4, 229)
    assert p.as_dict()["tokens"] == [[1, 229], [4, 229], [32, 229]]
    with pytest.raises(ValueError, match=r"symbolic dims \['window'\]"):
        tb.make_profile(STEP)
    with pytest.raises(ValueError, match="min_batch <= opt_batch"):
        tb.make_profile(HMR, opt_batch=64)


def test_binding_plan_shapes_and_profile_choice() -> None:
    small = tb.make_profile(STEP, min_batch=1, opt_batch=2, max_batch=4, fixed_dims={"window": 125})
    large = tb.make_profile(STEP, min_batch=5, opt_batch=16, max_batch=32, fixed_dims={"window": 125})
    plan = tb.plan_bindings(STEP, {"tokens": (7, 229), "k_cache": (16, 7, 16, 125, 64)}, [small, large])
    assert plan.profile_index == 1 and plan.dims == {BATCH: 7, "window": 125}
    assert [(b.name, b.shape, b.is_input) for b in plan.outputs] == [
        ("logits", (7, 60), False), ("k_cache_out", (16, 7, 16, 125, 64), False)]
    assert tb.plan_bindings(STEP, {"tokens": (3, 229), "k_cache": (16, 3, 16, 125, 64)}, [small, large]).profile_index == 0
    with pytest.raises(ValueError, match="outside every optimisation profile"):
        tb.plan_bindings(STEP, {"tokens": (33, 229), "k_cache": (16, 33, 16, 125, 64)}, [small, large])
    with pytest.raises(ValueError, match="outside every optimisation profile"):  # window differs from the engine's
        tb.plan_bindings(STEP, {"tokens": (3, 229), "k_cache": (16, 3, 16, 100, 64)}, [small])
    with pytest.raises(ValueError, match="dimension 'batch' is 3"):
        tb.plan_bindings(STEP, {"tokens": (3, 229), "k_cache": (16, 4, 16, 125, 64)}, [small])


def test_cache_key_changes_with_every_input_and_is_stable() -> None:
    prof = [tb.make_profile(HMR)]
    base = dict(onnx_sha256="a" * 64, gpu_name="NVIDIA H100 80GB HBM3", trt_version="10.13.0", precision="fp16")
    key = tb.engine_cache_key(profiles=prof, **base)
    assert len(key) == 16 and key == tb.engine_cache_key(profiles=[tb.make_profile(HMR)], **base)
    variants = [dict(base, onnx_sha256="b" * 64), dict(base, gpu_name="NVIDIA H200"),
                dict(base, trt_version="11.4.0"), dict(base, precision="fp32")]
    keys = {tb.engine_cache_key(profiles=prof, **v) for v in variants}
    keys.add(tb.engine_cache_key(profiles=[tb.make_profile(HMR, max_batch=16)], **base))
    assert len(keys) == 5 and key not in keys


def test_engine_cache_store_and_lookup(tmp_path) -> None:
    cache = tb.EngineCache(tmp_path / "engines")
    assert cache.lookup("hmr2", "NVIDIA H100 80GB HBM3", "10.13.0", "0123456789abcdef") is None
    p = cache.store("hmr2", "NVIDIA H100 80GB HBM3", "10.13.0", "0123456789abcdef", b"engine-bytes")
    assert p.name == "hmr2-NVIDIA_H100_80GB_HBM3-trt10_13_0-0123456789abcdef.engine"
    assert cache.lookup("hmr2", "NVIDIA H100 80GB HBM3", "10.13.0", "0123456789abcdef") == p
    assert p.read_bytes() == b"engine-bytes"
    assert [f.name for f in p.parent.iterdir()] == [p.name]  # no temp file left behind


def test_fp16_strategy_per_tensorrt_version() -> None:
    assert tb.fp16_strategy("10.13.0.35") == "builder_flag"
    assert tb.fp16_strategy("11.4.0") == "strongly_typed"
    assert tb.fp16_onnx_path("out/hmr2.onnx").as_posix() == "out/hmr2.fp16.onnx"
    with pytest.raises(ValueError):
        tb.trt_major("unknown")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(tb.TensorRTUnavailable, match="TensorRT is not installed: `pip install tensorrt`"):
        tb.require_tensorrt()
    from lart_stream.export.cli import main

    assert main(["--out", str(tmp_path), "--models", "none", "--tensorrt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lart-stream export: error: TensorRT is not installed")
    assert not any(tmp_path.iterdir())  # failed before exporting anything
