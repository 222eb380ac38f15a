"""YOLO segmentation labels (ultralytics / Roboflow "YOLOv8" export).

Layout: a class list (``data.yaml`` with ``names:`` as a list or ``{0: cat}``; or
``classes.txt``/``obj.names``, one name per line) and, for each image, a ``.txt`` of the same
name in the matching ``labels`` folder (``images/train/a.jpg`` → ``labels/train/a.txt``) or
beside the image. Each line: ``class x1 y1 x2 y2 ...`` with coordinates normalised to 0..1 of
the image *as displayed* (after EXIF orientation, as ultralytics reads it). A detection-only line
``class cx cy w h`` becomes a rectangle mask, with a warning. No label file = no objects.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from thingmask.datasets.importers._common import IMAGE_EXTENSIONS, CocoSource, rel_name
from thingmask.datasets.split import split_of_path
from thingmask.datasets.validate import Report

__all__ = ["find_class_list", "import_yolo"]

_CLASS_FILES = ("data.yaml", "data.yml", "dataset.yaml", "classes.txt", "obj.names")


def find_class_list(root: Path) -> Path | None:
    for name in _CLASS_FILES:
        if (root / name).is_file():
            return root / name
    return None


def _read_names(path: Path, report: Report) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        report.error(
            "yolo-classes-invalid",
            path.name,
            f"cannot be read ({exc})",
            "Re-export the class list (plain UTF-8 text).",
        )
        return None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            report.error(
                "yolo-classes-invalid",
                path.name,
                f"is not valid YAML ({exc})",
                "Fix the file; it needs a 'names:' list.",
            )
            return None
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            try:
                keys = sorted(int(k) for k in names)
            except (TypeError, ValueError):
                keys = None
            names = (
                [names.get(k, names.get(str(k))) for k in keys]
                if keys == list(range(len(names)))
                else None
            )
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            report.error(
                "yolo-classes-invalid",
                path.name,
                "needs 'names:' as a list of class names (or {0: name, 1: name, ...})",
                "e.g. names: [cat, bird]",
            )
            return None
        return [str(n).strip() for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _label_file(image: Path, root: Path) -> Path | None:
    parts = list(image.relative_to(root).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            cand = root.joinpath(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
            if cand.is_file():
                return cand
            break
    beside = image.with_suffix(".txt")
    return beside if beside.is_file() else None


def _display_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception:  # unreadable: the validator reports it
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def import_yolo(root: Path, report: Report) -> list[CocoSource]:
    if root.is_file():
        root = root.parent
    class_file = find_class_list(root)
    if class_file is None:
        report.error(
            "yolo-classes-missing",
            str(root),
            "no class list (data.yaml or classes.txt) in the folder",
            "Add data.yaml with 'names: [cat, bird]' "
            "(class 0 first), as your YOLO export wrote it.",
        )
        return []
    names = _read_names(class_file, report)
    if names is None:
        return []
    images = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    per_split: dict[str | None, dict[str, list]] = defaultdict(
        lambda: {"images": [], "annotations": []}
    )
    used_labels: set[Path] = set()
    ann_id = 0
    for img_id, path in enumerate(images, 1):
        rel = rel_name(path, root)
        split = split_of_path(Path(rel).parts[:-1])
        record: dict[str, Any] = {"id": img_id, "file_name": rel}
        bucket = per_split[split]
        bucket["images"].append(record)
        label = _label_file(path, root)
        if label is None:
            continue
        used_labels.add(label)
        size = _display_size(path)
        if size is None:
            continue
        w, h = size
        record.update(width=w, height=h)
        lname = rel_name(label, root)
        try:
            lines = label.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            report.error(
                "yolo-label-unreadable",
                lname,
                f"cannot be read ({exc})",
                "Re-export the labels (plain UTF-8 text).",
            )
            continue
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{lname}: line {n}"
            tokens = line.split()
            try:
                cls = int(tokens[0])
                coords = [float(t) for t in tokens[1:]]
            except ValueError:
                report.warning(
                    "yolo-label-invalid",
                    where,
                    f"{line[:60]!r} is not 'class x1 y1 x2 y2 ...' numbers",
                    "Skipped.",
                )
                continue
            if len(coords) == 4:
                cx, cy, bw, bh = coords
                coords = [
                    cx - bw / 2,
                    cy - bh / 2,
                    cx + bw / 2,
                    cy - bh / 2,
                    cx + bw / 2,
                    cy + bh / 2,
                    cx - bw / 2,
                    cy + bh / 2,
                ]
                report.warning(
                    "yolo-bbox-only",
                    where,
                    "a box (class cx cy w h), not a polygon",
                    "Used as a rectangle mask. Export 'YOLO segmentation' "
                    "(polygons) for real masks.",
                )
            elif len(coords) < 6 or len(coords) % 2:
                report.warning(
                    "yolo-label-invalid",
                    where,
                    f"{len(coords)} coordinates; a polygon needs an even number, at least 6",
                    "Skipped.",
                )
                continue
            poly = [v * (w if k % 2 == 0 else h) for k, v in enumerate(coords)]
            ann_id += 1
            # unknown class indices become unknown category ids: an error, by the validator
            bucket["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": cls + 1,
                    "segmentation": [poly],
                    "iscrowd": 0,
                }
            )
    orphans = [
        p
        for p in root.rglob("*.txt")
        if p not in used_labels and p != class_file and "labels" in p.relative_to(root).parts
    ]
    if orphans:
        report.warning(
            "yolo-label-orphan",
            rel_name(orphans[0], root),
            f"{len(orphans)} label file(s) have no image with the same name",
            "Add the images or delete those label files.",
        )
    cats = [{"id": i, "name": n} for i, n in enumerate(names, 1)]
    return [
        CocoSource(
            f"yolo:{split or 'all'}",
            {"images": v["images"], "annotations": v["annotations"], "categories": cats},
            root,
            split,
        )
        for split, v in per_split.items()
    ]
