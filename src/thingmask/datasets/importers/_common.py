"""Shared pieces of the importers: the :class:`CocoSource` they produce, safe JSON reading,
shape → polygon helpers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thingmask.datasets.report import Report

__all__ = [
    "IMAGE_EXTENSIONS",
    "CocoSource",
    "circle_polygon",
    "class_ids",
    "ellipse_polygon",
    "read_json",
    "rect_polygon",
    "rel_name",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CIRCLE_POINTS = 64  # a 64-gon covers 99.8 % of its circle


@dataclass
class CocoSource:
    """One COCO instances dict (untrusted until :func:`~thingmask.datasets.validate.check_coco`)
    with the folder its ``file_name`` values are relative to.

    ``name``: for messages; ``split``: ``train``/``val``/``test`` when the source is one split of
    an existing split, else None; ``embedded``: image bytes by file name (labelme imageData).
    """

    name: str
    data: Any
    image_root: Path
    split: str | None = None
    embedded: dict[str, bytes] = field(default_factory=dict)


def read_json(path: Path, report: Report, name: str | None = None) -> Any | None:
    """Parsed JSON, or None after reporting ``json-invalid`` (never raises for bad files)."""
    where = name or str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Windows tools write a BOM
    except (OSError, UnicodeDecodeError) as exc:
        report.error(
            "json-invalid",
            where,
            f"cannot be read as UTF-8 text ({exc})",
            "Re-export the annotations from your tool.",
        )
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        report.error(
            "json-invalid",
            where,
            f"is not valid JSON ({exc})",
            "Re-export it; an interrupted download or a hand edit breaks JSON.",
        )
        return None


def rel_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a posix string (for messages and file names)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def rect_polygon(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    """Axis-aligned rectangle from two opposite corners → flat polygon (clockwise from top-left)."""
    xa, xb = sorted((x1, x2))
    ya, yb = sorted((y1, y2))
    return [xa, ya, xb, ya, xb, yb, xa, yb]


def ellipse_polygon(
    cx: float, cy: float, rx: float, ry: float, theta: float = 0.0, n: int = CIRCLE_POINTS
) -> list[float]:
    """Ellipse (radians ``theta`` rotation) → flat polygon of ``n`` points."""
    ct, st = math.cos(theta), math.sin(theta)
    out: list[float] = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x, y = rx * math.cos(a), ry * math.sin(a)
        out += [cx + x * ct - y * st, cy + x * st + y * ct]
    return out


def circle_polygon(cx: float, cy: float, r: float, n: int = CIRCLE_POINTS) -> list[float]:
    return ellipse_polygon(cx, cy, r, r, 0.0, n)


def class_ids(
    labels: set[str], order: Sequence[str] | None, report: Report, listed_in: str
) -> dict[str, int]:
    """Category ids 1..K for the class ``labels`` found in an export.

    Without ``order`` (a class list given with the export): alphabetical. With it: its classes
    first, in its order (unused ones too, so the validator reports them as empty), then the
    labels it does not list, alphabetically, reported as ``class-unlisted``.
    """
    if not order:
        return {n: i for i, n in enumerate(sorted(labels), 1)}
    extra = sorted(labels - set(order))
    if extra:
        report.warning(
            "class-unlisted",
            listed_in,
            f"label(s) {extra} are not in the class list; added after the listed classes",
            f"Add them to {listed_in}, or drop them with --drop NAME.",
        )
    return {n: i for i, n in enumerate([*order, *extra], 1)}
