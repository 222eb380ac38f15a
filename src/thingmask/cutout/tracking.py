"""Stable track ids across video frames: mask-IoU matching with optimal assignment, tracks that
coast through missed frames, and per-track class voting.

Each frame, every live track's last mask is moved by the track's velocity (box-centre motion
per frame, times the frames since it was last seen) and compared with this frame's masks by
IoU. The pairs are chosen by optimal assignment (``scipy.optimize.linear_sum_assignment``, cost
``1 - IoU``, a small extra cost when the classes differ) and kept when the IoU reaches
``iou_threshold``. Detections left over get a second chance against tracks left over by box
centre distance (animals moving more than their own size per frame, or partly hidden), same
class only. A track that finds no detection coasts for up to ``max_missed`` frames (an animal
hidden behind another one, or a missed detection) and keeps its id when it reappears; after
that its id is retired and listed in :attr:`Tracker.ended`.

Class voting: each track sums its detections' scores per class name and reports the class with
the largest sum, so one frame in which a cat is taken for a bird does not rename it. Matching
is therefore not restricted to one class.

Masks are compared inside their boxes only (grown by a margin), so the cost per frame grows
with the animals' size, not the frame's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from thingmask.config import Config
from thingmask.cutout.windows import crop_region
from thingmask.detections import Detections

__all__ = ["Tracker", "box_iou"]

CLASS_PENALTY = 0.1  # extra matching cost (in IoU units) for a detection of another class


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes → ``(N, M)`` float32."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def _overlap(a: np.ndarray, oa: tuple[int, int], b: np.ndarray, ob: tuple[int, int]) -> int:
    """Pixels set in both crops ``a`` (top-left at ``oa`` = (x, y)) and ``b`` (at ``ob``)."""
    x0, y0 = max(oa[0], ob[0]), max(oa[1], ob[1])
    x1 = min(oa[0] + a.shape[1], ob[0] + b.shape[1])
    y1 = min(oa[1] + a.shape[0], ob[1] + b.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0
    sa = a[y0 - oa[1] : y1 - oa[1], x0 - oa[0] : x1 - oa[0]]
    sb = b[y0 - ob[1] : y1 - ob[1], x0 - ob[0] : x1 - ob[0]]
    return int(np.count_nonzero(sa & sb))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # last matched box, xyxy float32
    crop: np.ndarray  # last mask inside its crop region, bool
    origin: tuple[int, int]  # (x, y) of the crop's top-left pixel
    votes: dict[str, float] = field(default_factory=dict)  # class name → summed scores
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # px/frame
    missed: int = 0  # frames since the last match
    hits: int = 0

    @property
    def class_name(self) -> str:
        return max(self.votes, key=self.votes.__getitem__)  # ties: the class seen first

    def shift(self) -> np.ndarray:
        """Predicted displacement (dx, dy) since the last match."""
        return self.velocity * (self.missed + 1)


class Tracker:
    """Assigns ``track_ids`` (1, 2, 3, ...) that stay with each animal across frames.

    Args:
        iou_threshold: minimum mask IoU between a track's predicted mask and a detection.
        max_missed: frames a track survives without a detection before its id is retired.
        max_distance: second-chance match by box-centre distance, in box diagonals.
        class_penalty: extra matching cost when a detection's class differs from the track's.

    :meth:`update` is called once per frame, in order; it returns new Detections (the input is
    not changed) with ``track_ids`` set and ``class_names`` replaced by each track's voted
    class; masks, boxes, scores and probs are passed through.
    """

    def __init__(
        self,
        iou_threshold: float = 0.25,
        max_missed: int = 5,
        max_distance: float = 1.0,
        class_penalty: float = CLASS_PENALTY,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold: got {iou_threshold!r}; expected 0 < x <= 1")
        if max_missed < 0:
            raise ValueError(f"max_missed: got {max_missed!r}; expected >= 0 frames")
        if max_distance < 0:
            raise ValueError(f"max_distance: got {max_distance!r}; expected >= 0 box diagonals")
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.max_distance = float(max_distance)
        self.class_penalty = float(class_penalty)
        self._tracks: list[_Track] = []
        self._next_id = 1
        self.ended: list[int] = []  # ids retired by the last update (for per-track outputs)

    @classmethod
    def from_config(cls, config: Config) -> Tracker:
        """A tracker with the config's ``track_max_missed``."""
        return cls(max_missed=config.track_max_missed)

    @property
    def live_ids(self) -> list[int]:
        """Ids of the tracks still alive (matched within the last ``max_missed`` frames)."""
        return [t.track_id for t in self._tracks]

    def update(self, detections: Detections) -> Detections:
        """Match this frame's ``detections`` to the tracks; returns them with ``track_ids``."""
        h, w = detections.image_size
        n = len(detections)
        regions = [crop_region(detections.boxes[k], h, w) for k in range(n)]
        crops = [detections.masks[k, y0:y1, x0:x1] for k, (x0, y0, x1, y1) in enumerate(regions)]
        pairs = self._assign(detections, crops, regions)
        ids = np.full(n, -1, np.int64)
        matched: set[int] = set()
        for ti, k in pairs:
            track = self._tracks[ti]
            gap = track.missed + 1
            step = (_centre(detections.boxes[k]) - _centre(track.box)) / gap
            track.velocity = step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step
            self._refresh(track, detections, k, crops[k], regions[k])
            ids[k] = track.track_id
            matched.add(ti)
        for k in (int(i) for i in np.flatnonzero(ids == -1)):
            track = _Track(self._next_id, detections.boxes[k].copy(), crops[k], (0, 0))
            self._refresh(track, detections, k, crops[k], regions[k])
            self._tracks.append(track)
            matched.add(len(self._tracks) - 1)
            ids[k] = track.track_id
            self._next_id += 1
        self.ended, alive = [], []
        for i, track in enumerate(self._tracks):
            if i not in matched:
                track.missed += 1
            if track.missed > self.max_missed:
                self.ended.append(track.track_id)
            else:
                alive.append(track)
        self._tracks = alive
        by_id = {t.track_id: t for t in alive}
        names = np.array([by_id[int(i)].class_name for i in ids], dtype=object)
        return Detections(
            masks=detections.masks,
            boxes=detections.boxes,
            class_names=names.reshape(-1),
            scores=detections.scores,
            track_ids=ids,
            probs=detections.probs,
        )

    @staticmethod
    def _refresh(
        track: _Track, dets: Detections, k: int, crop: np.ndarray, region: tuple[int, ...]
    ) -> None:
        track.box = dets.boxes[k].copy()
        track.crop = crop.copy()  # a copy: a view would keep the whole frame's masks alive
        track.origin = (region[0], region[1])
        name = str(dets.class_names[k])
        track.votes[name] = track.votes.get(name, 0.0) + float(dets.scores[k])
        track.missed, track.hits = 0, track.hits + 1

    def _assign(
        self, dets: Detections, crops: list[np.ndarray], regions: Sequence[tuple[int, ...]]
    ) -> list[tuple[int, int]]:
        """(track index, detection index) pairs: mask IoU first, then centre distance."""
        from scipy.optimize import linear_sum_assignment

        tracks, n = self._tracks, len(dets)
        if not tracks or not n:
            return []
        areas = [int(np.count_nonzero(c)) for c in crops]
        iou = np.zeros((len(tracks), n))
        differs = np.zeros((len(tracks), n), bool)
        for ti, t in enumerate(tracks):
            dx, dy = np.round(t.shift()).astype(int)
            origin = (t.origin[0] + int(dx), t.origin[1] + int(dy))
            area_t = int(np.count_nonzero(t.crop))
            for k in range(n):
                differs[ti, k] = t.class_name != dets.class_names[k]
                inter = _overlap(t.crop, origin, crops[k], (regions[k][0], regions[k][1]))
                union = area_t + areas[k] - inter
                iou[ti, k] = inter / union if union else 0.0
        cost = 1.0 - iou + self.class_penalty * differs
        pairs = [
            (int(r), int(c))
            for r, c in zip(*linear_sum_assignment(cost), strict=True)
            if iou[r, c] >= self.iou_threshold
        ]
        rows = [i for i in range(len(tracks)) if i not in {r for r, _ in pairs}]
        cols = [k for k in range(n) if k not in {c for _, c in pairs}]
        if rows and cols and self.max_distance > 0:
            dist = np.full((len(rows), len(cols)), np.inf)
            for a, ti in enumerate(rows):
                t = tracks[ti]
                centre = _centre(t.box) + t.shift()
                for b, k in enumerate(cols):
                    if differs[ti, k]:
                        continue
                    box = dets.boxes[k]
                    diag = max(
                        float(np.hypot(*(t.box[2:] - t.box[:2]))),
                        float(np.hypot(*(box[2:] - box[:2]))),
                        1e-6,
                    )
                    dist[a, b] = float(np.linalg.norm(_centre(box) - centre)) / diag
            finite = np.where(np.isfinite(dist), dist, 1e6)
            for r, c in zip(*linear_sum_assignment(finite), strict=True):
                if dist[r, c] <= self.max_distance:
                    pairs.append((rows[r], cols[c]))
        return pairs
