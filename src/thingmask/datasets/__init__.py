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
from thingmask.datasets.importers import detect_format
from thingmask.datasets.prepare import PrepareResult, prepare_dataset
from thingmask.datasets.preview import preview_dataset
from thingmask.datasets.report import Report
from thingmask.datasets.validate import validate_coco

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
