"""The appearance features into LART (mask, width check), into the published messages (age per track),
and through the CLI with the embedded default (a tiny random MViT)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from conftest import free_port, lart_stream_cmd, run_cli
from lart_stream.models.lart import LART, LARTConfig
from lart_stream.realtime.actions import ActionStage, ActionStageConfig, random_config
from lart_stream.realtime.protocol import ActionsMessage, actions_message, decode, encode, to_wire
from lart_stream.realtime.records import (ActionPredictions, AppearanceFeatures, Detections, Frame, FrameResult,
                                          People, Tracks)

HAVE_MVIT = importlib.util.find_spec("lart_stream.models.mvit") is not None
D = 12


def _stream(steps: int = 10, seed: int = 0):
    """(tracks, people, features) per step: tracks 1..3, track 3 without a feature, one not detected."""
    rng = np.random.default_rng(seed)
    feats = {1: rng.normal(size=D), 2: rng.normal(size=D)}
    for t in range(steps):
        ids = [1, 2, 3]
        detected = [True, t % 3 != 0, True]
        n = 3
        people = People(np.zeros((n, 4)), np.ones(n), pose_vector=rng.normal(size=(n, 229)).astype(np.float32),
                        appearance=np.stack([feats.get(i, np.zeros(D)) for i in ids]).astype(np.float32))
        tracks = Tracks(np.array(ids), np.zeros((n, 4)), np.full(n, 2), np.zeros(n), np.zeros(n),
                        np.array([0 if d else 1 for d in detected]), np.array([i if d else -1 for i, d in enumerate(detected)]))
        valid = np.array([True, True, False])
        f = AppearanceFeatures(np.array(ids), people.appearance.copy(), valid, np.where(valid, t % 6, -1), t)
        f.feature[~valid] = 0
        yield tracks, people, f


def _stage(**kw) -> ActionStage:
    cfg = ActionStageConfig(window=8, max_people=3, pose_only=True, appearance_dim=D, attention="exact", **kw)
    st = ActionStage.from_config(cfg)
    torch.manual_seed(1)
    with torch.no_grad():  # visible weights: the scores depend clearly on every input
        for p in st.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return st


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static-buffers"])
@pytest.mark.parametrize("mode", ["causal", "window"])
def test_features_reach_lart_as_declared_appearance_would(mode, static, monkeypatch):
    """AppearanceFeatures give the same scores as the same vectors passed as People.appearance (zeros
    where a track has none); other features give other scores. Eager and the CUDA-graph path's static
    buffers (captures replaced by plain calls)."""
    if static:
        from lart_stream.realtime.backends import UncapturedGraph

        monkeypatch.setattr(ActionStage, "_graph_cls", UncapturedGraph)
    via_people = _stage(mode=mode, people_appearance=True)
    via_stage = _stage(mode=mode)
    shuffled = _stage(mode=mode)
    assert via_stage.model.config.app_dim == D and not via_stage.model.config.has_joints
    assert via_stage.static == static
    n_pred = 0
    for t, (tracks, people, f) in enumerate(_stream()):
        a = via_people.update(tracks, people, t)
        b = via_stage.update(tracks, people, t, appearance=f)
        other = AppearanceFeatures(f.track_id, f.feature[::-1].copy(), f.valid, f.age, t)
        c = shuffled.update(tracks, people, t, appearance=other)
        np.testing.assert_array_equal(a.track_id, b.track_id)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=0)
        n_pred += len(b)
        if len(b) and t > 2:
            assert not np.allclose(b.scores, c.scores)
    assert n_pred > 0


def test_width_mismatch_is_one_clear_line(tmp_path):
    src = LART(LARTConfig.tiny(heads=1, dim_head=64))  # appearance width 24
    torch.save({"state_dict": {"encoder." + k: v for k, v in src.state_dict().items()}}, tmp_path / "t.ckpt")
    cfg = dict(checkpoint=str(tmp_path / "t.ckpt"), dim_head=64, size="official", window=8, max_people=3)
    with pytest.raises(ValueError, match=r"takes 24-d appearance .*encoder\.apperance_encoder\.0\.weight.* gives 96-d"):
        ActionStage.from_config(ActionStageConfig(**cfg, appearance_dim=96))
    assert ActionStage.from_config(ActionStageConfig(**cfg, appearance_dim=24)).model.config.app_dim == 24


def test_random_config_widths():
    assert random_config("tiny", True, 0) == LARTConfig.tiny(dim=16, joints_mid=0, joints_en=0, app_dim=0, app_mid=0,
                                                             app_en=0)  # what the default built before
    assert random_config("tiny", False, 0) == LARTConfig.tiny()
    assert random_config("official", True, 0) == LARTConfig.pose_only()
    c = random_config("tiny", True, 40)
    assert (c.app_dim, c.has_joints, c.dim) == (40, False, 24)
    c = random_config("official", False, 1152)
    assert c == LARTConfig.official_mvit()


def test_message_carries_appearance_age_and_messages_without_it_decode():
    tracks = Tracks(np.array([4, 5, 6]), np.zeros((3, 4)), np.full(3, 2), np.zeros(3), np.zeros(3), np.zeros(3),
                    np.arange(3))
    feats = AppearanceFeatures(np.array([5, 4]), np.zeros((2, 3)), np.array([True, False]), np.array([3, -1]), 7)
    result = FrameResult(Frame(7, 1.0, np.zeros((4, 4, 3), np.uint8)), Detections.empty(), People.empty(), tracks,
                         ActionPredictions.empty(), {}, 2.0, appearance=feats)
    msg = actions_message(result, session=1, seq=0, t_publish_ns=5, t_wall_ns=6)
    assert [t.appearance_age for t in msg.tracks] == [None, 3, None]
    back = decode(encode(msg))
    assert isinstance(back, ActionsMessage) and [t.appearance_age for t in back.tracks] == [None, 3, None]
    old = to_wire(msg)  # a publisher without an appearance stage may leave the optional field out
    for t in old["tracks"]:
        del t["appearance_age"]
    import msgpack

    back = decode([b"actions", msgpack.packb(old, use_single_float=True)])
    assert [t.appearance_age for t in back.tracks] == [None, None, None]


def test_cli_flags_reach_the_config():
    from lart_stream.realtime.cli import build_parser, resolve_config

    args = build_parser().parse_args(["--appearance-checkpoint", "m.pyth", "--appearance-config", "m.yaml",
                                      "--appearance-every", "4", "--appearance-lookahead", "12", "--appearance", "off"])
    a = resolve_config(args).appearance
    assert (a.mode, a.checkpoint, a.config, a.every, a.lookahead) == ("off", "m.pyth", "m.yaml", 4, 12)


@pytest.mark.parametrize("flags,message", [
    (("--appearance-every", "0"), "--appearance-every: expected an integer >= 1"),
    (("--appearance-config", "x.yaml"), "--appearance-config needs --appearance-checkpoint"),
    (("--appearance-checkpoint", "nope.pyth"), "MViT checkpoint not found"),
])
def test_cli_bad_appearance_flags_are_one_line(flags, message, pedestrians):
    proc = run_cli("--source", str(pedestrians), "--max-frames", "2", "--publish", "none", *flags, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("lookahead", [0, 4])
def test_pipeline_feeds_lart_and_publishes_ages(pedestrians, monkeypatch, lookahead):
    """The built pipeline (embedded defaults, the MViT replaced by the stand-in): the action stage
    gets frame t - lookahead's features, the messages carry their ages."""
    import sys

    from conftest import read_frames
    from lart_stream.realtime.build import build_pipeline
    from lart_stream.realtime.config import AppConfig, apply_overrides
    from mvit_standin import as_module

    monkeypatch.setitem(sys.modules, "lart_stream.models.mvit", as_module())
    cfg = apply_overrides(AppConfig(), {"publish": {"address": "none"}, "runtime": {"device": "cpu"},
                                        "appearance": {"lookahead": lookahead}}, "test")
    pipeline = build_pipeline(cfg)
    try:
        assert pipeline.appearance is not None and pipeline.random_weights
        assert pipeline.actions.model.config.app_dim == pipeline.appearance.dim
        results = [pipeline.process(Frame(i, 0.0, img)) for i, img in enumerate(read_frames(pedestrians)[:24])]
    finally:
        pipeline.close()
    ages = []
    for r in results:
        if r.frame.index < lookahead:
            assert r.appearance is None and r.actions is None
            continue
        assert r.appearance.frame_index == r.frame.index - lookahead
        for age in r.appearance.age_of().values():  # a feature comes from a keyframe (every 6th frame)
            assert 0 <= age <= r.appearance.frame_index and (r.appearance.frame_index - age) % 6 == 0
        msg = actions_message(r, session=1, seq=0, t_publish_ns=0, t_wall_ns=0)
        ages += [t.appearance_age for t in msg.tracks if t.appearance_age is not None]
        assert all(t.action is None or t.action.frame <= r.frame.index - lookahead for t in msg.tracks)
    assert ages, "HOG finds the pedestrians: some tracks get features"


