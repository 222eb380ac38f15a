"""Temporal smoothing of tracked soft masks: an IoU-gated blend of each track's mask
probabilities over neighbouring frames, which also fills short dropouts of a tracked animal.

Streaming, with a fixed delay of ``radius`` frames: frame t is released once frame t + radius
has arrived (or at :meth:`TemporalSmoother.flush`, at the end of the video).

For each instance of frame t with track id k, the same track's soft masks in frames
t - radius .. t + radius are moved onto it — by the displacement of the mask centroids, or not
at all, whichever overlaps more (a motion of a pixel or two is mostly centroid noise) — and
blended with triangular weights (radius 1: 1/4, 1/2, 1/4). A neighbour joins only when its
moved mask overlaps this frame's mask with IoU >= ``iou_gate``: a different pose, a merge with
another animal or a bad detection is left out. The new mask is the blend above the
predictor's ``mask_threshold``. An instance with no accepted neighbour is passed through.

Dropouts: when track k is missing in frame t but seen both within ``radius`` frames before
and within ``radius`` frames after, and those two masks agree (IoU >= ``iou_gate`` after
moving), an instance is added in frame t: the two soft masks moved to the interpolated
position and blended by distance. A track absent for longer, or not seen again, gets nothing:
smoothing never adds an animal that has been gone for more than ``2 * radius - 1`` frames.
Glitches are treated the same way: a mask that agrees with none of its neighbours while the
nearest ones before and after agree with each other (half the animal missed for one frame,
or merged with another) is replaced by their interpolation.

The work is done on instance windows (:mod:`thingmask.cutout.windows`): the cost follows the
animals'
size, not the frame's. Without ``Detections.probs`` the binary masks stand in (x 255), so
the blend becomes a weighted vote.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

from thingmask.cutout.windows import Region, Window, crop_region, read_window, tight_box, to_windows
from thingmask.cutout.windows import to_detections as paste
from thingmask.detections import Detections

__all__ = ["TemporalSmoother"]

Frame = tuple[int, list[Window], tuple[int, int]]  # index, windows, (height, width)


def _iou_moved(a: Window, shift: tuple[int, int], b: Window) -> float:
    """IoU of ``a``'s mask moved by ``shift`` (dx, dy) with ``b``'s mask (frame positions)."""
    ax, ay = a.region[0] + shift[0], a.region[1] + shift[1]
    bx, by = b.region[0], b.region[1]
    x0, y0 = max(ax, bx), max(ay, by)
    x1 = min(ax + a.mask.shape[1], bx + b.mask.shape[1])
    y1 = min(ay + a.mask.shape[0], by + b.mask.shape[0])
    inter = 0
    if x1 > x0 and y1 > y0:
        sa = a.mask[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
        sb = b.mask[y0 - by : y1 - by, x0 - bx : x1 - bx]
        inter = int(np.count_nonzero(sa & sb))
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def _moved_prob(win: Window, shift: tuple[int, int], region: Region) -> np.ndarray:
    """``win``'s soft mask moved by ``shift`` (dx, dy), read in frame window ``region``."""
    return read_window(win.prob, (win.region[0] + shift[0], win.region[1] + shift[1]), region)


def _round(v: np.ndarray) -> tuple[int, int]:
    return round(float(v[0])), round(float(v[1]))


