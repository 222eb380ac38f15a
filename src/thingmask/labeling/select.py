"""Which frames to label: diverse ones, by k-means over small grey thumbnails.

As DeepLabCut's ``extract_frames(algo="kmeans")``: each frame shrunk to :data:`THUMB_WIDTH`
pixels wide, grey, the pool's mean frame subtracted, k-means with N clusters, and the frame
nearest each centre. OpenCV's ``cv2.kmeans`` does the clustering (no scikit-learn dependency).
What DeepLabCut users run into is handled here: the pool of candidate frames is bounded
(:class:`FramePool` keeps every k-th frame and doubles k when full, so a 100,000-frame video costs
the memory of :data:`POOL_SIZE` thumbnails), and clusters that come back empty or collide with
the minimum gap are topped up by farthest-point sampling, so exactly N frames come back.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["POOL_SIZE", "THUMB_WIDTH", "FramePool", "pick_diverse", "pick_uniform", "thumbnail"]

THUMB_WIDTH = 30  # pixels, DeepLabCut's resize width for k-means frame extraction
POOL_SIZE = 2000  # candidate frames kept per video at most (memory: ~2000 x 500 floats)


def thumbnail(image_bgr: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR → flat float32 grey thumbnail ``width`` pixels wide."""
    h, w = image_bgr.shape[:2]
    height = max(1, round(h * width / max(w, 1)))
    small = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return grey.astype(np.float32).reshape(-1) / 255.0


