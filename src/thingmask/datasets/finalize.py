"""Whole-dataset rules, after every file was checked and ``class_map`` applied: one class list
from several files, crowd masks, parent and empty categories, contiguous ids, display things
absent, images without annotations, nothing to train on.

Position in ``thingmask prepare``::

    importers → check_coco (per file) → remap (class_map) → finalize → split → write
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace

from thingmask.datasets.records import Category, Sample
from thingmask.datasets.report import Report

__all__ = ["crowd_policy", "finalize", "merge_categories"]


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
    convert_crowd: bool | None = None,
    display_things: Sequence[str] | None = None,
    fmt: str = "coco",
) -> tuple[list[Sample], list[str]]:
    """Whole-dataset rules, after ``class_map`` was applied.

    Crowd masks (``convert_crowd``: True converts them to instances, False keeps them, None
    decides by the source, see :func:`crowd_policy`), parent/empty categories (dropped),
    contiguous ids (the returned class list is the order of ids 1..K), display things absent,
    images without annotations, nothing to train on. Ignore regions
    (:attr:`~thingmask.datasets.records.Instance.ignore`) are no class and stay as they are.
    Returns the samples and the final class names.
    """
    samples = _crowd(samples, report, convert_crowd, fmt)
    used = Counter(inst.category for s in samples for inst in s.objects)
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
    things = list(display_things or ())
    for name in things:
        if name not in names:
            report.warning(
                "display-things-absent",
                f"display_things {things}",
                f"{name!r} is not a class of this dataset "
                f"({'dropped: no annotations' if name in present else 'not found'})",
                f"Set display_things to classes of the dataset: {names}.",
            )
    for s in samples:
        if not s.objects:
            report.warning(
                "image-no-annotations",
                s.where,
                "no annotated object" + (" (only an ignore region)" if s.instances else ""),
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


def crowd_policy(convert_crowd: bool | None, fmt: str, n_crowd: int, n_all: int) -> bool:
    """Whether ``iscrowd=1`` masks become normal instances.

    ``convert_crowd`` True/False is the user's choice. None follows the source's convention:
    CVAT's COCO export marks every brush mask ``iscrowd=1`` (they are single animals: convert);
    in COCO itself ``iscrowd=1`` is a region of many objects that training and evaluation ignore
    (keep), unless *every* mask is a crowd, which only an export like CVAT's produces.
    """
    if convert_crowd is not None:
        return convert_crowd
    return fmt == "cvat" or n_crowd == n_all


def _crowd(
    samples: list[Sample], report: Report, convert_crowd: bool | None, fmt: str
) -> list[Sample]:
    n_crowd = sum(i.iscrowd for s in samples for i in s.objects)
    n_all = sum(len(s.objects) for s in samples)
    if not n_crowd:
        return samples
    why = (
        "CVAT exports brush masks as iscrowd=1"
        if fmt == "cvat"
        else "in COCO, iscrowd=1 marks a region of many objects"
    )
    if crowd_policy(convert_crowd, fmt, n_crowd, n_all):
        report.warning(
            "crowd-converted",
            "",
            f"{n_crowd} of {n_all} annotations have iscrowd=1 "
            f"({why}); detectron2 and torchvision skip crowd regions in training",
            "Converted to normal instances (masks kept). If some really are crowds "
            "of several animals, pass --keep-crowd (convert_crowd=False).",
        )
        return [
            replace(
                s, instances=tuple(i if i.ignore else replace(i, iscrowd=0) for i in s.instances)
            )
            for s in samples
        ]
    if n_crowd == n_all:
        report.error(
            "crowd-all",
            "",
            f"all {n_all} annotations have iscrowd=1 ({why}); the "
            "model would train on nothing, without any error",
            "Run prepare without --keep-crowd (or with --convert-crowd) to convert them.",
        )
    else:
        report.warning(
            "crowd-kept",
            "",
            f"{n_crowd} of {n_all} annotations have iscrowd=1 ({why}) and are kept as crowd "
            "regions: both engines skip them in training, and COCO evaluation does not count "
            "detections inside them",
            "Nothing to do if they are groups of animals. If they are single animals (brush "
            "masks of a tool that marks masks as crowds), pass --convert-crowd "
            "(convert_crowd=True).",
        )
    return samples