class TemporalSmoother:
    """Streaming temporal smoothing of tracked Detections (see the module docstring).

    Args:
        radius: frames on each side that are blended (= ``delay``, in frames), >= 1.
        iou_gate: a neighbour's moved mask must overlap this frame's mask by this IoU.
        mask_threshold: the predictor's mask threshold (probability, 0..1).

    ``push(index, dets)`` takes each frame's tracked Detections (``track_ids`` set) in order
    and returns the frames ready now, in order; ``flush()`` returns the rest at the end.
    Outputs are new Detections (inputs are not changed) with ``probs`` filled. ``push_windows``
    / ``flush_windows`` are the same on :class:`~thingmask.cutout.windows.Window` lists (the video
    stage chains them with the edge refinement and pastes once).
    """

    def __init__(self, radius: int = 1, iou_gate: float = 0.5, mask_threshold: float = 0.5):
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"smoothing radius: got {radius!r}; expected an integer >= 1")
        if not 0.0 <= iou_gate <= 1.0:
            raise ValueError(f"iou_gate: got {iou_gate!r}; expected 0..1")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold: got {mask_threshold!r}; expected 0 < x < 1")
        self.radius = self.delay = radius
        self.iou_gate = float(iou_gate)
        self._threshold = int(mask_threshold * 255)  # prob x 255 above this is the mask
        self._window: deque[Frame] = deque()  # frames t - radius .. t + radius
        self._next = 0  # position in _window of the next frame to release

    # -- streaming -------------------------------------------------------------------------
    def push(self, index: int, dets: Detections) -> list[tuple[int, Detections]]:
        h, w = dets.image_size
        return [(i, paste(ws, h, w, True)) for i, ws in self.push_windows(index, dets)]

    def flush(self) -> list[tuple[int, Detections]]:
        return [(i, paste(ws, *size, True)) for i, ws, size in self._flush()]

    def push_windows(self, index: int, dets: Detections) -> list[tuple[int, list[Window]]]:
        """Like :meth:`push`, returning each ready frame's windows."""
        self._window.append((index, to_windows(dets), dets.image_size))
        out = []
        while len(self._window) - 1 - self._next >= self.radius:
            i, ws, _ = self._release()
            out.append((i, ws))
        return out

    def flush_windows(self) -> list[tuple[int, list[Window]]]:
        return [(i, ws) for i, ws, _ in self._flush()]

    def _flush(self) -> list[Frame]:
        out = []
        while self._next < len(self._window):
            out.append(self._release())
        self._window.clear()
        self._next = 0
        return out

    def _release(self) -> Frame:
        frames = list(self._window)
        t = self._next
        index, _, size = frames[t]
        smoothed = self.smooth_frame([f[1] for f in frames], t, size)
        self._next += 1
        while self._next > self.radius:  # keep radius frames of history
            self._window.popleft()
            self._next -= 1
        return index, smoothed, size

    # -- the per-frame work (pure: reads the windows, returns new ones) ----------------------
    def smooth_frame(
        self, frames: Sequence[list[Window]], t: int, size: tuple[int, int]
    ) -> list[Window]:
        """Frame ``t`` of ``frames`` (per frame its windows; ``size`` = (height, width))
        smoothed with its neighbours within ``radius``, plus filled-in dropouts."""
        lo, hi = max(0, t - self.radius), min(len(frames) - 1, t + self.radius)
        by_track = {
            q: {w.track_id: w for w in frames[q] if w.track_id >= 0} for q in range(lo, hi + 1)
        }
        out = []
        for win in frames[t]:
            if win.track_id < 0:
                out.append(win)
                continue
            parts = [
                (q, by_track[q][win.track_id])
                for q in by_track
                if q != t and win.track_id in by_track[q]
            ]
            blended = self._blend(win, t, parts)
            if blended is None:  # a glitch: agrees with no neighbour, while they agree
                blended = self._interpolate(win.track_id, t, by_track, lo, hi, size) or win
            out.append(blended)
        missing = {tid for q in range(lo, t) for tid in by_track[q]} - set(by_track[t])
        filled = (self._interpolate(tid, t, by_track, lo, hi, size) for tid in sorted(missing))
        return out + [w for w in filled if w is not None]

    def _align(self, other: Window, target: Window) -> tuple[float, tuple[int, int]]:
        """(IoU, shift) of ``other`` moved onto ``target``: by the centroid displacement or
        not at all, whichever overlaps more."""
        best = (_iou_moved(other, (0, 0), target), (0, 0))
        motion = _round(target.centroid - other.centroid)
        if motion != (0, 0):
            iou = _iou_moved(other, motion, target)
            if iou > best[0]:
                best = (iou, motion)
        return best

    def _blend(self, win: Window, t: int, parts: list[tuple[int, Window]]) -> Window | None:
        """``win`` blended with its accepted neighbours ``parts`` (frame, window): ``win``
        itself when it has no neighbour, None when it has some but none is accepted."""
        if not parts:
            return win
        acc, total = win.prob, self.radius + 1
        for q, other in parts:
            iou, shift = self._align(other, win)
            if iou < self.iou_gate:
                continue
            wq = self.radius + 1 - abs(q - t)
            # running weighted mean in uint8 (OpenCV saturates and rounds): acc·T + p·wq
            acc = cv2.addWeighted(
                acc,
                total / (total + wq),
                _moved_prob(other, shift, win.region),
                wq / (total + wq),
                0,
            )
            total += wq
        if total == self.radius + 1:
            return None
        mask = acc > self._threshold
        box = tight_box(mask, win.origin)
        if box is None:  # blended away entirely (neighbours disagree): keep the detection
            return win
        return Window(win.region, mask, acc, box, win.class_name, win.score, win.track_id)

    def _interpolate(
        self,
        tid: int,
        t: int,
        by_track: dict[int, dict[int, Window]],
        lo: int,
        hi: int,
        size: tuple[int, int],
    ) -> Window | None:
        """Track ``tid`` in frame t from its nearest windows before and after (within the
        radius), when those two agree; None otherwise."""
        before = [q for q in range(lo, t) if tid in by_track[q]]
        after = [q for q in range(t + 1, hi + 1) if tid in by_track[q]]
        if not before or not after:
            return None
        q1, q2 = max(before), min(after)
        w1, w2 = by_track[q1][tid], by_track[q2][tid]
        iou, motion = self._align(w1, w2)
        if iou < self.iou_gate:
            return None  # the animal changed too much: do not invent its in-between shape
        a = (t - q1) / (q2 - q1)
        box = ((1 - a) * w1.box + a * w2.box).astype(np.float32)
        region = crop_region(box, *size)
        s1 = _round(a * np.asarray(motion, float))
        s2 = _round((a - 1) * np.asarray(motion, float))
        # the nearer frame weighs more
        prob = cv2.addWeighted(
            _moved_prob(w1, s1, region), 1 - a, _moved_prob(w2, s2, region), a, 0
        )
        mask = prob > self._threshold
        tight = tight_box(mask, (region[0], region[1]))
        if tight is None:
            return None
        score = min(w1.score, w2.score)
        return Window(region, mask, prob, tight, w2.class_name, score, tid)
