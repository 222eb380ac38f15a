"""Stable track ids across video frames: a small greedy IoU tracker (no scipy needed).

Each frame's detections are matched to the live tracks of the same class by box IoU, largest
overlap first (greedy matching equals the Hungarian optimum in the usual case of well-separated
animals, and sorting N·M pairs is trivial for a handful of instances per frame). A track's box
is predicted one frame ahead from its last velocity, and detections that overlap no track get a
second chance by nearest centre, so fast-moving animals keep their id. A track survives
``max_age`` frames without a match (an animal briefly hidden or missed), then ends.

Optional temporal mask smoothing (``smooth > 0``) blends each track's mask with its previous
masks (exponential moving average, then 0.5 threshold), which removes one-frame holes and
flicker at the edges at the cost of a slight lag on fast motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from thingmask.detections import Detections

__all__ = ["Tracker", "box_iou"]


def _centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` distance between box centres, in units of the larger of the two diagonals."""
    ca = (a[:, None, :2] + a[:, None, 2:]) / 2
    cb = (b[None, :, :2] + b[None, :, 2:]) / 2
    diag_a = np.hypot(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])[:, None]
    diag_b = np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])[None, :]
    return np.linalg.norm(ca - cb, axis=2) / np.maximum(np.maximum(diag_a, diag_b), 1e-6)


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


@dataclass
class _Track:
    track_id: int
    class_name: str
    box: np.ndarray  # last matched box, xyxy
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    age: int = 0  # frames since the last match
    hits: int = 1
    mask_avg: np.ndarray | None = None  # float32 (H, W) EMA when smoothing

    def predicted(self) -> np.ndarray:
        return self.box + self.velocity * (self.age + 1)


class Tracker:
    """Assigns ``track_ids`` (1, 2, 3, ...) that stay with each animal across frames.

    Args:
        iou_threshold: minimum IoU between a track's predicted box and a detection to match.
        max_age: frames a track is kept without a match before its id is retired.
        max_distance: second-chance match for detections that overlap no track (animals moving
            more than their size per frame): nearest same-class track whose predicted box
            centre is within this many box diagonals.
        smooth: 0 = off; otherwise the weight of the *previous* masks in the mask average
            (e.g. 0.5). Smoothed masks replace the detections' masks in the output.

    ``update`` is called once per frame, in order; it returns new Detections (input unchanged).
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_age: int = 5,
        smooth: float = 0.0,
        max_distance: float = 1.0,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold: got {iou_threshold!r}; expected 0 < x <= 1")
        if max_age < 0:
            raise ValueError(f"max_age: got {max_age!r}; expected >= 0 frames")
        if not 0.0 <= smooth < 1.0:
            raise ValueError(f"smooth: got {smooth!r}; expected 0 <= x < 1 (0 = off)")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.smooth = float(smooth)
        self.max_distance = float(max_distance)
        self._tracks: list[_Track] = []
        self._next_id = 1
        self.ended: list[int] = []  # ids retired by the last update (for per-track outputs)

    @property
    def live_ids(self) -> list[int]:
        """Ids of the tracks still alive (matched within the last ``max_age`` frames)."""
        return [t.track_id for t in self._tracks]

    def update(self, detections: Detections) -> Detections:
        """Match this frame's ``detections`` to the tracks; returns them with ``track_ids``."""
        n = len(detections)
        ids = np.full(n, -1, np.int64)
        matched_tracks: set[int] = set()
        if n and self._tracks:
            predicted = np.stack([t.predicted() for t in self._tracks])
            same_class = np.array(
                [[t.class_name == c for c in detections.class_names] for t in self._tracks],
                dtype=bool,
            )
            iou = np.where(same_class, box_iou(predicted, detections.boxes), 0.0)
            # pass 1: overlap, largest first
            self._greedy(-iou, -self.iou_threshold, ids, matched_tracks, detections)
            # pass 2: animals faster than their own size per frame (no overlap yet, e.g. a new
            # track without a velocity): nearest centre, within max_distance box diagonals
            dist = _centre_distance(predicted, detections.boxes)
            self._greedy(
                np.where(same_class, dist, np.inf),
                self.max_distance,
                ids,
                matched_tracks,
                detections,
            )
        for di in np.flatnonzero(ids == -1):
            track = _Track(
                self._next_id, str(detections.class_names[di]), detections.boxes[di].copy()
            )
            self._tracks.append(track)
            matched_tracks.add(len(self._tracks) - 1)
            ids[di] = track.track_id
            self._next_id += 1
        self.ended = []
        alive = []
        for i, track in enumerate(self._tracks):
            if i not in matched_tracks:
                track.age += 1
            if track.age > self.max_age:
                self.ended.append(track.track_id)
            else:
                alive.append(track)
        self._tracks = alive
        masks = detections.masks
        if self.smooth and n:
            masks = self._smooth(detections, ids)
        return Detections(
            masks=masks,
            boxes=detections.boxes.copy(),
            class_names=detections.class_names.copy(),
            scores=detections.scores.copy(),
            track_ids=ids,
        )

    def _greedy(
        self,
        cost: np.ndarray,
        limit: float,
        ids: np.ndarray,
        matched: set[int],
        detections: Detections,
    ) -> None:
        """Match (track, detection) pairs by increasing ``cost`` while cost <= ``limit``."""
        n = cost.shape[1]
        for flat in np.argsort(cost, axis=None, kind="stable"):
            ti, di = divmod(int(flat), n)
            if cost[ti, di] > limit:
                break
            if ti in matched or ids[di] != -1:
                continue
            track = self._tracks[ti]
            new_box = detections.boxes[di]
            track.velocity = (new_box - track.box) / (track.age + 1)
            track.box = new_box.copy()
            track.age, track.hits = 0, track.hits + 1
            ids[di] = track.track_id
            matched.add(ti)

    def _smooth(self, detections: Detections, ids: np.ndarray) -> np.ndarray:
        by_id = {t.track_id: t for t in self._tracks}
        out = np.empty_like(detections.masks)
        for k, tid in enumerate(ids):
            track = by_id[int(tid)]
            current = detections.masks[k].astype(np.float32)
            if track.mask_avg is None or track.mask_avg.shape != current.shape:
                track.mask_avg = current
            else:
                track.mask_avg = self.smooth * track.mask_avg + (1 - self.smooth) * current
            out[k] = track.mask_avg >= 0.5
        return out
