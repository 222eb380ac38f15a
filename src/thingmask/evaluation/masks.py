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

BOUNDARY_TOLERANCE = 0.008  # DAVIS boundary tolerance: a fraction of the image diagonal

__all__ = [
    "BOUNDARY_TOLERANCE",
    "boundary_f",
    "boundary_f_matrix",
    "boundary_map",
    "boundary_tolerance_px",
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


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool → ``(H, W)`` bool map of the mask's 1-pixel-wide boundary.

    DAVIS's ``seg2bmap`` (Martin et al.): a pixel is on the boundary when it differs from its
    right, lower or lower-right neighbour, so the boundary sits half a pixel towards the origin
    from the true edge (in the last row/column only the one neighbour inside the image counts).
    Edges at the image border are not boundaries: a mask filling the frame has none.
    """
    seg = np.asarray(mask, bool)
    if seg.ndim != 2:
        raise ValueError(f"boundary_map: expected an (H, W) mask, got shape {seg.shape}")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance_px(shape: tuple[int, ...], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """The matching distance in pixels: ``tolerance`` >= 1 is pixels, below 1 a fraction of the
    image diagonal, rounded up (DAVIS: 0.008 → 2 px at 160 x 160, 18 px at 1920 x 1080)."""
    if tolerance <= 0:
        raise ValueError(f"boundary tolerance: got {tolerance!r}; expected > 0 (DAVIS: 0.008)")
    if tolerance >= 1:
        return int(np.ceil(tolerance))
    return max(1, int(np.ceil(tolerance * float(np.hypot(shape[-2], shape[-1])))))


def _disk(radius: int) -> np.ndarray:
    # the same footprint as skimage.morphology.disk (x² + y² <= r²), which DAVIS uses
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """Boundary F-measure (DAVIS F) of two ``(H, W)`` bool masks.

    The DAVIS 2016/2017 definition: boundaries by :func:`boundary_map`; a predicted boundary
    pixel is correct when a ground-truth boundary pixel lies within the tolerance disk
    (precision), and vice versa (recall); F = 2PR / (P + R). ``tolerance`` is a fraction of the
    image diagonal, rounded up to whole pixels (DAVIS: 0.008, the default), or pixels when >= 1
    (see :func:`boundary_tolerance_px`). Both boundaries empty → 1.0; one empty → 0.0.
    """
    import cv2

    pred, gt = _check_pair(pred, gt, "boundary_f")
    if pred.ndim != 2:
        raise ValueError(f"boundary_f: expected (H, W) masks, got {pred.shape}")
    bp, bg = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = int(np.count_nonzero(bp)), int(np.count_nonzero(bg))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    disk = _disk(boundary_tolerance_px(pred.shape, tolerance))
    gt_zone = cv2.dilate(bg.view(np.uint8), disk).view(bool)
    pred_zone = cv2.dilate(bp.view(np.uint8), disk).view(bool)
    precision = np.count_nonzero(bp & gt_zone) / n_pred
    recall = np.count_nonzero(bg & pred_zone) / n_gt
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def boundary_f_matrix(
    preds: np.ndarray, gts: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE
) -> np.ndarray:
    """:func:`boundary_f` of every pair: ``preds (N, H, W)`` and ``gts (M, H, W)`` bool →
    ``(N, M)`` float64, equal to ``boundary_f(preds[i], gts[j], tolerance)`` bit for bit.

    Each boundary map and its dilated tolerance zone is computed once, and a pair only counts
    boundary pixels (pairing every track with every object of a video needs all pairs).
    """
    import cv2

    preds, gts = _check_pair(preds, gts, "boundary_f_matrix")
    if preds.ndim != 3 or gts.ndim != 3:
        raise ValueError(
            f"boundary_f_matrix: expected two (N, H, W) stacks, got {preds.shape}, {gts.shape}"
        )
    disk = _disk(boundary_tolerance_px(preds.shape, tolerance))

    def parts(stack: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        out = []
        for mask in stack:
            b = boundary_map(mask)
            ys, xs = np.nonzero(b)
            zone = cv2.dilate(b.view(np.uint8), disk).view(bool) if len(ys) else None
            out.append((ys, xs, zone))
        return out

    f = np.zeros((len(preds), len(gts)))
    gt_parts = parts(gts)
    for i, (py, px, pzone) in enumerate(parts(preds)):
        for j, (gy, gx, gzone) in enumerate(gt_parts):
            n_pred, n_gt = len(py), len(gy)
            if pzone is None or gzone is None:  # boundary_f's empty cases: 1 if both, else 0
                f[i, j] = float(n_pred == n_gt == 0)
                continue
            precision = np.count_nonzero(gzone[py, px]) / n_pred
            recall = np.count_nonzero(pzone[gy, gx]) / n_gt
            if precision + recall > 0:
                f[i, j] = 2 * precision * recall / (precision + recall)
    return f


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
    return np.asarray(masks[sel].any(axis=0)) if sel else np.zeros(masks.shape[1:], bool)


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
