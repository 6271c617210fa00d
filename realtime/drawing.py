"""Drawing predictions on frames: one module for the annotated-video sink and `lart-stream view`.

Labels are boxes of text on a solid background, placed greedily so they never cover each other
and never leave the frame: each label tries spots around its person's box (above, inside the top,
below, beside) clamped into the frame, and takes the first that overlaps no label placed before
it (else the least overlapping). Tracks that were not detected in this frame (coasting on their
last box) are drawn dashed and grey, labelled "lost".

Why not supervision's LabelAnnotator (smart_position does the same greedy nudging): supervision
0.31 installs and imports cleanly beside opencv-python 4.x, but it depends on PyAV (about 100 MB
with its own FFmpeg), matplotlib, requests, tqdm and pydeprecate, adds ~0.85 s to start-up, and has
no dashed or "lost" style for coasting boxes; this is ~150 lines on OpenCV alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lart_stream.realtime.protocol import ActionsMessage, FrameMessage

RANDOM_BANNER = "RANDOM WEIGHTS - scores are NOT predictions"
LOST_COLOR = (150, 150, 150)  # BGR grey: coasting tracks


def _color(track_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(track_id)
    return tuple(int(c) for c in rng.integers(64, 256, 3))


def _short(action: str) -> str:
    """An AVA name without its parenthesised examples: "open (e.g., a window, a car door)" -> "open"."""
    return action.split(" (", 1)[0]


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


@dataclass(frozen=True)
class Font:
    """Hershey text scaled to the frame: about 2.7% of its height per line, readable from 360p to 4K."""

    scale: float
    thickness: int
    line: int  # pixels per text line
    pad: int

    @classmethod
    def for_height(cls, height: int) -> "Font":
        scale = float(np.clip(height / 1350.0, 0.38, 1.1))
        return cls(scale, 1 if scale < 0.75 else 2, int(round(30 * scale)) + 3, max(2, int(round(5 * scale))))


def _rect_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


def place_labels(boxes: list[tuple[int, int, int, int]], sizes: list[tuple[int, int]],
                 frame_size: tuple[int, int], top: int = 0) -> list[tuple[int, int, int, int]]:
    """Label rectangles (x1, y1, x2, y2), one per box, each of its ``sizes`` (w, h), inside the frame
    (below ``top``, e.g. a banner) and not overlapping each other where the frame leaves room.

    Greedy, in the order given: the first candidate spot around the box that overlaps no label
    placed so far, else the one that overlaps least.
    """
    width, height = frame_size
    placed: list[tuple[int, int, int, int]] = []
    for (x1, y1, x2, y2), (w, h) in zip(boxes, sizes):
        w, h = min(w, width), min(h, max(1, height - top))
        spots = [(x1, y1 - h), (x1, y1), (x1, y2), (x2 - w, y1 - h), (x2, y1), (x1 - w, y1), (x2 - w, y2),
                 (x1, (y1 + y2 - h) // 2)]
        best, best_cost = None, None
        for sx, sy in spots:
            sx = int(np.clip(sx, 0, width - w))
            sy = int(np.clip(sy, top, max(top, height - h)))
            rect = (sx, sy, sx + w, sy + h)
            cost = sum(_rect_overlap(rect, other) for other in placed)
            if best_cost is None or cost < best_cost:
                best, best_cost = rect, cost
            if cost == 0:
                break
        if best_cost:  # crowded: slide down (then up) past the labels it covers, still inside the frame
            best = _slide_free(best, placed, top, height) or best
        placed.append(best)
    return placed


def _slide_free(rect, placed, top: int, height: int):
    x1, _, x2, _ = rect
    h = rect[3] - rect[1]
    edges = sorted({r[3] for r in placed} | {r[1] - h for r in placed})
    for y in sorted(edges, key=lambda y: abs(y - rect[1])):
        if top <= y <= height - h:
            cand = (x1, y, x2, y + h)
            if all(_rect_overlap(cand, other) == 0 for other in placed):
                return cand
    return None


def _dashed_rectangle(image: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color, thickness: int,
                      dash: int = 8) -> None:
    import cv2

    (x1, y1), (x2, y2) = p1, p2
    for a, b in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = int(np.hypot(b[0] - a[0], b[1] - a[1]))
        for s in range(0, max(length, 1), 2 * dash):
            e = min(s + dash, length)
            t0, t1 = s / max(length, 1), e / max(length, 1)
            cv2.line(image, (int(a[0] + (b[0] - a[0]) * t0), int(a[1] + (b[1] - a[1]) * t0)),
                     (int(a[0] + (b[0] - a[0]) * t1), int(a[1] + (b[1] - a[1]) * t1)), color, thickness, cv2.LINE_AA)


def _label_block(image: np.ndarray, rect: tuple[int, int, int, int], lines: list[str], background, font: Font) -> None:
    import cv2

    x1, y1, x2, y2 = rect
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), background, -1)
    ink = _text_color(background)
    for i, text in enumerate(lines):
        baseline_y = y1 + font.pad + (i + 1) * font.line - font.line // 4
        cv2.putText(image, text, (x1 + font.pad, baseline_y), cv2.FONT_HERSHEY_SIMPLEX, font.scale, ink,
                    font.thickness, cv2.LINE_AA)


def _block_size(lines: list[str], font: Font) -> tuple[int, int]:
    import cv2

    w = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, font.scale, font.thickness)[0][0] for t in lines)
    return w + 2 * font.pad, len(lines) * font.line + 2 * font.pad


def draw(image: np.ndarray, frame: FrameMessage, actions: ActionsMessage | None, top_k: int = 3) -> np.ndarray:
    """Boxes, track ids and top actions of ``actions`` drawn on the image (in place)."""
    import cv2

    height, width = image.shape[:2]
    font = Font.for_height(height)
    sx = frame.jpeg_size[0] / max(1, frame.image_size[0])
    sy = frame.jpeg_size[1] / max(1, frame.image_size[1])
    banner = None
    if actions is not None and actions.random_weights:
        banner = (RANDOM_BANNER, (0, 0, 255))
    elif actions is not None and actions.weights == "none":
        banner = ("no action model: tracks only", (128, 128, 128))
    elif actions is None:
        banner = ("no predictions for this frame", (128, 128, 128))
    banner_h = font.line + 2 * font.pad if banner is not None else 0

    boxes, blocks, colors = [], [], []
    # live tracks first (their labels get the best spots), then top to bottom
    tracks = sorted(actions.tracks if actions is not None else (), key=lambda t: (t.time_since_update > 0, t.box[1]))
    for t in tracks:
        x1, y1, x2, y2 = (int(round(v)) for v in (t.box[0] * sx, t.box[1] * sy, t.box[2] * sx, t.box[3] * sy))
        lost = t.time_since_update > 0
        color = LOST_COLOR if lost else _color(t.id)
        if lost:
            _dashed_rectangle(image, (x1, y1), (x2, y2), color, 1)
            lines = [f"#{t.id} lost {t.time_since_update}f"]
        else:
            cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
            lines = [f"#{t.id}"]
            if t.action is not None:
                lines += [f"{_short(a.name)} {a.score:.2f}" for a in t.action.top[:top_k]]
        boxes.append((x1, y1, x2, y2))
        blocks.append(lines)
        colors.append(color)
    rects = place_labels(boxes, [_block_size(lines, font) for lines in blocks], (width, height), top=banner_h)
    for rect, lines, color in zip(rects, blocks, colors):
        _label_block(image, rect, lines, color, font)

    if banner is not None:
        _label_block(image, (0, 0, width, banner_h), [banner[0]], banner[1], font)
    footer = [f"frame {frame.frame}"]
    fw, fh = _block_size(footer, font)
    _label_block(image, (0, height - fh, min(fw, width), height), footer, (0, 0, 0), font)
    return image
