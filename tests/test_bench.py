"""A 20-frame smoke run of `lart-stream bench` on the CPU, its JSON validated against the result schema."""

from __future__ import annotations

import json

import jsonschema
import numpy as np

from lart_stream.benchmarks.report import RESULT_SCHEMA
from lart_stream.benchmarks.scripted import SyntheticSource, load_boxes, save_boxes, walking_boxes
from conftest import run_cli


def test_bench_smoke_writes_valid_results(tmp_path, pedestrians):
    out = tmp_path / "bench"
    proc = run_cli("bench", "--frames", "20", "--warmup", "2", "--frame-size", "640x360", "--people", "3",
                   "--source", str(pedestrians), "--sweep", "baselines", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    jsonschema.validate(result, RESULT_SCHEMA)
    names = [r["name"] for r in result["runs"]]
    assert names == ["people3", "full-window-recompute", "per-person-eager"]
    for r in result["runs"]:
        assert r["frames"] == 20
        assert {"detect", "detect_real", "lift", "track", "actions", "publish"} <= set(r["stages_ms"])
        c2p = r["capture_to_publish_ms"]
        assert 0 < c2p["p50"] <= c2p["p99"] <= c2p["max"]
        # The end-to-end latency holds every stage: it can't be less than their sum at the median frame.
        assert c2p["max"] >= sum(s["p50"] for k, s in r["stages_ms"].items() if k != "detect_real") * 0.5
        # every stage's thread CPU time beside its wall time, and the threads' CPU share of the run
        assert set(r["stages_cpu_ms"]) == set(r["stages_ms"]) - {"detect_real"}
        assert all(0 <= v["mean"] for v in r["stages_cpu_ms"].values())
        assert set(r["thread_cpu_percent"]) == {"detect+lift+finish"}
    titles = [c["title"] for c in result["comparisons"]]
    assert any("full-window" in t for t in titles) and any("Reference-style" in t for t in titles) and any("thread's CPU time" in t for t in titles)
    assert (out / "bench.md").read_text().startswith("# lart-stream benchmark")
    assert (out / "latency_vs_people.png").stat().st_size > 1000


def test_scripted_boxes_round_trip_and_people_count(tmp_path):
    boxes = walking_boxes(people=7, frames=12, size=(1920, 1080))
    assert boxes.shape == (12, 7, 5)
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 2] <= 1920).all() and (boxes[..., 3] <= 1080).all()
    save_boxes(tmp_path / "b.json", boxes)
    np.testing.assert_allclose(load_boxes(tmp_path / "b.json"), boxes, atol=0.01)


def test_paced_source_drops_frames_it_could_not_deliver_in_time():
    import time

    source = SyntheticSource(frames=10, size=(64, 48), rate=100.0)
    indices = []
    for frame in source:
        indices.append(frame.index)
        time.sleep(0.035)  # a consumer 3.5x slower than the camera
    assert len(indices) == 10
    assert indices == sorted(indices) and indices[-1] >= 25
    assert source.dropped == indices[-1] - 9  # every index skipped is counted


def test_bench_appearance_sweep_runs_the_stage_beside_the_same_run_without_it(tmp_path, pedestrians):
    out = tmp_path / "bench"
    proc = run_cli("bench", "--frames", "8", "--warmup", "2", "--size", "320x180", "--people", "2",
                   "--source", str(pedestrians), "--detector", "none", "--sweep", "appearance",
                   "--appearance-every", "3", "--no-plots", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    jsonschema.validate(result, RESULT_SCHEMA)
    assert result["skipped"] == []  # LART took the stage's feature width (a mismatch fails the run)
    runs = {r["name"]: r for r in result["runs"]}
    assert list(runs) == ["people2", "people2-appearance-K3", "people2-appearance-K3-sliced4"]
    assert "appearance" not in runs["people2"]["stages_ms"] and "appearance" not in runs["people2"]
    for name in ("people2-appearance-K3", "people2-appearance-K3-sliced4"):
        r = runs[name]
        assert "appearance" in r["stages_ms"] and r["appearance"]["random_weights"]
        assert r["appearance"]["passes"] >= 8 // 3 and r["appearance"]["pass_ms"]["p50"] > 0
    assert runs["people2-appearance-K3-sliced4"]["config"]["appearance_chunks"] == 4
    rows = next(c["rows"] for c in result["comparisons"] if c["title"].startswith("Appearance stage on vs off"))
    assert [r["run"] for r in rows] == ["people2-appearance-K3", "people2-appearance-K3-sliced4"]


def test_bench_plan_appearance_on_adds_the_run_without_it():
    from lart_stream.benchmarks.bench import build_parser, plan

    args = build_parser().parse_args(["--appearance", "on", "--appearance-size", "official", "--sweep",
                                      "appearance", "--appearance-chunks", "6"])
    specs = plan(args, "cpu")
    assert [(s.name, s.appearance, s.appearance_chunks) for s in specs] == [
        ("people5-appearance-K6-sliced6", True, 6), ("people5", False, 6)]
    assert all(s.appearance_size == "official" for s in specs)


def test_streams_bench_reports_every_stream(tmp_path):
    """`bench --streams N`: paced streams through the batched pipeline; per-stream fps, drops, latency."""
    from lart_stream.benchmarks.bench import main

    out = tmp_path / "streams"
    assert main(["--streams", "2", "--people", "2", "--rate", "10", "--frames", "6", "--warmup", "2",
                 "--size", "160x120", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads((out / "streams.json").read_text())
    (run,) = result["runs"]
    assert set(run["per_stream"]) == {"s0", "s1"}
    for s in run["per_stream"].values():
        assert s["frames"] == 6 and s["fps"] > 0 and s["dropped"] >= 0
        assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert {"holds_rate", "meets_target", "worst_p99_ms"} <= set(run["verdict"])
    assert {"lift", "actions", "publish"} <= set(run["stages_ms"])
    assert "| 2 | 2 |" in (out / "streams.md").read_text()
