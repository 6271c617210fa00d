"""Wire protocol of the prediction stream: typed messages, a pure encoder and a strict decoder.

A message is a ZeroMQ multipart message ``[topic, payload]`` where ``payload`` is a
msgpack map; the ``frames`` topic adds a third part holding the JPEG bytes:

    actions : [b"actions/<stream>", msgpack(ActionsMessage)]          one per processed frame
    stats   : [b"stats",            msgpack(StatsMessage)]            about once a second, frames or not;
                                                                      the last one of a session has final=true
    frames  : [b"frames/<stream>",  msgpack(FrameMessage header), jpeg]  optional, rate-limited

Per-stream topics carry the stream id after a slash, so a subscriber takes one stream by
prefix (``actions/cam1``) or all of them (``actions``: ZeroMQ matches prefixes).

Every payload carries the schema version ``v``. Floats travel as float32 (boxes
and scores are float32 in the pipeline anyway); times travel as integer
nanoseconds so nothing is lost to float32. docs/protocol.md documents every
field; realtime/protocol_schema.json is the same contract as JSON Schema.

Everything here is pure (no sockets, no clocks): the publisher stamps times and
sequence numbers, this module only converts between typed messages and bytes.
``decode`` raises ``ProtocolError`` and nothing else on any input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Sequence, Union

import msgpack
import numpy as np

from lart_stream.realtime.records import ActionPredictions, FrameResult, TrackState

SCHEMA_VERSION = 3  # 3: per-stream topics actions/<stream>, frames/<stream>
TOPICS = ("actions", "stats", "frames")
STREAM_TOPICS = ("actions", "frames")  # sent as "<topic>/<stream>"
STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # what a stream id may be: it goes into a topic name
WEIGHTS = ("official", "random", "none")  # "none": no action model ran, so no scores at all
SOURCE_STATES = ("live", "stalled", "reconnecting", "ended")  # of the frame source, in `stats`
SESSION_MAX = (1 << 32) - 1
JPEG_SOI = b"\xff\xd8\xff"  # every JPEG starts with the SOI marker and the next marker's 0xff
TRACK_STATES = {int(s): s.name.lower() for s in TrackState}  # 1 -> "tentative", ...


class ProtocolError(ValueError):
    """A message that is not a valid message of this protocol version."""


# ---------------------------------------------------------------------------------------------
# Typed messages


@dataclass(frozen=True)
class ActionScore:
    class_id: int  # AVA action id
    name: str
    score: float  # probability in [0, 1]


@dataclass(frozen=True)
class TrackAction:
    """Action scores of one track, for frame ``frame`` (may be older than the message's frame)."""

    frame: int
    top: tuple[ActionScore, ...]  # best first
    scores: tuple[float, ...] | None  # one per class of the message's class table, or None (top-k only)

    def scores_array(self) -> np.ndarray | None:
        return None if self.scores is None else np.asarray(self.scores, np.float32)


@dataclass(frozen=True)
class TrackPrediction:
    id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in full-frame pixels
    cam_t: tuple[float, float, float] | None  # camera-frame translation, metres
    state: str  # "tentative" | "confirmed" | "deleted"
    age: int  # frames since the track was created
    hits: int  # frames with a matched detection
    time_since_update: int  # frames since last matched; 0 = detected in this frame
    action: TrackAction | None
    # frames since the keyframe of the appearance feature the action model used for this track (at the
    # frame it ran for); None: no feature (no appearance stage, or none yet for this track)
    appearance_age: int | None = None


@dataclass(frozen=True)
class ActionsMessage:
    topic: ClassVar[str] = "actions"
    session: int  # random id of the publisher instance; seq restarts with it
    seq: int  # per-topic sequence number
    stream: str
    frame: int
    t_capture_ns: int  # publisher host CLOCK_MONOTONIC
    t_publish_ns: int  # publisher host CLOCK_MONOTONIC
    t_wall_ns: int  # publisher host Unix time at publish
    image_size: tuple[int, int]  # (W, H) pixels
    weights: str  # "official" | "random" | "none"
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    stage_ms: dict[str, float]
    tracks: tuple[TrackPrediction, ...]

    @property
    def random_weights(self) -> bool:
        """True when the scores come from random weights: they are NOT predictions."""
        return self.weights == "random"


@dataclass(frozen=True)
class Summary:
    mean: float
    p50: float
    max: float


@dataclass(frozen=True)
class StatsMessage:
    topic: ClassVar[str] = "stats"
    session: int
    seq: int
    stream: str
    t_publish_ns: int
    t_wall_ns: int
    weights: str
    window_s: float  # seconds these rates and summaries cover
    fps: float  # frames published per second over the window
    frame_count: int  # frames published since the publisher started
    dropped_frames: int  # frames the pipeline skipped since start (gaps in frame index)
    latency_ms: Summary | None  # capture -> publish over the window; None when no frame
    stage_ms: dict[str, Summary]
    published: int  # messages handed to the socket since start, all topics
    publish_dropped: int  # messages the publisher dropped (queue full) since start
    extra: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # "live" | "stalled" | "reconnecting" | "ended"; None: not known
    final: bool = False  # the publisher's last message: it is shutting down


@dataclass(frozen=True)
class FrameMessage:
    topic: ClassVar[str] = "frames"
    session: int
    seq: int
    stream: str
    frame: int
    t_capture_ns: int
    t_publish_ns: int
    t_wall_ns: int
    image_size: tuple[int, int]  # (W, H) of the original frame: the boxes' pixel space
    jpeg_size: tuple[int, int]  # (w, h) of the JPEG
    jpeg: bytes = b""

    def image(self) -> np.ndarray:
        """Decoded BGR image; ProtocolError when the bytes are not a JPEG of ``jpeg_size``."""
        import cv2

        img = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR) if self.jpeg else None
        if img is None or (img.shape[1], img.shape[0]) != tuple(self.jpeg_size):
            got = None if img is None else (img.shape[1], img.shape[0])
            raise ProtocolError(f"frames: JPEG does not decode to {tuple(self.jpeg_size)} (got {got})")
        return img


