"""Drawing primitives of the synthetic world: ellipses, strokes and Bezier curves as polygons,
sub-pixel polygon filling, and the shared leaf palette (RGB)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LEAF_COLOURS", "TAU", "bezier", "ellipse", "fill_polygons", "stroke"]

TAU = 2.0 * math.pi
LEAF_COLOURS = ((60, 140, 50), (95, 165, 40), (40, 110, 60), (150, 170, 50))


def ellipse(
    cx: float, cy: float, ax: float, ay: float, rot: float = 0.0, n: int = 40
) -> np.ndarray:
    a = np.linspace(0.0, TAU, n, endpoint=False)
    x, y = ax * np.cos(a), ay * np.sin(a)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def stroke(points: np.ndarray, radius: float, n_cap: int = 10) -> list[np.ndarray]:
    """A polyline of the given half-width as polygons (a band plus round caps)."""
    p = np.asarray(points, np.float64)
    d = np.gradient(p, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) * radius
    band = np.concatenate([p + normal, (p - normal)[::-1]])
    caps = [
        ellipse(p[0, 0], p[0, 1], radius, radius, n=n_cap),
        ellipse(p[-1, 0], p[-1, 1], radius, radius, n=n_cap),
    ]
    return [band, *caps]


def bezier(p0: tuple, p1: tuple, p2: tuple, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def fill_polygons(polys: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Rasterise polygons given in image pixel coordinates → (H, W) bool (sub-pixel exact)."""
    import cv2

    canvas = np.zeros((h, w), np.uint8)
    for p in polys:  # one call per polygon: fillPoly would XOR overlapping polygons
        pts = np.round(p * 16.0).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)
