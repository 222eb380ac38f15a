"""Writing the prepared layout (see :mod:`thingmask.datasets`) from checked samples: images
copied (or written upright), ``train.json``/``val.json``, and a manifest of what was copied from
where, so re-runs are cheap and idempotent and only files this tool wrote are ever removed.

Every file is written to a temporary name and renamed (:mod:`thingmask.io_utils`); nothing is
ever written through an existing file (a hard or symbolic link into a source stays untouched).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thingmask.datasets.coco import DatasetError, PreparedDataset, load_prepared
from thingmask.datasets.records import Sample
from thingmask.datasets.report import Report
from thingmask.errors import InputError
from thingmask.io_utils import atomic_path, atomic_write_json
from thingmask.ownership import Manifest, check_writable

__all__ = ["MANIFEST", "check_prepare_output", "output_names", "record_prepared", "write_prepared"]

log = logging.getLogger(__name__)

MANIFEST = ".prepare-manifest.json"

_UNSAFE = re.compile(r"[^\w.\-]+")
# besides images/ and preview/; labels.json: datasets.origins.LABELS_RECORD (origins, iterations)
_FIXED = ("train.json", "val.json", "report.json", "labels.json", MANIFEST)
_NEW_FOLDER = "choose a new or empty output folder"


def check_prepare_output(output: Path, preview: bool = False) -> None:
    """Before anything is written: ``output`` must be new, empty, or a folder an earlier
    ``prepare`` wrote, and each fixed file prepare writes there absent or prepare's own
    (:mod:`thingmask.ownership`). Raises InputError naming the folder or file and the fix."""
    if output.is_dir() and any(output.iterdir()) and "prepare" not in Manifest.load(output).writers:
        other = output.with_name(output.name + "-prepared")
        raise InputError(
            f"{output}: is not empty and was not written by thingmask prepare, so nothing in it "
            f"is replaced; {_NEW_FOLDER}, e.g. --output {other}."
        )
    planned = [output / name for name in _FIXED] + ([output / "preview"] if preview else [])
    check_writable(planned, root=output, hint=_NEW_FOLDER)


def record_prepared(output: Path, paths: Sequence[Path]) -> None:
    """Record ``paths`` (files or folders just written) as prepare's own in ``output``'s
    manifest, so a re-run may replace them and nothing else."""
    manifest = Manifest.load(output)
    manifest.writers.add("prepare")
    manifest.record([p for p in paths if p.exists()])
    manifest.settle()
    manifest.save()


def output_names(samples: Sequence[Sample]) -> list[str]:
    """Sanitised, unique names under ``images/`` (sub-folders kept, odd characters → ``_``)."""
    used: set[str] = set()
    out = []
    for s in samples:
        parts = [_UNSAFE.sub("_", p).lstrip(".") or "_" for p in s.file_name.split("/")]
        name = "/".join(parts)
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        n = 1
        while name.lower() in used:  # case-insensitive: Drive and macOS folders ignore case
            name = f"{stem}-{n}.{ext}" if dot else f"{stem}-{n}"
            n += 1
        used.add(name.lower())
        out.append(name)
    return out


def _fingerprint(sample: Sample) -> dict[str, Any]:
    if isinstance(sample.source, bytes):
        return {"source": "embedded:" + hashlib.sha1(sample.source).hexdigest(), "fix": sample.fix}
    st = sample.source.stat()
    return {
        "source": str(sample.source),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "fix": sample.fix,
    }


def _write_image(sample: Sample, dest: Path) -> None:
    if sample.fix == "copy":
        if isinstance(sample.source, Path) and dest.exists() and dest.samefile(sample.source):
            return  # already the very same file (a hard link): nothing to write
        with atomic_path(dest) as tmp:
            if isinstance(sample.source, bytes):
                tmp.write_bytes(sample.source)
            else:
                shutil.copyfile(sample.source, tmp)
        return
    from PIL import Image, ImageOps

    src = io.BytesIO(sample.source) if isinstance(sample.source, bytes) else sample.source
    with Image.open(src) as im:
        fmt = im.format or "PNG"
        extra: dict[str, Any] = {k: im.info[k] for k in ("icc_profile", "dpi") if k in im.info}
        # exif_transpose also drops the orientation tag
        out = ImageOps.exif_transpose(im) if sample.fix == "transpose" else im.copy()
        exif = out.getexif()
        exif.pop(0x0112, None)
        if fmt == "JPEG":
            extra["quality"] = 95
        with atomic_path(dest) as tmp:
            out.save(tmp, format=fmt, exif=exif.tobytes(), **extra)


def _copy_images(output: Path, samples: Sequence[Sample], names: Sequence[str]) -> None:
    from tqdm.auto import tqdm

    images = output / "images"
    manifest_path = output / MANIFEST
    old: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8")).get("images", {})
        except (ValueError, OSError, AttributeError):
            old = {}
    if not isinstance(old, dict):
        old = {}
    new: dict[str, Any] = {}
    copied = 0
    # an image of the user's at one of our names (e.g. copied in by hand) is never replaced
    check_writable([images / name for name in names], root=output, hint=_NEW_FOLDER)
    owned = Manifest.load(output)
    for sample, name in tqdm(
        list(zip(samples, names, strict=True)), desc="images", unit="img", disable=len(samples) < 50
    ):
        dest = images / name
        fp = _fingerprint(sample)
        prev = old.get(name)
        if not (
            isinstance(prev, dict)
            and prev.get("fingerprint") == fp
            and dest.is_file()
            and dest.stat().st_size == prev.get("written_size")
        ):
            _write_image(sample, dest)
            copied += 1
        new[name] = {"fingerprint": fp, "written_size": dest.stat().st_size}
    recorded = {k.removeprefix("images/") for k in owned.files if k.startswith("images/")}
    for name in (set(old) | recorded) - set(new):  # only files this tool wrote, never the user's
        stale = images / name
        if (
            stale.is_file()
            and stale.resolve().is_relative_to(images.resolve())
            and owned.owns(stale)
        ):
            stale.unlink()
    atomic_write_json(manifest_path, {"images": new})
    log.info("images: %d written, %d unchanged", copied, len(samples) - copied)


def _coco(
    samples: Sequence[Sample],
    names: Sequence[str],
    file_names: Sequence[str],
    splits: Sequence[str],
    which: str,
    description: str,
) -> dict[str, Any]:
    """One split as a COCO dict: image ids are the samples' positions (1-based) and annotation
    ids one numbering over both splits, so ids are unique across the two files. Ignore regions
    become one crowd annotation (``iscrowd=1``, RLE) per class."""
    cat_id = {n: i for i, n in enumerate(names, 1)}
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    ann_id = 0
    for img_id, (s, fname, split) in enumerate(zip(samples, file_names, splits, strict=True), 1):
        # an ignore region is a crowd region of every class (COCO matches crowds per class)
        records = [
            (inst, cid)
            for inst in s.instances
            for cid in (cat_id.values() if inst.ignore else [cat_id[inst.category]])
        ]
        if split != which:
            ann_id += len(records)
            continue
        images.append({"id": img_id, "file_name": fname, "width": s.width, "height": s.height})
        for inst, cid in records:
            ann_id += 1
            anns.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": cid,
                    "segmentation": inst.segmentation,
                    "area": inst.area,
                    "bbox": [round(v, 2) for v in inst.bbox],
                    "iscrowd": inst.iscrowd,
                }
            )
    return {
        "info": {"description": description},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "thing"} for n, i in cat_id.items()],
    }


def write_prepared(
    output: Path,
    samples: Sequence[Sample],
    splits: Sequence[str],
    names: Sequence[str],
    report: Report,
    *,
    description: str,
) -> PreparedDataset | None:
    """Write images, ``train.json``, ``val.json`` and ``report.json`` under ``output``.

    ``splits``: ``train``/``val`` per sample; ``names``: the classes in id order (ids 1..K).
    Returns the loaded dataset, or None after reporting ``output-failed`` (the caller writes
    the report then).
    """
    file_names = output_names(samples)
    try:
        _copy_images(output, samples, file_names)
        for which in ("val", "train"):
            atomic_write_json(
                output / f"{which}.json",
                _coco(samples, names, file_names, splits, which, description),
            )
    except OSError as exc:
        report.error(
            "output-failed",
            str(output),
            f"could not write the dataset ({exc})",
            "Check the folder is writable and the disk has space.",
        )
        return None
    try:
        dataset: PreparedDataset | None = load_prepared(output)
    except DatasetError as exc:  # a bug guard: what we wrote must load
        report.error("output-invalid", str(output), str(exc))
        dataset = None
    report.write_json(output / "report.json")
    written = [output / n for n in _FIXED] + [output / "images" / n for n in file_names]
    record_prepared(output, written)
    report.log_counts(log)
    log.info(
        "prepared %s: %d train / %d val images, classes %s",
        output,
        list(splits).count("train"),
        list(splits).count("val"),
        list(names),
    )
    return dataset
