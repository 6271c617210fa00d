"""HMRLifter stage: People fields, batch = single calls, empty frames, SMPL from a file or checkpoint."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lart_stream.models.hmr2 import HMR2, HMR2Config, CheckpointError
from lart_stream.models.smpl import SMPL, load_smpl_pickle
from lart_stream.realtime.lifting import HMRLifter, HMRLifterConfig
from lart_stream.realtime.records import Detections, Frame, People
from lart_stream.realtime.stages import Lifter
from smpl_synthetic import smpl_arrays, write_smpl_pickle

BOXES = np.array([[100, 60, 220, 400], [300, 20, 600, 470], [-30, 200, 90, 470], [500, 300, 540, 380]], np.float32)


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    return Frame(index=7, t_capture=0.0, image=rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def dets():
    return Detections(BOXES, np.linspace(0.9, 0.6, len(BOXES)), np.zeros(len(BOXES)))


@pytest.fixture(scope="module")
def lifter():
    return HMRLifter.from_config(HMRLifterConfig(seed=1))


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    return write_smpl_pickle(tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.pkl", smpl_arrays(seed=5))


def test_random_weights_are_loud(caplog):
    with caplog.at_level(logging.WARNING, logger="lart_stream.realtime.lifting"):
        lifter = HMRLifter.from_config(HMRLifterConfig())
    assert lifter.random_weights is True
    assert isinstance(lifter, Lifter) and lifter.name == "hmr"
    assert any("random weights: predictions are meaningless" in r.getMessage() for r in caplog.records)


def test_people_fields(lifter, frame, dets):
    people = lifter(frame, dets)
    n = len(dets)
    assert isinstance(people, People) and len(people) == n and people.has_3d
    assert people.image_size == (640, 480)
    np.testing.assert_array_equal(people.xyxy, dets.xyxy)
    for name, shape in [("pose_vector", (n, 229)), ("global_orient", (n, 3, 3)), ("body_pose", (n, 23, 3, 3)),
                        ("betas", (n, 10)), ("pred_cam", (n, 3)), ("cam_t", (n, 3)), ("location", (n, 3)),
                        ("appearance", (n, 64))]:
        arr = getattr(people, name)
        assert arr.shape == shape and arr.dtype == np.float32 and np.isfinite(arr).all(), name
    np.testing.assert_allclose(np.linalg.norm(people.appearance, axis=1), 1.0, rtol=1e-5)
    assert people.joints_3d is None and people.keypoints_2d is None  # no SMPL given
    # pose vector = rotations, betas, then the full-frame camera with tz / 200
    np.testing.assert_allclose(people.pose_vector[:, :9], people.global_orient.reshape(n, 9))
    np.testing.assert_allclose(people.pose_vector[:, 9:216], people.body_pose.reshape(n, 207))
    np.testing.assert_allclose(people.pose_vector[:, 216:226], people.betas)
    np.testing.assert_allclose(people.pose_vector[:, 226:], people.cam_t * [1, 1, 1 / 200], rtol=1e-6)


def test_full_frame_camera_and_location_hand_formula(lifter, frame, dets):
    people = lifter(frame, dets)
    W, H = 640, 480
    xyxy = dets.xyxy.astype(np.float64)
    cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    b = np.maximum(h, w * 4 / 3)  # crop side: box grown to 192:256
    s, tx, ty = people.pred_cam.astype(np.float64).T
    F = 5000 / 256 * max(W, H)
    want = np.stack([tx + 2 * (cx - W / 2) / (b * s), ty + 2 * (cy - H / 2) / (b * s), 2 * F / (b * s)], 1)
    np.testing.assert_allclose(people.cam_t, want, rtol=1e-5)
    # The body origin projects to the box centre moved by the crop camera's offset: cx + tx b s / 2.
    np.testing.assert_allclose(people.location[:, 0], cx + tx * b * s / 2, rtol=1e-5)
    np.testing.assert_allclose(people.location[:, 1], cy + ty * b * s / 2, rtol=1e-5)
    np.testing.assert_allclose(people.location[:, 2], np.log(want[:, 2]), rtol=1e-5)


def test_batch_equals_single_calls(lifter, frame, dets):
    batch = lifter(frame, dets)
    for i in range(len(dets)):
        one = lifter(frame, dets[[i]])
        for name in ("pose_vector", "cam_t", "location", "appearance", "pred_cam"):
            np.testing.assert_allclose(getattr(one, name)[0], getattr(batch, name)[i], rtol=1e-4, atol=1e-5,
                                       err_msg=name)


def test_chunks_equal_one_batch(frame, dets):
    full = HMRLifter.from_config(HMRLifterConfig(seed=1))(frame, dets)
    chunked = HMRLifter.from_config(HMRLifterConfig(seed=1, max_batch=3))(frame, dets)
    np.testing.assert_allclose(chunked.pose_vector, full.pose_vector, rtol=1e-4, atol=1e-5)


def test_empty_frame_flows_through(lifter, frame):
    people = lifter(frame, Detections.empty())
    assert len(people) == 0 and people.has_3d
    assert people.pose_vector.shape == (0, 229) and people.appearance.shape == (0, 64)


def test_smpl_file_gives_joints_and_keypoints(frame, dets, smpl_file):
    lifter = HMRLifter.from_config(HMRLifterConfig(smpl_path=str(smpl_file)))
    people = lifter(frame, dets)
    n = len(dets)
    assert people.joints_3d.shape == (n, 25, 3) and people.keypoints_2d.shape == (n, 25, 2)
    # keypoints = pinhole projection of the body-frame joints moved by cam_t, full-frame focal
    F = 5000 / 256 * 640
    p = people.joints_3d.astype(np.float64) + people.cam_t[:, None, :]
    want = p[..., :2] / p[..., 2:] * F + np.array([320.0, 240.0])
    np.testing.assert_allclose(people.keypoints_2d, want, rtol=1e-4, atol=1e-2)
    # and the joints are SMPL's for the predicted parameters
    smpl = SMPL(load_smpl_pickle(smpl_file))
    _, joints = smpl(*(torch.as_tensor(getattr(people, k)) for k in ("global_orient", "body_pose", "betas")))
    np.testing.assert_allclose(people.joints_3d, joints.numpy(), rtol=1e-4, atol=1e-5)
    empty = lifter(frame, Detections.empty())
    assert empty.joints_3d.shape == (0, 25, 3) and empty.keypoints_2d.shape == (0, 25, 2)


def test_checkpoint_with_smpl_buffers(tmp_path, frame, dets, smpl_file):
    model = HMR2(HMR2Config.tiny()).init_random_(seed=9)
    smpl = SMPL(load_smpl_pickle(smpl_file), np.full((19, 6890), 1 / 6890))
    sd = dict(model.state_dict())
    sd.update({"smpl." + k: v for k, v in smpl.state_dict().items()})
    sd["discriminator.D_conv1.weight"] = torch.zeros(32, 9, 1, 1)
    sd["initialized"] = torch.tensor(True)
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    lifter = HMRLifter.from_config(HMRLifterConfig(checkpoint=str(path), size="tiny"))
    assert lifter.random_weights is False
    people = lifter(frame, dets)
    assert people.joints_3d.shape == (len(dets), 44, 3)  # 25 OpenPose + 19 J19 from the checkpoint
    # same network as the one saved
    reference = HMRLifter(HMRLifterConfig(), model.eval(), random_weights=True)(frame, dets)
    np.testing.assert_allclose(people.pose_vector, reference.pose_vector, rtol=1e-5, atol=1e-6)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        HMRLifter.from_config(HMRLifterConfig(backend="openvino"))
    with pytest.raises(ValueError, match="precision"):
        HMRLifter.from_config(HMRLifterConfig(precision="int8"))
    with pytest.raises(ValueError, match="size"):
        HMRLifter.from_config(HMRLifterConfig(size="large"))
    path = tmp_path / "official_shapes.ckpt"
    torch.save({"state_dict": {"backbone.pos_embed": torch.zeros(1, 193, 1280)}}, path)
    with pytest.raises(CheckpointError, match="backbone.pos_embed: expected"):
        HMRLifter.from_config(HMRLifterConfig(checkpoint=str(path), size="tiny"))
    with pytest.raises(FileNotFoundError):
        HMRLifter.from_config(HMRLifterConfig(checkpoint=str(tmp_path / "nope.ckpt")))


def test_onnxruntime_backend_from_export_dir(tmp_path, frame, dets):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lart_stream.export.onnx_export import export_model, hmr2_spec, write_manifest

    with pytest.warns(UserWarning, match="RANDOM"):
        spec = hmr2_spec("tiny", seed=4)
    write_manifest(tmp_path, {"hmr2": export_model(spec, tmp_path)})
    ort_lifter = HMRLifter.from_config(HMRLifterConfig(backend="onnxruntime", export_dir=str(tmp_path)))
    assert ort_lifter.model is None and "onnxruntime" in ort_lifter.backend_info
    assert ort_lifter.random_weights is True  # from the manifest: the engine's weights are random
    torch_lifter = HMRLifter.from_config(HMRLifterConfig(seed=4))
    a, b = ort_lifter(frame, dets), torch_lifter(frame, dets)
    np.testing.assert_allclose(a.pose_vector, b.pose_vector, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.appearance, b.appearance, rtol=1e-4, atol=1e-5)
    assert len(ort_lifter(frame, Detections.empty())) == 0
    with pytest.raises(ValueError, match="official"):
        HMRLifter.from_config(HMRLifterConfig(size="official", backend="onnxruntime", export_dir=str(tmp_path)))


def test_backend_that_cannot_run_is_a_config_error():
    with pytest.raises(ValueError, match="HMR stage: .*no ONNX file"):
        HMRLifter.from_config(HMRLifterConfig(backend="onnxruntime"))