Message = Union[ActionsMessage, StatsMessage, FrameMessage]


# ---------------------------------------------------------------------------------------------
# Building messages from pipeline records (pure: the caller passes times and counters)


def weights_of(result: FrameResult) -> str:
    if result.actions is None:
        return "none"
    return "random" if result.actions.random_weights else "official"


def actions_message(result: FrameResult, *, session: int, seq: int, t_publish_ns: int, t_wall_ns: int,
                    top_k: int = 5, full_scores: bool = True) -> ActionsMessage:
    """The ``actions`` message of one processed frame.

    Predictions are attached to the track with the same id; a prediction whose
    track is not in ``result.tracks`` has no box to attach to and is left out.
    """
    tracks, acts = result.tracks, result.actions
    rows, best, best_scores = _best_classes(acts, top_k)
    top: list[tuple[ActionScore, ...]] = []
    if rows:
        ids, names = acts.class_ids, acts.class_names
        top = [tuple(ActionScore(int(ids[c]), names[c], s) for c, s in zip(cols, scores))
               for cols, scores in zip(best, best_scores)]
    cam_t = tracks.cam_t
    app_age = result.appearance.age_of() if result.appearance is not None else {}
    out = []
    for i in range(len(tracks)):
        tid = int(tracks.track_id[i])
        action = None
        j = rows.get(tid)
        if j is not None:
            action = TrackAction(
                frame=int(acts.frame_index[j]), top=top[j],
                scores=tuple(acts.scores[j].tolist()) if full_scores else None)
        out.append(TrackPrediction(
            id=tid, box=tuple(tracks.xyxy[i].tolist()),
            cam_t=None if cam_t is None else tuple(cam_t[i].astype(np.float32).tolist()),
            state=TRACK_STATES.get(int(tracks.state[i]), "tentative"),
            age=int(tracks.age[i]), hits=int(tracks.hits[i]),
            time_since_update=int(tracks.time_since_update[i]), action=action, appearance_age=app_age.get(tid)))
    frame = result.frame
    return ActionsMessage(
        session=session, seq=seq, stream=str(frame.stream_id), frame=int(frame.index),
        t_capture_ns=seconds_to_ns(frame.t_capture), t_publish_ns=t_publish_ns, t_wall_ns=t_wall_ns,
        image_size=frame.size, weights=weights_of(result),
        class_ids=tuple(int(c) for c in acts.class_ids) if acts is not None else (),
        class_names=tuple(acts.class_names) if acts is not None else (),
        stage_ms={str(k): float(v) for k, v in result.stage_ms.items()}, tracks=tuple(out))


