"""Wire protocol: hand-checked encoding, schema agreement, strict decoding, fuzzed bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from lart_stream.realtime import protocol
from lart_stream.realtime.protocol import (ActionScore, ActionsMessage, FrameMessage, ProtocolError, StatsMessage, Summary,
                               decode, encode)
from lart_stream.realtime.records import (ActionPredictions, Detections, Frame, FrameResult, People, Tracks, TrackState)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def hand_result(actions: bool = True, random_weights: bool = False) -> FrameResult:
    """Two tracks (7 and 9) on a 640x480 frame; scores for track 9 only, 3 classes."""
    frame = Frame(index=42, t_capture=1.5, image=np.zeros((480, 640, 3), np.uint8), stream_id="cam1")
    tracks = Tracks(track_id=[7, 9], xyxy=[[10, 20, 110, 220], [300.5, 40.25, 380, 200]],
                    state=[TrackState.TENTATIVE, TrackState.CONFIRMED], age=[3, 50], hits=[2, 48],
                    time_since_update=[1, 0], person_index=[-1, 0],
                    cam_t=np.array([[0.1, 0.2, 5.0], [-0.5, 0.25, 8.0]], np.float32))
    preds = None
    if actions:
        # Ties on purpose: the order must be stable like ActionPredictions.top_k.
        preds = ActionPredictions(track_id=[9], frame_index=[41], scores=[[0.25, 0.75, 0.25]],
                                  class_ids=(11, 12, 14), class_names=("sit", "stand", "walk"),
                                  random_weights=random_weights)
    return FrameResult(frame, Detections.empty(), People.empty((640, 480)), tracks, preds,
                       {"detect": 12.5, "track": 1.0}, t_done=1.6)


def hand_actions(**kw) -> ActionsMessage:
    return protocol.actions_message(hand_result(**kw), session=5, seq=3, t_publish_ns=1_700_000_000,
                                    t_wall_ns=123, top_k=2)


def stats_message(latency: bool = True) -> StatsMessage:
    return StatsMessage(session=5, seq=0, stream="cam1", t_publish_ns=10, t_wall_ns=20, weights="random",
                        window_s=1.0, fps=29.5, frame_count=300, dropped_frames=2,
                        latency_ms=Summary(40.0, 38.5, 90.0) if latency else None,
                        stage_ms={"detect": Summary(12.0, 11.5, 20.0)}, published=310, publish_dropped=1,
                        extra={"tracks": 3.0}, source="live" if latency else "stalled", final=not latency)


def frame_message() -> FrameMessage:
    image = np.full((48, 64, 3), 128, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    return FrameMessage(session=5, seq=2, stream="cam1", frame=42, t_capture_ns=1, t_publish_ns=2, t_wall_ns=3,
                        image_size=(640, 480), jpeg_size=(64, 48), jpeg=jpeg.tobytes())


def all_messages() -> list:
    return [hand_actions(), hand_actions(random_weights=True), hand_actions(actions=False), stats_message(),
            stats_message(latency=False), frame_message()]


@pytest.fixture(scope="module")
def schema() -> dict:
    s = protocol.load_schema()
    Draft202012Validator.check_schema(s)
    return s


def topic_validator(schema: dict, topic: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{topic}", "$defs": schema["$defs"]})


def payload(parts: list[bytes]) -> dict:
    return msgpack.unpackb(parts[1], raw=False)


# --- encoding, by hand --------------------------------------------------------------------------


def test_actions_message_hand_values():
    m = hand_actions()
    assert (m.stream, m.frame, m.seq, m.session) == ("cam1", 42, 3, 5)
    assert m.t_capture_ns == 1_500_000_000 and m.t_publish_ns == 1_700_000_000
    assert m.image_size == (640, 480) and m.weights == "official" and not m.random_weights
    assert m.class_ids == (11, 12, 14) and m.class_names == ("sit", "stand", "walk")
    t7, t9 = m.tracks
    assert (t7.id, t7.state, t7.age, t7.hits, t7.time_since_update, t7.action) == (7, "tentative", 3, 2, 1, None)
    assert t9.box == (300.5, 40.25, 380.0, 200.0) and t9.state == "confirmed"
    assert t9.cam_t == pytest.approx((-0.5, 0.25, 8.0))
    assert t9.action.frame == 41  # the frame the scores refer to, not the message's frame
    assert t9.action.top == (ActionScore(12, "stand", 0.75), ActionScore(11, "sit", 0.25))
    assert t9.action.scores == (0.25, 0.75, 0.25)
    ref = hand_result().actions.top_k(2)[0]
    assert [(a.class_id, a.name, a.score) for a in t9.action.top] == ref


def test_weights_field_says_where_scores_come_from():
    assert hand_actions(random_weights=True).weights == "random"
    assert hand_actions(random_weights=True).random_weights
    none = hand_actions(actions=False)
    assert none.weights == "none" and all(t.action is None for t in none.tracks)
    assert payload(encode(none))["classes"] is None


def test_top_k_only_leaves_scores_out():
    m = protocol.actions_message(hand_result(), session=1, seq=0, t_publish_ns=0, t_wall_ns=0, top_k=1,
                                 full_scores=False)
    assert m.tracks[1].action.scores is None and len(m.tracks[1].action.top) == 1
    assert decode(encode(m)) == m


def test_prediction_without_its_track_is_left_out():
    r = hand_result()
    r.actions = ActionPredictions(track_id=[9, 99], frame_index=[42, 42], scores=[[0.1, 0.2, 0.3]] * 2,
                                  class_ids=(11, 12, 14), class_names=("sit", "stand", "walk"), random_weights=False)
    m = protocol.actions_message(r, session=1, seq=0, t_publish_ns=0, t_wall_ns=0)
    assert [t.id for t in m.tracks] == [7, 9] and m.tracks[1].action is not None


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    parts = encode(msg)
    assert parts[0] == protocol.topic_of(msg.topic, msg.stream) and len(parts) == (3 if msg.topic == "frames" else 2)
    assert decode(parts) == msg


def test_floats_travel_as_float32_and_times_as_integers():
    raw = encode(stats_message())[1]
    assert b"\xcb" not in raw  # msgpack float64 marker: every float is float32 (0xca)
    m = decode(encode(hand_actions()))
    assert isinstance(m.t_capture_ns, int) and m.t_capture_ns == 1_500_000_000


def test_frame_message_image_and_bad_jpeg():
    m = frame_message()
    assert m.image().shape == (48, 64, 3) and abs(int(m.image()[10, 10, 0]) - 128) <= 2
    bad = FrameMessage(**{**m.__dict__, "jpeg": b"\xff\xd8 not a jpeg"})
    with pytest.raises(ProtocolError, match="JPEG"):
        bad.image()


# --- schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_every_message_validates_against_schema(schema, msg):
    parts = encode(msg)
    body = payload(parts)
    topic_validator(schema, msg.topic).validate(body)
    Draft202012Validator(schema).validate(body)  # the top-level oneOf picks exactly one topic
    assert body == json.loads(json.dumps(protocol.to_wire(msg)))  # wire map == JSON view


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.pop("frame"), "frame"),
    (lambda d: d.update(v=2), "v"),
    (lambda d: d.update(v=1), "v"),
    (lambda d: d.update(v=True), "v"),
    (lambda d: d.update(session=2 ** 32), "session"),
    (lambda d: d["tracks"][1]["action"]["top"][0].__setitem__(2, 1.5), "top"),
    (lambda d: d["tracks"][1]["action"]["top"][0].__setitem__(2, -0.25), "top"),
    (lambda d: d["tracks"][1]["action"]["top"][0].__setitem__(2, float("inf")), "top"),
    (lambda d: d["tracks"][1]["action"]["scores"].__setitem__(0, 1.0001), "scores"),
    (lambda d: d["tracks"][1]["action"]["scores"].__setitem__(0, -1e-3), "scores"),
    (lambda d: d["stage_ms"].update(detect=-1.0), "stage_ms"),
    (lambda d: d["tracks"][1].update(appearance_age=-1), "appearance_age"),
    (lambda d: d.update(extra_field=1), "extra_field"),
    (lambda d: d["tracks"][1].update(box=[1.0, 2.0, 3.0]), "box"),
    (lambda d: d["tracks"][1].update(state="lost"), "state"),
    (lambda d: d["tracks"][1]["action"].update(top=[[12, "stand"]]), "top"),
    (lambda d: d.update(weights="fake"), "weights"),
    (lambda d: d.update(frame=-1), "frame"),
])
def test_schema_and_decoder_both_reject(schema, mutate, where):
    body = payload(encode(hand_actions()))
    mutate(body)
    with pytest.raises(ValidationError):
        topic_validator(schema, "actions").validate(body)
    with pytest.raises(ProtocolError):
        decode([b"actions", msgpack.packb(body)])


def test_docs_describe_every_schema_field(schema):
    docs = DOCS.read_text()
    names = set()

    def walk(node):
        if isinstance(node, dict):
            names.update(node.get("properties", {}).keys())
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert len(names) > 30
    missing = sorted(n for n in names if not re.search(rf"`(\w+\.)?{re.escape(n)}`", docs))
    assert not missing, f"docs/protocol.md does not document: {missing}"


# --- decoding bad input -----------------------------------------------------------------------


def _wire(**changes) -> list[bytes]:
    body = payload(encode(hand_actions()))
    body.update(changes)
    return [b"actions", msgpack.packb(body)]


def _mutated_track(**changes) -> list[bytes]:
    body = payload(encode(hand_actions()))
    body["tracks"][1].update(changes)
    return [b"actions", msgpack.packb(body)]


def _mutated_top(score) -> list[bytes]:
    body = payload(encode(hand_actions()))
    body["tracks"][1]["action"]["top"][0][2] = score
    return [b"actions", msgpack.packb(body)]


def _mutated_scores(score) -> list[bytes]:
    body = payload(encode(hand_actions()))
    body["tracks"][1]["action"]["scores"][0] = score
    return [b"actions", msgpack.packb(body)]


def _stats_wire(**changes) -> list[bytes]:
    body = payload(encode(stats_message()))
    body.update(changes)
    return [b"stats", msgpack.packb(body)]


@pytest.mark.parametrize("parts, message", [
    ([b"actions"], "got 1 part"),
    ([b"nonsense", b"\x80"], "unknown topic"),
    ([b"\xff\xfe", b"\x80"], "unknown topic"),
    ([b"actions", b"\x80", b"extra"], "expected 2 parts"),
    ([b"frames", msgpack.packb({})], "expected 3 parts"),
    ([b"actions", b"\xc1"], "not valid msgpack"),
    ([b"actions", encode(hand_actions())[1][:-5]], "not valid msgpack"),
    ([b"actions", encode(hand_actions())[1] + b"\x00"], "not valid msgpack"),
    ([b"actions", msgpack.packb([1, 2])], "expected a map"),
    (_wire(v=1), "schema version 1"),
    (_wire(v=2), "schema version 2"),
    (_wire(v=4), "schema version 4"),
    (_wire(v=True), "schema version True"),
    (_wire(v=2.0), "schema version 2.0"),
    (_wire(session=2 ** 32), "actions.session: expected an integer >= 0 <= 4294967295"),
    (_wire(stage_ms={"detect": float("nan")}), "actions.stage_ms.detect: expected a finite number"),
    (_wire(stage_ms={"detect": float("inf")}), "actions.stage_ms.detect: expected a finite number"),
    (_mutated_track(box=[float("nan"), 0.0, 1.0, 1.0]), "actions.tracks[1].box[0]: expected a finite number"),
    (_mutated_track(cam_t=[0.0, float("-inf"), 1.0]), "actions.tracks[1].cam_t[1]"),
    (_mutated_top(float("nan")), "top[0][2]: expected a finite number >= 0.0 <= 1.0"),
    (_mutated_top(1.5), "top[0][2]: expected a finite number >= 0.0 <= 1.0"),
    (_mutated_top(-0.5), "top[0][2]"),
    (_mutated_top(True), "top[0][2]"),
    (_mutated_scores(float("nan")), "scores[0]: expected a finite number >= 0.0 <= 1.0"),
    (_mutated_scores(2.0), "scores[0]"),
    (_mutated_scores(-0.0001), "scores[0]"),
    ([b"frames", encode(frame_message())[1], b"GIF89a not a jpeg"], "frames: third part is not a JPEG"),
    ([b"frames", encode(frame_message())[1], b""], "frames: third part is not a JPEG"),
    (_stats_wire(final=1), "stats.final: expected true or false"),
    (_stats_wire(source="paused"), "stats.source"),
    (_stats_wire(fps=float("nan")), "stats.fps"),
    (_stats_wire(latency_ms={"mean": 1.0, "p50": float("nan"), "max": 2.0}), "stats.latency_ms.p50"),
    (_wire(v="1"), "schema version"),
    (_wire(frame=True), "actions.frame: expected an integer"),
    (_wire(frame=1.0), "actions.frame: expected an integer"),
    (_wire(stream=b"cam1"), "actions.stream"),
    (_wire(image_size=[640]), "actions.image_size"),
    (_wire(weights="none"), "classes: must be null"),
    (_wire(classes={"ids": [1, 2], "names": ["a"]}), "2 ids but 1 names"),
    (_wire(classes={"ids": [1], "names": ["a"]}), "3 scores for 1 classes"),
    (_wire(tracks={"id": 1}), "actions.tracks: expected an array"),
    (_wire(unknown=1), "unexpected field"),
])
def test_decode_rejects_with_clear_message(parts, message):
    with pytest.raises(ProtocolError, match=re.escape(message)):
        decode(parts)


def test_decode_rejects_non_bytes():
    with pytest.raises(ProtocolError):
        decode([b"actions", 12])
    with pytest.raises(ProtocolError):
        decode(None)


def test_every_truncation_is_rejected():
    for msg in all_messages()[:4]:
        raw = encode(msg)[1]
        for cut in range(len(raw)):
            with pytest.raises(ProtocolError):
                decode([msg.topic.encode(), raw[:cut]])


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)


def _accepts(parts) -> object | None:
    try:
        return decode(parts)
    except ProtocolError:
        return None  # the only exception decode may raise


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=4),
       st.sampled_from([b"actions", b"stats", b"frames", b"act", b""]))
def test_fuzz_random_frames(parts, topic):
    _accepts([topic, *parts])
    _accepts(parts)


@FUZZ
@given(st.data())
def test_fuzz_byte_flips(schema, data):
    msg = data.draw(st.sampled_from(all_messages()))
    parts = encode(msg)
    raw = bytearray(parts[1])
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decoder_agrees_with_schema(schema, msg.topic, bytes(raw), parts[2:])


# What the decoder rejects beyond the schema: JSON Schema cannot say "finite", does not tell 2.0 from 2,
# and has no cross-field rules. Any other rejection of a schema-valid payload is a disagreement.
DECODER_ONLY = re.compile(r"got float (nan|inf|-inf)\b|expected an integer.* got float|schema version \d+\.0"
                          r"| scores for \d+ classes| ids but \d+ names|must be null when|weights is \"none\"")


def _decoder_agrees_with_schema(schema: dict, topic: str, raw: bytes, rest: list[bytes]) -> None:
    """Decoder and schema agree both ways: what the decoder accepts validates against the schema (so
    what the schema rejects, the decoder rejects), and what the schema accepts, the decoder accepts
    unless a DECODER_ONLY rule applies."""
    try:
        decode([topic.encode(), raw, *rest])
        rejected = None
    except ProtocolError as e:  # the only exception decode may raise
        rejected = str(e)
    try:
        body = msgpack.unpackb(raw, raw=False)
    except Exception:
        assert rejected is not None
        return
    errors = list(topic_validator(schema, topic).iter_errors(body)) if isinstance(body, dict) else ["not a map"]
    if rejected is None:
        assert not errors, f"decoder accepted a payload the schema rejects: {errors[0]}"
    elif not errors:
        assert DECODER_ONLY.search(rejected), f"schema accepts what the decoder rejects: {rejected}"


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(st.data())
def test_fuzz_structural_mutations(schema, data):
    """Replace, delete or add any field anywhere: decode raises ProtocolError or returns a schema-valid message."""
    msg = data.draw(st.sampled_from(all_messages()))
    body = payload(encode(msg))
    path = data.draw(st.sampled_from([p for p in _paths(body) if p]))
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "perturb", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(msgpack_values)
    elif action == "perturb":  # a value of the same kind: reaches the range and length checks
        old = parent[path[-1]]
        kinds = {bool: st.booleans(), int: st.integers(-(2 ** 63), 2 ** 64 - 1), float: st.floats(),
                 str: st.text(max_size=12), list: st.lists(st.sampled_from(old or [0]), max_size=6)}
        parent[path[-1]] = data.draw(kinds.get(type(old), msgpack_values))
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=6))] = data.draw(msgpack_values)
    else:
        parent.append(data.draw(msgpack_values))
    _decoder_agrees_with_schema(schema, msg.topic, msgpack.packb(body, use_bin_type=True), encode(msg)[2:])


# --- the publisher's direct wire builder -----------------------------------------------------------

def random_result(rng: np.random.Generator) -> FrameResult:
    """Any mix the pipeline makes: tracks with and without predictions (and predictions without a
    track), cam_t or not, appearance ages or not, ties in the scores, no action stage, nobody."""
    n = int(rng.integers(0, 6))
    ids = rng.choice(np.arange(1, 40), size=n, replace=False)
    tracks = Tracks(track_id=ids, xyxy=rng.random((n, 4)) * 500, state=rng.integers(1, 4, n), age=rng.integers(1, 99, n),
                    hits=rng.integers(1, 99, n), time_since_update=rng.integers(0, 3, n),
                    person_index=rng.integers(-1, 3, n),
                    cam_t=rng.random((n, 3)).astype(rng.choice([np.float32, np.float64])) if rng.random() < 0.7 else None)
    preds = None
    if rng.random() < 0.8:
        k = int(rng.integers(0, n + 2))
        pred_ids = np.concatenate([ids, [100, 101]])[rng.permutation(n + 2)[:k]]
        scores = (rng.integers(0, 4, (k, 7)) / 4 if rng.random() < 0.5 else rng.random((k, 7))).astype(np.float32)
        preds = ActionPredictions(pred_ids, rng.integers(0, 50, k), scores, tuple(range(10, 17)),
                                  tuple(f"c{i}" for i in range(7)), bool(rng.random() < 0.5))
    appearance = None
    if rng.random() < 0.5:
        from lart_stream.realtime.records import AppearanceFeatures

        valid = rng.random(n) < 0.6
        appearance = AppearanceFeatures(ids, np.zeros((n, 3), np.float32), valid, np.where(valid, rng.integers(0, 6, n), -1))
    frame = Frame(int(rng.integers(0, 1000)), float(rng.random() * 100), np.zeros((48, 64, 3), np.uint8), "cam2")
    return FrameResult(frame, Detections.empty(), People.empty((64, 48)), tracks, preds,
                       {"detect": float(np.float32(rng.random())), "publish": 0.5}, 1.0, appearance)


@pytest.mark.parametrize("top_k,full_scores", [(5, True), (2, False), (0, True), (9, True)])
def test_actions_wire_is_the_typed_message_on_the_wire(top_k, full_scores):
    """The publisher's fast path gives to_wire(actions_message(...)) exactly, and the same bytes."""
    rng = np.random.default_rng(top_k)
    for _ in range(60):
        r = random_result(rng)
        kw = dict(session=7, seq=int(rng.integers(0, 99)), t_publish_ns=11, t_wall_ns=12, top_k=top_k,
                  full_scores=full_scores)
        wire = protocol.actions_wire(r, **kw)
        msg = protocol.actions_message(r, **kw)
        assert wire == protocol.to_wire(msg)
        assert protocol.encode_actions_wire(wire) == protocol.encode_actions(msg)
        assert decode(protocol.encode_actions_wire(wire)) == msg