@pytest.mark.skipif(not HAVE_MVIT, reason="models/mvit.py not merged yet")
def test_cli_embedded_default_runs_the_appearance_stage_and_publishes_ages(pedestrians, tmp_path):
    from lart_stream.realtime.subscriber import Subscriber

    address = f"tcp://127.0.0.1:{free_port()}"
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*lart_stream_cmd(), "--source", str(pedestrians), "--realtime", "--max-frames", "30",
                             "--publish", address, "--status", "off", "--summary-json", str(summary)],
                            stderr=subprocess.PIPE, text=True, env=env)
    ages: list[int | None] = []
    try:
        with Subscriber(address, topics=("actions",)) as sub:
            while True:
                msg = sub.recv(timeout=120)
                if isinstance(msg, ActionsMessage):
                    ages += [t.appearance_age for t in msg.tracks]
                    if msg.frame >= 25:
                        break
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "MViT appearance: NO CHECKPOINT - RANDOM WEIGHTS" in err and "appearance stage: MViT" in err
    stats = json.loads(summary.read_text())
    assert stats["frames"] == 30 and stats["stages_ms"]["appearance"]["n"] == 30
    got = [a for a in ages if a is not None]
    assert got and all(0 <= a for a in got), ages


def test_build_with_checkpoints_checks_the_width(tmp_path, caplog):
    """A PySlowFast-format MViT file drives a random LART of its width; with a LART checkpoint of
    another width the build fails with one line; a LART checkpoint without --appearance-checkpoint
    gets no (random) appearance stage and keeps its zeros warning."""
    import logging

    from lart_stream.models.mvit import MViT, MViTConfig, save_mvit
    from lart_stream.realtime.build import BuildError, build_pipeline
    from lart_stream.realtime.config import AppConfig, apply_overrides

    mcfg = MViTConfig.tiny()
    mvit = save_mvit(MViT(mcfg).init_random_(1), tmp_path / "mvit.pyth")
    src = LART(LARTConfig.tiny(heads=1, dim_head=64))  # appearance width 24
    torch.save({"state_dict": {"encoder." + k: v for k, v in src.state_dict().items()}}, tmp_path / "lart.ckpt")

    def build(**sections):
        base = {"publish": {"address": "none"}, "runtime": {"device": "cpu"}}
        return build_pipeline(apply_overrides(AppConfig(), {**base, **sections}, "test"))

    p = build(appearance={"checkpoint": str(mvit), "every": 3})
    try:
        assert not p.appearance.random_weights and p.appearance.cfg.every == 3
        assert p.actions.model.config.app_dim == mcfg.feature_dim
    finally:
        p.close()
    with pytest.raises(BuildError, match=rf"takes 24-d appearance .* gives {mcfg.feature_dim}-d"):
        build(appearance={"checkpoint": str(mvit)}, actions={"checkpoint": str(tmp_path / "lart.ckpt"), "dim_head": 64})
    with caplog.at_level(logging.INFO):
        p = build(actions={"checkpoint": str(tmp_path / "lart.ckpt"), "dim_head": 64})
    try:
        assert p.appearance is None and "no MViT features for the LART checkpoint" in caplog.text
    finally:
        p.close()
    p = build(appearance={"mode": "off"})
    try:
        assert p.appearance is None and not p.actions.model.config.has_appearance  # the pose-only default
    finally:
        p.close()


