"""Tiny videos and a fake predictor for the labelling-loop tests (no model needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from thingmask.detections import Detections

H, W = 48, 64


def square_frame(
    i: int, h: int = H, w: int = W, squares: int = 2, hide: bool = False
) -> np.ndarray:
    """Dark frame (brightness drifts with ``i``) with ``squares`` white squares moving right."""
    img = np.full((h, w, 3), 20 + (i * 3) % 60, np.uint8)
    for k in range(squares if not hide else squares - 1):
        x = (4 + 2 * i + 24 * k) % (w - 10)
        y = 6 + 20 * k
        img[y : y + 10, x : x + 10] = 255
    return img


def make_video(
    path: Path,
    n: int = 40,
    rotation: int = 0,
    size: tuple[int, int] = (H, W),
    hidden: tuple[int, ...] = (),
) -> Path:
    """H.264 MP4 of :func:`square_frame` frames at 25 fps; frames in ``hidden`` lose one square
    (a 'missed animal' for the suggest criteria); optional display-matrix rotation."""
    h, w = size
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = Fraction(1, 25)
        if rotation:
            v.set_display_rotation(rotation)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(square_frame(i, h, w, hide=i in hidden), format="bgr24")
            f.pts, f.time_base = i, Fraction(1, 25)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    return path


class BrightPredictor:
    """A stand-in model: every bright blob (> 200 grey) is a ``cat`` with score 0.9, blobs
    wider than tall (rotated frames) are ``bird``. Holes and parts come through as they are."""

    class_names = ("cat", "bird")

    def __init__(self, score: float = 0.9) -> None:
        self.score = score
        self.calls = 0

    def __call__(self, frame_bgr: np.ndarray) -> Detections:
        self.calls += 1
        grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        n, labels, stats, _ = cv2.connectedComponentsWithStats((grey > 200).astype(np.uint8))
        masks, boxes, names = [], [], []
        for k in range(1, n):
            x, y, w, h, area = stats[k]
            if area < 6:
                continue
            masks.append(labels == k)
            boxes.append([x, y, x + w, y + h])
            names.append("bird" if w > 2 * h else "cat")
        if not masks:
            return Detections.empty(*grey.shape)
        return Detections(
            masks=np.stack(masks),
            boxes=np.asarray(boxes, np.float32),
            class_names=np.asarray(names, object),
            scores=np.full(len(masks), self.score, np.float32),
        )
