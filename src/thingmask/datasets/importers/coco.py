"""COCO-family exports: plain COCO, CVAT "COCO 1.0", Roboflow "COCO Segmentation".

Layouts understood (the image folder is found by looking where the files are)::

    plain COCO   annotations.json + images/ | train.json, val.json + images/ |
                 annotations/instances_train2017.json + train2017/ or images/train2017/
    CVAT         annotations/instances_default.json + images/ (or images/default/)
    Roboflow     train/_annotations.coco.json + train/*.jpg, valid/..., test/...

A split named by the file or folder (train/valid/val/test) is kept.

Conventions checked against each tool's exporter: ``iscrowd=1`` means a crowd region in COCO
(kept as such by default) but every brush mask in CVAT's COCO 1.0 export (converted to
instances; see :func:`~thingmask.datasets.finalize.crowd_policy`); CVAT writes uncompressed RLE
and puts subset images in ``images/<subset>/``; Roboflow adds a parent category with id 0 (dropped
by :func:`~thingmask.datasets.finalize.finalize`) and splits into train/valid/test folders.
An annotation with ``"ignore": 1`` (the mmdetection convention) is an ignore region.
"""

from __future__ import annotations

import re
from pathlib import Path

from thingmask.datasets.importers._common import CocoSource, read_json, rel_name
from thingmask.datasets.records import normalize_file_name
from thingmask.datasets.report import Report
from thingmask.datasets.split import SPLIT_ALIASES

__all__ = ["find_coco_files", "import_coco"]

_OWN_OUTPUTS = {"report.json"}  # a prepared folder's own report is not an annotation file


def _split_of_stem(stem: str) -> tuple[str | None, str]:
    """``instances_train2017`` → ("train", "train2017"); ``val`` → ("val", "val")."""
    sub = re.sub(r"^(instances|annotations|_annotations|coco)[_.-]?", "", stem.lower())
    sub = re.sub(r"\.coco$", "", sub)
    return SPLIT_ALIASES.get(re.sub(r"\d+$", "", sub)), sub


def find_coco_files(root: Path) -> list[tuple[Path, str | None, str]]:
    """COCO json files under ``root`` as ``(path, split, subset folder name)``."""
    if root.is_file():
        split = _split_of_stem(root.stem)[0] or SPLIT_ALIASES.get(root.parent.name.lower())
        return [(root, split, root.parent.name if root.name == "_annotations.coco.json" else "")]
    robo = sorted(root.glob("*/_annotations.coco.json"))
    if (root / "_annotations.coco.json").is_file():
        robo.insert(0, root / "_annotations.coco.json")
    if robo:
        return [
            (
                p,
                SPLIT_ALIASES.get(p.parent.name.lower()) if p.parent != root else None,
                p.parent.name if p.parent != root else "",
            )
            for p in robo
        ]
    cands = [
        p
        for p in sorted(root.glob("*.json")) + sorted(root.glob("annotations/*.json"))
        if p.name not in _OWN_OUTPUTS
    ]
    named = [(p, *_split_of_stem(p.stem)) for p in cands]
    with_split = [c for c in named if c[1]]
    return with_split or [(p, None, sub) for p, _, sub in named]


def _image_root(
    json_path: Path, subset: str, file_names: list[str], image_dir: Path | None
) -> Path:
    d = json_path.parent
    cands: list[Path] = []
    if image_dir is not None:
        cands += [image_dir / subset, image_dir] if subset else [image_dir]
    if subset:
        cands += [d / "images" / subset, d.parent / "images" / subset]
    cands += [d, d / "images", d.parent / "images", d.parent]
    if subset:
        cands += [d / subset, d.parent / subset]
    seen, uniq = set(), []
    for c in cands:
        if c not in seen and c.is_dir():
            seen.add(c)
            uniq.append(c)
    if not uniq:
        return image_dir or d
    sample = [n for n in (normalize_file_name(f)[0] for f in file_names[:200]) if n]
    scores = [sum((c / n).is_file() for n in sample) for c in uniq]
    best = max(range(len(uniq)), key=lambda i: (scores[i], -i))
    return uniq[best]


def import_coco(
    source: Path, fmt: str, report: Report, image_dir: Path | None = None
) -> list[CocoSource]:
    """Read the COCO file(s) of ``source`` (file or folder) for ``fmt`` coco/cvat/roboflow."""
    base = source if source.is_dir() else source.parent
    found = find_coco_files(source)
    if not found:
        report.error(
            "format-not-found",
            str(source),
            f"no COCO .json file found for format {fmt!r}",
            "Point at the export folder (or its .json file); see "
            "data/README.md for the layouts each tool writes.",
        )
        return []
    sources: list[CocoSource] = []
    loose: list[str] = []
    for path, split, subset in found:
        name = rel_name(path, base) if source.is_dir() else path.name
        data = read_json(path, report, name)
        if data is None:
            continue
        if (not isinstance(data, dict) or "images" not in data) and len(found) > 1:
            loose.append(name)
            continue
        images = data.get("images") if isinstance(data, dict) else None
        names = [
            i["file_name"]
            for i in (images if isinstance(images, list) else [])
            if isinstance(i, dict) and isinstance(i.get("file_name"), str)
        ]
        root = _image_root(path, subset, names, image_dir)
        sources.append(CocoSource(name, data, root, split))
    if loose:
        report.info(
            "coco-files-skipped",
            str(source),
            f"not COCO instance files, skipped: {', '.join(loose)}",
        )
    if len(sources) > 1 and all(s.split is None for s in sources):
        report.error(
            "coco-files-ambiguous",
            str(source),
            "several COCO files and none is named "
            f"by a split: {', '.join(s.name for s in sources)}",
            "Pass the one file to use, or name them train.json and val.json.",
        )
        return []
    if fmt == "roboflow" and not any(s.name.endswith("_annotations.coco.json") for s in sources):
        report.info("format-hint", str(source), "no _annotations.coco.json: read as plain COCO")
    return sources