def _best_classes(acts: ActionPredictions | None, top_k: int) -> tuple[dict[int, int], list[list[int]], list[list[float]]]:
    """({track id: row}, per row the top_k class columns best first, their scores): the order of
    ActionPredictions.top_k (stable), for all rows at once. Empty without predictions."""
    if acts is None or not len(acts):
        return {}, [], []
    best = np.argsort(-acts.scores, axis=1, kind="stable")[:, :top_k]
    return ({t: i for i, t in enumerate(acts.track_id.tolist())}, best.tolist(),
            np.take_along_axis(acts.scores, best, axis=1).tolist())


def actions_wire(result: FrameResult, *, session: int, seq: int, t_publish_ns: int, t_wall_ns: int,
                 top_k: int = 5, full_scores: bool = True) -> dict[str, Any]:
    """``to_wire(actions_message(...))`` built straight from the records, whole columns at a time: the
    same map (and bytes once packed) without the typed message objects. The publisher's per-frame path."""
    tracks, acts, frame = result.tracks, result.actions, result.frame
    rows, best, best_scores = _best_classes(acts, top_k)
    actions: list[dict | None] = []
    if rows:
        ids, names = [int(c) for c in acts.class_ids], acts.class_names
        frames = acts.frame_index.tolist()
        scores = acts.scores.tolist() if full_scores else None
        actions = [{"frame": int(frames[j]), "top": [[ids[c], names[c], sc] for c, sc in zip(best[j], best_scores[j])],
                    "scores": None if scores is None else scores[j]} for j in range(len(frames))]
    app_age = result.appearance.age_of() if result.appearance is not None else {}
    cam_t = None if tracks.cam_t is None else tracks.cam_t.astype(np.float32).tolist()
    out = []
    for i, (tid, box, state, age, hits, tsu) in enumerate(zip(
            tracks.track_id.tolist(), tracks.xyxy.tolist(), tracks.state.tolist(), tracks.age.tolist(),
            tracks.hits.tolist(), tracks.time_since_update.tolist())):
        j = rows.get(tid)
        out.append({"id": tid, "box": box, "cam_t": None if cam_t is None else cam_t[i],
                    "state": TRACK_STATES.get(state, "tentative"), "age": age, "hits": hits,
                    "time_since_update": tsu, "action": None if j is None else actions[j],
                    "appearance_age": app_age.get(tid)})
    weights = weights_of(result)
    return {"v": SCHEMA_VERSION, "session": session, "seq": seq, "stream": str(frame.stream_id),
            "frame": int(frame.index), "t_capture_ns": seconds_to_ns(frame.t_capture), "t_publish_ns": t_publish_ns,
            "t_wall_ns": t_wall_ns, "image_size": list(frame.size), "weights": weights,
            "classes": None if weights == "none" else {"ids": [int(c) for c in acts.class_ids],
                                                       "names": list(acts.class_names)},
            "stage_ms": {str(k): float(v) for k, v in result.stage_ms.items()}, "tracks": out}


def seconds_to_ns(t: float) -> int:
    return int(round(t * 1e9))


# ---------------------------------------------------------------------------------------------
# Encoding


def _pack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_single_float=True, use_bin_type=True)


def _summary_wire(s: Summary) -> dict:
    return {"mean": s.mean, "p50": s.p50, "max": s.max}


