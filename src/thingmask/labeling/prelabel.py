"""``thingmask prelabel``: a trained run's predictions on images as editable annotations.

The images (files, a folder searched recursively, a glob, or a video whose frames are picked
first as ``thingmask frames`` does) are annotated in ``--output``:

* images already in the output folder that thingmask wrote there (frames) get their labelme
  JSON beside them;
* other images are copied into the output first (their path relative to the input folder
  kept), so the folder is a complete labelme project that ``prepare`` reads as it is.

A labelme file a person already reviewed (corrected, or the flag unticked) is never replaced:
re-running ``prelabel`` with a better model refreshes only the files nobody touched. "Touched"
is the ownership manifest's test (:mod:`thingmask.ownership`): a file thingmask wrote whose size,
modification time or inode changed since is the person's: kept as it is; the others are refreshed.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from thingmask.config import Config
from thingmask.detections import Detections, keep
from thingmask.errors import InputError
from thingmask.labeling.formats import (
    FORMATS,
    Prelabel,
    coco_document,
    labelme_document,
    labelstudio_tasks,
    to_prelabel,
)
from thingmask.labeling.outputs import OutputFolder, open_output

__all__ = ["IMAGE_EXTENSIONS", "find_images", "prelabel_images", "write_prelabels"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
COCO_FILE = "prelabels_coco.json"
LABELSTUDIO_FILE = "prelabels_labelstudio.json"

Predict = Callable[[np.ndarray], Detections]


def find_images(source: str | Path) -> tuple[list[Path], Path]:
    """``(image files sorted, the folder their relative paths start from)`` for a file, a folder
    (recursive, hidden files left out) or a glob. Raises InputError when none is found."""
    text = str(source)
    p = Path(text)
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{p}: not an image ({', '.join(IMAGE_EXTENSIONS)})")
        return [p], p.parent
    if p.is_dir():
        found = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        base = p
    elif any(ch in text for ch in "*?["):
        found = sorted(
            Path(f)
            for f in glob.glob(text, recursive=True)
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not Path(f).name.startswith(".")
        )
        base = Path(os.path.commonpath([str(f.parent) for f in found])) if found else p
    else:
        raise InputError(
            f"{text}: no such file or folder. Pass images (a file, a folder or a glob such as "
            "'frames/*.jpg') or a video"
        )
    if not found:
        raise InputError(f"{text}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    return found, base


def prelabel_images(
    images: Sequence[Path],
    predict: Predict,
    config: Config,
    *,
    all_classes: bool = False,
    names: Sequence[str] = (),
) -> list[tuple[Path, Prelabel]]:
    """Run ``predict`` (BGR frame → Detections) on each image and turn the kept instances
    (``config.display_things``, or all with ``all_classes``) into polygons. ``names``: the
    relative path each Prelabel records (default: the file names)."""
    from tqdm.auto import tqdm

    out = []
    for k, path in enumerate(tqdm(images, desc="prelabel", unit="img", disable=len(images) < 20)):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: not a readable image (png/jpg/...)")
        dets = predict(bgr)
        if not all_classes:
            dets = keep(dets, config.display_things)
        rel = names[k] if names else path.name
        out.append((path, to_prelabel(rel, dets)))
    return out


def write_prelabels(
    source: str | Path | Sequence[Path],
    output: str | Path,
    predict: Predict,
    config: Config,
    class_names: Sequence[str],
    *,
    fmt: str = "labelme",
    all_classes: bool = False,
    run: str = "",
) -> tuple[list[Prelabel], int, int]:
    """Pre-label the images of ``source`` into ``output``.

    ``source``: a file, folder or glob (:func:`find_images`), or a list of images inside
    ``output`` that thingmask wrote (``suggest``'s frames).
    Returns ``(prelabels, files written, reviewed files kept)``. Raises InputError for bad
    input or an output folder that holds the user's images, before anything is written.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if isinstance(source, (str, Path)):
        images, base = find_images(source)
    else:
        images, base = list(source), Path(output)
    with open_output(output, images, "prelabel") as out:
        return _write_prelabels(
            out, images, base, predict, config, class_names, fmt, all_classes, run
        )


def _write_prelabels(
    out: OutputFolder,
    images: list[Path],
    base: Path,
    predict: Predict,
    config: Config,
    class_names: Sequence[str],
    fmt: str,
    all_classes: bool,
    run: str,
) -> tuple[list[Prelabel], int, int]:
    rels = []
    to_copy = []  # images from elsewhere: copied in, unless thingmask's unchanged copy is there
    for img in images:
        if img.resolve().is_relative_to(out.root.resolve()):  # already in place (checked)
            rels.append(img.resolve().relative_to(out.root.resolve()).as_posix())
            continue
        rels.append(img.relative_to(base).as_posix())
        if not out.owns(rels[-1]):
            to_copy.append((img, rels[-1]))
    out.check_free(rel for _, rel in to_copy)
    json_rels = [str(Path(rel).with_suffix(".json").as_posix()) for rel in rels]
    # a labelme file thingmask wrote and a person changed since (reviewed) is theirs: kept
    # (a file at such a name that thingmask never wrote is refused below, as any user's file)
    reviewed = {r for r in json_rels if out.recorded(r) and not out.owns(r)}
    if fmt == "labelme":
        out.check_free(r for r in json_rels if r not in reviewed)
    else:
        out.check_free([COCO_FILE if fmt == "coco" else LABELSTUDIO_FILE])
    results = prelabel_images(images, predict, config, all_classes=all_classes, names=rels)
    written = len(out.write_files({rel: img.read_bytes() for img, rel in to_copy}))
    pres = [pre for _, pre in results]
    kept = 0
    if fmt == "labelme":
        docs = {
            rel_json: labelme_document(pre, Path(pre.image).name, run)
            for pre, rel_json in zip(pres, json_rels, strict=True)
            if rel_json not in reviewed
        }
        kept = len(json_rels) - len(docs)
        written += len(out.write_files({r: _json_bytes(d) for r, d in docs.items()}))
    elif fmt == "coco":
        out.write_json(COCO_FILE, coco_document(pres, class_names, run))
        written += 1
    else:
        out.write_json(LABELSTUDIO_FILE, labelstudio_tasks(pres, run))
        written += 1
    if kept:
        log.info("%d reviewed labelme file(s) kept as they are", kept)
    return pres, written, kept


def _json_bytes(data: object) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")
