"""Dataset registration: the prepared COCO splits in detectron2's catalogs (safe to re-run).

Imports detectron2 at module level: the engine imports this only once detectron2 is chosen.
Class ids: detectron2 uses contiguous 0-based ids in ``dataset.class_names`` order (COCO
category id k -> k - 1, done by ``register_coco_instances``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.detectron2_engine.bridge import dataset_names

__all__ = ["register_dataset"]

log = logging.getLogger(__name__)


def register_dataset(dataset: PreparedDataset) -> tuple[str, str]:
    """Register the prepared train/val splits in detectron2's catalogs; safe to call again.

    A name already registered (a re-run notebook cell, a regenerated dataset) is removed and
    registered afresh, so its classes and files are always the current ones.
    Returns the ``(train, val)`` dataset names.
    """
    names = dataset_names(dataset)
    for name, json_file in zip(names, (dataset.train_json, dataset.val_json), strict=True):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        register_coco_instances(
            name,
            {"thing_classes": list(dataset.class_names)},
            str(json_file),
            str(dataset.image_root),
        )
    _warn_crowd(dataset.train_json)
    return names


def _warn_crowd(train_json: Path) -> None:
    data = json.loads(Path(train_json).read_text(encoding="utf-8"))
    crowd = sum(1 for a in data.get("annotations", []) if a.get("iscrowd", 0))
    if crowd:
        log.warning(
            "%s: %d of %d annotations have iscrowd=1; detectron2 ignores them in "
            "training (CVAT COCO exports mark every mask so). Re-import with "
            "`thingmask prepare`, which resets iscrowd.",
            train_json,
            crowd,
            len(data["annotations"]),
        )
