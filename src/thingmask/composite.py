"""Cut-out compositing: the kept instances' pixels on a canvas.

Pure functions: the input frame and detections are never modified; every call returns a new
array. Images are ``(H, W, 3)`` uint8 **BGR** (OpenCV / PyAV ``bgr24`` order); the transparent
mode returns ``(H, W, 4)`` uint8 **BGRA** whose alpha is 255 on the instances and 0 elsewhere.

Canvas modes (``Config.canvas``):

===============  ===============================================================================
``black``        instances on black
``white``        instances on white
``color``        instances on ``canvas_color`` (given as **RGB** in the config, converted to BGR)
``blur``         instances sharp, the rest of the frame strongly blurred
``grey``         instances in colour, the rest in greyscale (Matterport's "colour splash")
``image``        instances on a background picture (``canvas_image``, resized to the frame)
``transparent``  instances on nothing: BGRA with alpha = mask (needs webm, mov or png output)
===============  ===============================================================================

Speed: the masked copy uses ``cv2.copyTo`` (SIMD, no float temporaries); blur works on a
downscaled copy. ``scripts/bench_video.py`` prints milliseconds per 1080p frame for each mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thingmask.config import CANVAS_MODES
from thingmask.detections import Detections

__all__ = ["Canvas", "composite_mask", "get_masked_image", "union_mask_u8"]


@dataclass(frozen=True)
class Canvas:
    """What goes behind the cut-out instances.

    Attributes:
        mode: one of :data:`CANVAS_MODES`.
        color_rgb: ``(R, G, B)`` 0..255 for ``mode="color"``.
        image: ``(h, w, 3)`` uint8 **BGR** background for ``mode="image"`` (any size; resized
            to each frame's size, cached per size).
        blur_strength: blur radius as a fraction of the frame's shorter side (``mode="blur"``).
    """

    mode: str = "black"
    color_rgb: tuple[int, int, int] = (0, 0, 0)
    image: np.ndarray | None = None
    blur_strength: float = 0.03
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in CANVAS_MODES:
            raise ValueError(f"canvas: got {self.mode!r}; expected one of {list(CANVAS_MODES)}")
        rgb = tuple(self.color_rgb)
        if len(rgb) != 3 or not all(
            isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in rgb
        ):
            raise ValueError(
                f"canvas_color: got {self.color_rgb!r}; expected three integers "
                "0..255 (R, G, B), e.g. [0, 255, 0]"
            )
        object.__setattr__(self, "color_rgb", tuple(int(c) for c in rgb))
        if self.mode == "image":
            img = self.image
            if (
                img is None
                or np.asarray(img).ndim != 3
                or np.asarray(img).shape[2] != 3
                or np.asarray(img).dtype != np.uint8
            ):
                raise ValueError(
                    "canvas='image' needs a (h, w, 3) uint8 BGR background picture; "
                    "set canvas_image to a .png/.jpg file"
                )
        if not 0 < self.blur_strength < 1:
            raise ValueError(
                f"blur_strength: got {self.blur_strength!r}; expected a fraction "
                "between 0 and 1, e.g. 0.03"
            )

    @property
    def has_alpha(self) -> bool:
        """True when the composite is BGRA (``mode="transparent"``)."""
        return self.mode == "transparent"

    @classmethod
    def from_config(cls, config: Any) -> Canvas:
        """Build from ``config.canvas``, ``config.canvas_color`` (RGB), ``config.canvas_image``."""
        image = None
        if config.canvas == "image":
            image = read_background(config.canvas_image)
        return cls(mode=config.canvas, color_rgb=tuple(config.canvas_color), image=image)

    def _constant(self, h: int, w: int) -> np.ndarray:
        """The cached plain-colour canvas for an ``h x w`` frame (read-only: copy before use)."""
        bgr = (255, 255, 255) if self.mode == "white" else self.color_rgb[::-1]  # RGB -> BGR
        key = ("constant", h, w)
        if key not in self._cache:  # filling 6 MB from a tuple is slow; copying it is not
            self._cache.clear()
            img = np.empty((h, w, 3), np.uint8)
            img[:] = bgr
            img.flags.writeable = False
            self._cache[key] = img
        return self._cache[key]

    def background(self, frame_bgr: np.ndarray) -> np.ndarray:
        """A new ``(H, W, 3)`` uint8 BGR canvas for ``frame_bgr`` (BGRA zeros if transparent)."""
        h, w = frame_bgr.shape[:2]
        mode = self.mode
        if mode == "transparent":
            return np.zeros((h, w, 4), np.uint8)
        if mode == "black":
            return np.zeros((h, w, 3), np.uint8)
        if mode in ("white", "color"):
            return self._constant(h, w).copy()
        if mode == "grey":
            return cv2.cvtColor(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if mode == "blur":
            return _strong_blur(frame_bgr, self.blur_strength)
        key = ("image", h, w)
        if key not in self._cache:  # resize once per frame size, not once per frame
            self._cache.clear()
            self._cache[key] = cv2.resize(self.image, (w, h), interpolation=cv2.INTER_AREA)
        return self._cache[key].copy()


def read_background(path: str | Path) -> np.ndarray:
    """Load ``canvas_image`` as ``(h, w, 3)`` uint8 BGR, with a clear error naming the file."""
    p = Path(path)
    if not str(path) or not p.is_file():
        raise ValueError(
            f"canvas_image: {str(path)!r} is not an existing picture file. Set "
            "canvas_image to a .png/.jpg background, or choose another canvas."
        )
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(
            f"canvas_image: {p} could not be read as a picture (expected .png, "
            ".jpg, .bmp, .tif). Convert it or choose another canvas."
        )
    return img


def union_mask_u8(detections: Detections) -> np.ndarray:
    """``(H, W)`` uint8, 1 where any instance is, 0 elsewhere (a new array)."""
    h, w = detections.image_size
    masks = detections.masks
    if len(masks) == 0:
        return np.zeros((h, w), np.uint8)
    out = masks[0].view(np.uint8).copy()  # bool -> uint8 without a conversion pass
    for m in masks[1:]:
        cv2.bitwise_or(out, m.view(np.uint8), dst=out)
    return out


def composite_mask(frame_bgr: np.ndarray, mask: np.ndarray, canvas: Canvas) -> np.ndarray:
    """Pixels of ``frame_bgr`` where ``mask`` on ``canvas``'s background (new array).

    Args:
        frame_bgr: ``(H, W, 3)`` uint8 BGR.
        mask: ``(H, W)`` bool or uint8 (non-zero = keep).
        canvas: the :class:`Canvas`.

    Returns:
        ``(H, W, 3)`` uint8 BGR, or ``(H, W, 4)`` uint8 BGRA (alpha 255 = mask) when transparent.
    """
    frame_bgr = _check_frame(frame_bgr)
    mask = np.asarray(mask)
    if mask.shape != frame_bgr.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the frame's {frame_bgr.shape[:2]}")
    m = mask.view(np.uint8) if mask.dtype == bool else (mask != 0).view(np.uint8)
    m = np.ascontiguousarray(m)
    if canvas.has_alpha:
        # BGR2BGRA sets alpha 255 everywhere; the masked copy onto zeros leaves alpha = mask
        return cv2.copyTo(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2BGRA), m)
    if canvas.mode == "black":
        return cv2.copyTo(frame_bgr, m)  # unmasked pixels of a fresh dst are zero
    out = canvas.background(frame_bgr)
    cv2.copyTo(frame_bgr, m, out)
    return out


def get_masked_image(frame_bgr: np.ndarray, detections: Detections, canvas: Canvas) -> np.ndarray:
    """The kept instances of ``frame_bgr`` on ``canvas`` (the cut-out frame).

    Args:
        frame_bgr: ``(H, W, 3)`` uint8 **BGR** frame; not modified.
        detections: instances to keep (already filtered to the display things), masks
            ``(N, H, W)`` bool matching the frame size; N may be 0 (then: canvas only).
        canvas: see :class:`Canvas`.

    Returns:
        A new ``(H, W, 3)`` uint8 BGR image, or ``(H, W, 4)`` uint8 BGRA for ``transparent``.
    """
    frame_bgr = _check_frame(frame_bgr)
    if detections.image_size != frame_bgr.shape[:2]:
        raise ValueError(
            f"detections are for a {detections.image_size} image but the frame is "
            f"{frame_bgr.shape[:2]} (H, W); run the predictor on this frame"
        )
    return composite_mask(frame_bgr, union_mask_u8(detections), canvas)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"expected a (H, W, 3) uint8 BGR frame, got shape {frame.shape} dtype {frame.dtype}"
        )
    return np.ascontiguousarray(frame)


def _strong_blur(frame_bgr: np.ndarray, strength: float) -> np.ndarray:
    """A heavy Gaussian blur computed at 1/8 scale (same look, far cheaper at 1080p).

    The 1/8 copy is made by three 1/2 bilinear steps (each an exact 2x2 average): as smooth as
    ``INTER_AREA`` without its cost, and without the shimmer a single subsampling step causes.
    """
    h, w = frame_bgr.shape[:2]
    small = frame_bgr
    steps = 0
    while steps < 3 and min(small.shape[:2]) >= 32:
        small = cv2.resize(
            small,
            (max(1, small.shape[1] // 2), max(1, small.shape[0] // 2)),
            interpolation=cv2.INTER_LINEAR,
        )
        steps += 1
    sigma = max(1.0, strength * min(h, w) / 2**steps)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    if steps == 0:
        return small
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