def test_end_of_file_drains_the_lookahead_so_every_frame_is_published(pedestrians, monkeypatch):
    """With a lookahead of 4 the last 4 frames' actions come after the last frame: run() sends them
    to the sinks at the end of input (the last frame's message, each with its frame's actions)."""
    import sys

    from conftest import read_frames
    from lart_stream.realtime.build import build_pipeline
    from lart_stream.realtime.config import AppConfig, apply_overrides
    from lart_stream.realtime.engine import run
    from mvit_standin import as_module

    class Collect:
        stage = "collect"

        def __init__(self):
            self.results = []

        def send(self, result):
            self.results.append(result)

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "lart_stream.models.mvit", as_module())
    cfg = apply_overrides(AppConfig(), {"publish": {"address": "none"}, "runtime": {"device": "cpu"},
                                        "appearance": {"lookahead": 4}}, "test")
    pipeline = build_pipeline(cfg)
    sink = Collect()
    pipeline.sinks = [sink]
    frames = [Frame(i, 0.0, img) for i, img in enumerate(read_frames(pedestrians)[:15])]
    try:
        summary = run(frames, pipeline)
    finally:
        pipeline.close()
    assert summary.frames == 15 and summary.reason == "end of input"
    got = sink.results
    assert len(got) == 15 + 4
    assert [r.appearance.frame_index for r in got if r.appearance is not None] == list(range(15))
    assert all(r.frame.index == 14 and r.actions is not None for r in got[15:])  # the drained ones
    acted = {int(f) for r in got if r.actions is not None for f in r.actions.frame_index}
    assert {11, 12, 13, 14} <= acted  # the last frames' actions reach the sinks
