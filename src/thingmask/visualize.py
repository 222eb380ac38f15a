"""Drawing instances and image grids (matplotlib, headless-safe).

Images here are RGB ``(H, W, 3)`` uint8 (matplotlib order); convert BGR frames first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["class_colour", "draw_instances", "finish_figure", "save_grid"]

_PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (220, 190, 255),
        (170, 110, 40),
        (128, 0, 0),
        (170, 255, 195),
        (128, 128, 0),
    ],
    np.uint8,
)


def class_colour(name: str, class_names: Sequence[str] | None = None) -> tuple[int, int, int]:
    """A stable RGB colour for a class (by its index in ``class_names`` when given)."""
    if class_names is not None and name in class_names:
        idx = list(class_names).index(name)
    else:
        idx = sum(name.encode()) % len(_PALETTE)
    r, g, b = (int(c) for c in _PALETTE[idx % len(_PALETTE)])
    return r, g, b


def draw_instances(
    image_rgb: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    class_names: Sequence[str] | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Overlay instance masks, outlines and ``label [score]`` text on a copy of ``image_rgb``.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        masks: ``(N, H, W)`` bool.
        labels: N class names; colours follow ``class_names`` order when given.
    Returns:
        A new ``(H, W, 3)`` uint8 RGB image; the input is not modified.
    """
    import cv2

    blend = image_rgb.astype(np.float32)
    for mask, label in zip(masks, labels, strict=True):
        tint = np.array(class_colour(str(label), class_names), np.float32)
        blend[mask] = blend[mask] * (1 - alpha) + tint * alpha
    out = np.clip(blend, 0, 255).astype(np.uint8)
    font_scale = max(0.3, min(out.shape[:2]) / 500)
    for i, (mask, label) in enumerate(zip(masks, labels, strict=True)):
        if not mask.any():
            continue
        colour = class_colour(str(label), class_names)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, colour, 1)
        ys, xs = np.nonzero(mask)
        text = str(label) if scores is None else f"{label} {float(scores[i]):.2f}"
        org = (int(xs.min()), max(int(ys.min()) - 2, 8))
        cv2.putText(
            out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 2, cv2.LINE_AA
        )
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, 1, cv2.LINE_AA)
    return out


def save_grid(
    images_rgb: Sequence[np.ndarray],
    path: str | Path | None = None,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    show: bool = False,
):
    """Lay images out in a grid; save to ``path`` atomically (PNG) and/or show it inline.

    Returns the matplotlib figure (closed unless ``show``).
    """
    import matplotlib

    if not show:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = max(1, len(images_rgb))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images_rgb):
        ax = axes.ravel()[i]
        ax.imshow(img)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    return finish_figure(fig, path, show)


def finish_figure(fig, path: str | Path | None = None, show: bool = False):
    """Save ``fig`` to ``path`` atomically (PNG) and show it inline, or close it; returns it."""
    import matplotlib.pyplot as plt

    from thingmask.io_utils import atomic_path

    fig.tight_layout()
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    if show:
        plt.show()
    else:
        plt.close(fig)
    return fig
