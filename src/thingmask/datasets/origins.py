"""Where each label came from — a person, a corrected pre-label, an accepted pre-label — and the
record of labelling iterations in a prepared dataset.

**Pre-labels are marked.** ``thingmask prelabel`` writes labelme files with

* an image flag :data:`UNREVIEWED_FLAG` set to true: labelme lists the file's flags as
  checkboxes in its *Flags* panel, so the person reviewing unticks it to accept the file;
* a top-level ``"thingmask_prelabel"`` record (labelme keeps unknown keys when it saves) with
  :func:`shapes_digest` of the shapes as written.

**Review state** of a labelme file (:func:`review_state`): no record → ``human``; shapes changed
since pre-labelling (digest differs) → ``corrected`` (whatever the flag says: editing is
reviewing); shapes unchanged and the flag unticked → ``accepted``; shapes unchanged and the
flag still ticked → ``unreviewed``: ``prepare`` leaves the file out (rule ``prelabel-unreviewed``)
unless ``--accept-prelabels`` takes it as it is (then ``accepted``).

**Iterations** (``<dataset>/labels.json``, written by ``prepare``): each image's origin, the
iteration (1, 2, ...) in which its current label arrived, and its split. Preparing into a folder
that already holds a prepared dataset is the next iteration: images that were in val stay in val
and new images go to train, so AP stays comparable from one iteration to the next.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thingmask.datasets.records import Sample, normalize_file_name

__all__ = [
    "LABELS_RECORD",
    "ORIGINS",
    "PRELABEL_KEY",
    "UNREVIEWED_FLAG",
    "label_digest",
    "next_record",
    "previous_val",
    "read_labels_record",
    "review_state",
    "shapes_digest",
    "source_origins",
]

UNREVIEWED_FLAG = "prelabel_unreviewed"  # labelme image flag; untick it to accept the file
PRELABEL_KEY = "thingmask_prelabel"  # top-level record in a pre-labelled file
LABELS_RECORD = "labels.json"  # in a prepared dataset: origin and iteration of every image
ORIGINS = ("human", "corrected", "accepted")


def shapes_digest(shapes: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of labelme shapes' meaning (label, type, group, points to 0.01 px), independent of
    key order, number formatting and the extra keys labelme adds when it saves."""
    canon = []
    for shape in shapes:
        points = shape.get("points") or []
        canon.append(
            [
                str(shape.get("label", "")),
                str(shape.get("shape_type") or "polygon"),
                shape.get("group_id"),
                [[round(float(v), 2) for v in p] for p in points if isinstance(p, (list, tuple))],
            ]
        )
    blob = json.dumps(canon, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def review_state(data: Mapping[str, Any]) -> str:
    """``human``, ``corrected``, ``accepted`` or ``unreviewed`` for one labelme file's dict."""
    record = data.get(PRELABEL_KEY)
    if not isinstance(record, Mapping):
        return "human"
    shapes = data.get("shapes") or []
    if record.get("shapes_sha256") != shapes_digest(shapes if isinstance(shapes, list) else []):
        return "corrected"
    flags = data.get("flags")
    if isinstance(flags, Mapping) and flags.get(UNREVIEWED_FLAG) is False:
        return "accepted"
    return "unreviewed"


def read_labels_record(dataset: str | Path) -> dict[str, Any]:
    """``<dataset>/labels.json`` as a dict (``{}`` when there is none or it is unreadable):
    ``{"iteration": k, "images": {source file name: {"origin", "iteration", "split", "sha"}}}``."""
    path = Path(dataset) / LABELS_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("images"), dict) else {}


def source_origins(sources: Sequence[Any]) -> dict[str, str]:
    """``{file name: origin or "unreviewed"}`` from imported sources' image records (labelme puts
    the review state there; a COCO file ``prelabel`` wrote is unreviewed as a whole)."""
    out: dict[str, str] = {}
    for src in sources:
        data = src.data if isinstance(src.data, Mapping) else {}
        info = data.get("info")
        coco_prelabel = isinstance(info, Mapping) and PRELABEL_KEY in info
        images = data.get("images")
        for img in images if isinstance(images, list) else []:  # untrusted: checked later
            if not isinstance(img, Mapping):
                continue
            name, _ = normalize_file_name(img.get("file_name"))
            if name is None:
                continue
            origin = img.get("origin")
            out[name] = "unreviewed" if coco_prelabel else str(origin or "human")
    return out


def label_digest(sample: Sample) -> str:
    """SHA-256 of a sample's annotations (classes and geometry), to notice a changed label."""
    blob = json.dumps(
        [[i.category, i.segmentation, i.iscrowd] for i in sample.instances],
        sort_keys=True,
        default=str,
    ).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def previous_val(dataset: str | Path, record: Mapping[str, Any]) -> set[str] | None:
    """The file names in val at the last iteration, or None when ``dataset`` holds no prepared
    dataset yet. A dataset prepared before origins were recorded: its ``val.json`` names."""
    images = record.get("images")
    if isinstance(images, Mapping) and images:
        return {k for k, v in images.items() if isinstance(v, Mapping) and v.get("split") == "val"}
    val = Path(dataset) / "val.json"
    if not val.is_file():
        return None
    try:
        data = json.loads(val.read_text(encoding="utf-8"))
        return {str(img["file_name"]) for img in data.get("images", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def next_record(
    samples: Sequence[Sample],
    splits: Sequence[str],
    origins: Mapping[str, str],
    previous: Mapping[str, Any],
) -> dict[str, Any]:
    """The new ``labels.json``: an image keeps its origin and iteration while its label is
    unchanged; a new or changed label gets this iteration (the last one + 1; the same number
    again when nothing changed, so re-running prepare does not count as an iteration)."""
    old = previous.get("images") if isinstance(previous.get("images"), Mapping) else {}
    assert isinstance(old, Mapping)
    last = int(previous.get("iteration", 0) or 0)
    entries: dict[str, dict[str, Any]] = {}
    changed = False
    for sample, split in zip(samples, splits, strict=True):
        digest = label_digest(sample)
        before = old.get(sample.file_name)
        if isinstance(before, Mapping) and before.get("sha") == digest:
            entries[sample.file_name] = {**before, "split": split}
        else:
            changed = True
            origin = origins.get(sample.file_name, "human")
            entries[sample.file_name] = {
                "origin": origin if origin in ORIGINS else "accepted",
                "iteration": None,  # filled below
                "split": split,
                "sha": digest,
            }
    iteration = last + 1 if changed or not last else last
    for entry in entries.values():
        if entry["iteration"] is None:
            entry["iteration"] = iteration
    counts: dict[str, int] = {}
    for entry in entries.values():
        counts[entry["origin"]] = counts.get(entry["origin"], 0) + 1
    return {"iteration": iteration, "origins": counts, "images": entries}
