"""VIA (VGG Image Annotator) 1.x/2.x JSON: the detectron2 balloon-tutorial format.

``{key: {"filename", "size", "regions": [...] or {"0": ...}, "file_attributes"}}``, either at the
top level ("Export annotations as json") or under ``_via_img_metadata`` (a saved VIA 2 project).
A region is ``{"shape_attributes": {"name": "polygon", "all_points_x": [...],
"all_points_y": [...]}, "region_attributes": {"class": "cat"}}``; ``rect``, ``circle`` and
``ellipse`` shapes are converted; ``point`` and ``polyline`` (an open line) are skipped, as VIA's
own COCO export skips them.

The class is the value of one region attribute: ``class_attribute`` when given, else the
project's first region attribute (or the first one found). Regions without it get
``default_class`` (the balloon dataset has no attributes at all: one class). Image files are
relative to the JSON's folder; ``train/``, ``val/`` folders (as in the balloon dataset) give an
existing split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thingmask.datasets.importers._common import (
    CocoSource,
    class_ids,
    ellipse_polygon,
    read_json,
    rect_polygon,
    rel_name,
)
from thingmask.datasets.records import as_float
from thingmask.datasets.report import Report
from thingmask.datasets.split import split_of_path

__all__ = ["import_via", "is_via", "via_entries"]


def via_entries(data: Any) -> dict[str, dict] | None:
    """The per-image entries of a VIA 1/2 file, or None when ``data`` is not one."""
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not data:
        return None
    entries = {
        k: v for k, v in data.items() if isinstance(v, dict) and "filename" in v and "regions" in v
    }
    return entries if entries and len(entries) == len(data) else None


def is_via(data: Any) -> bool:
    return via_entries(data) is not None


def _is_via3(data: Any) -> bool:
    return isinstance(data, dict) and {"project", "file", "metadata"} <= set(data)


def _regions(entry: dict) -> list[Any]:
    regions = entry.get("regions")
    if isinstance(regions, dict):  # VIA 1: {"0": {...}, "1": {...}}
        keys = sorted(
            regions, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k))
        )
        return [regions[k] for k in keys]
    return regions if isinstance(regions, list) else []


def _polygon(shape: Any) -> tuple[list[float] | None, str]:
    """A region's ``shape_attributes`` → flat polygon, or (None, why) — as VIA's own COCO export
    converts them (``via_region_shape_to_coco_annotation``; ellipse ``theta`` in radians)."""
    if not isinstance(shape, dict):
        return None, "shape_attributes is not an object"
    name = shape.get("name")
    num = {
        k: as_float(shape.get(k))
        for k in ("x", "y", "width", "height", "cx", "cy", "r", "rx", "ry", "theta")
    }
    if name == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            return None, "all_points_x/all_points_y are missing or of different lengths"
        parsed = [as_float(v) for pair in zip(xs, ys, strict=True) for v in pair]
        pts = [v for v in parsed if v is not None]
        if len(pts) != len(parsed):
            return None, "a point coordinate is not a number"
        return pts, ""  # fewer than 3 points: reported by the validator
    x, y, width, height = num["x"], num["y"], num["width"], num["height"]
    cx, cy, r, rx, ry = num["cx"], num["cy"], num["r"], num["rx"], num["ry"]
    if name == "rect":
        if x is None or y is None or width is None or height is None:
            return None, "rect needs numeric x, y, width, height"
        return rect_polygon(x, y, x + width, y + height), ""
    if name == "circle":
        if cx is None or cy is None or r is None:
            return None, "circle needs numeric cx, cy, r"
        return ellipse_polygon(cx, cy, r, r), ""
    if name == "ellipse":
        if cx is None or cy is None or rx is None or ry is None:
            return None, "ellipse needs numeric cx, cy, rx, ry"
        return ellipse_polygon(cx, cy, rx, ry, num["theta"] or 0.0), ""
    if name in ("point", "polyline"):
        # VIA's own COCO export leaves these out too: a point or an open line has no area
        return None, f"a {name} has no area"
    return None, f"unknown shape {name!r}"


def _class_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    if isinstance(value, dict):  # checkbox attribute: {"cat": true}
        chosen = [k for k, v in value.items() if v]
        return str(chosen[0]).strip() or None if chosen else None
    if isinstance(value, list) and value:
        return _class_value(value[0])
    return None


def _pick_attribute(files: list[tuple[Path, Any]]) -> str | None:
    for _, data in files:
        region_defs = (
            (data.get("_via_attributes") or {}).get("region") if isinstance(data, dict) else None
        )
        if isinstance(region_defs, dict) and region_defs:
            return str(next(iter(region_defs)))
    for _, data in files:
        for entry in (via_entries(data) or {}).values():
            for region in _regions(entry):
                attrs = region.get("region_attributes") if isinstance(region, dict) else None
                if isinstance(attrs, dict) and attrs:
                    return str(next(iter(attrs)))
    return None


def _option_order(files: list[tuple[Path, Any]], attribute: str | None) -> list[str] | None:
    """The option ids of the class attribute (dropdown, radio, checkbox) in the project's
    order: VIA's own COCO export numbers its categories in this order."""
    for _, data in files:
        region_defs = (
            (data.get("_via_attributes") or {}).get("region") if isinstance(data, dict) else None
        )
        spec = region_defs.get(attribute) if isinstance(region_defs, dict) else None
        options = spec.get("options") if isinstance(spec, dict) else None
        if isinstance(options, dict) and options:
            return [str(k).strip() for k in options if str(k).strip()]
    return None


