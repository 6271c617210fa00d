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
    titles = [c["title"] for c in result["comparisons"]]
    assert any("full-window" in t for t in titles) and any("Reference-style" in t for t in titles)
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
