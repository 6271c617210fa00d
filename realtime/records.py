"""Typed records that flow one way through the pipeline.

    Frame -> Detections -> People -> Tracks -> [AppearanceFeatures] -> ActionPredictions

Each record is a dataclass of row-aligned numpy arrays (one row per box, person
or track), validated at construction. "Empty" is a normal value: every record
has an ``empty()`` constructor and a frame with nobody in it flows through every
stage unchanged. Models never import these records; adapters live here or in the
stage modules.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


def _check_rows(name: str, value: np.ndarray | None, n: int, tail: tuple[int | None, ...]) -> None:
    """Raise ValueError naming the field when ``value`` is not (n, *tail)."""
    if value is None:
        return
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(value).__name__}")
    want = (n, *tail)
    ok = value.shape == want or (value.ndim == len(want) and all(w is None or w == g for w, g in zip(want, value.shape)))
    if not ok:
        shown = tuple("*" if w is None else w for w in want)
        raise ValueError(f"{name}: expected shape {shown}, got {tuple(value.shape)}")


def _select(record: Any, index: np.ndarray | slice | Sequence[int]) -> Any:
    """Row-select every array field of a record (None fields stay None)."""
    out = {}
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        out[f.name] = v[index] if isinstance(v, np.ndarray) and f.metadata.get("rows", True) else v
    return type(record)(**out)


def _meta() -> dict:
    return {"rows": False}


@dataclass
class Frame:
    """One captured image. ``t_capture`` is ``time.monotonic()`` when the frame was read.

    ``media_time`` is the frame's time in its recording (index / rate for files and folders), or
    None for live sources, whose clock is ``t_capture``: stages that count time (track lifetimes)
    use :attr:`timestamp`, so a file read faster or slower than real time ages tracks correctly."""

    index: int
    t_capture: float
    image: np.ndarray  # (H, W, 3) uint8 BGR
    stream_id: str = "0"
    media_time: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.image, np.ndarray) and self.image.ndim == 3 and self.image.shape[2] == 3):
            shape = getattr(self.image, "shape", None)
            raise ValueError(f"Frame.image: expected (H, W, 3) array, got {shape}")

    @property
    def timestamp(self) -> float:
        """Seconds on the source's own clock: media time for recordings, capture time for live sources."""
        return self.t_capture if self.media_time is None else self.media_time

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass
class Detections:
    """Person boxes of one frame, in pixels of the full frame."""

    xyxy: np.ndarray  # (n, 4) float32
    confidence: np.ndarray  # (n,) float32
    class_id: np.ndarray  # (n,) int32; 0 = person

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        _check_rows("Detections.confidence", self.confidence, n, ())
        _check_rows("Detections.class_id", self.class_id, n, ())

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> "Detections":
        return _select(self, index)


POSE_DIM = 229  # LART pose_shape vector: 9 global orient + 207 body pose + 10 betas + 3 camera


@dataclass
class People:
    """Detected people of one frame lifted to 3D by the HMR stage.

    The 2D fields are always set. The 3D fields are None when no HMR stage runs
    (the chain then only tracks in 2D and predicts no actions).
    """

    xyxy: np.ndarray  # (n, 4) float32, full-frame pixels
    confidence: np.ndarray  # (n,) float32
    image_size: tuple[int, int] = field(default=(0, 0), metadata=_meta())  # (W, H) of the frame
    pose_vector: np.ndarray | None = None  # (n, 229) LART pose_shape vector (unnormalised)
    global_orient: np.ndarray | None = None  # (n, 3, 3) rotation matrix
    body_pose: np.ndarray | None = None  # (n, 23, 3, 3) rotation matrices
    betas: np.ndarray | None = None  # (n, 10)
    pred_cam: np.ndarray | None = None  # (n, 3) weak-perspective (s, tx, ty) in the crop
    cam_t: np.ndarray | None = None  # (n, 3) camera translation in the full frame, metres
    location: np.ndarray | None = None  # (n, 3) body origin: x px, y px, log depth
    appearance: np.ndarray | None = None  # (n, D) appearance embedding for tracking
    joints_3d: np.ndarray | None = None  # (n, J, 3) only when an SMPL file is given
    keypoints_2d: np.ndarray | None = None  # (n, J, 2) full-frame pixels, with SMPL only

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        n = len(self.xyxy)
        _check_rows("People.confidence", self.confidence, n, ())
        _check_rows("People.pose_vector", self.pose_vector, n, (POSE_DIM,))
        _check_rows("People.global_orient", self.global_orient, n, (3, 3))
        _check_rows("People.body_pose", self.body_pose, n, (23, 3, 3))
        _check_rows("People.betas", self.betas, n, (10,))
        _check_rows("People.pred_cam", self.pred_cam, n, (3,))
        _check_rows("People.cam_t", self.cam_t, n, (3,))
        _check_rows("People.location", self.location, n, (3,))
        _check_rows("People.appearance", self.appearance, n, (None,))
        _check_rows("People.joints_3d", self.joints_3d, n, (None, 3))
        _check_rows("People.keypoints_2d", self.keypoints_2d, n, (None, 2))

    @classmethod
    def from_detections(cls, detections: Detections, image_size: tuple[int, int]) -> "People":
        """People with 2D fields only: what flows when no HMR stage runs."""
        return cls(detections.xyxy, detections.confidence, image_size=image_size)

    @classmethod
    def empty(cls, image_size: tuple[int, int] = (0, 0)) -> "People":
        return cls.from_detections(Detections.empty(), image_size)

    @property
    def has_3d(self) -> bool:
        return self.pose_vector is not None

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> "People":
        return _select(self, index)