class FramePool:
    """A bounded, evenly spaced sample of a stream of ``(frame index, feature)`` pairs.

    Keeps every ``stride``-th offered frame; when ``2 * size`` are kept, every other one is
    dropped and the stride doubles. The kept frames stay evenly spread over the whole stream
    without knowing its length in advance (frame counts in containers are often wrong).
    """

    def __init__(self, size: int = POOL_SIZE) -> None:
        if size < 1:
            raise ValueError(f"FramePool size: got {size}; expected >= 1")
        self.size = int(size)
        self.stride = 1
        self.indices: list[int] = []
        self.features: list[np.ndarray] = []
        self.offered = 0

    def wants(self) -> bool:
        """Whether the next offered frame will be kept (so the caller can skip the thumbnail)."""
        return self.offered % self.stride == 0

    def offer(self, index: int, feature: np.ndarray | None) -> None:
        """Offer the next frame; ``feature`` may be None when :meth:`wants` was False."""
        if self.wants():
            if feature is None:
                raise ValueError("FramePool.offer: the pool wants this frame; pass its feature")
            self.indices.append(int(index))
            self.features.append(feature)
            if len(self.indices) >= 2 * self.size:
                self.indices = self.indices[::2]
                self.features = self.features[::2]
                self.stride *= 2
        self.offered += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices (M,) int64, features (M, D) float32, mean frame subtracted)``."""
        if not self.indices:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        feats = np.stack(self.features).astype(np.float32)
        return np.asarray(self.indices, np.int64), feats - feats.mean(axis=0, keepdims=True)


def _far_enough(index: int, chosen: Sequence[int], min_gap: int) -> bool:
    return all(abs(index - c) >= min_gap for c in chosen)


def pick_uniform(
    indices: np.ndarray, n: int, min_gap: int = 0, keep: Sequence[int] = ()
) -> list[int]:
    """``n`` frame indices evenly spread over ``indices`` (sorted), ``keep`` included first."""
    chosen = list(keep)
    if n <= len(chosen):
        return sorted(chosen)
    order = np.asarray(indices, np.int64)
    # n points strictly inside the range (the very first and last frames are often fades)
    targets = np.linspace(0, max(len(order) - 1, 0), n - len(chosen) + 2)[1:-1]
    for t in targets if len(order) else ():
        idx = int(order[round(float(t))])
        if idx not in chosen and _far_enough(idx, chosen, min_gap):
            chosen.append(idx)
    return _top_up(order, None, chosen, n, min_gap)


def pick_diverse(
    indices: np.ndarray,
    features: np.ndarray,
    n: int,
    *,
    min_gap: int = 0,
    seed: int = 0,
    keep: Sequence[int] = (),
) -> list[int]:
    """``n`` frame indices (sorted) whose thumbnails are diverse: k-means centres' nearest frames.

    Args:
        indices: ``(M,)`` frame indices of the pool; ``features``: ``(M, D)`` float32 thumbnails.
        n: how many to return in all (``keep`` included); at most ``M``.
        min_gap: no two chosen frames closer than this many frames (0: no limit).
        seed: seeds k-means' initial centres (k-means++), so a re-run picks the same frames.
        keep: frames picked before (an earlier, smaller ``--n``): kept, and their clusters
            count as covered, so more frames are added where nothing was picked yet.
    Returns:
        exactly ``n`` indices, or fewer only when the gap leaves no room (the caller reports it).
    """
    indices = np.asarray(indices, np.int64)
    chosen = [int(k) for k in keep]
    if n <= len(chosen):
        return sorted(chosen)
    if len(indices) <= n:
        return _top_up(indices, features, chosen, n, min_gap)
    k = min(n, len(indices))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-4)
    _, labels, centres = cv2.kmeans(
        np.ascontiguousarray(features, np.float32), k, None, criteria, 1, cv2.KMEANS_PP_CENTERS
    )
    labels = labels.reshape(-1)
    covered = {int(labels[i]) for i, idx in enumerate(indices) if int(idx) in chosen}
    # the largest clusters first: when the gap forces a choice, common scenes get their frame
    sizes = np.bincount(labels, minlength=k)
    for c in sorted(range(k), key=lambda c: (-sizes[c], c)):
        if c in covered or len(chosen) >= n:
            continue
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue  # an empty cluster: topped up below
        dist = ((features[members] - centres[c]) ** 2).sum(axis=1)
        for m in members[np.argsort(dist, kind="stable")]:
            idx = int(indices[m])
            if idx not in chosen and _far_enough(idx, chosen, min_gap):
                chosen.append(idx)
                break
    return _top_up(indices, features, chosen, n, min_gap)


def _top_up(
    indices: np.ndarray, features: np.ndarray | None, chosen: list[int], n: int, min_gap: int
) -> list[int]:
    """Add frames until ``n`` (farthest-point sampling): the pool frame farthest from everything
    chosen, in thumbnail space (in time without features), respecting the gap. One distance
    array is updated per pick, so memory stays ``O(M)``."""
    m = len(indices)
    frames = indices.astype(np.float64)
    taken = np.isin(indices, chosen)
    if features is not None and m:
        dist = np.full(m, np.inf)
        for c in np.flatnonzero(taken):
            dist = np.minimum(dist, ((features - features[c]) ** 2).sum(axis=1))
    else:
        dist = np.full(m, np.inf)
    if not np.isfinite(dist).any() and chosen:  # no features, or none of the kept in the pool
        dist = np.abs(frames[:, None] - np.asarray(chosen, np.float64)[None, :]).min(axis=1)
    while len(chosen) < n:
        ok = ~taken
        if min_gap > 1 and chosen:
            near = np.abs(frames[:, None] - np.asarray(chosen, np.float64)[None, :]).min(axis=1)
            ok &= near >= min_gap
        free = np.flatnonzero(ok)
        if not len(free):
            break
        # no reference yet (nothing chosen): start in the middle of the pool
        best = int(free[len(free) // 2]) if not chosen else int(free[np.argmax(dist[free])])
        chosen.append(int(indices[best]))
        taken[best] = True
        if features is not None:
            dist = np.minimum(dist, ((features - features[best]) ** 2).sum(axis=1))
        else:
            dist = np.minimum(dist, np.abs(frames - frames[best]))
    return sorted(chosen)
