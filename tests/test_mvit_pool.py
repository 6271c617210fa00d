"""benchmarks/device/mvit_pool.py: the channels_last_3d and shifted-slice poolings equal the model's own
pooling (models.mvit._pool) on every q/k/v pool of a tiny MViT, in float64 on the CPU."""

from __future__ import annotations

import pytest
import torch

from lart_stream.benchmarks.device import mvit_pool as P
from lart_stream.models.mvit import MViTConfig

EPS64 = float(torch.finfo(torch.float64).eps)


@pytest.mark.parametrize("batch", [1, 2])  # 1: the heads merge by a view; 2: the grid view copies
@pytest.mark.parametrize("variant", [P.pool_channels_last, P.pool_shifted])
def test_variants_equal_model_pooling(batch, variant):
    cases = P.pool_cases(MViTConfig.tiny(), 64, 80, batch, "cpu", torch.float64, seed=3)
    assert {c.which for c in cases} == {"q", "k", "v"}
    assert any(c.pool.stride != (1, 1, 1) for c in cases)  # strided pools are exercised
    with torch.no_grad():
        for c in cases:
            ref = P.pool_reference(c)
            out = variant(c)
            assert out.shape == ref.shape
            # 27-term sums then a LayerNorm dividing by the std: a generous multiple of the rounding
            tol = 1e3 * EPS64 * max(1.0, float(ref.abs().max()))
            assert float((out - ref).abs().max()) <= tol, (c.block, c.which)


def test_shifted_slices_detect_a_wrong_kernel():
    """The comparison above can fail: a flipped kernel (correlation vs convolution) is caught."""
    c = next(c for c in P.pool_cases(MViTConfig.tiny(), 64, 80, 1, "cpu", torch.float64, seed=3)
             if c.pool.stride != (1, 1, 1))
    with torch.no_grad():
        ref = P.pool_reference(c)
        c.pool.weight.copy_(c.pool.weight.flip(2, 3, 4))
        assert float((P.pool_shifted(c) - ref).abs().max()) > 1e-3


def test_cpu_smoke_writes_json(tmp_path):
    out = tmp_path / "pool.json"
    assert P.main(["--cpu-smoke", "--out", str(out)]) == 0
    import json
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert all("ms" in r for r in rows.values()), rows
    assert all(r["ok"] for r in rows.values() if "ok" in r)
