"""The engine-neutral result of instance segmentation on one image or frame.

Everything after an engine (filter, cut-out, video, exports) speaks :class:`Detections` and class
*names*: it never needs to know whether detectron2 or torchvision produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Detections", "duplicate_survivors", "keep", "keep_things", "suppress_duplicates"]


@dataclass(frozen=True)
class Detections:
    """N instances found in one H x W image.

    Attributes:
        masks: ``(N, H, W)`` bool, True where the instance is.
        boxes: ``(N, 4)`` float32, ``x1, y1, x2, y2`` in pixels (xyxy, exclusive max).
        class_names: ``(N,)`` str, the class of each instance (names, never ids).
        scores: ``(N,)`` float32 confidences in [0, 1].
        track_ids: optional ``(N,)`` int64 ids stable across frames (-1 = untracked).
        probs: optional ``(N, H, W)`` uint8 soft masks, the model's mask probability x 255 at
            the image size (``masks`` is their thresholded form). Predictors fill it only when
            asked (``soft_masks=True``): temporal smoothing and edge refinement read it.
    """

    masks: np.ndarray
    boxes: np.ndarray
    class_names: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray | None = field(default=None)
    probs: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim != 3:
            raise ValueError(f"Detections.masks: expected shape (N, H, W), got {masks.shape}")
        if masks.dtype != bool:
            raise TypeError(
                f"Detections.masks: expected dtype bool, got {masks.dtype}; "
                "threshold probabilities first (e.g. masks > 0.5)"
            )
        n = masks.shape[0]
        boxes = (
            np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
            if n or np.size(self.boxes)
            else np.zeros((0, 4), np.float32)
        )
        names = np.asarray(self.class_names, dtype=object).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        for label, arr in (("boxes", boxes), ("class_names", names), ("scores", scores)):
            if arr.shape[0] != n:
                raise ValueError(
                    f"Detections.{label}: expected {n} rows (one per mask), got {arr.shape[0]}"
                )
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "scores", scores)
        if self.track_ids is not None:
            ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
            if ids.shape[0] != n:
                raise ValueError(f"Detections.track_ids: expected {n} rows, got {ids.shape[0]}")
            object.__setattr__(self, "track_ids", ids)
        if self.probs is not None:
            probs = np.asarray(self.probs)
            if probs.shape != masks.shape or probs.dtype != np.uint8:
                raise ValueError(
                    f"Detections.probs: expected uint8 of shape {masks.shape} (probability x "
                    f"255, like masks), got {probs.dtype} {probs.shape}"
                )
            object.__setattr__(self, "probs", probs)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image the masks belong to."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @classmethod
    def empty(cls, height: int, width: int) -> Detections:
        """No instances in an ``height x width`` image."""
        return cls(
            masks=np.zeros((0, height, width), bool),
            boxes=np.zeros((0, 4), np.float32),
            class_names=np.zeros((0,), object),
            scores=np.zeros((0,), np.float32),
        )

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Detections:
        """Select instances by boolean mask, index array or slice; returns a new object."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            masks=self.masks[index],
            boxes=self.boxes[index],
            class_names=self.class_names[index],
            scores=self.scores[index],
            track_ids=None if self.track_ids is None else self.track_ids[index],
            probs=None if self.probs is None else self.probs[index],
        )

    def union_mask(self) -> np.ndarray:
        """``(H, W)`` bool: pixels covered by any instance."""
        if not len(self):
            return np.zeros(self.image_size, bool)
        return np.asarray(self.masks.any(axis=0))


def keep(detections: Detections, names: Iterable[str]) -> Detections:
    """The instances whose class is one of ``names`` (any number, any order).

    Pure: returns a new :class:`Detections`; the input is not changed.
    """
    if isinstance(names, str):
        raise TypeError(
            f"keep(): expected a list of class names, got the string {names!r}; write [{names!r}]"
        )
    wanted = set(names)
    selector = np.array([n in wanted for n in detections.class_names], dtype=bool)
    return detections[selector]


def keep_things(
    detections: Detections, names: Iterable[str], duplicate_iou: float | None
) -> Detections:
    """:func:`keep` ``names``, then, unless ``duplicate_iou`` is None, one label per animal
    (:func:`suppress_duplicates`): what a run keeps (``Config.keep``)."""
    kept = keep(detections, names)
    return kept if duplicate_iou is None else suppress_duplicates(kept, duplicate_iou)


def suppress_duplicates(detections: Detections, iou_threshold: float) -> Detections:
    """One label per animal: of instances whose masks overlap by more than ``iou_threshold``
    (mask IoU), only the highest-scoring one stays, whatever the classes.

    A model trained on look-alike classes (two fish species) often returns one animal twice,
    once per class; counting it twice in the CSV and giving it two tracks is wrong. Greedy, in
    descending score order (ties: the earlier instance first, a stable sort), so the result does
    not depend on the engine's output order. Instances whose boxes do not overlap are never
    duplicates (no pixel test: frames with animals apart cost nothing). IoU is computed on the
    boolean masks as exact pixel counts, so the video pipeline's GPU path, which shares
    :func:`duplicate_survivors`, makes the same decisions.

    Args:
        detections: any instances (masks ``(N, H, W)`` bool, boxes xyxy).
        iou_threshold: in [0, 1]; a pair with IoU strictly above it is one animal. 1 keeps all.

    Returns a new :class:`Detections` with the survivors in their original order.
    """
    n = len(detections)
    if n < 2 or iou_threshold >= 1.0:
        return detections
    survivors = duplicate_survivors(
        detections.boxes,
        detections.scores,
        lambda i, j: _mask_overlap(detections.masks, i, j),
        iou_threshold,
    )
    if len(survivors) == n:
        return detections
    return detections[np.asarray(survivors, dtype=np.int64)]


def duplicate_survivors(
    boxes: np.ndarray,
    scores: np.ndarray,
    overlap: Callable[[int, int], tuple[int, int]],
    iou_threshold: float,
) -> list[int]:
    """The greedy decision of :func:`suppress_duplicates`, shared by the host and tensor paths.

    Args:
        boxes: ``(N, 4)`` float32 xyxy; pairs whose boxes do not overlap are never compared.
        scores: ``(N,)`` float32.
        overlap: ``(i, j) -> (intersection, union)`` pixel counts of masks i and j.
        iou_threshold: a pair with ``intersection > iou_threshold * union`` is one animal.

    Returns the indices that stay, ascending.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    b = np.asarray(boxes, dtype=np.float32)
    kept: list[int] = []
    for i in (int(k) for k in order):
        duplicate = False
        for j in kept:
            if min(b[i, 2], b[j, 2]) <= max(b[i, 0], b[j, 0]) or min(b[i, 3], b[j, 3]) <= max(
                b[i, 1], b[j, 1]
            ):
                continue  # boxes apart: two animals
            inter, union = overlap(i, j)
            # exact integer counts compared in float64 on both paths: identical decisions
            if union > 0 and float(inter) > float(iou_threshold) * float(union):
                duplicate = True
                break
        if not duplicate:
            kept.append(i)
    return sorted(kept)


def _mask_overlap(masks: np.ndarray, i: int, j: int) -> tuple[int, int]:
    a, b = masks[i], masks[j]
    inter = int(np.count_nonzero(a & b))
    return inter, int(np.count_nonzero(a)) + int(np.count_nonzero(b)) - inter
