"""Crisper mask edges at full resolution: an edge-aware refinement of each instance's soft mask
with a guided filter on the frame, computed only inside the instance's window.

Mask R-CNN predicts each mask on a 28 x 28 grid and pastes it, upsampled, into the box: at
1080p one grid cell covers 15-30 pixels, so edges are soft and cut corners. The guided filter
(He, Sun & Tang, "Guided Image Filtering", TPAMI 2013) fits the soft mask, in every window
of ``2r + 1`` pixels, as a linear function of the image's brightness: where the image has an
edge the mask follows it, where it is flat the mask is only smoothed. This module uses the
fast variant (He & Sun 2015, arXiv:1505.00996): the coefficients are computed on a copy
subsampled by ``s`` and upsampled bilinearly, so the full-resolution work is one multiply-add.

Radius: one mask-grid cell, ``r = max(2, round(max(box w, box h) / 28))``, so the filter
reaches across the blur of the upsampled mask and no further; ``s = max(1, r // 3)``. The
window is trimmed to whole s x s blocks (fewer than s pixels of its margin).
``eps`` (on brightness in 0..1) sets how strong an edge must be to be followed.

The guided filter is written here with OpenCV box filters (opencv-contrib's ``ximgproc`` has
one, but the project installs ``opencv-python-headless``, which lacks it; the two cannot be
installed together). Without ``Detections.probs`` the binary masks stand in (x 255).
"""

from __future__ import annotations

import cv2
import numpy as np

from thingmask.cutout.windows import Window, tight_box, to_detections, to_windows
from thingmask.detections import Detections

__all__ = ["EdgeRefiner", "guided_filter"]

GRID = 28  # Mask R-CNN's mask resolution: the radius is one grid cell of the box


def _box_mean(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(
    guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1
) -> np.ndarray:
    """Fast guided filter of ``src`` with a grey ``guide``, both ``(h, w)`` uint8 (0..255),
    ``h`` and ``w`` multiples of ``subsample``.

    Returns ``(h, w)`` float32 in the units of ``src`` (0..255, may overshoot a little).
    ``eps`` is on brightness in 0..1; ``subsample`` s >= 1 computes the coefficients on s x s
    block means, with radius ``radius / s``, and upsamples them bilinearly.
    """
    if guide.shape != src.shape or guide.ndim != 2:
        raise ValueError(f"guided_filter: guide {guide.shape} and src {src.shape} must match")
    if guide.dtype != np.uint8 or src.dtype != np.uint8:
        raise TypeError(f"guided_filter: expected uint8 images, got {guide.dtype}, {src.dtype}")
    h, w = src.shape
    s = max(1, int(subsample))
    if h % s or w % s:
        raise ValueError(f"guided_filter: size {w}x{h} is not a multiple of subsample {s}")
    small = (w // s, h // s)
    g = cv2.resize(guide, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    p = cv2.resize(src, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    r = max(1, round(radius / s))
    mean_g, mean_p = _box_mean(g, r), _box_mean(p, r)
    var_g = _box_mean(g * g, r) - mean_g * mean_g
    cov_gp = _box_mean(g * p, r) - mean_g * mean_p
    a = cov_gp / (var_g + eps * 255.0 * 255.0)  # src = a * guide + b, both in 0..255
    b = mean_p - a * mean_g
    mean_a, mean_b = _box_mean(a, r), _box_mean(b, r)
    if s > 1:
        mean_a = cv2.resize(mean_a, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (w, h), interpolation=cv2.INTER_LINEAR)
    q = cv2.multiply(mean_a, guide, dtype=cv2.CV_32F)
    return cv2.add(q, mean_b, dst=q)


class EdgeRefiner:
    """Snaps each instance's mask to the image's edges (see the module docstring).

    Args:
        eps: guided-filter regularisation on brightness in 0..1 (smaller follows weaker edges).
        mask_threshold: the predictor's mask threshold (probability, 0..1).

    :meth:`refine` is stateless and pure: new Detections, ``probs`` filled with the refined
    soft masks, boxes tightened to the refined masks. :meth:`refine_windows` does the same
    on :class:`~thingmask.cutout.windows.Window` lists.
    """

    def __init__(self, eps: float = 1e-3, mask_threshold: float = 0.5) -> None:
        if eps <= 0:
            raise ValueError(f"eps: got {eps!r}; expected > 0 (e.g. 1e-3)")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold: got {mask_threshold!r}; expected 0 < x < 1")
        self.eps = float(eps)
        self.mask_threshold = float(mask_threshold)

    def refine(self, frame_bgr: np.ndarray, dets: Detections) -> Detections:
        """Refined copy of ``dets`` for the ``(H, W, 3)`` uint8 **BGR** ``frame_bgr``."""
        h, w = dets.image_size
        wins = self.refine_windows(frame_bgr, to_windows(dets))
        return to_detections(wins, h, w, dets.track_ids is not None)

    def refine_windows(self, frame_bgr: np.ndarray, windows: list[Window]) -> list[Window]:
        """Each window refined against its part of ``frame_bgr`` ((H, W, 3) uint8 BGR)."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(
                f"refine: expected an (H, W, 3) uint8 BGR frame, got {frame_bgr.dtype} "
                f"{frame_bgr.shape}"
            )
        h, w = frame_bgr.shape[:2]
        out = []
        for win in windows:
            x0, y0, x1, y1 = win.region
            if x1 > w or y1 > h:
                raise ValueError(
                    f"refine: an instance window {win.region} reaches past the {w}x{h} frame; "
                    "pass the frame the detections belong to"
                )
            out.append(self._refine_one(frame_bgr[y0:y1, x0:x1], win))
        return out

    def _refine_one(self, image: np.ndarray, win: Window) -> Window:
        bw, bh = float(win.box[2] - win.box[0]), float(win.box[3] - win.box[1])
        r = max(2, round(max(bw, bh) / GRID))
        s = max(1, r // 3)
        # the window trimmed to whole s x s blocks: the trimmed strip (< s px) lies in the
        # window's margin outside the box (at least 2 px + 10 % > s)
        h, w = (win.mask.shape[0] // s) * s, (win.mask.shape[1] // s) * s
        if min(h, w) < 4 * s:
            return win
        grey = cv2.cvtColor(image[:h, :w], cv2.COLOR_BGR2GRAY)
        q = guided_filter(grey, np.ascontiguousarray(win.prob[:h, :w]), r, self.eps, s)
        mask = q > self.mask_threshold * 255
        box = tight_box(mask, win.origin)
        if box is None:  # refined away (no edge to follow): keep the detection as it was
            return win
        np.maximum(q, 0.0, out=q)
        prob = cv2.convertScaleAbs(q)  # rounds and saturates to uint8
        x0, y0 = win.origin
        region = (x0, y0, x0 + w, y0 + h)
        return Window(region, mask, prob, box, win.class_name, win.score, win.track_id)
