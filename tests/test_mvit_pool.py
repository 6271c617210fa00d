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


def test_launch_table_decides_auto_only_for_measured_shapes_on_its_gpu():
    """The committed table holds the H200's measured MViTv2-L 312x374 pools only: for other shapes
    "auto" stays the torch path and "triton" gets the default launch; a table's entry is what "triton"
    launches, and "auto" never picks the kernel off CUDA."""
    import dataclasses

    from lart_stream.models import mvit as M
    from lart_stream.models.mvit_pool_table import (COMMITTED_TABLE, LaunchConfig, PoolTable, committed_table,
                                                    table_from_json, table_to_json)

    committed = committed_table(COMMITTED_TABLE)
    assert committed.device == "NVIDIA H200" and committed.shapes
    assert all(k.startswith("C72 ") for k in committed.shapes)  # MViTv2-L's head dim: official shapes only
    cases = P.pool_cases(MViTConfig.tiny(), 64, 80, 1, "cpu", torch.float32)
    args = [(c.x, c.pool, c.norm, c.geom.thw, c.geom.has_cls) for c in cases]
    assert all(M.pool_launch(*a) is None for a in args)
    assert all(M.pool_launch(*a, backend="triton") == LaunchConfig() for a in args)
    assert all(M.pool_launch(*a, backend="torch") is None for a in args)
    won = LaunchConfig(64, 8, 2, False, kernel_wins=True)
    table = table_from_json(table_to_json(PoolTable("some GPU", {P.case_key(cases[0]): won}),
                                          {P.case_key(cases[0]): {"kernel_ms": 1.0}}))
    assert table == PoolTable("some GPU", {P.case_key(cases[0]): won})
    assert M.pool_launch(*args[0], backend="triton", table=table) == won
    assert M.pool_launch(*args[0], backend="auto", table=table) is None  # CPU tensors
    other = next(a for c, a in zip(cases, args) if P.case_key(c) != P.case_key(cases[0]))
    assert M.pool_launch(*other, backend="triton", table=table) == LaunchConfig()
    assert dataclasses.replace(won, kernel_wins=False) != won


def test_triton_sweep_off_cuda_needs_the_interpreter(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert P.main(["--cpu-smoke", "--triton-sweep", "--out", str(tmp_path / "s.json")]) == 2
    assert "TRITON_INTERPRET" in capsys.readouterr().err


def test_triton_sweep_smoke_under_the_interpreter(tmp_path):
    """--cpu-smoke --triton-sweep in a child with TRITON_INTERPRET=1 (two launches on two small shapes):
    every launch within the bf16 tolerance of (1), and a launch table models/mvit.py can read."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lart_stream.models.mvit_pool_table import table_from_json

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    out = tmp_path / "sweep.json"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    script = Path(P.__file__)
    run = subprocess.run([sys.executable, str(script), "--cpu-smoke", "--triton-sweep", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    res = json.loads(out.read_text())
    rows = [r for r in res["sweep"] if "ms" in r]
    assert len(rows) == len(P.SMOKE_SWEEP) and all(r["ok"] for r in rows), res["sweep"]
    table = table_from_json(res["config_table"])
    assert set(table.shapes) == set(res["torch_by_shape"]) and len(table.shapes) == 2
