"""Instances as windows: each instance's mask and soft mask cut to a window around its box.

Temporal smoothing and edge refinement work on these windows, not on whole frames, so their
cost follows the animals' size: at 1080p a full-frame mask is 2 MB, an animal's window a
tenth of that. :func:`to_windows` cuts (views, nothing copied), :func:`to_detections` pastes
back into full-frame :class:`~thingmask.detections.Detections` — once per frame, however many
window stages ran in between. Pixels of a mask outside its window are dropped: the window
(:func:`crop_region`) is the box grown by 2 px plus 10 % of its size on each side, and
predictors paste each mask into its box (torchvision's paste reaches ~4 % past it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from thingmask.detections import Detections

__all__ = ["Window", "crop_region", "read_window", "tight_box", "to_detections", "to_windows"]

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels of the frame


def crop_region(box: np.ndarray, height: int, width: int) -> Region:
    """``(x0, y0, x1, y1)`` integer window around an xyxy ``box``: grown by 2 px plus 10 % of
    its size on each side (pasted masks reach a little past their box), clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx = 2.0 + 0.1 * max(x2 - x1, 0.0)
    my = 2.0 + 0.1 * max(y2 - y1, 0.0)
    return (
        max(0, int(np.floor(x1 - mx))),
        max(0, int(np.floor(y1 - my))),
        min(width, int(np.ceil(x2 + mx))),
        min(height, int(np.ceil(y2 + my))),
    )


def read_window(image: np.ndarray, origin: tuple[int, int], region: Region) -> np.ndarray:
    """The pixels of frame window ``region`` from ``image``, an array whose top-left pixel
    sits at frame position ``origin`` = (x, y); zeros where ``image`` does not reach."""
    x0, y0, x1, y1 = region
    ox, oy = origin
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *image.shape[2:]), image.dtype)
    sx0, sy0 = max(x0, ox), max(y0, oy)
    sx1, sy1 = min(x1, ox + w), min(y1, oy + h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[
            sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox
        ]
    return out


def tight_box(mask: np.ndarray, origin: tuple[int, int]) -> np.ndarray | None:
    """Tight xyxy float32 box (exclusive max, frame pixels) of a bool window at ``origin``;
    None when the mask is empty."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0 or h == 0:
        return None
    return np.array(
        [origin[0] + x, origin[1] + y, origin[0] + x + w, origin[1] + y + h], np.float32
    )


@dataclass
class Window:
    """One instance inside its window of the frame.

    Attributes:
        region: ``(x0, y0, x1, y1)`` of the window in frame pixels.
        mask: ``(y1 - y0, x1 - x0)`` bool; prob: the same shape, uint8 probability x 255.
        box: ``(4,)`` float32 xyxy in frame pixels. class_name, score, track_id (-1 = none).

    Windows are values: stages make new ones and never write into one's arrays.
    """

    region: Region
    mask: np.ndarray
    prob: np.ndarray
    box: np.ndarray
    class_name: str
    score: float
    track_id: int

    @property
    def origin(self) -> tuple[int, int]:
        return self.region[0], self.region[1]

    @cached_property
    def area(self) -> int:
        """Mask pixels (windows are never changed in place, so this is cached)."""
        return int(np.count_nonzero(self.mask))

    @cached_property
    def centroid(self) -> np.ndarray:
        """The mask's centroid (x, y) in frame pixels (the box centre for an empty mask)."""
        m = self.mask.view(np.uint8)
        cols = cv2.reduce(m, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        total = int(cols.sum())
        if total == 0:
            return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])
        rows = cv2.reduce(m, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        cx = float(cols @ np.arange(len(cols))) / total
        cy = float(rows @ np.arange(len(rows))) / total
        return np.array([self.region[0] + cx + 0.5, self.region[1] + cy + 0.5])


def to_windows(dets: Detections) -> list[Window]:
    """Cut each instance to its window (views into ``dets``; without ``probs`` the binary
    mask x 255 stands in)."""
    h, w = dets.image_size
    ids = dets.track_ids
    out = []
    for k in range(len(dets)):
        x0, y0, x1, y1 = crop_region(dets.boxes[k], h, w)
        mask = dets.masks[k, y0:y1, x0:x1]
        prob = (
            dets.probs[k, y0:y1, x0:x1]
            if dets.probs is not None
            else mask.view(np.uint8) * np.uint8(255)
        )
        out.append(
            Window(
                (x0, y0, x1, y1),
                mask,
                prob,
                dets.boxes[k],
                str(dets.class_names[k]),
                float(dets.scores[k]),
                -1 if ids is None else int(ids[k]),
            )
        )
    return out


def to_detections(windows: list[Window], height: int, width: int, tracked: bool) -> Detections:
    """Paste windows back into full-frame Detections (``probs`` filled; ``track_ids`` when
    ``tracked``). Untouched pixels stay zero pages, so the cost follows the windows."""
    n = len(windows)
    masks = np.zeros((n, height, width), bool)
    probs = np.zeros((n, height, width), np.uint8)
    for i, win in enumerate(windows):
        x0, y0, x1, y1 = win.region
        masks[i, y0:y1, x0:x1] = win.mask
        probs[i, y0:y1, x0:x1] = win.prob
    return Detections(
        masks=masks,
        boxes=np.array([win.box for win in windows], np.float32).reshape(-1, 4),
        class_names=np.array([win.class_name for win in windows], dtype=object).reshape(-1),
        scores=np.array([win.score for win in windows], np.float32),
        track_ids=np.array([win.track_id for win in windows], np.int64) if tracked else None,
        probs=probs,
    )