def import_via(
    source: Path,
    report: Report,
    class_attribute: str | None = None,
    default_class: str = "object",
    names: Sequence[str] | None = None,
) -> list[CocoSource]:
    """VIA JSON file(s) at ``source`` (a file, or a folder searched recursively).

    Class ids follow ``names`` when given, else the class attribute's options in the project's
    order (as VIA's COCO export numbers them), else the alphabetical order.
    """
    root = source if source.is_dir() else source.parent
    paths = (
        [source]
        if source.is_file()
        else sorted(
            p
            for p in source.rglob("*.json")
            if not any(part.startswith(".") for part in p.relative_to(source).parts)
        )
    )
    files: list[tuple[Path, Any]] = []
    for path in paths:
        data = read_json(path, report, rel_name(path, root))
        if data is None:
            continue
        if _is_via3(data):
            report.error(
                "via3-unsupported",
                rel_name(path, root),
                "this is a VIA 3 project, which thingmask does not read",
                "In VIA use Annotation > Export annotations (COCO format), or annotate in VIA 2.",
            )
        elif is_via(data):
            files.append((path, data))
        elif source.is_file():
            report.error(
                "coco-structure",
                rel_name(path, root),
                "not a VIA 1/2 annotation file (expected {key: {filename, regions}})",
                "Export from VIA with Annotation > Export annotations (as json).",
            )
    attribute = class_attribute or _pick_attribute(files)
    if files:
        report.info(
            "via-class-attribute",
            "",
            f"class names come from the region attribute {attribute!r}"
            if attribute
            else f"no region attributes: every region is class {default_class!r}",
            "Change with --class-attribute NAME / --default-class NAME.",
        )
    labels: set[str] = set()
    parsed = []
    for path, data in files:
        name = rel_name(path, root)
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        for key, entry in (via_entries(data) or {}).items():
            img_id = len(images) + 1
            images.append({"id": img_id, "file_name": entry.get("filename")})
            for k, region in enumerate(_regions(entry)):
                where = f"{name}: {key}, region {k}"
                if not isinstance(region, dict):
                    report.warning("via-region-invalid", where, "not an object", "Skipped.")
                    continue
                poly, why = _polygon(region.get("shape_attributes"))
                if poly is None:
                    report.warning(
                        "via-shape-unsupported",
                        where,
                        why,
                        "Skipped. Draw polygons (or rect/circle/ellipse) around the animals.",
                    )
                    continue
                attrs = region.get("region_attributes")
                label = (
                    _class_value(attrs.get(attribute))
                    if isinstance(attrs, dict) and attribute
                    else None
                )
                if label is None:
                    if attribute:
                        report.warning(
                            "via-no-class",
                            where,
                            f"region attribute {attribute!r} is missing or empty",
                            f"Used class {default_class!r}. "
                            "Fill the attribute in VIA, or pick another with "
                            "--class-attribute.",
                        )
                    label = default_class
                labels.add(label)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": img_id,
                        "category": label,
                        "segmentation": [poly],
                        "iscrowd": 0,
                    }
                )
        split = split_of_path(Path(name).parts[:-1])
        parsed.append((name, path.parent, split, images, anns))
    order = names or _option_order(files, attribute)
    listed_in = "--names (dataset_class_names)" if names else f"the options of {attribute!r}"
    cat_ids = class_ids(labels, order, report, listed_in)
    cats = [{"id": i, "name": n} for n, i in cat_ids.items()]
    out = []
    for name, folder, split, images, anns in parsed:
        for a in anns:
            a["category_id"] = cat_ids[str(a.pop("category"))]
        out.append(
            CocoSource(
                name, {"images": images, "annotations": anns, "categories": cats}, folder, split
            )
        )
    return out
