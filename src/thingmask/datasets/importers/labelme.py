"""labelme: a folder (searched recursively) of one ``.json`` per image.

Each file: ``{"imagePath", "imageWidth", "imageHeight", "imageData" (optional base64),
"shapes": [{"label", "points", "shape_type", "group_id"}]}``. Shapes → COCO:

* ``polygon`` → polygon; ``rectangle`` (2 corners) → 4-point polygon; ``circle`` (centre, a
  point on the rim) → 64-point polygon; ``mask`` (2 corners + base64 PNG) → RLE;
* ``line``, ``linestrip``, ``point``, ``points`` → skipped with a warning (no area);
* shapes sharing a ``group_id`` and label are one instance (an animal split by an occluder).

labelme's own conventions (its ``labelme2coco.py`` / ``labelme2voc.py`` examples):

* ``__ignore__``: a region to ignore, no class. All of an image's ``__ignore__`` shapes become
  one ignore region (written as a COCO crowd region, ``iscrowd=1`` RLE, for every class: both
  engines skip crowd regions as training targets, COCO evaluation does not count detections
  inside them). ``--drop __ignore__`` drops them instead.
* ``_background_``: the background class, not an object: its shapes are skipped (noted).
* ``labels.txt`` in the source folder (``__ignore__``, ``_background_``, then one class a line,
  as ``labelme --labels`` reads it) fixes the class order; without it the order is
  alphabetical. ``names`` (``--names``) overrides it.

``imagePath`` is relative to the JSON file. When it does not lead to a file inside the source
folder, the image beside the JSON with the same name is used, then the embedded ``imageData``.
Subfolders named train/val/valid/test give an existing split.

Files written by ``thingmask prelabel`` carry a review state (:mod:`thingmask.datasets.origins`),
passed on as the image's ``origin``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.class_names import read_labels_txt
from thingmask.datasets.geometry import polygons_to_rle
from thingmask.datasets.importers._common import (
    CocoSource,
    circle_polygon,
    class_ids,
    read_json,
    rect_polygon,
    rel_name,
)
from thingmask.datasets.origins import review_state
from thingmask.datasets.records import IGNORE, as_float, normalize_file_name, resolve_inside
from thingmask.datasets.report import Report
from thingmask.datasets.split import split_of_path

__all__ = ["import_labelme", "is_labelme"]

_NO_AREA = {"line", "linestrip", "point", "points"}
BACKGROUND = "_background_"  # labelme's background class: not an object
LABELS_FILE = "labels.txt"


def is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def _points(raw: Any) -> list[tuple[float, float]] | None:
    if not isinstance(raw, list):
        return None
    pts = []
    for p in raw:
        if not isinstance(p, list) or len(p) != 2:
            return None
        x, y = as_float(p[0]), as_float(p[1])
        if x is None or y is None:
            return None
        pts.append((x, y))
    return pts


def _mask_rle(shape: dict, pts, width, height) -> dict | None:
    """labelme ``mask`` shape: a PNG of the box between the two corner points → COCO RLE."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    if not (isinstance(width, int) and isinstance(height, int)) or len(pts) != 2:
        return None
    try:
        png = base64.b64decode(shape.get("mask") or "", validate=False)
        crop = np.asarray(Image.open(io.BytesIO(png)).convert("L")) > 0
    except (OSError, ValueError, binascii.Error):
        return None
    full = np.zeros((height, width), np.uint8)
    x0, y0 = round(min(pts[0][0], pts[1][0])), round(min(pts[0][1], pts[1][1]))
    x0, y0 = max(0, x0), max(0, y0)
    ch, cw = min(crop.shape[0], height - y0), min(crop.shape[1], width - x0)
    if ch <= 0 or cw <= 0:
        return None
    full[y0 : y0 + ch, x0 : x0 + cw] = crop[:ch, :cw]
    enc = mask_utils.encode(np.asfortranarray(full))
    return {"size": [height, width], "counts": enc["counts"].decode("ascii")}


