"""Mask geometry on untrusted input, without decoding masks to full images: polygon area and
clipping, COCO RLE parsing, bbox parsing.

Polygons are flat ``[x1, y1, x2, y2, ...]`` pixel coordinates; RLE is COCO RLE (``size`` =
``[height, width]``, ``counts`` a compressed string in JSON, bytes for pycocotools).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from thingmask.datasets.records import as_float

__all__ = [
    "clip_polygon",
    "parse_bbox",
    "polygon_area",
    "polygons_to_rle",
    "rle_counts_from_string",
    "rle_to_pycoco",
]


def polygon_area(flat: Sequence[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, ...]`` polygon (pixels²)."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


def polygons_to_rle(
    polygons: Sequence[Sequence[float]], height: int, width: int
) -> dict[str, Any] | None:
    """COCO polygons of one instance (flat ``[x1, y1, ...]`` pixels) → the pycocotools RLE of
    their union (``size`` ``[height, width]``, ``counts`` bytes). Polygons of fewer than 3 points
    (no area) are left out; None when none is left. The one polygon→RLE conversion."""
    from pycocotools import mask as mask_utils

    polys = [list(p) for p in polygons if len(p) >= 6]
    if not polys:
        return None
    rle: dict[str, Any] = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    return rle


def clip_polygon(flat: Sequence[float], width: float, height: float) -> list[float]:
    """Clip a polygon to the image rectangle (Sutherland–Hodgman); ``[]`` when nothing is left."""
    pts = list(zip(flat[0::2], flat[1::2], strict=False))
    for axis, bound, keep_low in (
        (0, 0.0, False),
        (0, width, True),
        (1, 0.0, False),
        (1, height, True),
    ):
        if not pts:
            break

        def inside(p, axis=axis, bound=bound, keep_low=keep_low):
            return p[axis] <= bound if keep_low else p[axis] >= bound

        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(_cross(prev, cur, axis, bound))
                out.append(cur)
            elif inside(prev):
                out.append(_cross(prev, cur, axis, bound))
        pts = out
    return [float(c) for p in pts for c in p]


def _cross(a, b, axis, bound):
    t = (bound - a[axis]) / (b[axis] - a[axis])
    x, y = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
    return (bound, y) if axis == 0 else (x, bound)


def rle_counts_from_string(s: str) -> list[int] | None:
    """Decode COCO's compressed RLE ``counts`` string (pycocotools' ``rleFrString``) in Python,
    so hostile strings are rejected before the C code (which does no bounds checks) sees them."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s) or k > 12:
                return None
            c = ord(s[p]) - 48
            if not 0 <= c <= 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_pycoco(rle: Mapping[str, Any]) -> dict[str, Any]:
    """Compressed RLE with ``str`` counts (JSON form) → pycocotools form (``bytes`` counts)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def parse_bbox(value: Any) -> tuple[float, float, float, float] | None:
    """A COCO ``[x, y, w, h]`` box of finite numbers with ``w, h >= 0``, or None."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    x, y, w, h = (as_float(v) for v in value)
    if x is None or y is None or w is None or h is None or w < 0 or h < 0:
        return None
    return x, y, w, h
