"""Datasets: the prepared COCO layout every engine reads, converters, validation, the generator.

Prepared layout (what ``thingmask prepare`` and the synthetic generator write)::

    <dataset_dir>/
        train.json   COCO instance segmentation, categories with ids 1..K (contiguous)
        val.json     same categories, same order
        images/      image files; COCO ``file_name`` is relative to this folder

Class order = category id order. Engines derive their ids from it.
"""

from thingmask.datasets.coco import (
    DatasetError,
    PreparedDataset,
    annotation_to_mask,
    load_coco_json,
    load_prepared,
)

__all__ = [
    "DatasetError",
    "PrepareResult",
    "PreparedDataset",
    "Report",
    "annotation_to_mask",
    "detect_format",
    "load_coco_json",
    "load_prepared",
    "prepare_dataset",
    "preview_dataset",
    "validate_coco",
]

# `thingmask prepare` and its parts load on first use: engines and the video path never pay
_LAZY = {
    "PrepareResult": "prepare",
    "prepare_dataset": "prepare",
    "Report": "report",
    "validate_coco": "validate",
    "preview_dataset": "preview",
    "detect_format": "importers",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"thingmask.datasets.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'thingmask.datasets' has no attribute {name!r}")
