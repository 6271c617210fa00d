"""Action stage on scripted track streams: window mode against a forward on hand-built tokens,
causal mode against a full causal recompute, slot bookkeeping, empty input, weights flags."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from lart_stream.models.ava import AVA_EVAL_IDS, AVA_EVAL_NAMES
from lart_stream.models.lart import LART, LARTConfig
from lart_stream.realtime.actions import ActionStage, ActionStageConfig
from lart_stream.realtime.records import ActionPredictions, People, Tracks
from lart_stream.realtime.stages import ActionRecognizer

torch.set_grad_enabled(False)
T, N, K, H = 8, 3, 2, 6  # window, slots, lookahead, pooling half-width


@dataclass
class Obs:
    detected: bool
    pose: np.ndarray  # (229,)
    joints: np.ndarray  # (135,) = 45 joints + cam_t
    app: np.ndarray  # (24,)


SPANS = {10: (0, 30), 11: (2, 18), 12: (5, 30), 13: (12, 25), 14: (20, 30), 15: (14, 28)}


def scripted_stream(steps: int = 30, seed: int = 0):
    """(tracks, people, frame_index, {track id: Obs}) per step; tracks come, go, miss detections."""
    rng = np.random.default_rng(seed)
    for tau in range(steps):
        ids = [t for t, (a, b) in SPANS.items() if a <= tau < b]
        rng.shuffle(ids)
        obs = {}
        for t in ids:
            det = tau == SPANS[t][0] or rng.random() < 0.75
            joints, cam = rng.normal(size=(45, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
            obs[t] = (Obs(det, rng.normal(size=229).astype(np.float32), (joints + cam).reshape(135),
                          rng.normal(size=24).astype(np.float32)), joints, cam)
        det_ids = [t for t in ids if obs[t][0].detected]
        order = rng.permutation(len(det_ids) + 1)  # one extra, untracked person
        n = len(order)
        pose = rng.normal(size=(n, 229)).astype(np.float32)
        joints = rng.normal(size=(n, 45, 3)).astype(np.float32)
        cam = rng.normal(size=(n, 3)).astype(np.float32)
        app = rng.normal(size=(n, 24)).astype(np.float32)
        person = {}
        for t, row in zip(det_ids, order):
            o, j, c = obs[t]
            pose[row], joints[row], cam[row], app[row] = o.pose, j, c, o.app
            person[t] = row
        people = People(np.zeros((n, 4)), np.ones(n), image_size=(64, 48), pose_vector=pose, joints_3d=joints,
                        cam_t=cam, appearance=app)
        m = len(ids)
        tsu = np.array([0 if obs[t][0].detected else 1 for t in ids])
        tracks = Tracks(np.array(ids), np.zeros((m, 4)), np.full(m, 2), np.zeros(m), np.zeros(m), tsu,
                        np.array([person.get(t, -1) for t in ids]))
        yield tracks, people, 100 + 3 * tau, {t: o for t, (o, _, _) in obs.items()}


def stage(mode: str, **kw) -> ActionStage:
    base = dict(window=T, max_people=N, lookahead=K, pool_half=H, max_tracks=8, attention="exact",
                people_appearance=True)
    cfg = ActionStageConfig(mode=mode, **{**base, **kw})
    s = ActionStage.from_config(cfg)
    with torch.no_grad():  # visible weights: outputs depend clearly on every input
        for p in s.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return s


def hand_window_batch(hist: list[dict[int, Obs]], start: dict[int, int], ids: list[int], tau: int):
    """(pose, joints, app, valid, window start, length) for each track of interest, built by hand."""
    B = len(ids)
    pose, joints, app = np.zeros((B, T, N, 229)), np.zeros((B, T, N, 135)), np.zeros((B, T, N, 24))
    valid = np.zeros((B, T, N), bool)
    s0, lengths = [], []
    for b, poi in enumerate(ids):
        length = min(T, tau - start[poi] + 1)
        first = tau - length + 1
        slots = [poi] + sorted(t for t in ids if t != poi)[: N - 1]
        for p in range(length):
            for n, tid in enumerate(slots):
                o = hist[first + p].get(tid)
                if o is not None and o.detected:
                    pose[b, p, n], joints[b, p, n], app[b, p, n], valid[b, p, n] = o.pose, o.joints, o.app, True
        s0.append(first)
        lengths.append(length)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(pose), f(joints), f(app), torch.tensor(valid), s0, lengths


def test_window_mode_equals_forward_on_hand_built_tokens():
    st = stage("window")
    hist, start, frames, published = [], {}, [], 0
    for tau, (tracks, people, frame_index, obs) in enumerate(scripted_stream()):
        hist.append(obs)
        frames.append(frame_index)
        for t in obs:
            start.setdefault(t, tau)
        out = st.update(tracks, people, frame_index)
        ids = [int(t) for t in tracks.track_id]
        pose, joints, app, valid, first, lengths = hand_window_batch(hist, start, ids, tau)
        probs = torch.sigmoid(st.model.forward_window(pose, joints, app, valid, exact=True)).numpy()
        c = tau - K
        want_ids, want_scores = [], []
        for b, tid in enumerate(ids):
            pc = c - first[b]
            if pc >= 0 and hist[c][tid].detected:
                lo, hi = max(pc - H, 0), min(pc + H, lengths[b])
                want_ids.append(tid)
                want_scores.append(probs[b, lo:hi].mean(0))
        assert out.track_id.tolist() == want_ids, f"step {tau}"
        assert out.frame_index.tolist() == ([frames[c]] * len(want_ids) if want_ids else [])
        if want_ids:
            np.testing.assert_allclose(out.scores, np.stack(want_scores), rtol=0, atol=2e-6)
        published += len(out)
    assert published > 40  # the comparison really ran


def test_window_stride_runs_every_other_step():
    st = stage("window", stride=2)
    sizes = [len(st.update(t, p, f)) for t, p, f, _ in scripted_stream(12)]
    assert all(n == 0 for n in sizes[1::2]) and sum(sizes[::2]) > 0


class StepSpy:
    """Records every causal step's inputs, the stage's sequence/slot bookkeeping and the logits."""

    def __init__(self, st: ActionStage):
        self.st, self.orig, self.calls = st, st.model.step, []
        st.model.step = self

    def __call__(self, pose, joints, app, valid, positions, k, v, kb, exact, inplace=True):
        out = self.orig(pose, joints, app, valid, positions, k, v, kb, exact, inplace=inplace)
        B = len(self.st._seq_ids)
        self.calls.append(dict(ids=list(self.st._seq_ids), ctx=self.st._ctx[:B].copy(), pose=pose.clone(),
                               joints=joints.clone(), app=app.clone(), valid=valid.clone(),
                               positions=positions.clone(), logits=out[0].clone()))
        return out


def test_causal_mode_equals_full_causal_recompute():
    st = stage("causal")
    spy = StepSpy(st)
    hist, start, frames, outs = [], {}, [], []
    for tau, (tracks, people, frame_index, obs) in enumerate(scripted_stream()):
        hist.append(obs)
        frames.append(frame_index)
        for t in obs:
            start.setdefault(t, tau)
        outs.append(st.update(tracks, people, frame_index))
    assert len(spy.calls) == len(hist)
    assert st._cap == 8  # the cache grew past its first 4 sequences
    for tau, call in enumerate(spy.calls):
        # every present track has a sequence; its slots hold the right observations
        assert sorted(call["ids"]) == sorted(hist[tau])
        for b, tid in enumerate(call["ids"]):
            assert call["positions"][b] == (tau - start[tid]) % T
            for n, slot_tid in enumerate([tid] + call["ctx"][b].tolist()):
                o = hist[tau].get(slot_tid)
                detected = slot_tid >= 0 and o is not None and o.detected
                assert bool(call["valid"][b, n]) == detected
                if detected:
                    np.testing.assert_array_equal(call["pose"][b, n].numpy(), o.pose)
                    np.testing.assert_allclose(call["joints"][b, n].numpy(), o.joints, atol=1e-6)
                    np.testing.assert_array_equal(call["app"][b, n].numpy(), o.app)
            # a context track keeps its slot while it lives; free slots are filled
            if tau and tid in spy.calls[tau - 1]["ids"]:
                prev = spy.calls[tau - 1]["ctx"][spy.calls[tau - 1]["ids"].index(tid)]
                for s, t in enumerate(prev):
                    if t in hist[tau]:
                        assert call["ctx"][b, s] == t
            others = set(hist[tau]) - {tid}
            assert (call["ctx"][b] >= 0).sum() == min(len(others), N - 1)
    # each sequence's step logits equal a full causal forward over that sequence's history
    logits: dict[int, dict[int, torch.Tensor]] = {}
    for tid in SPANS:
        rows = [(tau, c["ids"].index(tid)) for tau, c in enumerate(spy.calls) if tid in c["ids"]]
        seq = {k: torch.stack([spy.calls[tau][k][b] for tau, b in rows])[None]
               for k in ("pose", "joints", "app", "valid", "positions")}
        full = st.model.forward_causal(seq["pose"], seq["joints"], seq["app"], seq["valid"], seq["positions"], T,
                                       exact=True)[0]
        stepped = torch.stack([spy.calls[tau]["logits"][b] for tau, b in rows])
        torch.testing.assert_close(stepped, full, rtol=0, atol=2e-5)
        logits[tid] = {tau: torch.sigmoid(stepped[i]) for i, (tau, _) in enumerate(rows)}
    # published scores: mean over the steps [c-6, c+6) seen so far
    for tau, out in enumerate(outs):
        c = tau - K
        want = []
        for tid in spy.calls[tau]["ids"]:
            if c >= start[tid] and hist[c][tid].detected:
                seen = range(max(c - H, start[tid], tau - T + 1), min(c + H, tau + 1))  # kept: last T steps
                want.append((tid, torch.stack([logits[tid][s] for s in seen]).mean(0)))
        assert out.track_id.tolist() == [t for t, _ in want]
        assert out.frame_index.tolist() == ([frames[c]] * len(want) if want else [])
        if want:
            np.testing.assert_allclose(out.scores, torch.stack([s for _, s in want]).numpy(), rtol=0, atol=2e-6)


def test_freed_context_slot_is_reused_longest_free_first():
    st = ActionStage.from_config(ActionStageConfig(mode="causal", window=6, max_people=3, pool_half=2))
    pose = np.zeros((4, 229), np.float32)
    people = People(np.zeros((4, 4)), np.ones(4), pose_vector=pose)

    def tracks(ids):
        m = len(ids)
        return Tracks(np.array(ids), np.zeros((m, 4)), np.full(m, 2), np.zeros(m), np.zeros(m), np.zeros(m),
                      np.arange(m))

    st.update(tracks([1, 2, 3]), people, 0)
    b = st._seq_ids.index(1)
    assert st._ctx[b].tolist() == [2, 3]
    st.update(tracks([1, 3]), people, 1)  # 2 leaves: its slot is freed
    assert st._ctx[st._seq_ids.index(1)].tolist() == [-1, 3]
    st.update(tracks([1]), people, 2)  # 3 leaves later
    st.update(tracks([1, 4]), people, 3)  # 4 takes the slot free the longest (2's)
    assert st._ctx[st._seq_ids.index(1)].tolist() == [4, -1]
    assert sorted(st._seq_ids) == [1, 4] and sorted(st._row_of) == [1, 4]


@pytest.mark.parametrize("mode", ["window", "causal"])
def test_empty_inputs_and_vanished_tracks(mode):
    st = ActionStage.from_config(ActionStageConfig(mode=mode))
    stream = list(scripted_stream(8))
    for t, p, f, _ in stream:
        st.update(t, p, f)
    assert st._row_of
    # no 3D input: empty predictions, state untouched
    tau = st._tau
    out = st.update(stream[-1][0], People(stream[-1][1].xyxy, stream[-1][1].confidence), 99)
    assert len(out) == 0 and out.class_ids == AVA_EVAL_IDS and out.scores.shape == (0, 60)
    assert st._tau == tau
    # nobody tracked: every track's state is dropped
    empty_people = People(np.zeros((0, 4)), np.zeros(0), pose_vector=np.zeros((0, 229), np.float32))
    out = st.update(Tracks.empty(), empty_people, 100)
    assert len(out) == 0 and st._row_of == {} and st._seq_ids == []
    assert (st._step_of == -1).all() and not st._det.any()
    assert sorted(st._free_rows) == list(range(st.cfg.max_tracks))


def test_more_tracks_than_max_tracks_are_ignored_loudly(caplog):
    st = ActionStage.from_config(ActionStageConfig(mode="window", window=8, max_people=2, max_tracks=2,
                                                   pool_half=2))
    ids = [5, 6, 7]
    people = People(np.zeros((3, 4)), np.ones(3), pose_vector=np.ones((3, 229), np.float32),
                    joints_3d=np.zeros((3, 45, 3), np.float32), appearance=np.zeros((3, 24), np.float32))
    tr = Tracks(np.array(ids), np.zeros((3, 4)), np.full(3, 2), np.zeros(3), np.zeros(3), np.zeros(3), np.arange(3))
    with caplog.at_level(logging.WARNING):
        out = st.update(tr, people, 0)
    assert out.track_id.tolist() == [5, 6]
    assert "track 7 gets no predictions" in caplog.text


@pytest.mark.parametrize("mode", ["window", "causal"])
def test_track_left_out_is_admitted_once_a_row_frees(mode):
    # the stage caches what follows from the set of tracks; a left-out track must still get the row a
    # vanished track frees, at that very step, and keep it while the tracks stay the same
    st = ActionStage.from_config(ActionStageConfig(mode=mode, window=4, max_people=2, max_tracks=2, pool_half=1))
    people = People(np.zeros((3, 4)), np.ones(3), pose_vector=np.ones((3, 229), np.float32),
                    joints_3d=np.zeros((3, 45, 3), np.float32), appearance=np.zeros((3, 24), np.float32))

    def tracks(ids):
        m = len(ids)
        return Tracks(np.array(ids), np.zeros((m, 4)), np.full(m, 2), np.zeros(m), np.zeros(m), np.zeros(m),
                      np.arange(m))

    got = [st.update(tracks(ids), people, f).track_id.tolist()
           for f, ids in enumerate([[5, 6, 7], [7, 6, 5], [6, 7], [7, 6], [6, 7]])]
    assert got[:2] == [[5, 6], [6, 5]] if mode == "window" else got[:2] == [[5, 6], [5, 6]]
    assert got[2:] == ([[6, 7], [7, 6], [6, 7]] if mode == "window" else [[6, 7]] * 3)
    assert sorted(st._row_of) == [6, 7] and st._start[st._row_of[7]] == 2


def test_appearance_is_zeros_unless_declared_the_trained_feature(caplog):
    st = ActionStage.from_config(ActionStageConfig())
    tracks, people, _, _ = next(scripted_stream())
    with caplog.at_level(logging.WARNING):
        st.update(tracks, people, 0)
    assert "Feeding zeros" in caplog.text
    assert st._app.abs().sum() == 0 and st._pose.abs().sum() > 0


def test_joint_features_pad_44_joints_and_add_camera():
    st = ActionStage.from_config(ActionStageConfig())
    j = np.arange(2 * 44 * 3, dtype=np.float32).reshape(2, 44, 3)
    cam = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    people = People(np.zeros((2, 4)), np.ones(2), pose_vector=np.zeros((2, 229), np.float32), joints_3d=j, cam_t=cam)
    got = st._joint_features(people, np.array([1]))
    want = np.concatenate([j[1], np.zeros((1, 3))]) + cam[1]
    np.testing.assert_array_equal(got, want.reshape(1, 135))


def test_random_weights_flag_and_checkpoint(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        st = ActionStage.from_config(ActionStageConfig())
    assert isinstance(st, ActionRecognizer) and st.name == "lart"
    assert st.random_weights and "RANDOM WEIGHTS" in caplog.text
    out = st.update(Tracks.empty(), People(np.zeros((0, 4)), np.zeros(0), pose_vector=np.zeros((0, 229))), 0)
    assert out.random_weights and out.class_names == AVA_EVAL_NAMES
    # a checkpoint written with the reference's key names (tiny widths, head dim 64)
    cfg = LARTConfig.tiny(heads=1, dim_head=64)
    src = LART(cfg)
    torch.save({"state_dict": {"encoder." + k: v for k, v in src.state_dict().items()}}, tmp_path / "t.ckpt")
    np.save(tmp_path / "mean_std.npy", np.stack([np.full((1, 226), 0.5), np.full((1, 226), 2.0)]))
    st = ActionStage.from_config(ActionStageConfig(checkpoint=str(tmp_path / "t.ckpt"), dim_head=64, size="official",
                                                   mean_std=str(tmp_path / "mean_std.npy"), window=8, max_people=3))
    assert not st.random_weights
    assert torch.equal(st.model.mask_token, src.mask_token)
    assert st.model.pose_mean[:226].eq(0.5).all() and st.model.pose_mean[226:].eq(0).all()
    assert st.model.pose_std[:226].eq(2.0).all() and st.model.pose_std[226:].eq(1).all()
    with pytest.raises(ValueError, match="size 'tiny' with a checkpoint"):
        ActionStage.from_config(ActionStageConfig(checkpoint=str(tmp_path / "t.ckpt")))


@pytest.mark.parametrize("kw,msg", [(dict(mode="online"), "mode"), (dict(stride=0), "stride"),
                                    (dict(attention="flash"), "attention"), (dict(size="huge"), "size")])
def test_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ActionStageConfig(**kw)


def test_lookahead_must_fit_the_window():
    with pytest.raises(ValueError, match="lookahead"):
        ActionStage.from_config(ActionStageConfig(window=8, lookahead=8))


def test_predictions_record_top_k():
    preds = ActionPredictions(np.array([3]), np.array([7]), np.linspace(0, 1, 60, dtype=np.float32)[None],
                              AVA_EVAL_IDS, AVA_EVAL_NAMES, False)
    assert [a for a, _, _ in preds.top_k(2)[0]] == [80, 79]


def test_bf16_matmul_precision_tracks_fp32():
    """precision bf16 casts only the transformer's Linears (once) and keeps the stage's buffers, caches,
    encoders and heads fp32; its scores follow the fp32 stage's within bf16 rounding: each of the
    transformer's matmuls rounds its inputs to 8 mantissa bits (relative 2^-8), a few such errors per
    layer add up in the logits, and the sigmoid's slope is at most 1/4, so 0.25 * 8 * depth * 2^-8 * |logit|
    bounds a score's change (with |logit| of a few units here)."""
    outs = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        st = stage("causal", precision=prec)
        if prec == "bf16":
            lin = st.model.transformer.layers[0][0].fn.to_qkv
            assert lin.weight.dtype == torch.bfloat16 and st.model.mask_token.dtype == torch.float32
            assert all(p.dtype == torch.float32 for n, p in st.model.named_parameters() if not n.startswith("transformer."))
            assert "bf16 matmuls" in st.describe()
        outs[prec] = [st.update(tr, ppl, fi) for tr, ppl, fi, _ in scripted_stream()]
    depth = st.model.config.depth
    logit_max = 4.0
    bound = 0.25 * 8 * depth * 2.0 ** -8 * logit_max
    diffs = []
    for a, b in zip(outs["fp32"], outs["bf16"]):
        assert a.track_id.tolist() == b.track_id.tolist() and a.frame_index.tolist() == b.frame_index.tolist()
        if len(a):
            assert np.isfinite(b.scores).all()
            diffs.append(np.abs(a.scores - b.scores).max())
    assert diffs and 0 < max(diffs) <= bound, (max(diffs), bound)
