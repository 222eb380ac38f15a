"""Reading the prepared COCO layout (see :mod:`thingmask.datasets`) with clear errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.geometry import polygons_to_rle
from thingmask.errors import InputError

__all__ = [
    "DatasetError",
    "PreparedDataset",
    "annotation_to_mask",
    "load_coco_json",
    "load_prepared",
]


class DatasetError(InputError):
    """A dataset file or folder given by the user is missing, malformed or cannot be used (an
    :class:`~thingmask.errors.InputError`). The message names the file and the fix."""


@dataclass(frozen=True)
class PreparedDataset:
    """A validated train/val pair in the prepared layout.

    ``class_names`` is ordered by COCO category id (ids 1..K); it is the single source of the
    classes an engine trains on.
    """

    name: str
    root: Path
    train_json: Path
    val_json: Path
    image_root: Path
    class_names: tuple[str, ...]


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Load a COCO json file; raise :class:`DatasetError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path}: file not found. Run `thingmask prepare` (or set "
            "generate_synthetic=True) to create the dataset first."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DatasetError(
            f"{path}: not valid JSON ({exc}). Re-export it from your annotation tool."
        ) from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a COCO object with images/annotations/categories, "
            f"got {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: missing list '{key}'. Is this a COCO instances file?")
    return data


def _class_names(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    try:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        names = tuple(str(c["name"]) for c in cats)
        if any(c.get("name") in (None, "") for c in cats):
            raise TypeError
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        raise DatasetError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    if not names:
        raise DatasetError(f"{path}: no categories. The dataset needs at least one class.")
    return names


def load_prepared(root: str | Path) -> PreparedDataset:
    """Open a prepared dataset folder, checking both splits exist and agree on the classes."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset_dir {root} does not exist. Set generate_synthetic=True for "
            "the bundled demo data, or run `thingmask prepare SRC --output "
            f"{root}` on your annotations."
        )
    train_json, val_json = root / "train.json", root / "val.json"
    train = load_coco_json(train_json)
    val = load_coco_json(val_json)
    names = _class_names(train, train_json)
    if _class_names(val, val_json) != names:
        raise DatasetError(
            f"{val_json}: its categories differ from {train_json}. Re-run "
            "`thingmask prepare` so both splits share one class list."
        )
    if not train["annotations"]:
        raise DatasetError(
            f"{train_json}: no annotations, so there is nothing to train on. "
            "Annotate some images (see data/README.md)."
        )
    return PreparedDataset(
        name=root.name,
        root=root,
        train_json=train_json,
        val_json=val_json,
        image_root=root / "images",
        class_names=names,
    )


def annotation_to_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """One COCO annotation's segmentation → ``(H, W)`` bool mask (polygons or RLE)."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if isinstance(seg, list):
        rle = polygons_to_rle(seg, height, width)
        if rle is None:
            return np.zeros((height, width), bool)
    elif isinstance(seg, dict):
        rle = seg
        if isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
    else:
        raise DatasetError(f"annotation {ann.get('id')}: segmentation must be polygons or RLE")
    return mask_utils.decode(rle).astype(bool)
