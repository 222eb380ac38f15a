"""YOLO segmentation labels (ultralytics / Roboflow "YOLOv8" export).

Layout: for each image, a ``.txt`` of the same name in the matching ``labels`` folder
(``images/train/a.jpg`` → ``labels/train/a.txt``, also ``train/images`` + ``train/labels``) or
beside the image. Each line: ``class x1 y1 x2 y2 ...`` with coordinates normalised to 0..1 of
the image *as displayed* (after EXIF orientation, as ultralytics reads it). A detection-only line
``class cx cy w h`` becomes a rectangle mask, with a warning. No label file = no objects.

The class list, ``class`` = index into it: ``names`` (``--names`` / ``dataset_class_names``)
when given, else the export's ``data.yaml`` (``names:`` as a list or ``{0: cat}``) or
``classes.txt``/``obj.names`` (one name a line). An export without one (coco128-seg ships its
yaml separately) is recognised by its layout, and the error says which names to give.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thingmask.datasets.class_names import yaml_names
from thingmask.datasets.importers._common import IMAGE_EXTENSIONS, CocoSource, rel_name
from thingmask.datasets.report import Report
from thingmask.datasets.split import split_of_path

__all__ = ["find_class_list", "import_yolo", "is_yolo_layout", "parse_label_line"]

_CLASS_FILES = ("data.yaml", "data.yml", "dataset.yaml", "classes.txt", "obj.names")
_SNIFF_FILES = 50  # label files read to recognise the layout


def find_class_list(root: Path) -> Path | None:
    for name in _CLASS_FILES:
        if (root / name).is_file():
            return root / name
    return None


def parse_label_line(line: str) -> tuple[int, list[float]] | None:
    """``class x1 y1 ...`` → (class, coordinates) for a polygon (>= 3 points) or a box (4
    numbers); None for anything else."""
    tokens = line.split()
    try:
        cls = int(tokens[0])
        coords = [float(t) for t in tokens[1:]]
    except (ValueError, IndexError):
        return None
    ok = len(coords) == 4 or (len(coords) >= 6 and len(coords) % 2 == 0)
    return (cls, coords) if ok and cls >= 0 else None


def _label_dirs(root: Path) -> list[Path]:
    """``labels`` folders with an ``images`` folder beside them (top level or one down)."""
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    bases = [root, *subs]
    return [b / "labels" for b in bases if (b / "labels").is_dir() and (b / "images").is_dir()]


def is_yolo_layout(root: Path) -> bool:
    """``images/`` + ``labels/`` folders whose ``.txt`` files hold YOLO label lines."""
    if not root.is_dir():
        return False
    for labels in _label_dirs(root):
        for k, txt in enumerate(labels.rglob("*.txt")):
            if k >= _SNIFF_FILES:
                break
            try:
                lines = txt.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            first = next((ln for ln in lines if ln.strip()), None)
            if first is not None:  # empty files are images without objects: no evidence
                return parse_label_line(first) is not None
    return False


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
            return yaml_names(yaml.safe_load(text))
        except (yaml.YAMLError, ValueError) as exc:
            report.error(
                "yolo-classes-invalid",
                path.name,
                f"{exc}",
                "Fix the file: it needs `names:` as a list, e.g. names: [cat, bird] (class 0 "
                'first), or give the names with --names "cat,bird".',
            )
            return None
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


def import_yolo(
    source: Path, report: Report, names: Sequence[str] | None = None
) -> list[CocoSource]:
    """A YOLO-seg export (its folder, or its class-list file) → one source per split folder.

    ``names``: the class names in id order; they replace the export's own class list.
    """
    root = source.parent if source.is_file() else source
    class_file = source if source.is_file() else find_class_list(root)
    class_names: list[str] | None = list(names) if names else None
    if class_names is not None and class_file is not None:
        report.info(
            "yolo-classes-given",
            class_file.name,
            f"class names from --names (dataset_class_names): {class_names}; this file is not used",
        )
    elif class_file is not None:
        class_names = _read_names(class_file, report)
        if class_names is None:
            return []
    per_split: dict[str | None, dict[str, list]] = defaultdict(
        lambda: {"images": [], "annotations": []}
    )
    used_labels, classes = _read_labels(root, report, per_split)
    if class_names is None:
        _report_no_class_list(root, report, classes)
        return []
    _check_classes(per_split, len(class_names), report)
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
    cats = [{"id": i, "name": n} for i, n in enumerate(class_names, 1)]
    return [
        CocoSource(
            f"yolo:{split or 'all'}",
            {"images": v["images"], "annotations": v["annotations"], "categories": cats},
            root,
            split,
        )
        for split, v in per_split.items()
    ]


def _check_classes(
    per_split: dict[str | None, dict[str, list]], n_names: int, report: Report
) -> None:
    """Report (and leave out) label lines whose class is not in the class list."""
    files = {im["id"]: im["file_name"] for b in per_split.values() for im in b["images"]}
    unknown: dict[int, set[int]] = defaultdict(set)
    for bucket in per_split.values():
        kept = []
        for ann in bucket["annotations"]:
            if 0 <= ann["category_id"] - 1 < n_names:
                kept.append(ann)
            else:
                unknown[ann["image_id"]].add(ann["category_id"] - 1)
        bucket["annotations"] = kept
    for img_id, ids in unknown.items():
        report.error(
            "yolo-class-unknown",
            files[img_id],
            f"label line(s) with class {sorted(ids)}, but the class list has {n_names} "
            f"name(s) (classes 0..{n_names - 1})",
            "Give the class list this export was labelled with (its data.yaml, or --names in "
            "class order), or fix those label lines.",
        )


def _report_no_class_list(root: Path, report: Report, classes: set[int]) -> None:
    n = max(classes) + 1 if classes else 0
    ids = f" (they use classes 0..{n - 1}, so {n} names are needed)" if n else ""
    example = ",".join(["cat", "dog", "bird"][: max(1, min(n, 3))])
    report.error(
        "yolo-classes-missing",
        str(root),
        "a YOLO export without its class list: the label files hold class numbers" + ids + ", "
        "but there is no data.yaml, dataset.yaml or classes.txt with their names (coco128-seg, "
        "for one, ships without its yaml)",
        f'Give the class names in class order: thingmask prepare SRC --names "{example}", or '
        "--names path/to/data.yaml (the Ultralytics dataset yaml with names:); in the notebook "
        "or config: dataset_class_names.",
    )


def _read_labels(
    root: Path, report: Report, per_split: dict[str | None, dict[str, list]]
) -> tuple[set[Path], set[int]]:
    """Every image under ``root`` and its label lines → COCO records in ``per_split``
    (``category_id`` = class + 1). Returns the label files used and the classes seen."""
    images = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    used_labels: set[Path] = set()
    classes: set[int] = set()
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
            parsed = parse_label_line(line)
            if parsed is None:
                report.warning(
                    "yolo-label-invalid",
                    where,
                    f"{line[:60]!r} is not 'class x1 y1 x2 y2 ...' (a class number and an "
                    "even number of coordinates, at least 6)",
                    "Skipped.",
                )
                continue
            cls, coords = parsed
            if len(coords) == 4:
                cx, cy, bw, bh = coords
                x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
                coords = [x1, y1, x2, y1, x2, y2, x1, y2]
                report.warning(
                    "yolo-bbox-only",
                    where,
                    "a box (class cx cy w h), not a polygon",
                    "Used as a rectangle mask. Export 'YOLO segmentation' "
                    "(polygons) for real masks.",
                )
            poly = [v * (w if k % 2 == 0 else h) for k, v in enumerate(coords)]
            ann_id += 1
            classes.add(cls)
            bucket["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": cls + 1,
                    "segmentation": [poly],
                    "iscrowd": 0,
                }
            )
    return used_labels, classes