def _shape_part(shape: Any, where: str, data: dict, report: Report) -> tuple[str, str, Any] | None:
    """One shape → (label, kind "poly"/"rle", geometry) or None (reported)."""
    if not isinstance(shape, dict):
        report.warning(
            "labelme-shape-invalid", where, f"not an object: {str(shape)[:40]}", "Skipped."
        )
        return None
    label, kind = shape.get("label"), shape.get("shape_type") or "polygon"
    if not isinstance(label, str) or not label.strip():
        report.warning(
            "labelme-shape-invalid",
            where,
            f"shape without a label ({label!r})",
            "Skipped. Give the shape a label in labelme.",
        )
        return None
    pts = _points(shape.get("points"))
    if pts is None:
        report.warning(
            "labelme-shape-invalid",
            where,
            f"{label!r}: points are not [x, y] number pairs",
            "Skipped. Redraw the shape in labelme.",
        )
        return None
    label = label.strip()
    if kind in _NO_AREA:
        report.warning(
            "labelme-shape-unsupported",
            where,
            f"{label!r} is a {kind}, which has no area",
            "Skipped. Outline the animal with a polygon instead.",
        )
        return None
    if kind == "rectangle" and len(pts) == 2:
        return label, "poly", rect_polygon(*pts[0], *pts[1])
    if kind == "circle" and len(pts) == 2:
        (cx, cy), (ex, ey) = pts
        return label, "poly", circle_polygon(cx, cy, float(np.hypot(ex - cx, ey - cy)))
    if kind == "mask":
        rle = _mask_rle(shape, pts, data.get("imageWidth"), data.get("imageHeight"))
        if rle is None:
            report.warning(
                "labelme-shape-invalid",
                where,
                f"{label!r}: the mask cannot be decoded (or imageWidth/imageHeight are missing)",
                "Skipped.",
            )
            return None
        return label, "rle", rle
    if kind in ("polygon", "rectangle", "circle"):
        # polygons with < 3 points are reported by the validator, with the others
        return label, "poly", [c for p in pts for c in p]
    report.warning(
        "labelme-shape-unsupported",
        where,
        f"{label!r}: shape type {kind!r} is not supported",
        "Skipped. Use polygon, rectangle, circle or mask.",
    )
    return None


def _merge_rle(parts: list[tuple[str, Any]], width: Any, height: Any) -> dict | None:
    from pycocotools import mask as mask_utils

    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return None
    rles = [
        {"size": geom["size"], "counts": geom["counts"].encode("ascii")}
        for kind, geom in parts
        if kind == "rle"
    ]
    polygons = polygons_to_rle([geom for kind, geom in parts if kind != "rle"], height, width)
    merged = mask_utils.merge(rles + ([polygons] if polygons is not None else []))
    return {"size": [height, width], "counts": merged["counts"].decode("ascii")}


def _image_file(json_path: Path, data: dict, root: Path) -> tuple[str | None, bytes | None]:
    """The image's path relative to ``root`` (safe and existing) or its embedded bytes.

    Returns ``(file_name, None)``, ``(file_name, bytes)`` for imageData, or the declared (maybe
    unsafe) name with None so the validator reports it precisely.
    """
    raw = data.get("imagePath")
    tried: list[str] = []
    if isinstance(raw, str) and raw.strip():
        posix = raw.replace("\\", "/").strip()
        if normalize_file_name(posix)[0] is None and ".." not in posix.split("/"):
            tried.append(posix)  # absolute or a URL: rejected by the validator
        else:
            # ".." is normal in labelme (JSON files beside an images/ folder): resolve it
            # against the JSON's folder, then express it relative to the source root
            joined = os.path.normpath(os.path.join(json_path.parent, posix))
            tried.append(os.path.relpath(joined, root).replace(os.sep, "/"))
        tried.append(rel_name(json_path.parent / posix.rsplit("/", 1)[-1], root))
    for cand in tried:
        safe, _ = normalize_file_name(cand)
        if safe and resolve_inside(root, safe) is not None and (root / safe).is_file():
            return safe, None
    blob = data.get("imageData")
    if isinstance(blob, str) and blob:
        try:
            payload = base64.b64decode(blob, validate=False)
        except (ValueError, binascii.Error):
            payload = b""
        name = tried[-1] if tried else rel_name(json_path.with_suffix(".png"), root)
        safe, _ = normalize_file_name(name)
        if payload and safe:
            return safe, payload
    return (tried[0] if tried else None), None


