"""SMPL without chumpy: official-format pickles, joints against hand computations, checkpoint buffers."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from hmr2_reference_keys import official_smpl_keys
from lart_stream.models.smpl import SMPL, SMPL_TO_OPENPOSE, SMPLFileError, load_smpl_pickle
from smpl_synthetic import smpl_arrays, write_smpl_pickle


@pytest.fixture(scope="module")
def arrays():
    return smpl_arrays(seed=1)


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory, arrays):
    return write_smpl_pickle(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", arrays)


def test_file_needs_chumpy_for_plain_pickle(smpl_file):
    # The synthetic file really references chumpy.ch.Ch, like the official one.
    with pytest.raises(ModuleNotFoundError, match="chumpy"):
        with open(smpl_file, "rb") as f:
            pickle.load(f, encoding="latin1")


def test_load_without_chumpy_extracts_arrays(smpl_file, arrays):
    data = load_smpl_pickle(smpl_file)
    for k in ("v_template", "shapedirs", "posedirs", "weights", "J_regressor"):
        assert isinstance(data[k], np.ndarray), k
        np.testing.assert_array_equal(data[k], arrays[k])  # sparse J_regressor densified exactly
    np.testing.assert_array_equal(data["kintree_table"], arrays["kintree_table"])
    assert data["bs_style"] == "lbs"


def test_chumpy_expression_is_refused(tmp_path, arrays):
    path = write_smpl_pickle(tmp_path / "expr.pkl", arrays, chumpy_class="MatVecMult")
    with pytest.raises(SMPLFileError, match="chumpy chumpy.ch.MatVecMult expression"):
        load_smpl_pickle(path)


def test_foreign_globals_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.getcwd, ())

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(SMPLFileError, match="not allowed"):
        load_smpl_pickle(path)


def _rot_z(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_joints_against_hand_computation(smpl_file, arrays):
    extra = np.random.default_rng(2).uniform(0, 1, (19, arrays["v_template"].shape[0]))
    extra /= extra.sum(1, keepdims=True)
    smpl = SMPL(load_smpl_pickle(smpl_file), extra)
    assert smpl.num_joints == 44
    eye = torch.eye(3)
    R = _rot_z(90)
    go = torch.stack([eye, R])  # person 0 rest pose, person 1 turned 90 deg about z
    bp = eye.expand(2, 23, 3, 3)
    betas = torch.zeros(2, 10)
    verts, joints = smpl(go, bp, betas)
    assert joints.shape == (2, 44, 3)
    v = torch.as_tensor(arrays["v_template"], dtype=torch.float32)
    j0 = torch.as_tensor(arrays["J_regressor"][0] @ arrays["v_template"], dtype=torch.float32)
    # Rest pose: vertices = template; OpenPose MidHip (8) = SMPL pelvis; nose (0) = smplh vertex 332.
    torch.testing.assert_close(verts[0], v, atol=1e-5, rtol=0)
    assert SMPL_TO_OPENPOSE[8] == 0
    torch.testing.assert_close(joints[0, 8], j0, atol=1e-5, rtol=0)
    torch.testing.assert_close(joints[0, 0], v[332], atol=1e-5, rtol=0)
    torch.testing.assert_close(joints[0, 25:], torch.as_tensor(extra, dtype=torch.float32) @ v, atol=1e-4, rtol=0)
    # Global rotation turns the body about the root joint: nose' = R (nose - j0) + j0.
    torch.testing.assert_close(joints[1, 0], R @ (v[332] - j0) + j0, atol=1e-5, rtol=0)
    torch.testing.assert_close(joints[1, 8], j0, atol=1e-5, rtol=0)
    verts, joints = smpl(go[:0], bp[:0], betas[:0])  # nobody: empty, not an error
    assert verts.shape == (0, 6890, 3) and joints.shape == (0, 44, 3)


def test_state_dict_uses_checkpoint_names_and_round_trips(smpl_file, arrays):
    extra = np.full((19, arrays["v_template"].shape[0]), 1.0 / arrays["v_template"].shape[0])
    smpl = SMPL(load_smpl_pickle(smpl_file), extra)
    sd = smpl.state_dict()
    want = official_smpl_keys(num_faces=len(arrays["f"]))
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    rebuilt = SMPL.from_state_dict(sd)
    rng = np.random.default_rng(3)
    go = torch.linalg.qr(torch.as_tensor(rng.normal(size=(3, 3, 3)), dtype=torch.float32))[0]
    go = go * torch.linalg.det(go)[:, None, None]  # proper rotations
    bp = torch.eye(3).expand(3, 23, 3, 3)
    betas = torch.as_tensor(rng.normal(size=(3, 10)), dtype=torch.float32)
    for a, b in zip(smpl(go, bp, betas), rebuilt(go, bp, betas)):
        torch.testing.assert_close(a, b)


def test_state_dict_mismatch_is_reported(smpl_file):
    sd = SMPL(load_smpl_pickle(smpl_file)).state_dict()
    sd["lbs_weights"] = sd["lbs_weights"][:, :20]
    with pytest.raises(SMPLFileError, match=r"weights: expected \[6890, 24\], got \[6890, 20\]"):
        SMPL.from_state_dict(sd)
    del sd["parents"]
    with pytest.raises(SMPLFileError, match="parents"):
        SMPL.from_state_dict(sd)


def test_state_dict_with_unknown_buffer_is_reported(smpl_file):
    sd = SMPL(load_smpl_pickle(smpl_file)).state_dict()
    sd["betas"] = torch.zeros(1, 10)  # an SMPL (not SMPLLayer) buffer: not what HMR2 stores
    with pytest.raises(SMPLFileError, match="unexpected betas"):
        SMPL.from_state_dict(sd)
