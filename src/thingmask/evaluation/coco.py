"""COCO box and mask AP, engine-neutral (pycocotools).

Predictions come in as :class:`~thingmask.detections.Detections` per image id, so any engine can
be scored the same way. The metrics dict follows detectron2's ``COCOEvaluator`` layout, so
:func:`thingmask.evaluation.plots.save_ap_plot` draws either engine's results::

    {"bbox": {"AP": 41.2, "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": .., "AP-cat": ..},
     "segm": {...same keys...}, "num_images": 24, "num_detections": 180}

AP values are percentages (0..100); a class with no ground truth in the split gets NaN.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.detections import Detections

__all__ = ["coco_evaluate", "detections_to_coco"]

log = logging.getLogger(__name__)
_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco(
    image_id: int, detections: Detections, name_to_id: Mapping[str, int]
) -> list[dict[str, Any]]:
    """One image's detections → COCO result dicts (xywh box, RLE mask, score, category id).

    Instances whose class is not in ``name_to_id`` are skipped (e.g. COCO names on a custom set).
    """
    from pycocotools import mask as mask_utils

    out = []
    for i in range(len(detections)):
        name = str(detections.class_names[i])
        if name not in name_to_id:
            continue
        x1, y1, x2, y2 = (float(v) for v in detections.boxes[i])
        rle = mask_utils.encode(np.asfortranarray(detections.masks[i].astype(np.uint8)))
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(name_to_id[name]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(detections.scores[i]),
                "segmentation": {
                    "size": list(rle["size"]),
                    "counts": rle["counts"].decode("ascii"),
                },
            }
        )
    return out


def coco_evaluate(
    gt_json_path: str | Path,
    predictions: Mapping[int, Detections] | Sequence[dict],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Box and mask AP of ``predictions`` against the COCO json ``gt_json_path``.

    Args:
        gt_json_path: COCO instances file (prepared layout's ``val.json``).
        predictions: ``{image_id: Detections}`` (class *names*), or ready COCO result dicts.
        class_names: the classes to report per-class AP for (matched to categories by name).
    Returns:
        The metrics dict described in the module docstring.
    """
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; the package logs
        gt = COCO(str(gt_json_path))
    name_to_id = {c["name"]: int(c["id"]) for c in gt.loadCats(gt.getCatIds())}
    missing = [n for n in class_names if n not in name_to_id]
    if missing:
        raise ValueError(
            f"coco_evaluate: classes {missing} are not categories of "
            f"{gt_json_path} (it has {sorted(name_to_id)})"
        )
    if isinstance(predictions, Mapping):
        results = [
            r
            for image_id, dets in predictions.items()
            for r in detections_to_coco(image_id, dets, name_to_id)
        ]
        n_images = len(predictions)
    else:
        results = list(predictions)
        n_images = len({r["image_id"] for r in results})
    metrics: dict[str, Any] = {"num_images": n_images, "num_detections": len(results)}
    for iou_type in ("bbox", "segm"):
        metrics[iou_type] = _evaluate_type(gt, results, iou_type, class_names, name_to_id)
    return metrics


def _evaluate_type(
    gt: Any,
    results: list[dict],
    iou_type: str,
    class_names: Sequence[str],
    name_to_id: Mapping[str, int],
) -> dict[str, float]:
    from pycocotools.cocoeval import COCOeval

    if not results:  # loadRes cannot take an empty list: nothing detected is AP 0
        return {**{k: 0.0 for k in _STATS}, **{f"AP-{n}": 0.0 for n in class_names}}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys; keep the caller's
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("COCOeval %s:\n%s", iou_type, buf.getvalue())
    out = {k: _pct(v) for k, v in zip(_STATS, ev.stats[:6], strict=False)}
    # precision: [iou thresholds, recall points, categories, area ranges, max dets]
    precision = ev.eval["precision"]
    cat_index = {cid: i for i, cid in enumerate(ev.params.catIds)}
    for name in class_names:
        p = precision[:, :, cat_index[name_to_id[name]], 0, -1]
        p = p[p > -1]
        out[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def _pct(value: float) -> float:
    return float(value * 100) if value >= 0 else float("nan")  # COCOeval uses -1 for "no data"
