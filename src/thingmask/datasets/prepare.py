"""``thingmask prepare``: annotation export → validated COCO train/val in the prepared layout.

Steps (each its own module): import (:mod:`~thingmask.datasets.importers`) → check every file
(:func:`~thingmask.datasets.validate.check_coco`) → ``class_map`` (:mod:`.remap`) → whole-dataset
rules (:func:`~thingmask.datasets.finalize.finalize`) → split (:mod:`.split`) → write
(:mod:`.write`).

Output (see :mod:`thingmask.datasets`)::

    <output>/train.json, val.json   categories 1..K, file_name relative to images/
    <output>/images/...             copies (sub-folders kept, names sanitised); EXIF-rotated
                                    photos are written upright
    <output>/report.json            every issue (also written when errors stop the run)
    <output>/.prepare-manifest.json what was copied from where (makes re-runs cheap/idempotent)

The source is only read: the output must be a folder of its own (neither the source nor inside
it, nor holding it; symlinks resolved), checked before anything is written. Errors stop before
anything but ``report.json`` is written; warnings are reported and the dataset is written.
Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thingmask.config import Config
from thingmask.datasets.class_names import parse_class_names
from thingmask.datasets.coco import PreparedDataset
from thingmask.datasets.finalize import finalize, merge_categories
from thingmask.datasets.importers import FORMATS, detect_format, import_sources
from thingmask.datasets.origins import (
    LABELS_RECORD,
    next_record,
    previous_val,
    read_labels_record,
    source_origins,
)
from thingmask.datasets.records import Category, Sample
from thingmask.datasets.remap import apply_class_map
from thingmask.datasets.report import Report
from thingmask.datasets.split import assign_splits
from thingmask.datasets.validate import check_coco
from thingmask.datasets.write import check_prepare_output, record_prepared, write_prepared
from thingmask.errors import ConfigError, InputError, setting_fix
from thingmask.io_utils import atomic_write_json

__all__ = ["PrepareResult", "check_output_separate", "prepare_dataset", "prepare_from_config"]

log = logging.getLogger(__name__)


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
    convert_crowd: bool | None = None,
    names: str | Sequence[str] | None = None,
    preview: bool = False,
    accept_prelabels: bool = False,
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
        convert_crowd: True turns ``iscrowd=1`` masks into normal instances, False keeps them as
            crowd regions, None (default) follows the source's convention: converted for CVAT
            (its brush masks) or when every mask is a crowd, kept otherwise (COCO's meaning).
        names: class names in id order, ``"cat,dog"``, a list, or the path of an Ultralytics
            dataset yaml (``names:``): a YOLO export's class list (needed when it ships without
            one), the class order for labelme/VIA (instead of ``labels.txt``/the attribute's
            options).
        preview: also write ``<output>/preview/`` (sample grid, class counts).
        accept_prelabels: take pre-labels nobody reviewed as they are (scripts, tests); by
            default they are reported (``prelabel-unreviewed``) and left out
            (:mod:`~thingmask.datasets.origins`).

    An ``output`` that already holds a prepared dataset is merged into as the next labelling
    iteration: its val images stay in val, new images go to train, and ``labels.json`` records
    each image's origin (human, corrected, accepted) and iteration.
    Returns:
        :class:`PrepareResult`; ``report.json`` is in ``output`` either way.
    Raises:
        InputError (a ValueError) when ``output`` and the source (or ``image_dir``) overlap,
        before anything is written, or when ``names`` cannot be read.
    """
    source, output = Path(source), Path(output)
    check_output_separate(source, output, image_dir)
    check_prepare_output(output, preview)  # new, empty or prepare's own; its files ours
    class_names = parse_class_names(names) if names else None
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

    sources = import_sources(
        source,
        fmt,
        report,
        image_dir=image_dir,
        class_attribute=class_attribute,
        default_class=default_class,
        names=class_names,
    )
    samples: list[Sample] = []
    parts: list[list[Category]] = []
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
    origins = source_origins(sources)
    samples = _leave_out_unreviewed(samples, origins, report, accept_prelabels)
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

    previous = read_labels_record(output)
    frozen = previous_val(output, previous)
    if frozen is not None:  # the next iteration: val stays as it was, new images train
        samples = [replace(s, split="val" if s.file_name in frozen else "train") for s in samples]
    splits = assign_splits(samples, val_fraction, seed, report)
    if frozen is not None:
        _note_frozen(report, output, samples, frozen, previous)
    if not any(s.objects for s, sp in zip(samples, splits, strict=True) if sp == "train"):
        report.error(
            "split-empty-train",
            "",
            "the train split has no annotated image",
            "Move annotated images into the source's train split.",
        )
        return _stop(report, output)
    _summarise(report, samples, splits, names)
    description = f"prepared by thingmask from {source.name} ({fmt})"
    dataset = write_prepared(output, samples, splits, names, report, description=description)
    if dataset is None:
        return _stop(report, output)
    record = next_record(samples, splits, origins, previous)
    record["split_how"] = previous.get("split_how") or report.summary["split"].get("how")
    report.summary.update(iteration=record["iteration"], origins=record["origins"])
    atomic_write_json(output / LABELS_RECORD, record)
    report.write_json(output / "report.json")
    record_prepared(output, [output / LABELS_RECORD, output / "report.json"])  # as written now
    if preview:
        from thingmask.datasets.preview import preview_dataset

        preview_dataset(dataset, output / "preview")
        record_prepared(output, [output / "preview"])
    return PrepareResult(dataset, report, output)


