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

__all__ = ["DatasetError", "PreparedDataset", "annotation_to_mask", "load_coco_json",
           "load_prepared"]
