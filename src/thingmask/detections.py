"""The engine-neutral result of instance segmentation on one image or frame.

Everything after an engine (filter, cut-out, video, exports) speaks :class:`Detections` and class
*names*: it never needs to know whether detectron2 or torchvision produced them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Detections", "keep"]


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