class TrackState(enum.IntEnum):
    TENTATIVE = 1
    CONFIRMED = 2
    DELETED = 3


@dataclass
class Tracks:
    """Tracks the tracker emits for one frame (confirmed ones only).

    A track not matched in this frame has ``time_since_update > 0`` and
    ``person_index == -1``; its per-person fields hold the last observation.
    """

    track_id: np.ndarray  # (n,) int64, unique per tracker instance
    xyxy: np.ndarray  # (n, 4) float32, last box
    state: np.ndarray  # (n,) int8 TrackState
    age: np.ndarray  # (n,) int32, frames since the track was created
    hits: np.ndarray  # (n,) int32, frames with a matched detection
    time_since_update: np.ndarray  # (n,) int32, 0 = detected in this frame
    person_index: np.ndarray  # (n,) int32, row in this frame's People or -1
    pose_vector: np.ndarray | None = None  # (n, 229) last observed pose
    cam_t: np.ndarray | None = None  # (n, 3) last observed camera translation
    appearance: np.ndarray | None = None  # (n, D) running appearance

    def __post_init__(self) -> None:
        self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
        n = len(self.track_id)
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.state = np.asarray(self.state, dtype=np.int8).reshape(-1)
        self.age = np.asarray(self.age, dtype=np.int32).reshape(-1)
        self.hits = np.asarray(self.hits, dtype=np.int32).reshape(-1)
        self.time_since_update = np.asarray(self.time_since_update, dtype=np.int32).reshape(-1)
        self.person_index = np.asarray(self.person_index, dtype=np.int32).reshape(-1)
        for name in ("xyxy", "state", "age", "hits", "time_since_update", "person_index"):
            _check_rows(f"Tracks.{name}", getattr(self, name), n, getattr(self, name).shape[1:])
        _check_rows("Tracks.pose_vector", self.pose_vector, n, (POSE_DIM,))
        _check_rows("Tracks.cam_t", self.cam_t, n, (3,))
        _check_rows("Tracks.appearance", self.appearance, n, (None,))

    @classmethod
    def empty(cls) -> "Tracks":
        z = np.zeros(0, np.int32)
        return cls(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), z.astype(np.int8), z, z, z, z)

    @property
    def detected(self) -> np.ndarray:
        """(n,) bool: the track was matched to a detection in this frame."""
        return self.time_since_update == 0

    def __len__(self) -> int:
        return len(self.track_id)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> "Tracks":
        return _select(self, index)


