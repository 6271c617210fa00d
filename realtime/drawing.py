"""Drawing predictions on frames: one module for the annotated-video sink and `lart-stream view`."""

from __future__ import annotations

import numpy as np

from lart_stream.realtime.protocol import ActionsMessage, FrameMessage

RANDOM_BANNER = "RANDOM WEIGHTS - scores are NOT predictions"


def _color(track_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(track_id)
    return tuple(int(c) for c in rng.integers(64, 256, 3))


COASTING_COLOR = (160, 160, 160)  # BGR grey: a track not detected in this frame


def _dashed_rectangle(image: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color: tuple[int, int, int],
                      dash: int = 8) -> None:
    """A thin dashed box: the track's last known box, not a detection."""
    import cv2

    (x1, y1), (x2, y2) = p1, p2
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        for s in range(min(a, b), max(a, b), 2 * dash):
            e = min(s + dash, max(a, b))
            pts = ((s, fixed), (e, fixed)) if horizontal else ((fixed, s), (fixed, e))
            cv2.line(image, pts[0], pts[1], color, 1)


def draw(image: np.ndarray, frame: FrameMessage, actions: ActionsMessage | None, top_k: int = 3) -> np.ndarray:
    """Boxes, track ids and top actions of ``actions`` drawn on the JPEG image (in place)."""
    import cv2

    sx = frame.jpeg_size[0] / max(1, frame.image_size[0])
    sy = frame.jpeg_size[1] / max(1, frame.image_size[1])
    font = cv2.FONT_HERSHEY_SIMPLEX
    if actions is not None:
        for t in actions.tracks:
            x1, y1, x2, y2 = (int(round(v)) for v in (t.box[0] * sx, t.box[1] * sy, t.box[2] * sx, t.box[3] * sy))
            color = _color(t.id)
            if t.time_since_update == 0:
                cv2.rectangle(image, (x1, y1), (x2, y2), color, 2)
                lines = [f"#{t.id}"]
            else:  # coasting: where it was last seen, marked as such
                color = COASTING_COLOR
                _dashed_rectangle(image, (x1, y1), (x2, y2), color)
                lines = [f"#{t.id} lost {t.time_since_update}f"]
            if t.action is not None:
                prefix = "random " if actions.random_weights else ""
                lines += [f"{prefix}{a.name} {a.score:.2f}" for a in t.action.top[:top_k]]
            top = y1 - 6 - 14 * (len(lines) - 1)  # label block above the box, inside when no room
            top = top if top >= 12 else y1 + 14
            for i, text in enumerate(lines):
                y = top + 14 * i
                cv2.putText(image, text, (x1 + 2, y), font, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(image, text, (x1 + 2, y), font, 0.45, color, 1, cv2.LINE_AA)
    banner = None
    if actions is not None and actions.random_weights:
        banner = (RANDOM_BANNER, (0, 0, 255))
    elif actions is not None and actions.weights == "none":
        banner = ("no action model: tracks only", (128, 128, 128))
    elif actions is None:
        banner = ("no predictions for this frame", (128, 128, 128))
    if banner is not None:
        cv2.rectangle(image, (0, 0), (image.shape[1], 24), banner[1], -1)
        cv2.putText(image, banner[0], (6, 17), font, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(image, f"frame {frame.frame}", (6, image.shape[0] - 8), font, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return image
