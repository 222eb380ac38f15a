"""``thingmask prepare``: annotation export → validated COCO train/val in the prepared layout.

Steps (each its own module): import (:mod:`~thingmask.datasets.importers`) → check every file
(:func:`~thingmask.datasets.validate.check_coco`) → ``class_map`` (:mod:`.remap`) → whole-dataset
rules (:func:`~thingmask.datasets.validate.finalize`) → split (:mod:`.split`) → write.

Output (see :mod:`thingmask.datasets`)::

    <output>/train.json, val.json   categories 1..K, file_name relative to images/
    <output>/images/...             copies (sub-folders kept, names sanitised); EXIF-rotated
                                    photos are written upright
    <output>/report.json            every issue (also written when errors stop the run)
    <output>/.prepare-manifest.json what was copied from where (makes re-runs cheap/idempotent)

Errors stop before anything but ``report.json`` is written; warnings are reported and the
dataset is written. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thingmask.datasets.coco import DatasetError, PreparedDataset, load_prepared
from thingmask.datasets.importers import FORMATS, detect_format, import_sources
from thingmask.datasets.remap import apply_class_map
from thingmask.datasets.split import assign_splits
from thingmask.datasets.validate import Report, Sample, check_coco, finalize, merge_categories
from thingmask.io_utils import atomic_path, atomic_write_json

__all__ = ["PrepareResult", "prepare_dataset", "prepare_from_config"]

log = logging.getLogger(__name__)

MANIFEST = ".prepare-manifest.json"


@dataclass(frozen=True)
class PrepareResult:
    """``dataset`` is None when errors stopped the run; ``report`` says why (``report.text()``)."""

    dataset: PreparedDataset | None
    report: Report
    output: Path

    @property
    def ok(self) -> bool:
        return self.dataset is not None and self.report.ok


def prepare_dataset(
    source: str | Path,
    output: str | Path,
    fmt: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    class_map: Mapping[str, str] | None = None,
    display_things: Sequence[str] | None = None,
    *,
    image_dir: str | Path | None = None,
    class_attribute: str | None = None,
    default_class: str = "object",
    convert_crowd: bool = True,
    preview: bool = False,
) -> PrepareResult:
    """Import, validate, remap, split and write a dataset; never raises for bad annotations.

    Args:
        source: the export (folder or file) of labelme/VIA/CVAT/Roboflow/YOLO/COCO.
        output: the prepared dataset folder (created; may already hold an older run).
        fmt: ``auto`` or one of :data:`~thingmask.datasets.importers.FORMATS`.
        val_fraction, seed: split of images without an existing split (deterministic).
        class_map: ``{"doggo": "dog"}`` renames/merges, ``{"junk": ""}`` drops.
        display_things: classes the run keeps; the report warns about absent ones.
        image_dir: folder holding the images when it is not beside the annotations (COCO).
        class_attribute, default_class: VIA region attribute holding the class, and the class
            of regions without it.
        convert_crowd: turn ``iscrowd=1`` masks (CVAT brush masks) into normal instances.
        preview: also write ``<output>/preview/`` (sample grid, class counts).
    Returns:
        :class:`PrepareResult`; ``report.json`` is in ``output`` either way.
    """
    source, output = Path(source), Path(output)
    report = Report()
    report.summary.update(source=str(source), format=fmt, output=str(output))
    if fmt == "auto":
        try:
            fmt = detect_format(source)
        except ValueError as exc:
            report.error("format-unknown", str(source), str(exc))
            return _stop(report, output)
        report.info(
            "format-detected",
            str(source),
            f"read as {fmt}",
            "Pass --format / dataset_format if this is wrong.",
        )
    elif fmt not in FORMATS:
        report.error(
            "format-unknown",
            str(source),
            f"format {fmt!r} is not one of auto, {', '.join(FORMATS)}",
        )
        return _stop(report, output)
    elif not source.exists():
        report.error(
            "source-missing",
            str(source),
            "does not exist",
            "Set dataset_source (or SRC) to your annotation export.",
        )
        return _stop(report, output)
    report.summary["format"] = fmt
    src_dir = source.resolve() if source.is_dir() else source.resolve().parent
    out_res = output.resolve()
    if out_res != src_dir and src_dir in out_res.parents and source.is_dir():
        report.error(
            "output-inside-source",
            str(output),
            f"is inside the source folder "
            f"{source}; a re-run would read its own output as annotations",
            "Choose an output folder outside the source, e.g. data/<name>.",
        )
        return _stop(report, output)

    sources = import_sources(
        source,
        fmt,
        report,
        image_dir=image_dir,
        class_attribute=class_attribute,
        default_class=default_class,
    )
    samples: list[Sample] = []
    parts = []
    for src in sources:
        checked = check_coco(
            src.data,
            source=src.name,
            image_root=src.image_root,
            report=report,
            split=src.split,
            embedded=src.embedded,
            fmt=fmt,
        )
        samples += checked.samples
        parts.append(checked.categories)
    if not sources and report.ok:
        report.error(
            "no-annotations",
            str(source),
            f"no {fmt} annotation files found",
            "Point at the export folder; data/README.md shows each tool's layout.",
        )
    _check_same_files(samples, report)
    categories = merge_categories(parts, report)
    samples, categories = apply_class_map(samples, categories, class_map, report)
    samples, names = finalize(
        samples,
        categories,
        report,
        convert_crowd=convert_crowd,
        display_things=display_things,
        fmt=fmt,
    )
    if not report.ok:
        return _stop(report, output)

    splits = assign_splits(samples, val_fraction, seed, report)
    if not any(s.instances for s, sp in zip(samples, splits, strict=True) if sp == "train"):
        report.error(
            "split-empty-train",
            "",
            "the train split has no annotated image",
            "Move annotated images into the source's train split.",
        )
        return _stop(report, output)
    _summarise(report, samples, splits, names)
    dataset = _write(output, samples, splits, names, report, fmt, source)
    if dataset is not None and preview:
        from thingmask.datasets.preview import preview_dataset

        preview_dataset(dataset, output / "preview")
    return PrepareResult(dataset, report, output)


def prepare_from_config(config: Any, **kwargs: Any) -> PrepareResult:
    """:func:`prepare_dataset` with the config's dataset settings (``dataset_source`` →
    ``dataset_dir``); ``kwargs`` pass through (``image_dir``, ``class_attribute``, ...)."""
    from thingmask.config import ConfigError

    if not config.dataset_source:
        raise ConfigError(
            "dataset_source: got ''; expected your annotation export (a folder "
            "or .json file). Set it in the global-variables cell or the config "
            "YAML, or set generate_synthetic=True for the demo data."
        )
    return prepare_dataset(
        config.dataset_source,
        config.dataset_dir,
        config.dataset_format,
        config.val_fraction,
        config.seed,
        config.class_map,
        config.display_things,
        **kwargs,
    )


# --- writing ------------------------------------------------------------------------------------
def _stop(report: Report, output: Path) -> PrepareResult:
    try:
        report.write_json(output / "report.json")
    except OSError as exc:
        log.warning("could not write %s: %s", output / "report.json", exc)
    report.log_counts(log)
    return PrepareResult(None, report, output)


def _check_same_files(samples: list[Sample], report: Report) -> None:
    seen: dict[Path, Sample] = {}
    for s in samples:
        if isinstance(s.source, Path):
            first = seen.setdefault(s.source, s)
            if first is not s:
                report.error(
                    "image-duplicate-file",
                    s.where,
                    f"the same image file is also "
                    f"{first.where}"
                    + (
                        " (in both splits: val would measure images the model trained on)"
                        if first.split != s.split
                        else ""
                    ),
                    "Keep one of the two records.",
                )


_UNSAFE = re.compile(r"[^\w.\-]+")


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
            return  # preparing in place
        with atomic_path(dest) as tmp:
            if isinstance(sample.source, bytes):
                tmp.write_bytes(sample.source)
            else:
                shutil.copyfile(sample.source, tmp)
        return
    import io

    from PIL import Image, ImageOps

    src = io.BytesIO(sample.source) if isinstance(sample.source, bytes) else sample.source
    with Image.open(src) as im:
        fmt = im.format or "PNG"
        extra = {k: im.info[k] for k in ("icc_profile", "dpi") if k in im.info}
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
            import json

            old = json.loads(manifest_path.read_text(encoding="utf-8")).get("images", {})
        except (ValueError, OSError, AttributeError):
            old = {}
    if not isinstance(old, dict):
        old = {}
    new: dict[str, Any] = {}
    copied = 0
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
    for name in set(old) - set(new):  # only files this tool wrote before, never user files
        stale = images / name
        if stale.is_file() and stale.resolve().is_relative_to(images.resolve()):
            stale.unlink()
    atomic_write_json(manifest_path, {"images": new})
    log.info("images: %d written, %d unchanged", copied, len(samples) - copied)


def _coco(samples, names, file_names, splits, which: str, fmt: str, source: Path) -> dict[str, Any]:
    cat_id = {n: i for i, n in enumerate(names, 1)}
    images, anns = [], []
    ann_id = 0  # ids are unique across both files: one numbering over all samples
    for img_id, (s, fname, split) in enumerate(zip(samples, file_names, splits, strict=True), 1):
        if split != which:
            ann_id += len(s.instances)
            continue
        images.append({"id": img_id, "file_name": fname, "width": s.width, "height": s.height})
        for inst in s.instances:
            ann_id += 1
            anns.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": cat_id[inst.category],
                    "segmentation": inst.segmentation,
                    "area": inst.area,
                    "bbox": [round(v, 2) for v in inst.bbox],
                    "iscrowd": inst.iscrowd,
                }
            )
    return {
        "info": {"description": f"prepared by thingmask from {source.name} ({fmt})"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "thing"} for n, i in cat_id.items()],
    }


def _write(
    output: Path, samples, splits, names, report: Report, fmt: str, source: Path
) -> PreparedDataset | None:
    file_names = output_names(samples)
    try:
        _copy_images(output, samples, file_names)
        for which in ("val", "train"):
            atomic_write_json(
                output / f"{which}.json",
                _coco(samples, names, file_names, splits, which, fmt, source),
            )
    except OSError as exc:
        report.error(
            "output-failed",
            str(output),
            f"could not write the dataset ({exc})",
            "Check the folder is writable and the disk has space.",
        )
        _stop(report, output)
        return None
    try:
        dataset = load_prepared(output)
    except DatasetError as exc:  # a bug guard: what we wrote must load
        report.error("output-invalid", str(output), str(exc))
        dataset = None
    report.write_json(output / "report.json")
    report.log_counts(log)
    log.info(
        "prepared %s: %d train / %d val images, classes %s",
        output,
        splits.count("train"),
        splits.count("val"),
        names,
    )
    return dataset


def _summarise(report: Report, samples, splits, names) -> None:
    per_split = {w: {"images": 0, "instances": 0} for w in ("train", "val")}
    per_class = {n: {"train": 0, "val": 0} for n in names}
    formats: Counter = Counter()
    for s, split in zip(samples, splits, strict=True):
        per_split[split]["images"] += 1
        per_split[split]["instances"] += len(s.instances)
        for inst in s.instances:
            per_class[inst.category][split] += 1
            formats["rle" if isinstance(inst.segmentation, dict) else "polygon"] += 1
    report.summary.update(
        images=len(samples),
        instances=sum(formats.values()),
        classes=list(names),
        per_class=per_class,
        mask_formats=dict(formats),
    )
    report.summary.setdefault("split", {}).update(per_split)


# --- CLI ----------------------------------------------------------------------------------------
