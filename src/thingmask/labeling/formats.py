"""A model's detections as annotations a person can open and correct.

* **labelme** — one JSON beside each image (``imagePath`` relative, no ``imageData``): one
  ``polygon`` shape per connected part of a mask, parts of one animal sharing a ``group_id``
  (the labelme importer unites them again), the score in the shape's ``description``. Marked as
  a pre-label (:mod:`thingmask.datasets.origins`): the image flag ``prelabel_unreviewed`` (a
  checkbox in labelme's Flags panel) and a ``thingmask_prelabel`` record.
* **coco** — one ``prelabels_coco.json`` (COCO instances with polygons and ``score``; CVAT's
  "COCO 1.0" import, file names relative to the output folder); ``info.thingmask_prelabel``
  marks it, so ``prepare`` treats the file itself as unreviewed, while an export from CVAT after
  review is a person's labels.
* **labelstudio** — ``prelabels_labelstudio.json``: one task per image with ``predictions``
  (``polygonlabels`` with points in percent of the image, Label Studio's convention).

Holes are cut into their polygon as keyholes (:mod:`thingmask.labeling.polygons`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thingmask.datasets.origins import PRELABEL_KEY, UNREVIEWED_FLAG, shapes_digest
from thingmask.detections import Detections
from thingmask.labeling.polygons import mask_to_polygons

__all__ = [
    "FORMATS",
    "LABELME_VERSION",
    "Prelabel",
    "coco_document",
    "labelme_document",
    "labelstudio_tasks",
    "to_prelabel",
]

FORMATS = ("labelme", "coco", "labelstudio")
LABELME_VERSION = "5.4.1"  # the labelme file format version the JSON follows


@dataclass(frozen=True)
class Prelabel:
    """One image's pre-labels: per instance its class name, score and polygons (flat xy lists
    in pixels); ``image`` is the image's path relative to the output folder (posix)."""

    image: str
    height: int
    width: int
    instances: tuple[tuple[str, float, tuple[tuple[float, ...], ...]], ...]


def to_prelabel(image: str, detections: Detections) -> Prelabel:
    """Detections (masks ``(N, H, W)`` bool, class names) → polygons; instances whose mask
    leaves no polygon (a few pixels) are dropped."""
    h, w = detections.image_size
    items = []
    for k in range(len(detections)):
        polys = mask_to_polygons(detections.masks[k])
        if polys:
            items.append(
                (
                    str(detections.class_names[k]),
                    round(float(detections.scores[k]), 4),
                    tuple(tuple(p) for p in polys),
                )
            )
    return Prelabel(image, h, w, tuple(items))


def _pairs(poly: Sequence[float]) -> list[list[float]]:
    return [[float(poly[i]), float(poly[i + 1])] for i in range(0, len(poly), 2)]


def labelme_document(pre: Prelabel, image_path: str, run: str) -> dict[str, Any]:
    """A labelme file for ``pre`` (``image_path``: the image relative to the JSON's folder)."""
    shapes: list[dict[str, Any]] = []
    for k, (name, score, polys) in enumerate(pre.instances, 1):
        for poly in polys:
            shapes.append(
                {
                    "label": name,
                    "points": _pairs(poly),
                    # one group per animal, so a multi-part mask stays one instance
                    "group_id": k if len(polys) > 1 else None,
                    "description": f"thingmask score {score:.2f}",
                    "shape_type": "polygon",
                    "flags": {},
                    "mask": None,
                }
            )
    return {
        "version": LABELME_VERSION,
        "flags": {UNREVIEWED_FLAG: True},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": pre.height,
        "imageWidth": pre.width,
        PRELABEL_KEY: {
            "run": run,
            "shapes_sha256": shapes_digest(shapes),
            "help": f"untick the {UNREVIEWED_FLAG} flag (or correct the shapes) and save: "
            "thingmask prepare then trains on this file",
        },
    }


def _bbox(polys: Sequence[Sequence[float]]) -> list[float]:
    xy = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polys])
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return [
        round(float(x0), 2),
        round(float(y0), 2),
        round(float(x1 - x0), 2),
        round(float(y1 - y0), 2),
    ]


def _area(polys: Sequence[Sequence[float]], height: int, width: int) -> float:
    """COCO's area: pixels of the rasterised polygons (as pycocotools, a hole not counted)."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([list(p) for p in polys], height, width)
    return float(mask_utils.area(mask_utils.merge(rles)))


def coco_document(pres: Sequence[Prelabel], class_names: Sequence[str], run: str) -> dict[str, Any]:
    """COCO instances (categories 1..K in ``class_names`` order) for all images."""
    cat = {n: i for i, n in enumerate(class_names, 1)}
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for img_id, pre in enumerate(pres, 1):
        images.append(
            {"id": img_id, "file_name": pre.image, "width": pre.width, "height": pre.height}
        )
        for name, score, polys in pre.instances:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat[name],
                    "segmentation": [list(p) for p in polys],
                    "area": _area(polys, pre.height, pre.width),
                    "bbox": _bbox(polys),
                    "iscrowd": 0,
                    "score": score,
                }
            )
    return {
        "info": {
            "description": f"thingmask pre-labels of {run}",
            PRELABEL_KEY: {"run": run, "reviewed": False},
        },
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "thing"} for n, i in cat.items()],
    }


def labelstudio_tasks(
    pres: Sequence[Prelabel], run: str, url_prefix: str = ""
) -> list[dict[str, Any]]:
    """Label Studio tasks with ``predictions`` (``from_name="label"``, ``to_name="image"``: a
    labelling config with ``<Image name="image" value="$image"/>`` and
    ``<PolygonLabels name="label" toName="image">``). ``url_prefix`` is put before each image
    path (e.g. ``/data/local-files/?d=`` for local storage)."""
    tasks = []
    for pre in pres:
        results = []
        for k, (name, score, polys) in enumerate(pre.instances):
            for j, poly in enumerate(polys):
                pts = [
                    [round(100.0 * x / pre.width, 3), round(100.0 * y / pre.height, 3)]
                    for x, y in _pairs(poly)
                ]
                results.append(
                    {
                        "id": f"p{k}_{j}",
                        "from_name": "label",
                        "to_name": "image",
                        "type": "polygonlabels",
                        "original_width": pre.width,
                        "original_height": pre.height,
                        "image_rotation": 0,
                        "score": score,
                        "value": {"points": pts, "closed": True, "polygonlabels": [name]},
                    }
                )
        scores = [s for _, s, _ in pre.instances]
        tasks.append(
            {
                "data": {"image": url_prefix + pre.image},
                "predictions": [
                    {
                        "model_version": run,
                        "score": round(float(np.mean(scores)), 4) if scores else 0.0,
                        "result": results,
                    }
                ],
            }
        )
    return tasks