def prepare_from_config(config: Config, **kwargs: Any) -> PrepareResult:
    """:func:`prepare_dataset` with the config's dataset settings (``dataset_source`` →
    ``dataset_dir``, ``dataset_class_names`` → ``names``); ``kwargs`` pass through
    (``image_dir``, ``class_attribute``, ...)."""
    if not config.dataset_source:
        raise ConfigError(
            "dataset_source: got ''; expected your annotation export (a folder or .json "
            "file), or generate_synthetic=True for the demo data. "
            + setting_fix("dataset_source", "path/to/export")
        )
    kwargs.setdefault("names", config.dataset_class_names or None)
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


def check_output_separate(
    source: str | Path, output: str | Path, image_dir: str | Path | None = None
) -> None:
    """Raise :class:`~thingmask.errors.InputError` when the output folder overlaps an input.

    Inputs: the source folder (or the annotation file), and ``image_dir``. The output may be
    none of them, nor inside a source folder (a re-run would read it as annotations), nor hold
    one (its ``images/`` would land among them). Paths are compared resolved, so symbolic links
    (also ``<output>/images`` as a link) count; an output inside the *folder* of an annotation
    *file* is allowed. Nothing is ever written through a file: hard links stay untouched.
    """
    source, output = Path(source), Path(output)
    out = output.resolve()
    targets = [("output", out), ("output's images/ folder", (output / "images").resolve())]
    inputs: list[tuple[str, Path, bool]] = []  # (what, resolved path, output may be inside)
    if source.is_file():
        inputs.append(("the annotation file's folder", source.resolve().parent, True))
        inputs.append(("the annotation file", source.resolve(), False))
    else:
        inputs.append(("the source folder", source.resolve(), False))
    if image_dir is not None:
        inputs.append(("the image folder (--images)", Path(image_dir).resolve(), False))
    for label, target in targets:
        for what, path, inside_ok in inputs:
            if target == path:
                why = f"the {label} is {what}"
            elif path in target.parents and not inside_ok:
                why = f"the {label} is inside {what}"
            elif target in path.parents:
                why = f"{what} is inside the {label}"
            else:
                continue
            shown = str(output) if out == output.absolute() else f"{output} (resolves to {out})"
            raise InputError(
                f"--output {shown} and the source {source} overlap: {why}. prepare only reads "
                "its source and would write train.json, val.json and images/ among your files "
                "(or read its own output on a re-run). Choose a separate output folder, e.g. "
                f"--output {Path('data') / (source.stem + '-prepared')}."
            )


# --- helpers ------------------------------------------------------------------------------------
def _stop(report: Report, output: Path) -> PrepareResult:
    try:
        report.write_json(output / "report.json")
        record_prepared(output, [output / "report.json"])
    except OSError as exc:
        log.warning("could not write %s: %s", output / "report.json", exc)
    report.log_counts(log)
    return PrepareResult(None, report, output)


def _note_frozen(
    report: Report,
    output: Path,
    samples: Sequence[Sample],
    frozen: set[str],
    previous: Mapping[str, Any],
) -> None:
    known = previous.get("images") or {}
    new = sum(s.file_name not in known for s in samples)
    if not new and previous.get("split_how"):  # a plain re-run reports as the first run did
        report.summary.setdefault("split", {})["how"] = previous["split_how"]
        return
    report.summary.setdefault("split", {})["how"] = "frozen val, new images to train"
    report.info(
        "split-frozen",
        str(output),
        f"merged into the dataset prepared before (iteration {previous.get('iteration', 1)}): "
        f"its {len(frozen)} val image(s) stay in val, {new} new image(s) go to train",
        "Prepare into a new folder to split afresh.",
    )


def _leave_out_unreviewed(
    samples: list[Sample], origins: dict[str, str], report: Report, accept: bool
) -> list[Sample]:
    unreviewed = [s for s in samples if origins.get(s.file_name) == "unreviewed"]
    if not unreviewed:
        return samples
    if accept:
        for s in unreviewed:
            origins[s.file_name] = "accepted"
        report.info(
            "prelabel-accepted",
            f"{len(unreviewed)} image(s)",
            "pre-labels nobody reviewed are taken as they are (--accept-prelabels)",
        )
        return samples
    shown = ", ".join(s.file_name for s in unreviewed[:5])
    more = f" and {len(unreviewed) - 5} more" if len(unreviewed) > 5 else ""
    report.warning(
        "prelabel-unreviewed",
        f"{len(unreviewed)} file(s): {shown}{more}",
        "machine-made pre-labels nobody reviewed; left out so the model never trains on its "
        "own mistakes",
        "Open each in labelme, correct the shapes or untick the prelabel_unreviewed flag, and "
        "save (or pass --accept-prelabels to take them as they are).",
    )
    drop = {id(s) for s in unreviewed}
    return [s for s in samples if id(s) not in drop]


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


def _summarise(
    report: Report, samples: Sequence[Sample], splits: Sequence[str], names: Sequence[str]
) -> None:
    per_split = {w: {"images": 0, "instances": 0} for w in ("train", "val")}
    per_class = {n: {"train": 0, "val": 0} for n in names}
    formats: Counter[str] = Counter()
    for s, split in zip(samples, splits, strict=True):
        per_split[split]["images"] += 1
        per_split[split]["instances"] += len(s.objects)
        for inst in s.objects:
            per_class[inst.category][split] += 1
            formats["rle" if isinstance(inst.segmentation, dict) else "polygon"] += 1
    report.summary.update(
        images=len(samples),
        instances=sum(formats.values()),
        ignore_regions=sum(len(s.instances) - len(s.objects) for s in samples),
        classes=list(names),
        per_class=per_class,
        mask_formats=dict(formats),
    )
    report.summary.setdefault("split", {}).update(per_split)
