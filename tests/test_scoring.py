"""The one evaluation path of both engines, against predictors whose AP is known exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from thingmask.datasets import annotation_to_mask, load_coco_json
from thingmask.detections import Detections
from thingmask.engines.scoring import evaluate_predictor


class _FromAnnotations:
    """Predicts the validation split's own annotations (all of them, or none)."""

    def __init__(self, dataset, empty: bool = False) -> None:
        data = load_coco_json(dataset.val_json)
        self.class_names = tuple(dataset.class_names)
        names = {c["id"]: c["name"] for c in data["categories"]}
        self.by_file = {}
        for image in data["images"]:
            anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
            anns = [] if empty else [a for a in anns if not a.get("iscrowd", 0)]
            h, w = image["height"], image["width"]
            masks = np.stack(
                [annotation_to_mask(a, h, w) for a in anns] or [np.zeros((h, w), bool)]
            )
            masks = masks[: len(anns)]
            boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
            self.by_file[image["file_name"]] = Detections(
                masks,
                np.asarray(boxes, np.float32).reshape(-1, 4),
                np.asarray([names[a["category_id"]] for a in anns], object),
                np.ones(len(anns)),
            )
        self.order = [im["file_name"] for im in data["images"]]
        self.calls = 0

    def predict_batch(self, images):
        out = [self.by_file[self.order[self.calls + k]] for k in range(len(images))]
        self.calls += len(images)
        return out


@pytest.mark.parametrize(("empty", "expected"), [(False, 100.0), (True, 0.0)])
def test_ap_of_the_truth_is_100_and_of_nothing_is_0(tiny_dataset, tmp_path, empty, expected):
    metrics = evaluate_predictor(_FromAnnotations(tiny_dataset, empty), tiny_dataset, tmp_path, "x")
    for ap in (metrics.bbox, metrics.segm):
        assert ap["AP"] == pytest.approx(expected, abs=1e-6)
        per_class = [ap[f"AP-{n}"] for n in tiny_dataset.class_names]
        assert all(math.isnan(v) or v == pytest.approx(expected, abs=1e-6) for v in per_class)
    assert json.loads((tmp_path / "eval.json").read_text())["checkpoint"] == "x"


def test_a_model_of_other_classes_is_refused(tiny_dataset, tmp_path):
    predictor = _FromAnnotations(tiny_dataset)
    predictor.class_names = ("zebra",)
    with pytest.raises(ValueError, match="differ from the model's"):
        evaluate_predictor(predictor, tiny_dataset, tmp_path, "x")