@dataclass
class AppearanceFeatures:
    """Per-track appearance feature (the MViT RoI feature LART consumes) for frame ``frame_index``,
    row-aligned with that frame's Tracks.

    A feature comes from a keyframe pass and is held until the next one; ``age`` counts the frames
    since its keyframe. A track with no feature yet (born after the last pass, or never detected at
    one) has ``valid`` False, a zero ``feature`` row and ``age`` -1: the mask says so explicitly, the
    zeros are only what LART was trained on for a frame without a feature.
    """

    track_id: np.ndarray  # (n,) int64
    feature: np.ndarray  # (n, D) float32; zero rows where not valid
    valid: np.ndarray  # (n,) bool
    age: np.ndarray  # (n,) int32 frames since the feature's keyframe; -1 where not valid
    frame_index: int = field(default=-1, metadata=_meta())  # the frame these rows refer to
    random_weights: bool = field(default=True, metadata=_meta())  # from a random-weight backbone

    def __post_init__(self) -> None:
        self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
        n = len(self.track_id)
        self.feature = np.asarray(self.feature, dtype=np.float32)
        if self.feature.ndim != 2:
            raise ValueError(f"AppearanceFeatures.feature: expected shape (n, D), got {self.feature.shape}")
        self.valid = np.asarray(self.valid, dtype=bool).reshape(-1)
        self.age = np.asarray(self.age, dtype=np.int32).reshape(-1)
        _check_rows("AppearanceFeatures.feature", self.feature, n, (None,))
        _check_rows("AppearanceFeatures.valid", self.valid, n, ())
        _check_rows("AppearanceFeatures.age", self.age, n, ())
        if (self.age[~self.valid] != -1).any() or (self.age[self.valid] < 0).any():
            raise ValueError("AppearanceFeatures.age: -1 exactly where valid is False")

    @classmethod
    def empty(cls, dim: int, frame_index: int = -1, random_weights: bool = True) -> "AppearanceFeatures":
        return cls(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), np.zeros(0, bool), np.zeros(0, np.int32),
                   frame_index, random_weights)

    @property
    def dim(self) -> int:
        return int(self.feature.shape[1])

    def age_of(self) -> dict[int, int]:
        """{track id: age} of the tracks that have a feature."""
        return dict(zip(self.track_id[self.valid].tolist(), self.age[self.valid].tolist()))

    def __len__(self) -> int:
        return len(self.track_id)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> "AppearanceFeatures":
        return _select(self, index)


@dataclass
class AppearanceStep:
    """What the appearance stage hands the action stage: frame ``frame_index``'s tracks and people
    (``lookahead`` frames behind the newest frame; the same frame without lookahead) and their
    appearance features, row-aligned with ``tracks``."""

    frame_index: int
    tracks: Tracks
    people: People
    features: AppearanceFeatures


@dataclass
class ActionPredictions:
    """Per-track action scores. Row i refers to frame ``frame_index[i]`` of track ``track_id[i]``.

    ``random_weights`` is True when the action model (or the HMR model feeding
    it) has random weights: such scores are meaningless and must never be shown
    as predictions.
    """

    track_id: np.ndarray  # (n,) int64
    frame_index: np.ndarray  # (n,) int64, frame the scores refer to
    scores: np.ndarray  # (n, C) float32 probabilities in [0, 1]
    class_ids: tuple[int, ...] = field(default=(), metadata=_meta())  # AVA ids of the C columns
    class_names: tuple[str, ...] = field(default=(), metadata=_meta())
    random_weights: bool = field(default=True, metadata=_meta())

    def __post_init__(self) -> None:
        self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
        n = len(self.track_id)
        self.frame_index = np.asarray(self.frame_index, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n, -1) if n else np.asarray(
            self.scores, dtype=np.float32).reshape(0, len(self.class_ids))
        _check_rows("ActionPredictions.frame_index", self.frame_index, n, ())
        c = len(self.class_ids)
        _check_rows("ActionPredictions.scores", self.scores, n, (c,))
        if len(self.class_names) != c:
            raise ValueError(f"ActionPredictions: {c} class ids but {len(self.class_names)} names")

    @classmethod
    def empty(cls, class_ids: tuple[int, ...] = (), class_names: tuple[str, ...] = (),
              random_weights: bool = True) -> "ActionPredictions":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, len(class_ids)), np.float32),
                   class_ids, class_names, random_weights)

    def top_k(self, k: int) -> list[list[tuple[int, str, float]]]:
        """Per row, the k best (ava_id, name, score), best first."""
        out = []
        for row in self.scores:
            best = np.argsort(-row, kind="stable")[:k]
            out.append([(self.class_ids[j], self.class_names[j], float(row[j])) for j in best])
        return out

    def __len__(self) -> int:
        return len(self.track_id)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> "ActionPredictions":
        return _select(self, index)


@dataclass
class FrameResult:
    """Everything the pipeline knows about one frame once all stages ran."""

    frame: Frame
    detections: Detections
    people: People
    tracks: Tracks
    actions: ActionPredictions | None
    stage_ms: dict[str, float]
    t_done: float  # time.monotonic() when the last stage finished
    appearance: AppearanceFeatures | None = None  # features the action stage used (its frame may be older)