def to_wire(msg: Message) -> dict[str, Any]:
    """The payload map of a message, exactly as it travels (JSON-compatible, no JPEG bytes)."""
    if isinstance(msg, ActionsMessage):
        return {
            "v": SCHEMA_VERSION, "session": msg.session, "seq": msg.seq, "stream": msg.stream,
            "frame": msg.frame, "t_capture_ns": msg.t_capture_ns, "t_publish_ns": msg.t_publish_ns,
            "t_wall_ns": msg.t_wall_ns, "image_size": list(msg.image_size), "weights": msg.weights,
            "classes": None if msg.weights == "none" else {"ids": list(msg.class_ids),
                                                           "names": list(msg.class_names)},
            "stage_ms": dict(msg.stage_ms),
            "tracks": [{
                "id": t.id, "box": list(t.box), "cam_t": None if t.cam_t is None else list(t.cam_t),
                "state": t.state, "age": t.age, "hits": t.hits, "time_since_update": t.time_since_update,
                "action": None if t.action is None else {
                    "frame": t.action.frame,
                    "top": [[a.class_id, a.name, a.score] for a in t.action.top],
                    "scores": None if t.action.scores is None else list(t.action.scores)},
                "appearance_age": t.appearance_age,
            } for t in msg.tracks],
        }
    if isinstance(msg, StatsMessage):
        return {
            "v": SCHEMA_VERSION, "session": msg.session, "seq": msg.seq, "stream": msg.stream,
            "t_publish_ns": msg.t_publish_ns, "t_wall_ns": msg.t_wall_ns, "weights": msg.weights,
            "window_s": msg.window_s, "fps": msg.fps, "frame_count": msg.frame_count,
            "dropped_frames": msg.dropped_frames,
            "latency_ms": None if msg.latency_ms is None else _summary_wire(msg.latency_ms),
            "stage_ms": {k: _summary_wire(v) for k, v in msg.stage_ms.items()},
            "published": msg.published, "publish_dropped": msg.publish_dropped, "extra": dict(msg.extra),
            "source": msg.source, "final": msg.final,
        }
    if isinstance(msg, FrameMessage):
        return {
            "v": SCHEMA_VERSION, "session": msg.session, "seq": msg.seq, "stream": msg.stream,
            "frame": msg.frame, "t_capture_ns": msg.t_capture_ns, "t_publish_ns": msg.t_publish_ns,
            "t_wall_ns": msg.t_wall_ns, "image_size": list(msg.image_size), "jpeg_size": list(msg.jpeg_size),
        }
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


def topic_of(topic: str, stream: str) -> bytes:
    """The wire topic of a message: ``actions/<stream>``, ``frames/<stream>``, ``stats``."""
    return f"{topic}/{stream}".encode() if topic in STREAM_TOPICS else topic.encode()


def split_topic(topic: str) -> tuple[str, str | None]:
    """"actions/cam1" -> ("actions", "cam1"); "stats" -> ("stats", None)."""
    base, sep, stream = topic.partition("/")
    return base, (stream if sep else None)


def encode_actions(msg: ActionsMessage) -> list[bytes]:
    return [topic_of("actions", msg.stream), _pack(to_wire(msg))]


def encode_actions_wire(wire: dict[str, Any]) -> list[bytes]:
    """``encode_actions`` of a message given as its wire map (``actions_wire``)."""
    return [topic_of("actions", wire["stream"]), _pack(wire)]


def encode_stats(msg: StatsMessage) -> list[bytes]:
    return [b"stats", _pack(to_wire(msg))]


def encode_frame(msg: FrameMessage) -> list[bytes]:
    return [topic_of("frames", msg.stream), _pack(to_wire(msg)), bytes(msg.jpeg)]


def encode(msg: Message) -> list[bytes]:
    """Multipart frames of any message."""
    if isinstance(msg, ActionsMessage):
        return encode_actions(msg)
    if isinstance(msg, StatsMessage):
        return encode_stats(msg)
    if isinstance(msg, FrameMessage):
        return encode_frame(msg)
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


