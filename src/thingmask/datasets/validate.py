"""Checking annotations before training: every problem becomes an
:class:`~thingmask.datasets.report.Issue` that names where it is, what is wrong and how to fix
it; problems with one right answer are fixed on the way.

Position in ``thingmask prepare``::

    importers → check_coco (one COCO dict per file/split) → remap (class_map) → finalize → split

:func:`check_coco` turns a raw, untrusted COCO dict (any JSON value) into
:class:`~thingmask.datasets.records.Sample` records that speak class *names*: categories and
images here, annotations in :mod:`~thingmask.datasets.annotations`.
:func:`~thingmask.datasets.finalize.finalize` works on all samples at once. Neither raises on
bad input: it reports. Masks are never decoded to full images here (area and bbox come from
RLE), so huge or hostile inputs stay cheap.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from thingmask.datasets.annotations import check_annotations
from thingmask.datasets.finalize import finalize
from thingmask.datasets.records import (
    Category,
    Sample,
    as_int,
    exif_orientation,
    normalize_file_name,
    orientation_decision,
    resolve_inside,
)
from thingmask.datasets.remap import apply_class_map
from thingmask.datasets.report import Report, short

__all__ = ["CheckedSource", "check_coco", "validate_coco"]

MAX_SIDE = 100_000  # pixels; larger width/height values are typos or hostile input


@dataclass
class CheckedSource:
    """What :func:`check_coco` keeps from one COCO dict."""

    samples: list[Sample]
    categories: list[Category]


def check_coco(
    data: Any,
    *,
    source: str,
    image_root: Path,
    report: Report,
    split: str | None = None,
    embedded: Mapping[str, bytes] | None = None,
    fmt: str = "coco",
) -> CheckedSource:
    """Check one COCO instances dict (untrusted: any JSON value) against its image folder.

    Args:
        data: the parsed JSON.
        source: name for messages (e.g. ``train/_annotations.coco.json``).
        image_root: folder that ``file_name`` is relative to; nothing outside it is opened.
        report: receives every issue.
        split: ``train``/``val``/``test`` when the source is a split of an existing split.
        embedded: image bytes by normalised file name (labelme ``imageData``), used when the
            file itself is missing.
        fmt: the source format, for format-specific hints.
    Returns:
        The samples (one per valid image, annotations checked/fixed, class names not ids) and
        the categories in id order. On a structural error both lists may be empty.
    """
    return _Checker(source, Path(image_root), report, split, embedded or {}, fmt).run(data)


class _Checker:
    def __init__(self, source, image_root, report, split, embedded, fmt):
        self.source, self.root, self.report = source, image_root, report
        self.split, self.embedded, self.fmt = split, embedded, fmt

    def run(self, data: Any) -> CheckedSource:
        r, src = self.report, self.source
        if not isinstance(data, dict):
            r.error(
                "coco-structure",
                src,
                f"expected a JSON object with images, annotations "
                f"and categories, got {type(data).__name__}",
                "Export as 'COCO instances' (COCO 1.0 in CVAT) from your annotation tool.",
            )
            return CheckedSource([], [])
        missing = [
            k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)
        ]
        if missing:
            r.error(
                "coco-structure",
                src,
                f"missing or not a list: {', '.join(missing)}",
                "This is not a COCO instances file; re-export it, or pick the matching "
                "--format (labelme, via, yolo, ...).",
            )
            return CheckedSource([], [])
        cats = self._categories(data["categories"])
        images = self._images(data["images"])
        per_image = check_annotations(
            data["annotations"], images, cats, source=self.source, report=self.report
        )
        samples = []
        for img_id, info in images.items():
            if info is None:
                continue
            samples.append(replace(info, instances=tuple(per_image.get(img_id, ()))))
        return CheckedSource(samples, list(cats.values()))

    # categories
    def _categories(self, raw: list) -> dict[int, Category]:
        r, src = self.report, self.source
        cats: dict[int, Category] = {}
        for i, c in enumerate(raw):
            where = f"{src}: categories[{i}]"
            if not isinstance(c, dict):
                r.error(
                    "category-invalid",
                    where,
                    f"expected an object, got {short(c)}",
                    "Each category needs an integer 'id' and a 'name'.",
                )
                continue
            cid, name = as_int(c.get("id")), c.get("name")
            if cid is None or not isinstance(name, str) or not name.strip():
                r.error(
                    "category-invalid",
                    where,
                    f"id {short(c.get('id'))}, name "
                    f"{short(name)}: needs an integer id and a non-empty name",
                    "Fix the category list in the export (or the tool's label list).",
                )
                continue
            if cid in cats:
                r.error(
                    "category-duplicate-id",
                    where,
                    f"id {cid} is used by both {cats[cid].name!r} and {name!r}",
                    "Give every category its own id in the annotation file.",
                )
                continue
            sup = c.get("supercategory")
            cats[cid] = Category(name.strip(), sup.strip() if isinstance(sup, str) else "", cid)
        seen: dict[str, int] = {}
        for cid, cat in sorted(cats.items()):
            if cat.name in seen:
                r.warning(
                    "category-duplicate-name",
                    f"{src}: category {cid}",
                    f"name {cat.name!r} is also category {seen[cat.name]}",
                    "Merged into one class. Rename one of them if they are different animals.",
                )
            else:
                seen[cat.name] = cid
        return dict(sorted(cats.items()))

    # images
    def _images(self, raw: list) -> dict[int, Sample | None]:
        r, src = self.report, self.source
        from tqdm.auto import tqdm

        images: dict[int, Sample | None] = {}
        by_file: dict[str, int] = {}
        for i, img in enumerate(
            tqdm(raw, desc=f"checking {src}", unit="img", disable=len(raw) < 200)
        ):
            where = f"{src}: images[{i}]"
            if not isinstance(img, dict):
                r.error(
                    "image-record-invalid",
                    where,
                    f"expected an object, got {short(img)}",
                    "Each image needs 'id', 'file_name', 'width', 'height'.",
                )
                continue
            img_id = as_int(img.get("id"))
            if img_id is None:
                r.error(
                    "image-record-invalid",
                    where,
                    f"id {short(img.get('id'))} is not an integer",
                    "Give each image a unique integer id.",
                )
                continue
            where = f"{src}: image {img_id}"
            if img_id in images:
                r.error(
                    "image-duplicate-id",
                    where,
                    "this id is used by two images, so their annotations cannot be told apart",
                    "Give each image a unique id (re-export from the tool).",
                )
                images[img_id] = None
                continue
            images[img_id] = None  # until it passes
            rel, why = normalize_file_name(img.get("file_name"))
            if rel is None:
                r.error(
                    "file-name-unsafe",
                    where,
                    why + "; it is not read",
                    "Use a file name relative to the image folder, e.g. 'img_001.jpg' or "
                    "'batch1/img_001.jpg', and put the image there.",
                )
                continue
            where = f"{src}: image {img_id} '{rel}'"
            if rel in by_file:
                r.error(
                    "image-duplicate-file",
                    where,
                    f"the same file is also image "
                    f"{by_file[rel]}; its annotations would be split between two records",
                    "Keep one image record and move all its annotations to it.",
                )
                continue
            by_file[rel] = img_id
            size = self._declared_size(img, where)
            if size is not False:
                images[img_id] = self._open(rel, size, where)
        return images

    def _declared_size(self, img: dict, where: str) -> tuple[int, int] | Literal[False] | None:
        w, h = img.get("width"), img.get("height")
        if w is None and h is None:
            return None
        wi, hi = as_int(w), as_int(h)
        if wi is None or hi is None or not (0 < wi <= MAX_SIDE and 0 < hi <= MAX_SIDE):
            self.report.error(
                "image-size-invalid",
                where,
                f"width {short(w)} / height {short(h)} must be positive whole numbers of pixels",
                "Fix width/height in the annotation file (or remove both: they "
                "are then read from the image).",
            )
            return False
        return (wi, hi)

    def _open(self, rel: str, declared: tuple[int, int] | None, where: str) -> Sample | None:
        from PIL import Image

        r = self.report
        source: Path | bytes
        resolved = resolve_inside(self.root, rel)
        if resolved is None:
            r.error(
                "file-name-unsafe",
                where,
                f"resolves outside the image folder {self.root} (a symlink?); it is not read",
                "Copy the image into the image folder instead of linking it.",
            )
            return None
        if resolved.is_file():
            source = resolved
        elif self.embedded.get(rel) is not None:
            source = self.embedded[rel]
        else:
            r.error(
                "image-missing",
                where,
                f"no such file under {self.root}",
                "Put the image there (same relative path), pass --images DIR with the "
                "folder that holds it, or delete the image and its annotations.",
            )
            return None
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                stored = im.size
                orientation = exif_orientation(im)
                im.load()  # decodes fully: truncated downloads fail here, not in training
        except Exception as exc:  # PIL raises many types for corrupt files
            r.error(
                "image-unreadable",
                where,
                f"cannot be decoded as an image ({exc})",
                "Re-download or re-export it (jpg/png), or delete it and its annotations.",
            )
            return None
        fix, size, verdict = orientation_decision(declared, stored, orientation)
        self._report_size(where, declared, stored, orientation, verdict)
        if size is None:
            return None
        return Sample(
            file_name=rel,
            source=source,
            width=size[0],
            height=size[1],
            split=self.split,
            orientation=orientation,
            fix=fix,
            where=where,
        )

    def _report_size(self, where, declared, stored, orientation, verdict) -> None:
        r = self.report
        sw, sh = stored
        if verdict == "filled" and self.fmt not in ("via",):
            r.info(
                "image-size-filled",
                where,
                f"no width/height in the annotations; using the file's {sw}x{sh}",
            )
        elif verdict == "display":
            r.info(
                "image-exif-rotation",
                where,
                f"stored as {sw}x{sh} with EXIF orientation "
                f"{orientation}; the annotations match the rotated view "
                f"{declared[0]}x{declared[1]} (as labelme, browsers and detectron2 show it)",
                "Written upright without the tag, so every reader sees the same pixels.",
            )
        elif verdict == "stored":
            r.warning(
                "image-exif-rotation",
                where,
                f"EXIF orientation {orientation} would rotate "
                f"it to {sh}x{sw}, but the annotations ({declared[0]}x{declared[1]}) were "
                "drawn on the stored, unrotated pixels; detectron2 would rotate the image "
                "and misalign every mask",
                "Written with the stored pixels and without the orientation tag.",
            )
        elif verdict == "ambiguous":
            r.warning(
                "image-exif-rotation",
                where,
                f"EXIF orientation {orientation}: the "
                "annotation size fits both the stored and the rotated view; assumed the "
                "rotated view (as labelme, browsers and detectron2 show it)",
                "Written upright. Check this image in the preview; if the masks are "
                "misplaced, re-save the image without EXIF rotation and re-annotate.",
            )
        elif verdict == "mismatch":
            view = (
                f" ({sh}x{sw} after EXIF orientation {orientation})"
                if orientation in (5, 6, 7, 8)
                else ""
            )
            r.error(
                "image-size-mismatch",
                where,
                f"annotations say {declared[0]}x"
                f"{declared[1]}, the file is {sw}x{sh}{view}; the image was probably "
                "resized or replaced after annotating",
                "Use the original image the annotations were made on, or re-annotate.",
            )


def validate_coco(
    data: Any,
    image_root: str | Path,
    *,
    source: str = "annotations",
    class_map: Mapping[str, str] | None = None,
    display_things: Sequence[str] | None = None,
    convert_crowd: bool | None = None,
    fmt: str = "coco",
) -> tuple[list[Sample], list[str], Report]:
    """Every rule on one COCO dict, without writing anything (``prepare`` minus split/write).

    Returns ``(samples, class names in id order, report)``; never raises for bad input.
    """
    report = Report()
    checked = check_coco(data, source=source, image_root=Path(image_root), report=report, fmt=fmt)
    samples, cats = apply_class_map(checked.samples, checked.categories, class_map, report)
    samples, names = finalize(
        samples, cats, report, convert_crowd=convert_crowd, display_things=display_things, fmt=fmt
    )
    return samples, names, report
