"""Importers: annotation exports → :class:`CocoSource` (raw COCO dicts + their image folder).

Formats: ``coco`` (plain), ``cvat`` (CVAT "COCO 1.0"), ``roboflow`` (Roboflow "COCO
Segmentation"), ``labelme``, ``via`` (VIA 1/2 JSON), ``yolo`` (YOLO segmentation). Each
importer follows its tool's own conventions (see its module docstring). Polygons stay
polygons and RLE stays RLE. Importers only translate; :mod:`thingmask.datasets.validate` checks
what they produce, so every format gets the same rules and messages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from thingmask.datasets.importers._common import CocoSource, read_json
from thingmask.datasets.importers.coco import find_coco_files, import_coco
from thingmask.datasets.importers.labelme import import_labelme, is_labelme
from thingmask.datasets.importers.via import import_via, is_via
from thingmask.datasets.importers.yolo import find_class_list, import_yolo, is_yolo_layout
from thingmask.datasets.report import Report

__all__ = [
    "FORMATS",
    "CocoSource",
    "detect_format",
    "find_coco_files",
    "import_sources",
    "read_json",
]

FORMATS = ("coco", "cvat", "roboflow", "labelme", "via", "yolo")
_PEEK_BYTES = 50_000_000  # larger JSON files are not opened just to guess a format


def _peek(path: Path) -> object:
    try:
        if path.stat().st_size > _PEEK_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _kind_of_json(path: Path, data: object) -> str | None:
    if path.name == "_annotations.coco.json":
        return "roboflow"
    if is_labelme(data):
        return "labelme"
    if is_via(data) or (isinstance(data, dict) and "_via_img_metadata" in data):
        return "via"
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        anns = data.get("annotations")
        first = anns[0] if isinstance(anns, list) and anns else None
        cvat = path.stem == "instances_default" or (
            isinstance(first, dict)
            and isinstance(first.get("attributes"), dict)
            and "occluded" in first["attributes"]
        )
        return "cvat" if cvat else "coco"
    return None


def detect_format(source: str | Path) -> str:
    """Guess the export format of a file or folder.

    Raises ValueError (naming the source and the formats) when nothing matches.
    """
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() == ".zip":
            raise ValueError(
                f"{source}: a .zip archive. Unzip it first (e.g. `unzip "
                f"{source.name} -d {source.stem}`) and pass the folder."
            )
        if source.suffix.lower() in (".yaml", ".yml", ".txt"):
            return "yolo"
        kind = _kind_of_json(source, _peek(source))
        if kind:
            return kind
    elif source.is_dir():
        if (source / "_annotations.coco.json").is_file() or any(
            source.glob("*/_annotations.coco.json")
        ):
            return "roboflow"
        if find_class_list(source) is not None:
            return "yolo"
        kinds: list[str] = []
        for path in sorted(source.glob("*.json")) + sorted(source.glob("annotations/*.json")):
            kind = _kind_of_json(path, _peek(path))
            if kind:
                kinds.append(kind)
        if not kinds:  # labelme/VIA files often sit one folder down (train/, val/, batch1/)
            for path in sorted(source.glob("*/*.json"))[:200]:
                kind = _kind_of_json(path, _peek(path))
                if kind in ("labelme", "via"):
                    kinds.append(kind)
                    break
        if kinds:
            order = ("cvat", "coco", "roboflow", "labelme", "via")
            return max(set(kinds), key=lambda k: (kinds.count(k), -order.index(k)))
        if is_yolo_layout(source):  # images/ + labels/ without a class list (coco128-seg)
            return "yolo"
    else:
        raise ValueError(
            f"dataset source {source} does not exist. Set dataset_source (or the "
            "SRC argument) to your annotation export: a folder or a .json file."
        )
    raise ValueError(
        f"{source}: cannot tell the annotation format. Pass it explicitly "
        f"(--format / dataset_format: one of {', '.join(FORMATS)}); "
        "data/README.md shows the layout each tool exports."
    )


def import_sources(
    source: str | Path,
    fmt: str,
    report: Report,
    *,
    image_dir: str | Path | None = None,
    class_attribute: str | None = None,
    default_class: str = "object",
    names: Sequence[str] | None = None,
) -> list[CocoSource]:
    """Read ``source`` in format ``fmt`` (not ``auto``; see :func:`detect_format`).

    ``names``: a class list given with the export (``--names``): YOLO's class names, or the
    class order for labelme and VIA. COCO files carry their own categories; there it is only
    reported as unused.
    """
    source = Path(source)
    if names and fmt in ("coco", "cvat", "roboflow"):
        report.warning(
            "class-names-unused",
            str(source),
            f"class names {list(names)} were given, but a {fmt} export names its own classes",
            "Leave --names / dataset_class_names empty; rename classes with --map OLD=NEW.",
        )
    if fmt in ("coco", "cvat", "roboflow"):
        return import_coco(source, fmt, report, Path(image_dir) if image_dir else None)
    if fmt == "labelme":
        return import_labelme(source, report, names)
    if fmt == "via":
        return import_via(source, report, class_attribute, default_class, names)
    if fmt == "yolo":
        return import_yolo(source, report, names)
    raise ValueError(f"dataset_format {fmt!r}: expected auto or one of {', '.join(FORMATS)}")
