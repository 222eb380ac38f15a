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

The same cut-out on tensors (:func:`composite_tensor`, :func:`union_mask_tensor`): the video
pipeline composites on the GPU where the masks already are, so only the finished frame crosses
to the host. Pixel for pixel it equals :func:`composite_mask` in every mode (the grey weights are
OpenCV's own fixed-point ones) except ``blur``, which follows the same steps (1/8 scale, Gaussian
with OpenCV's kernel and reflected border, bilinear back up) and differs by at most 2 levels from
rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)

from thingmask.config import CANVAS_MODES, Config
from thingmask.detections import Detections
from thingmask.io_utils import read_image_bgr

__all__ = [
    "Canvas",
    "composite_mask",
    "composite_tensor",
    "get_masked_image",
    "union_mask_tensor",
    "union_mask_u8",
]


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
    _tensors: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

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
    def from_config(cls, config: Config) -> Canvas:
        """Build from ``config.canvas``, ``config.canvas_color`` (RGB), ``config.canvas_image``."""
        image = None
        if config.canvas == "image":
            image = read_image_bgr(config.canvas_image, "canvas_image")
        r, g, b = config.canvas_color  # validated by Config: three integers
        return cls(mode=config.canvas, color_rgb=(r, g, b), image=image)

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
            picture = np.asarray(self.image, np.uint8)  # checked in __post_init__
            self._cache.clear()
            self._cache[key] = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA)
        return self._cache[key].copy()

    def background_tensor(self, frame: torch.Tensor) -> torch.Tensor:
        """:meth:`background` for an ``(H, W, 3)`` uint8 BGR tensor, on its device.

        Constant canvases come back as a broadcastable ``(3,)`` colour; the others as
        ``(H, W, 3)`` uint8. Not for ``black``/``transparent`` (those need no background).
        """
        h, w = int(frame.shape[0]), int(frame.shape[1])
        mode = self.mode
        if mode in ("white", "color"):
            bgr = (255, 255, 255) if mode == "white" else self.color_rgb[::-1]  # RGB -> BGR
            return torch.tensor(bgr, dtype=torch.uint8, device=frame.device)
        if mode == "grey":
            # OpenCV's BGR2GRAY for 8-bit pixels, bit-exact: 15-bit fixed-point BT.601 weights
            b, g, r = frame.to(torch.int32).unbind(-1)
            y = (b * 3735 + g * 19235 + r * 9798 + (1 << 14)) >> 15
            return y.to(torch.uint8).unsqueeze(-1).expand(h, w, 3)
        if mode == "blur":
            return _strong_blur_tensor(frame, self.blur_strength)
        if mode != "image":
            raise ValueError(f"canvas {mode!r} has no background picture")
        key = ("image", h, w, str(frame.device))
        if key not in self._tensors:  # the host resize (same pixels as the CPU path), once
            self._tensors.clear()
            self._tensors[key] = torch.from_numpy(
                self.background(np.zeros((h, w, 3), np.uint8))
            ).to(frame.device)
        return self._tensors[key]


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


def union_mask_tensor(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(H, W)`` bool: where any of the ``(N, H, W)`` bool ``masks`` is (N may be 0)."""
    if masks.shape[0] == 0:
        return torch.zeros((height, width), dtype=torch.bool, device=masks.device)
    return masks.any(dim=0)


def composite_tensor(frame: torch.Tensor, mask: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """:func:`composite_mask` on tensors, on their device (the GPU path of the video pipeline).

    Args:
        frame: ``(H, W, 3)`` uint8 **BGR** tensor; not modified.
        mask: ``(H, W)`` bool tensor on the same device (True = keep).
        canvas: the :class:`Canvas`.

    Returns:
        A new ``(H, W, 3)`` uint8 BGR tensor, or ``(H, W, 4)`` BGRA (alpha 255 = mask) when
        transparent, on ``frame``'s device.
    """
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"expected a (H, W, 3) uint8 BGR frame tensor, got {tuple(frame.shape)} {frame.dtype}"
        )
    if tuple(mask.shape) != tuple(frame.shape[:2]) or mask.dtype != torch.bool:
        raise ValueError(
            f"mask: expected a bool tensor of shape {tuple(frame.shape[:2])}, got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    keep = mask.unsqueeze(-1)
    if canvas.mode in ("black", "transparent"):
        out = torch.where(keep, frame, torch.zeros((), dtype=torch.uint8, device=frame.device))
        if canvas.has_alpha:
            out = torch.cat([out, keep.to(torch.uint8) * 255], dim=-1)
        return out
    return torch.where(keep, frame, canvas.background_tensor(frame))


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


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``pad`` as OpenCV's BORDER_REFLECT does
    (``fedcba|abcdefgh|hgfedcb``), for any ``pad`` (also wider than the axis)."""
    idx = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _strong_blur_tensor(frame: torch.Tensor, strength: float) -> torch.Tensor:
    """:func:`_strong_blur` on a ``(H, W, 3)`` uint8 tensor: the same steps, rounded to 8 bits
    after each as OpenCV does, with OpenCV's Gaussian kernel (at most 2 levels apart)."""
    h, w = int(frame.shape[0]), int(frame.shape[1])
    x = frame.permute(2, 0, 1).unsqueeze(0).float()
    steps = 0
    while steps < 3 and min(x.shape[-2:]) >= 32:
        size = (max(1, x.shape[-2] // 2), max(1, x.shape[-1] // 2))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = torch.floor(x + 0.5).clamp_(0, 255)
        steps += 1
    sigma = max(1.0, strength * min(h, w) / 2**steps)
    k = round(sigma * 3 * 2 + 1) | 1  # OpenCV's kernel size for 8-bit images
    g = torch.from_numpy(cv2.getGaussianKernel(k, sigma).ravel().astype(np.float32))
    g = g.to(frame.device)
    pad = k // 2
    rows = _reflect_index(x.shape[-2], pad, frame.device)
    cols = _reflect_index(x.shape[-1], pad, frame.device)
    x = x[:, :, rows][:, :, :, cols]
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
    x = torch.floor(x + 0.5).clamp_(0, 255)
    if steps:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = torch.floor(x + 0.5).clamp_(0, 255)
    return x[0].permute(1, 2, 0).to(torch.uint8)
