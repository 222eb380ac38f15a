"""Cut-out quality metrics: mask IoU, foreground IoU (region similarity J), boundary F, J&F.

Pure numpy/OpenCV functions on boolean masks. Conventions:

* masks are ``(H, W)`` bool (or stacks ``(N, H, W)`` bool where stated);
* when both masks are empty the prediction is perfect: IoU = F = 1.0 (a frame with no animal
  and no cut-out is right, not undefined).

The headline figure of the project is :func:`video_foreground_iou`: per video frame, the union
of the ground-truth masks of the display things against the union of the kept predicted masks,
averaged over frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "boundary_f",
    "foreground_iou",
    "gt_foreground",
    "j_and_f",
    "mask_iou",
    "mean_foreground_iou",
    "video_foreground_iou",
]


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != bool or b.dtype != bool:
        raise TypeError(
            f"{what}: expected bool masks, got {a.dtype} and {b.dtype}; threshold "
            "first (e.g. mask > 0.5)"
        )
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"{what}: mask sizes differ: {a.shape[-2:]} vs {b.shape[-2:]}")
    return a, b


def mask_iou(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Intersection over union of boolean masks.

    ``(H, W)`` and ``(H, W)`` → float. ``(N, H, W)`` and ``(M, H, W)`` → ``(N, M)`` float64 of all
    pairs. Two empty masks have IoU 1.0.
    """
    a, b = _check_pair(a, b, "mask_iou")
    if a.ndim == 2 and b.ndim == 2:
        union = np.logical_or(a, b).sum()
        return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(
            f"mask_iou: expected two (H, W) masks or two (N, H, W) stacks, got "
            f"shapes {a.shape} and {b.shape}"
        )
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def foreground_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool foreground masks (J of DAVIS); both empty → 1.0."""
    pred, gt = _check_pair(pred, gt, "foreground_iou")
    if pred.ndim != 2:
        raise ValueError(f"foreground_iou: expected (H, W) masks, got {pred.shape}")
    return float(mask_iou(pred, gt))


def mean_foreground_iou(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean :func:`foreground_iou` over ``(pred, gt)`` pairs (e.g. video frames)."""
    values = [foreground_iou(p, g) for p, g in pairs]
    if not values:
        raise ValueError("mean_foreground_iou: no (pred, gt) pairs given")
    return float(np.mean(values))


def _boundary(mask: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m - eroded).astype(bool)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = 0.008) -> float:
    """Boundary F-measure (DAVIS F): contour precision/recall within a pixel tolerance.

    ``tolerance`` is a fraction of the image diagonal (DAVIS uses 0.008; at least 1 pixel).
    Both empty → 1.0; one empty → 0.0.
    """
    import cv2

    pred, gt = _check_pair(pred, gt, "boundary_f")
    bp, bg = _boundary(pred), _boundary(gt)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    r = max(1, round(tolerance * float(np.hypot(*pred.shape))))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    gt_zone = cv2.dilate(bg.astype(np.uint8), disk).astype(bool)
    pred_zone = cv2.dilate(bp.astype(np.uint8), disk).astype(bool)
    precision = (bp & gt_zone).sum() / bp.sum()
    recall = (bg & pred_zone).sum() / bg.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def j_and_f(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """``(J, F, (J + F) / 2)`` for one frame's foreground masks."""
    j, f = foreground_iou(pred, gt), boundary_f(pred, gt)
    return j, f, (j + f) / 2.0


def gt_foreground(
    masks: np.ndarray, class_names: Sequence[str], display_things: Iterable[str]
) -> np.ndarray:
    """Union of the ground-truth instance masks ``(N, H, W)`` whose class is a display thing."""
    wanted = set(display_things)
    masks = np.asarray(masks, bool)
    sel = [i for i, n in enumerate(class_names) if n in wanted]
    if masks.ndim != 3:
        raise ValueError(f"gt_foreground: expected (N, H, W) masks, got {masks.shape}")
    return masks[sel].any(axis=0) if sel else np.zeros(masks.shape[1:], bool)


def video_foreground_iou(
    pred_foregrounds: Iterable[np.ndarray],
    gt_frames: Sequence[tuple[np.ndarray, Sequence[str], np.ndarray]],
    display_things: Iterable[str],
    per_frame: bool = False,
) -> float | tuple[float, list[float]]:
    """Mean foreground IoU of a cut-out video against per-frame ground truth.

    Args:
        pred_foregrounds: per frame, the ``(H, W)`` bool union of the *kept* predicted masks
            (e.g. ``keep(detections, display_things).union_mask()``).
        gt_frames: per frame ``(masks (N, H, W) bool, class_names, ids)``, as returned by
            :func:`thingmask.datasets.synthetic.load_video_gt`.
        display_things: classes that belong in the cut-out.
        per_frame: also return the list of per-frame IoUs.
    Raises:
        ValueError: when the number of frames differs.
    """
    things = list(display_things)
    preds = list(pred_foregrounds)
    if len(preds) != len(gt_frames):
        raise ValueError(
            f"video_foreground_iou: {len(preds)} predicted frames but "
            f"{len(gt_frames)} ground-truth frames"
        )
    if not preds:
        raise ValueError("video_foreground_iou: no frames")
    values = [
        foreground_iou(np.asarray(p, bool), gt_foreground(m, names, things))
        for p, (m, names, _) in zip(preds, gt_frames, strict=True)
    ]
    mean = float(np.mean(values))
    return (mean, values) if per_frame else mean