def import_labelme(
    root: Path, report: Report, names: Sequence[str] | None = None
) -> list[CocoSource]:
    """All labelme JSON files under ``root`` → one :class:`CocoSource` per split folder.

    ``names``: the class order (overrides ``labels.txt``); labels it does not list follow.
    """
    if root.is_file():
        files, root = [root], root.parent
    else:
        files = sorted(
            p
            for p in root.rglob("*.json")
            if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    per_split: dict[str | None, dict[str, Any]] = defaultdict(
        lambda: {"images": [], "annotations": [], "embedded": {}}
    )
    records: list[tuple[str | None, dict, list[tuple[str, list[tuple[str, Any]]]]]] = []
    labels: set[str] = set()
    skipped = background = 0
    ignored: list[str] = []
    for path in files:
        name = rel_name(path, root)
        data = read_json(path, report, name)
        if data is None:
            continue
        if not is_labelme(data):
            skipped += 1
            continue
        file_name, payload = _image_file(path, data, root)
        if file_name is None:
            report.error(
                "image-missing",
                name,
                "no imagePath and no imageData",
                "Open the image in labelme again and save.",
            )
            continue
        split = split_of_path(Path(name).parts[:-1])
        # origin: human, or a thingmask pre-label's review state (prepare leaves unreviewed out)
        image = {"id": len(records) + 1, "file_name": file_name, "origin": review_state(data)}
        w, h = data.get("imageWidth"), data.get("imageHeight")
        if w is not None or h is not None:
            image.update(width=w, height=h)
        if payload is not None:
            per_split[split]["embedded"][file_name] = payload
            report.info(
                "labelme-image-embedded",
                name,
                "the image file was not found; using the copy embedded in the JSON (imageData)",
            )
        groups: dict[Any, list[tuple[str, Any]]] = {}
        order: list[tuple[str, Any]] = []
        for k, shape in enumerate(data["shapes"]):
            part = _shape_part(shape, f"{name}: shape {k}", data, report)
            if part is None:
                continue
            label, kind, geom = part
            if label == BACKGROUND:
                background += 1
                continue
            gid = shape.get("group_id")
            key = (
                (IGNORE, "all")  # one ignore region per image
                if label == IGNORE
                else (label, gid)
                if isinstance(gid, (int, str)) and not isinstance(gid, bool)
                else (label, ("shape", k))
            )
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((kind, geom))
            if label != IGNORE:
                labels.add(label)
        if (IGNORE, "all") in groups:
            ignored.append(name)
        records.append((split, image, [(key[0], groups[key]) for key in order]))
        per_split[split]["images"].append(image)
    if skipped:
        report.info(
            "labelme-files-skipped",
            str(root),
            f"{skipped} .json file(s) are not labelme annotations and were skipped",
        )
    _note_reserved(report, root, background, ignored)
    cat_ids = class_ids(labels, names or _labels_txt(root, report), report, _listed_in(names))
    ann_id = 0
    for split, image, instances in records:
        for label, parts in instances:
            ann_id += 1
            ann: dict[str, Any] = {"id": ann_id, "image_id": image["id"], "iscrowd": 0}
            seg: Any
            if label == IGNORE:
                seg = _merge_rle(parts, image.get("width"), image.get("height"))
                ann.update(iscrowd=1, ignore=1)  # no category: see the module docstring
            elif any(kind == "rle" for kind, _ in parts):
                seg = _merge_rle(parts, image.get("width"), image.get("height"))
                ann["category_id"] = cat_ids[label]
            else:
                seg = [geom for _, geom in parts]
                ann["category_id"] = cat_ids[label]
            ann["segmentation"] = seg
            per_split[split]["annotations"].append(ann)
    cats = [{"id": i, "name": n} for n, i in cat_ids.items()]
    return [
        CocoSource(
            f"labelme:{split or 'all'}",
            {"images": v["images"], "annotations": v["annotations"], "categories": cats},
            root,
            split,
            v["embedded"],
        )
        for split, v in per_split.items()
    ]


def _labels_txt(root: Path, report: Report) -> list[str] | None:
    path = root / LABELS_FILE
    if not path.is_file():
        return None
    try:
        names = read_labels_txt(path)
    except (OSError, UnicodeDecodeError) as exc:
        report.warning(
            "labelme-labels-invalid",
            LABELS_FILE,
            f"cannot be read ({exc}); classes are ordered alphabetically",
            "Save labels.txt as UTF-8 text, one label a line.",
        )
        return None
    report.info("labelme-labels-file", LABELS_FILE, f"class order from labels.txt: {names}")
    return names or None


def _listed_in(names: Sequence[str] | None) -> str:
    return "--names (dataset_class_names)" if names else LABELS_FILE


def _note_reserved(report: Report, root: Path, background: int, ignored: list[str]) -> None:
    if background:
        report.info(
            "labelme-background-skipped",
            str(root),
            f"{background} shape(s) labelled {BACKGROUND!r} skipped: labelme's converters treat "
            "it as the background class, not an object",
            "Nothing to do. Label the animals themselves.",
        )
    if ignored:
        report.info(
            "labelme-ignore-kept",
            ", ".join(ignored[:3]) + (f" and {len(ignored) - 3} more" if len(ignored) > 3 else ""),
            f"{len(ignored)} image(s) have {IGNORE!r} regions: kept as ignore regions, written as "
            "COCO crowd regions (iscrowd=1, RLE) of every class. Both engines skip crowd regions "
            "as training targets, and COCO evaluation does not count detections inside them",
            f"Nothing to do. To drop them instead: --drop {IGNORE}.",
        )
