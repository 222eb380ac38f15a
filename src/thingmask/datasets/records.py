"""What a checked source is made of (:class:`Category`, :class:`Instance`, :class:`Sample`) and the
small pure helpers that build them from untrusted JSON: numbers, safe file names, EXIF orientation.

Geometry convention: polygons are flat ``[x1, y1, x2, y2, ...]`` lists in pixel coordinates of
the image *as annotated* (after EXIF orientation, see :func:`orientation_decision`); RLE is COCO
RLE with ``size = [height, width]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IGNORE",
    "Category",
    "Instance",
    "Sample",
    "as_float",
    "as_int",
    "exif_orientation",
    "normalize_file_name",
    "orientation_decision",
    "resolve_inside",
]


@dataclass(frozen=True)
class Category:
    """A class as found in a source: its name, COCO supercategory and original id."""

    name: str
    supercategory: str = ""
    source_id: int = 0


# The class name of an ignore region (labelme's "__ignore__" label, or ``"ignore": 1`` on a COCO
# annotation): no class of its own; written as a crowd region (iscrowd=1, RLE) of every class
IGNORE = "__ignore__"


@dataclass(frozen=True)
class Instance:
    """One object mask. ``segmentation``: polygons (list of flat xy lists, clipped to the image)
    or compressed COCO RLE ``{"size": [h, w], "counts": str}``; ``bbox`` is xywh from the mask.

    ``ignore``: an ignore region, not an object (category :data:`IGNORE`, ``iscrowd`` 1, RLE):
    neither engine trains on it, and COCO evaluation does not count detections inside it.
    """

    category: str
    segmentation: Any
    iscrowd: int
    area: float
    bbox: tuple[float, float, float, float]
    where: str = ""
    ignore: bool = False


@dataclass(frozen=True)
class Sample:
    """One image ready to write.

    ``file_name``: safe relative posix path under the source's image root (also the output name
    before sanitising). ``source``: the file to read, or the image bytes (labelme ``imageData``).
    ``width``/``height``: the image as annotated = as written to ``images/``. ``fix``: ``copy``
    (bytes as they are), ``transpose`` (apply EXIF orientation to the pixels) or ``strip-exif``
    (keep the stored pixels, drop the orientation tag).
    """

    file_name: str
    source: Path | bytes
    width: int
    height: int
    instances: tuple[Instance, ...] = ()
    split: str | None = None
    orientation: int = 1
    fix: str = "copy"
    where: str = ""

    @property
    def objects(self) -> tuple[Instance, ...]:
        """The instances that are objects of a class (ignore regions left out)."""
        return tuple(i for i in self.instances if not i.ignore)


# --- small pure helpers ---------------------------------------------------------------------------
_DRIVE = re.compile(r"^[A-Za-z]:")


def normalize_file_name(name: Any) -> tuple[str | None, str]:
    """``(safe relative posix path, "")`` or ``(None, why it is unsafe)``.

    Backslashes count as separators (Windows exports); absolute paths, drive letters and ``..``
    are rejected so nothing outside the image root is ever opened.
    """
    if not isinstance(name, str) or not name.strip():
        return None, f"file_name must be a non-empty text, got {name!r}"
    if "\x00" in name:
        return None, "file_name contains a NUL character"
    s = name.replace("\\", "/").strip()
    if s.startswith("/") or _DRIVE.match(s):
        return None, f"file_name {name!r} is an absolute path"
    if "://" in s:
        return None, f"file_name {name!r} is a URL"
    parts = [p for p in s.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, f"file_name {name!r} contains '..' (points outside the image folder)"
    if not parts:
        return None, f"file_name {name!r} names no file"
    return "/".join(parts), ""


def resolve_inside(root: Path, rel: str) -> Path | None:
    """The resolved path of ``rel`` under ``root``, or None when a symlink leads outside."""
    try:
        base = root.resolve()
        path = (root / rel).resolve()
    except (OSError, RuntimeError):
        return None
    return path if path == base or base in path.parents else None


def as_int(value: Any) -> int | None:
    """A whole number (``3`` or ``3.0``), or None (bools, text, NaN, ``3.5`` are rejected)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def as_float(value: Any) -> float | None:
    """A finite float, or None (bools, text, NaN are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def orientation_decision(
    annotated: tuple[int, int] | None, stored: tuple[int, int], orientation: int
) -> tuple[str, tuple[int, int] | None, str]:
    """Decide which pixel size is right for an image with EXIF ``orientation``.

    ``annotated``: (width, height) from the annotation file, or None; ``stored``: (width, height)
    of the pixels in the file. PIL's ``ImageOps.exif_transpose`` (and detectron2, labelme,
    browsers, ultralytics) show the *displayed* view: stored size, swapped for orientations 5–8.

    Returns ``(fix, (width, height) or None, verdict)`` with fix ``copy``/``transpose``/
    ``strip-exif`` and verdict ``ok``, ``filled`` (size taken from the file), ``display``
    (annotations match the displayed view: write it upright), ``stored`` (they match the stored
    pixels: drop the tag), ``ambiguous`` (both views have that size: the displayed one is
    assumed) or ``mismatch`` (neither: size None).
    """
    rotated = orientation in (2, 3, 4, 5, 6, 7, 8)
    display = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    if not rotated:
        if annotated is None:
            return "copy", stored, "filled"
        return ("copy", stored, "ok") if annotated == stored else ("copy", None, "mismatch")
    if annotated is None:
        return "transpose", display, "ambiguous"
    if display != stored:
        if annotated == display:
            return "transpose", display, "display"
        if annotated == stored:
            return "strip-exif", stored, "stored"
        return "copy", None, "mismatch"
    if annotated == display:
        return "transpose", display, "ambiguous"
    return "copy", None, "mismatch"


def exif_orientation(im: Any) -> int:
    """The EXIF orientation tag (1..8) of an open PIL image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a corrupt EXIF block must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
