"""Checking annotations before training: every problem becomes an :class:`Issue` that names where
it is, what is wrong and how to fix it; problems with one right answer are fixed on the way.

Position in ``thingmask prepare``::

    importers → check_coco (one COCO dict per file/split) → remap (class_map) → finalize → split

``check_coco`` turns a raw, untrusted COCO dict (any JSON value) into :class:`Sample` records
that speak class *names*; ``finalize`` works on all samples at once (crowd masks, empty and
parent categories, contiguous ids, display things). Neither raises on bad input: it reports.

Severity: ``error`` stops ``prepare`` (no dataset is written), ``warning`` is fixed or tolerated
and reported, ``info`` is a note (an expected fix, e.g. Roboflow's parent category).

Geometry convention: polygons are flat ``[x1, y1, x2, y2, ...]`` lists in pixel coordinates of
the image *as annotated* (after EXIF orientation, see :func:`orientation_decision`); RLE is COCO
RLE with ``size = [height, width]``. Masks are never decoded to full images here (area and bbox
come from RLE), so huge or hostile inputs stay cheap.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from thingmask.io_utils import atomic_write_json

__all__ = [
    "Category",
    "Instance",
    "Issue",
    "Report",
    "Sample",
    "check_coco",
    "finalize",
    "normalize_file_name",
    "orientation_decision",
    "resolve_inside",
    "validate_coco",
]

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")
MAX_SIDE = 100_000  # pixels; larger width/height values are typos or hostile input
_MARKS = {"error": "ERROR", "warning": "WARNING", "info": "note"}


# --- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issue:
    """One finding. ``where`` names file/image/annotation, ``fix`` says what to do (or was done)."""

    severity: str
    rule: str
    where: str
    message: str
    fix: str = ""

    def text(self) -> str:
        line = f"{self.where}: {self.message}" if self.where else self.message
        return line + (f"\n      fix: {self.fix}" if self.fix else "")


@dataclass
class Report:
    """All findings of one ``prepare`` run plus a summary (counts, classes, split).

    ``text()`` is for the notebook and the CLI, ``to_dict()``/``write_json()`` for the output
    folder. ``ok`` is False when any error was found.
    """

    issues: list[Issue] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, rule: str, where: str, message: str, fix: str = "") -> Issue:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r}: expected one of {SEVERITIES}")
        issue = Issue(severity, rule, where, message, fix)
        self.issues.append(issue)
        return issue

    def error(self, rule: str, where: str, message: str, fix: str = "") -> Issue:
        return self.add("error", rule, where, message, fix)

    def warning(self, rule: str, where: str, message: str, fix: str = "") -> Issue:
        return self.add("warning", rule, where, message, fix)

    def info(self, rule: str, where: str, message: str, fix: str = "") -> Issue:
        return self.add("info", rule, where, message, fix)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def notes(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "info"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def rules(self, severity: str | None = None) -> set[str]:
        """Rule ids found (optionally of one severity) — handy in tests and notebooks."""
        return {i.rule for i in self.issues if severity in (None, i.severity)}

    def counts(self) -> dict[str, int]:
        c = Counter(i.severity for i in self.issues)
        return {s: c.get(s, 0) for s in SEVERITIES}

    def text(self, limit: int = 5) -> str:
        """Human-readable report: summary, then issues grouped by rule (``limit`` shown per rule;
        the JSON report has all of them)."""
        lines = _summary_lines(self.summary)
        c = self.counts()
        lines.append(
            f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s)"
            + ("" if self.ok else " -- errors stop `prepare`; fix them and re-run")
        )
        groups: dict[tuple[str, str], list[Issue]] = defaultdict(list)
        for issue in self.issues:
            groups[(issue.severity, issue.rule)].append(issue)
        for severity in SEVERITIES:
            for (sev, rule), items in groups.items():
                if sev != severity:
                    continue
                lines.append(f"\n{_MARKS[sev]} [{rule}] x{len(items)}")
                for issue in items[:limit]:
                    lines.append("  - " + issue.text())
                if len(items) > limit:
                    lines.append(
                        f"  ... and {len(items) - limit} more like this (all listed in report.json)"
                    )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts(),
            "summary": self.summary,
            "issues": [asdict(i) for i in self.issues],
        }

    def write_json(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def log_counts(self, logger: logging.Logger = log) -> None:
        c = self.counts()
        level = logging.ERROR if c["error"] else logging.WARNING if c["warning"] else logging.INFO
        logger.log(
            level,
            "dataset check: %d error(s), %d warning(s), %d note(s)",
            c["error"],
            c["warning"],
            c["info"],
        )


def _summary_lines(summary: Mapping[str, Any]) -> list[str]:
    if not summary:
        return []
    lines = []
    head = f"source: {summary.get('source', '?')} (format: {summary.get('format', '?')})"
    if summary.get("output"):
        head += f" -> {summary['output']}"
    lines.append(head)
    if "images" in summary:
        classes = summary.get("classes") or []
        lines.append(
            f"{summary['images']} images, {summary.get('instances', 0)} instances, "
            f"{len(classes)} classes: {', '.join(classes)}"
        )
    split = summary.get("split")
    if split:
        lines.append(
            f"split ({split.get('how', '')}): train {split['train']['images']} images / "
            f"{split['train']['instances']} instances, val {split['val']['images']} "
            f"images / {split['val']['instances']} instances"
        )
    return lines


# --- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Category:
    """A class as found in a source: its name, COCO supercategory and original id."""

    name: str
    supercategory: str = ""
    source_id: int = 0


@dataclass(frozen=True)
class Instance:
    """One object mask. ``segmentation``: polygons (list of flat xy lists, clipped to the image)
    or compressed COCO RLE ``{"size": [h, w], "counts": str}``; ``bbox`` is xywh from the mask."""

    category: str
    segmentation: Any
    iscrowd: int
    area: float
    bbox: tuple[float, float, float, float]
    where: str = ""


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


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def polygon_area(flat: Sequence[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, ...]`` polygon (pixels²)."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


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


# --- per-file check -------------------------------------------------------------------------------
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
        per_image = self._annotations(data["annotations"], images, cats)
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
                    f"expected an object, got {_short(c)}",
                    "Each category needs an integer 'id' and a 'name'.",
                )
                continue
            cid, name = _as_int(c.get("id")), c.get("name")
            if cid is None or not isinstance(name, str) or not name.strip():
                r.error(
                    "category-invalid",
                    where,
                    f"id {_short(c.get('id'))}, name "
                    f"{_short(name)}: needs an integer id and a non-empty name",
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
                    f"expected an object, got {_short(img)}",
                    "Each image needs 'id', 'file_name', 'width', 'height'.",
                )
                continue
            img_id = _as_int(img.get("id"))
            if img_id is None:
                r.error(
                    "image-record-invalid",
                    where,
                    f"id {_short(img.get('id'))} is not an integer",
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
            if size is False:
                continue
            images[img_id] = self._open(rel, size, where)
        return images

    def _declared_size(self, img: dict, where: str) -> tuple[int, int] | bool | None:
        w, h = img.get("width"), img.get("height")
        if w is None and h is None:
            return None
        wi, hi = _as_int(w), _as_int(h)
        if wi is None or hi is None or not (0 < wi <= MAX_SIDE and 0 < hi <= MAX_SIDE):
            self.report.error(
                "image-size-invalid",
                where,
                f"width {_short(w)} / height {_short(h)} must be positive whole numbers of pixels",
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
            import io

            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                stored = im.size
                orientation = _exif_orientation(im)
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

    # annotations
    def _annotations(
        self, raw: list, images: dict[int, Sample | None], cats: dict[int, Category]
    ) -> dict[int, list[Instance]]:
        r, src = self.report, self.source
        out: dict[int, list[Instance]] = defaultdict(list)
        seen_ids: set[int] = set()
        renumbered = 0
        for i, ann in enumerate(raw):
            where = f"{src}: annotations[{i}]"
            if not isinstance(ann, dict):
                r.error(
                    "annotation-record-invalid",
                    where,
                    f"expected an object, got {_short(ann)}",
                    "Each annotation needs image_id, category_id and segmentation.",
                )
                continue
            ann_id = _as_int(ann.get("id"))
            if ann_id is None or ann_id in seen_ids:
                renumbered += 1
            else:
                seen_ids.add(ann_id)
                where = f"{src}: annotation {ann_id}"
            img_id = _as_int(ann.get("image_id"))
            if img_id is None or img_id not in images:
                r.error(
                    "annotation-unknown-image",
                    where,
                    f"image_id {_short(ann.get('image_id'))} is not an image of this file",
                    "Delete the annotation or add the image record it belongs to.",
                )
                continue
            sample = images[img_id]
            if sample is None:
                continue  # the image itself is already reported
            where = f"{sample.where}, annotation {ann_id if ann_id is not None else f'#{i}'}"
            cat_id = _as_int(ann.get("category_id"))
            if cat_id is None or cat_id not in cats:
                r.error(
                    "annotation-unknown-category",
                    where,
                    f"category_id "
                    f"{_short(ann.get('category_id'))} is not in the categories "
                    f"{sorted(cats)}",
                    "Add the category to 'categories' or delete the annotation.",
                )
                continue
            inst = self._instance(ann, sample, cats[cat_id].name, where)
            if inst is not None:
                out[img_id].append(inst)
        if renumbered:
            r.warning(
                "annotation-duplicate-id",
                src,
                f"{renumbered} annotation(s) have a missing, non-integer or repeated id",
                "Renumbered in the output; nothing else to do.",
            )
        return out

    def _instance(self, ann: dict, sample: Sample, name: str, where: str) -> Instance | None:
        r = self.report
        crowd_raw = ann.get("iscrowd", 0)
        iscrowd = _as_int(crowd_raw)
        if iscrowd not in (0, 1):
            r.warning(
                "annotation-invalid",
                where,
                f"iscrowd {_short(crowd_raw)} must be 0 or 1",
                "Treated as 0 (a normal instance).",
            )
            iscrowd = 0
        seg = ann.get("segmentation")
        w, h = sample.width, sample.height
        if isinstance(seg, dict):
            rle = self._rle(seg, w, h, where)
            if rle is None:
                return None
            clipped = False
        elif isinstance(seg, list) and seg:
            polys, clipped = self._polygons(seg, w, h, where)
            if polys is None:
                return None
            rle = None
        else:
            bbox_only = _bbox(ann.get("bbox")) is not None
            r.warning(
                "segmentation-missing",
                where,
                "no mask (segmentation is "
                f"{_short(seg)})" + ("; it has only a box" if bbox_only else ""),
                "Dropped: instance segmentation needs a mask. Draw polygons or brush "
                "masks (a box-only project cannot train masks).",
            )
            return None
        from pycocotools import mask as mask_utils

        if rle is None:
            encoded = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        else:
            encoded = rle_to_pycoco(rle)
        area = float(mask_utils.area(encoded))
        if area <= 0:
            r.warning("mask-empty", where, "the mask covers no pixel", "Dropped.")
            return None
        bx, by, bw, bh = (float(v) for v in mask_utils.toBbox(encoded))
        given = _bbox(ann.get("bbox"))
        if given is not None:
            x, y, gw, gh = given
            if x >= w or y >= h or x + gw <= 0 or y + gh <= 0:
                r.error(
                    "annotation-outside-image",
                    where,
                    f"bbox {list(given)} lies entirely outside the {w}x{h} image",
                    "Fix or delete the annotation (were the image and annotation files mixed up?).",
                )
                return None
            # half a pixel of slack: tools round box corners outward
            clipped = clipped or min(x, y) < -0.5 or x + gw > w + 0.5 or y + gh > h + 0.5
        if clipped:
            r.warning(
                "annotation-outside-image",
                where,
                f"extends beyond the {w}x{h} image",
                "Clipped to the image border.",
            )
        segmentation = polys if rle is None else rle
        return Instance(name, segmentation, iscrowd, area, (bx, by, bw, bh), where)

    def _polygons(
        self, seg: list, w: int, h: int, where: str
    ) -> tuple[list[list[float]] | None, bool]:
        r = self.report
        kept: list[list[float]] = []
        clipped = False
        problems: list[str] = []
        outside: list[int] = []
        for j, poly in enumerate(seg):
            if not isinstance(poly, list):
                problems.append(f"polygon {j} is {_short(poly)}, not a list of numbers")
                continue
            nums = [_number(v) for v in poly]
            if any(v is None for v in nums):
                problems.append(f"polygon {j} has a non-number or NaN/inf coordinate")
                continue
            if len(nums) % 2:
                problems.append(f"polygon {j} has an odd number of coordinates ({len(nums)})")
                continue
            if len(nums) < 6:
                problems.append(f"polygon {j} has {len(nums) // 2} point(s); a polygon needs 3")
                continue
            if polygon_area(nums) <= 1e-9:
                problems.append(f"polygon {j} has zero area (its points lie on a line)")
                continue
            inside = all(0 <= x <= w for x in nums[0::2]) and all(0 <= y <= h for y in nums[1::2])
            if not inside:
                cut = clip_polygon(nums, w, h)
                if len(cut) < 6 or polygon_area(cut) <= 1e-9:
                    outside.append(j)
                    continue
                clipped, nums = True, cut
            kept.append(nums)
        if problems:
            r.warning(
                "polygon-degenerate",
                where,
                "; ".join(problems),
                "Those polygons are dropped"
                + ("" if kept or outside else " and so is the annotation")
                + ". Redraw the outline with at least 3 distinct points.",
            )
        if outside and not kept:
            r.error(
                "annotation-outside-image",
                where,
                f"lies entirely outside the {w}x{h} image",
                "Fix or delete the annotation (were the image and annotation "
                "files mixed up, or the image resized?).",
            )
        elif outside:
            r.warning(
                "annotation-outside-image",
                where,
                f"polygon(s) {outside} lie entirely outside the {w}x{h} image",
                "Those polygons are dropped.",
            )
        if not kept:
            return None, clipped
        return kept, clipped

    def _rle(self, seg: dict, w: int, h: int, where: str) -> dict | None:
        r = self.report
        size, counts = seg.get("size"), seg.get("counts")
        hw = [_as_int(v) for v in size] if isinstance(size, list) and len(size) == 2 else None
        if hw is None or None in hw:
            r.error(
                "rle-invalid",
                where,
                f"RLE size {_short(size)} is not [height, width]",
                "Re-export the masks from the annotation tool.",
            )
            return None
        if hw != [h, w]:
            r.error(
                "rle-size-mismatch",
                where,
                f"RLE size {hw} (height, width) differs from the image's [{h}, {w}]",
                "Re-export the masks for this image, or use the image the masks were drawn on.",
            )
            return None
        if isinstance(counts, str):
            runs = rle_counts_from_string(counts)
        elif isinstance(counts, list):
            runs = [_as_int(v) for v in counts]
            runs = None if None in runs else runs
        else:
            runs = None
        if runs is None or any(v < 0 for v in runs) or sum(runs) != h * w:
            r.error(
                "rle-invalid",
                where,
                "RLE counts are malformed (they must be run lengths "
                f"summing to height*width = {h * w})",
                "Re-export the masks from the annotation tool.",
            )
            return None
        if isinstance(counts, str):
            return {"size": [h, w], "counts": counts}
        from pycocotools import mask as mask_utils

        enc = mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)
        return {"size": [h, w], "counts": enc["counts"].decode("ascii")}


def rle_to_pycoco(rle: Mapping[str, Any]) -> dict[str, Any]:
    """Compressed RLE with ``str`` counts (JSON form) → pycocotools form (``bytes`` counts)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def _bbox(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    nums = [_number(v) for v in value]
    if None in nums or nums[2] < 0 or nums[3] < 0:
        return None
    return tuple(nums)  # type: ignore[return-value]


def _exif_orientation(im) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a corrupt EXIF block must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- whole-dataset checks -----------------------------------------------------------------------
def merge_categories(parts: Iterable[list[Category]], report: Report) -> list[Category]:
    """One class list from several sources (e.g. Roboflow's train/valid/test files), by name, in
    first-seen id order."""
    merged: dict[str, Category] = {}
    parts = list(parts)
    for cats in parts:
        for c in cats:
            merged.setdefault(c.name, c)
    names = [[c.name for c in cats] for cats in parts if cats]
    if any(n != names[0] for n in names[1:]):
        report.info(
            "category-lists-differ",
            "",
            "the source files list different classes; merged by name",
            "Nothing to do if the names are right.",
        )
    return list(merged.values())


def finalize(
    samples: list[Sample],
    categories: list[Category],
    report: Report,
    *,
    convert_crowd: bool = True,
    display_things: Sequence[str] | None = None,
    fmt: str = "coco",
) -> tuple[list[Sample], list[str]]:
    """Whole-dataset rules, after ``class_map`` was applied.

    Crowd masks (converted by default), parent/empty categories (dropped), contiguous ids (the
    returned class list is the order of ids 1..K), display things absent, images without
    annotations, nothing to train on. Returns the samples and the final class names.
    """
    samples = _crowd(samples, report, convert_crowd, fmt)
    used = Counter(inst.category for s in samples for inst in s.instances)
    present = {c.name for c in categories}
    keep: list[Category] = []
    supers = {c.supercategory for c in categories if c.supercategory != c.name}
    for c in categories:
        if used[c.name]:
            keep.append(c)
        elif c.name in supers or (fmt == "roboflow" and c.source_id == 0):
            report.info(
                "category-parent",
                f"category {c.source_id} {c.name!r}",
                "a parent "
                "category with no annotations of its own (Roboflow adds one with id 0); "
                "training on it would add a class that never appears",
                "Dropped; nothing to do.",
            )
        else:
            report.warning(
                "category-empty",
                f"category {c.source_id} {c.name!r}",
                "no annotation uses this class",
                "Dropped from the class list. "
                "Annotate some examples or remove it from the tool's label list.",
            )
    names = [c.name for c in keep]
    old_ids = [c.source_id for c in keep]
    if old_ids and old_ids != list(range(1, len(old_ids) + 1)):
        mapping = ", ".join(f"{c.name!r} {c.source_id}->{i}" for i, c in enumerate(keep, 1))
        report.info(
            "category-ids-remapped",
            "",
            f"category ids were not 1..{len(keep)}; renumbered: {mapping}",
            "Nothing to do: engines take the class names in this order.",
        )
    for name in display_things or ():
        if name not in names:
            report.warning(
                "display-things-absent",
                f"display_things {list(display_things)}",
                f"{name!r} is not a class of this dataset "
                f"({'dropped: no annotations' if name in present else 'not found'})",
                f"Set display_things to classes of the dataset: {names}.",
            )
    for s in samples:
        if not s.instances:
            report.warning(
                "image-no-annotations",
                s.where,
                "no annotated object",
                "Kept as a background-only example. If it does show animals, "
                "annotate them: unlabelled animals teach the model to ignore them.",
            )
    if not used and not report.errors:
        report.error(
            "no-annotations",
            "",
            "the dataset has no usable annotation, so there is nothing to train on",
            "Annotate objects with polygons or brush masks and export again (see data/README.md).",
        )
    return samples, names


def _crowd(samples: list[Sample], report: Report, convert: bool, fmt: str) -> list[Sample]:
    n_crowd = sum(i.iscrowd for s in samples for i in s.instances)
    n_all = sum(len(s.instances) for s in samples)
    if not n_crowd:
        return samples
    why = (
        "CVAT exports brush masks as iscrowd=1"
        if fmt == "cvat"
        else "iscrowd=1 marks a region of many objects"
    )
    if convert:
        report.warning(
            "crowd-converted",
            "",
            f"{n_crowd} of {n_all} annotations have iscrowd=1 "
            f"({why}); detectron2 and torchvision skip crowd regions in training",
            "Converted to normal instances (masks kept). If some really are crowds "
            "of several animals, pass --keep-crowd (convert_crowd=False).",
        )
        return [
            replace(s, instances=tuple(replace(i, iscrowd=0) for i in s.instances)) for s in samples
        ]
    if n_crowd == n_all:
        report.error(
            "crowd-all",
            "",
            f"all {n_all} annotations have iscrowd=1 ({why}); the "
            "model would train on nothing, without any error",
            "Run prepare without --keep-crowd (convert_crowd=True) to convert them.",
        )
    else:
        report.info(
            "crowd-kept",
            "",
            f"{n_crowd} of {n_all} annotations have iscrowd=1 and "
            "are kept as crowd regions (ignored in training)",
        )
    return samples


def validate_coco(
    data: Any,
    image_root: str | Path,
    *,
    source: str = "annotations",
    class_map: Mapping[str, str] | None = None,
    display_things: Sequence[str] | None = None,
    convert_crowd: bool = True,
    fmt: str = "coco",
) -> tuple[list[Sample], list[str], Report]:
    """Every rule on one COCO dict, without writing anything (``prepare`` minus split/write).

    Returns ``(samples, class names in id order, report)``; never raises for bad input.
    """
    from thingmask.datasets.remap import apply_class_map

    report = Report()
    checked = check_coco(data, source=source, image_root=Path(image_root), report=report, fmt=fmt)
    samples, cats = apply_class_map(checked.samples, checked.categories, class_map, report)
    samples, names = finalize(
        samples, cats, report, convert_crowd=convert_crowd, display_things=display_things, fmt=fmt
    )
    return samples, names, report