# ---------------------------------------------------------------------------------------------
# Decoding: strict, every check names the offending field. Anything it accepts also
# validates against protocol_schema.json (tests/test_protocol.py checks this by fuzzing).


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fields(obj: Any, path: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{path}: expected a map, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ProtocolError(f"{path}: missing field(s) {', '.join(missing)}")
    extra = [str(k) for k in obj if k not in required and k not in optional]
    if extra:
        raise ProtocolError(f"{path}: unexpected field(s) {', '.join(sorted(extra))}")
    return obj


def _bounds(minimum: float | None, maximum: float | None) -> str:
    return "".join(f" {op} {b}" for op, b in ((">=", minimum), ("<=", maximum)) if b is not None)


def _int(obj: Any, path: str, minimum: int | None = 0, maximum: int | None = None) -> int:
    if not _is_int(obj) or (minimum is not None and obj < minimum) or (maximum is not None and obj > maximum):
        raise ProtocolError(f"{path}: expected an integer{_bounds(minimum, maximum)}, got {_show(obj)}")
    return int(obj)


def _num(obj: Any, path: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number within the bounds (NaN and infinities never pass)."""
    if (not _is_num(obj) or not math.isfinite(obj) or (minimum is not None and not obj >= minimum)
            or (maximum is not None and not obj <= maximum)):
        raise ProtocolError(f"{path}: expected a finite number{_bounds(minimum, maximum)}, got {_show(obj)}")
    return float(obj)


def _str(obj: Any, path: str, choices: Sequence[str] | None = None) -> str:
    if not isinstance(obj, str) or (choices is not None and obj not in choices):
        want = "a string" if choices is None else "one of " + "|".join(choices)
        raise ProtocolError(f"{path}: expected {want}, got {_show(obj)}")
    return obj


def _list(obj: Any, path: str, length: int | None = None) -> list:
    if not isinstance(obj, list) or (length is not None and len(obj) != length):
        want = "an array" if length is None else f"an array of {length}"
        got = f"{len(obj)} items" if isinstance(obj, list) else _show(obj)
        raise ProtocolError(f"{path}: expected {want}, got {got}")
    return obj


def _nums(obj: Any, path: str, length: int | None = None, *, minimum: float = -math.inf,
          maximum: float = math.inf) -> tuple[float, ...]:
    """Finite numbers within the bounds (a NaN fails every comparison, so it takes the slow path)."""
    items = _list(obj, path, length)
    # Fast path, all in C: floats only; a NaN or an infinity makes the sum non-finite.
    if not items or (set(map(type, items)) == {float} and math.isfinite(sum(items))
                     and minimum <= min(items) and max(items) <= maximum):
        return tuple(items)
    lo, hi = (None if math.isinf(b) else b for b in (minimum, maximum))
    return tuple(_num(x, f"{path}[{i}]", lo, hi) for i, x in enumerate(items))


def _ints(obj: Any, path: str, length: int | None = None, minimum: int | None = 0) -> tuple[int, ...]:
    items = _list(obj, path, length)
    if minimum == 0 and all(type(x) is int and x >= 0 for x in items):  # fast path
        return tuple(items)
    return tuple(_int(x, f"{path}[{i}]", minimum) for i, x in enumerate(_list(obj, path, length)))


def _show(obj: Any) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _check_version(d: Any, topic: str) -> None:
    if isinstance(d, dict) and "v" in d and (type(d["v"]) is not int or d["v"] != SCHEMA_VERSION):
        raise ProtocolError(f"{topic}: schema version {repr(d['v'])[:20]}, this client understands "
                            f"version {SCHEMA_VERSION} (upgrade the side that is older)")


_ACTIONS_FIELDS = ("v", "session", "seq", "stream", "frame", "t_capture_ns", "t_publish_ns", "t_wall_ns",
                   "image_size", "weights", "classes", "stage_ms", "tracks")
_TRACK_FIELDS = ("id", "box", "cam_t", "state", "age", "hits", "time_since_update", "action")
_STATS_FIELDS = ("v", "session", "seq", "stream", "t_publish_ns", "t_wall_ns", "weights", "window_s", "fps",
                 "frame_count", "dropped_frames", "latency_ms", "stage_ms", "published", "publish_dropped",
                 "extra", "source", "final")
_FRAME_FIELDS = ("v", "session", "seq", "stream", "frame", "t_capture_ns", "t_publish_ns", "t_wall_ns",
                 "image_size", "jpeg_size")


def _num_map(obj: Any, path: str, minimum: float | None = None) -> dict[str, float]:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{path}: expected a map, got {_show(obj)}")
    return {_str(k, f"{path} key"): _num(v, f"{path}.{k}", minimum) for k, v in obj.items()}


def _summary(obj: Any, path: str) -> Summary:
    d = _fields(obj, path, ("mean", "p50", "max"))
    return Summary(*(_num(d[k], f"{path}.{k}", 0.0) for k in ("mean", "p50", "max")))


def _session(obj: Any, path: str) -> int:
    return _int(obj, path, 0, SESSION_MAX)


def _decode_action(obj: Any, path: str, n_classes: int) -> TrackAction:
    d = _fields(obj, path, ("frame", "top", "scores"))
    top = []
    for i, item in enumerate(_list(d["top"], f"{path}.top")):
        if (type(item) is list and len(item) == 3 and type(item[0]) is int and item[0] >= 0
                and type(item[1]) is str and type(item[2]) is float and 0.0 <= item[2] <= 1.0):  # fast path
            top.append(ActionScore(*item))
            continue
        p = f"{path}.top[{i}]"
        item = _list(item, p, 3)
        top.append(ActionScore(_int(item[0], f"{p}[0]"), _str(item[1], f"{p}[1]"),
                               _num(item[2], f"{p}[2]", 0.0, 1.0)))
    scores = None if d["scores"] is None else _nums(d["scores"], f"{path}.scores", minimum=0.0, maximum=1.0)
    if scores is not None and len(scores) != n_classes:
        raise ProtocolError(f"{path}.scores: {len(scores)} scores for {n_classes} classes")
    return TrackAction(_int(d["frame"], f"{path}.frame"), tuple(top), scores)


def _decode_track(obj: Any, path: str, n_classes: int, has_actions: bool) -> TrackPrediction:
    d = _fields(obj, path, _TRACK_FIELDS, ("appearance_age",))
    action = None
    if d["action"] is not None:
        if not has_actions:
            raise ProtocolError(f"{path}.action: scores present but weights is \"none\"")
        action = _decode_action(d["action"], f"{path}.action", n_classes)
    return TrackPrediction(
        id=_int(d["id"], f"{path}.id"), box=_nums(d["box"], f"{path}.box", 4),
        cam_t=None if d["cam_t"] is None else _nums(d["cam_t"], f"{path}.cam_t", 3),
        state=_str(d["state"], f"{path}.state", tuple(TRACK_STATES.values())),
        age=_int(d["age"], f"{path}.age"), hits=_int(d["hits"], f"{path}.hits"),
        time_since_update=_int(d["time_since_update"], f"{path}.time_since_update"), action=action,
        appearance_age=None if d.get("appearance_age") is None else _int(d["appearance_age"], f"{path}.appearance_age"))


def _decode_actions(obj: Any) -> ActionsMessage:
    d = _fields(obj, "actions", _ACTIONS_FIELDS)
    weights = _str(d["weights"], "actions.weights", WEIGHTS)
    if weights == "none":
        if d["classes"] is not None:
            raise ProtocolError("actions.classes: must be null when weights is \"none\"")
        ids, names = (), ()
    else:
        c = _fields(d["classes"], "actions.classes", ("ids", "names"))
        ids = _ints(c["ids"], "actions.classes.ids")
        names = tuple(_str(x, f"actions.classes.names[{i}]") for i, x in
                      enumerate(_list(c["names"], "actions.classes.names")))
        if len(ids) != len(names):
            raise ProtocolError(f"actions.classes: {len(ids)} ids but {len(names)} names")
    tracks = tuple(_decode_track(t, f"actions.tracks[{i}]", len(ids), weights != "none")
                   for i, t in enumerate(_list(d["tracks"], "actions.tracks")))
    return ActionsMessage(
        session=_session(d["session"], "actions.session"), seq=_int(d["seq"], "actions.seq"),
        stream=_str(d["stream"], "actions.stream"), frame=_int(d["frame"], "actions.frame"),
        t_capture_ns=_int(d["t_capture_ns"], "actions.t_capture_ns"),
        t_publish_ns=_int(d["t_publish_ns"], "actions.t_publish_ns"),
        t_wall_ns=_int(d["t_wall_ns"], "actions.t_wall_ns"),
        image_size=_ints(d["image_size"], "actions.image_size", 2), weights=weights,
        class_ids=ids, class_names=names, stage_ms=_num_map(d["stage_ms"], "actions.stage_ms", 0.0),
        tracks=tracks)


def _decode_stats(obj: Any) -> StatsMessage:
    d = _fields(obj, "stats", _STATS_FIELDS)
    if not isinstance(d["stage_ms"], dict):
        raise ProtocolError(f"stats.stage_ms: expected a map, got {_show(d['stage_ms'])}")
    if type(d["final"]) is not bool:
        raise ProtocolError(f"stats.final: expected true or false, got {_show(d['final'])}")
    return StatsMessage(
        session=_session(d["session"], "stats.session"), seq=_int(d["seq"], "stats.seq"),
        stream=_str(d["stream"], "stats.stream"), t_publish_ns=_int(d["t_publish_ns"], "stats.t_publish_ns"),
        t_wall_ns=_int(d["t_wall_ns"], "stats.t_wall_ns"), weights=_str(d["weights"], "stats.weights", WEIGHTS),
        window_s=_num(d["window_s"], "stats.window_s", 0.0), fps=_num(d["fps"], "stats.fps", 0.0),
        frame_count=_int(d["frame_count"], "stats.frame_count"),
        dropped_frames=_int(d["dropped_frames"], "stats.dropped_frames"),
        latency_ms=None if d["latency_ms"] is None else _summary(d["latency_ms"], "stats.latency_ms"),
        stage_ms={_str(k, "stats.stage_ms key"): _summary(v, f"stats.stage_ms.{k}")
                  for k, v in d["stage_ms"].items()},
        published=_int(d["published"], "stats.published"),
        publish_dropped=_int(d["publish_dropped"], "stats.publish_dropped"),
        extra=_num_map(d["extra"], "stats.extra"),
        source=None if d["source"] is None else _str(d["source"], "stats.source", SOURCE_STATES),
        final=d["final"])


def _decode_frame(obj: Any, jpeg: bytes) -> FrameMessage:
    d = _fields(obj, "frames", _FRAME_FIELDS)
    size = _ints(d["jpeg_size"], "frames.jpeg_size", 2, minimum=1)
    if not jpeg.startswith(JPEG_SOI):
        raise ProtocolError(f"frames: third part is not a JPEG (no SOI marker; starts {jpeg[:8]!r})")
    return FrameMessage(
        session=_session(d["session"], "frames.session"), seq=_int(d["seq"], "frames.seq"),
        stream=_str(d["stream"], "frames.stream"), frame=_int(d["frame"], "frames.frame"),
        t_capture_ns=_int(d["t_capture_ns"], "frames.t_capture_ns"),
        t_publish_ns=_int(d["t_publish_ns"], "frames.t_publish_ns"),
        t_wall_ns=_int(d["t_wall_ns"], "frames.t_wall_ns"),
        image_size=_ints(d["image_size"], "frames.image_size", 2), jpeg_size=size, jpeg=jpeg)


def unpack_payload(payload: bytes, topic: str = "payload") -> Any:
    """msgpack -> Python objects, ProtocolError on anything msgpack rejects."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{topic}: payload must be bytes, got {type(payload).__name__}")
    try:
        # raw=False: strings must be UTF-8; limits default to the payload's own length.
        return msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types (ValueError, StackError, ...)
        raise ProtocolError(f"{topic}: payload is not valid msgpack ({type(e).__name__}: {e})") from None


def decode(parts: Sequence[bytes]) -> Message:
    """Typed message from multipart frames; ProtocolError (only) on anything invalid."""
    try:
        parts = [bytes(memoryview(p)) for p in parts]  # bytes, bytearray, zmq.Frame; not ints or str
    except Exception:
        raise ProtocolError("message: expected a sequence of byte frames") from None
    if len(parts) < 2:
        raise ProtocolError(f"message: expected [topic, payload], got {len(parts)} part(s)")
    try:
        topic = parts[0].decode("ascii")
    except UnicodeDecodeError:
        topic = repr(parts[0][:20])
    topic, suffix = split_topic(topic)
    if topic not in TOPICS or (suffix is not None and topic not in STREAM_TOPICS):
        raise ProtocolError(f"message: unknown topic {parts[0][:40]!r} (known: actions/<stream>, stats, "
                            "frames/<stream>)")
    want = 3 if topic == "frames" else 2
    if len(parts) != want:
        raise ProtocolError(f"{topic}: expected {want} parts, got {len(parts)}")
    obj = unpack_payload(parts[1], topic)
    _check_version(obj, topic)
    if topic == "actions":
        msg: Message = _decode_actions(obj)
    elif topic == "stats":
        return _decode_stats(obj)
    else:
        msg = _decode_frame(obj, parts[2])
    if suffix is not None and suffix != msg.stream:  # type: ignore[union-attr]
        raise ProtocolError(f"{topic}: topic names stream {suffix[:40]!r}, payload stream "
                            f"{msg.stream[:40]!r}")  # type: ignore[union-attr]
    return msg


def load_schema() -> dict:
    """The JSON Schema (draft 2020-12) of every payload; ``$defs`` has one entry per topic."""
    text = resources.files("realtime").joinpath("protocol_schema.json").read_text(encoding="utf-8")
    return json.loads(text)

