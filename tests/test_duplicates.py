"""One label per animal: class-agnostic suppression of kept detections by mask IoU.

The stand-in predictor finds each red square twice, as two classes (the way a model trained on
two look-alike fish species labels one fish with both), and each blue square once.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from thingmask.config import Config, ConfigError
from thingmask.cutout.composite import Canvas
from thingmask.detections import Detections, suppress_duplicates
from thingmask.jobs.cutout import Needs, cutout_stream
from thingmask.jobs.job import process_video
from thingmask.video import Frame, write_video

H, W = 48, 64


def box_masks(boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    masks = np.zeros((len(boxes), H, W), bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    return masks


def dets(boxes, names, scores) -> Detections:
    return Detections(box_masks(boxes), np.array(boxes, np.float32), names, scores)


# -- the function ---------------------------------------------------------------------------------
def test_one_animal_as_two_classes_keeps_the_higher_score() -> None:
    d = dets(
        [(10, 10, 30, 30), (11, 10, 30, 30), (40, 5, 50, 15)],
        ["salmon", "trout", "salmon"],
        [0.7, 0.9, 0.8],
    )
    out = suppress_duplicates(d, 0.5)
    assert list(out.class_names) == ["trout", "salmon"]
    assert out.scores.tolist() == pytest.approx([0.9, 0.8])
    assert np.array_equal(out.masks, d.masks[[1, 2]])


def test_overlap_at_or_below_the_threshold_is_two_animals() -> None:
    # IoU of 20x20 squares shifted by 10 px: 200 / 600 = 1/3
    d = dets([(10, 10, 30, 30), (20, 10, 40, 30)], ["cat", "cat"], [0.9, 0.8])
    assert len(suppress_duplicates(d, 0.5)) == 2
    assert len(suppress_duplicates(d, 0.3)) == 1
    assert len(suppress_duplicates(d, 1 / 3)) == 2  # strictly above the threshold
    assert len(suppress_duplicates(dets([(10, 10, 30, 30)] * 2, ["a", "b"], [0.5, 0.5]), 1.0)) == 2


def test_greedy_in_score_order_whatever_the_input_order() -> None:
    """A chain a~b~c where a and c do not overlap: the best (b) removes both neighbours."""
    boxes = [(0, 0, 20, 20), (4, 0, 24, 20), (8, 0, 28, 20)]  # IoU(a,b)=IoU(b,c)=2/3, (a,c)=3/7
    scores = [0.6, 0.9, 0.7]
    for perm in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        d = dets([boxes[p] for p in perm], [f"c{p}" for p in perm], [scores[p] for p in perm])
        out = suppress_duplicates(d, 0.5)
        assert list(out.class_names) == ["c1"]
    tie = dets([(0, 0, 20, 20), (1, 0, 20, 20)], ["first", "second"], [0.8, 0.8])
    assert list(suppress_duplicates(tie, 0.5).class_names) == ["first"]


def test_config_keep_filters_then_suppresses() -> None:
    """Suppression runs among the kept classes: a higher-scoring duplicate of a class that is
    not displayed never hides the displayed one."""
    d = dets([(10, 10, 30, 30), (10, 10, 30, 30)], ["cat", "dog"], [0.6, 0.9])
    assert list(Config(display_things=["cat"]).keep(d).class_names) == ["cat"]
    assert list(Config(display_things=["cat", "dog"]).keep(d).class_names) == ["dog"]
    off = Config(display_things=["cat", "dog"], one_label_per_animal=False)
    assert list(off.keep(d).class_names) == ["cat", "dog"]
    with pytest.raises(ConfigError, match="duplicate_iou"):
        Config(duplicate_iou=1.5)


# -- the video paths ------------------------------------------------------------------------------
def scene(t: int) -> np.ndarray:
    img = np.full((H, W, 3), (60, 140, 60), np.uint8)
    cv2.rectangle(img, (2 + t, 8), (13 + t, 19), (0, 0, 255), -1)  # a red animal walking
    cv2.rectangle(img, (44, 28), (55, 39), (255, 0, 0), -1)  # a blue animal sitting
    return img


@dataclass(frozen=True)
class Instances:
    boxes: torch.Tensor
    scores: torch.Tensor
    class_index: torch.Tensor
    mask_probs: torch.Tensor


class TwinPredictor:
    """Red: a "cat" (score 0.7) and a "dog" one pixel thinner (0.9) on the same animal; blue: a
    "cat" (0.8). Has the three calls of seam A (host, batch, tensors)."""

    class_names = ("cat", "dog")
    mask_threshold = 0.5

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.soft_masks = False

    def __call__(self, image: np.ndarray) -> Detections:
        b, g, r = (image[..., k].astype(int) for k in range(3))
        red = (r > 150) & (g < 100) & (b < 100)
        blue = (b > 150) & (r < 100) & (g < 100)
        thin = red.copy()
        thin[:, np.flatnonzero(red.any(axis=0))[:1]] = False
        masks = np.stack([red, thin, blue])
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return Detections(masks, boxes, ["cat", "dog", "cat"], [0.7, 0.9, 0.8])

    def predict_batch(self, images) -> list[Detections]:
        return [self(image) for image in images]

    def predict_tensors(self, images) -> list[Instances]:
        out = []
        for image in images:
            d = self(image.cpu().numpy())
            out.append(
                Instances(
                    boxes=torch.from_numpy(d.boxes),
                    scores=torch.from_numpy(d.scores),
                    class_index=torch.tensor([self.class_names.index(n) for n in d.class_names]),
                    mask_probs=torch.from_numpy(d.masks.astype(np.float32) * 0.8),
                )
            )
        return out


def read_csv(path: str | Path) -> list[dict[str, str]]:
    return list(csv.DictReader(Path(path).read_text().splitlines()))


@pytest.mark.parametrize("on", [True, False])
def test_csv_and_tracks_count_the_animal_once(tmp_path: Path, on: bool) -> None:
    src = write_video(tmp_path / "in.mp4", (scene(t) for t in range(8)), 25)
    config = Config(
        display_things=["cat", "dog"],
        tracking=True,
        keep_audio=False,
        one_label_per_animal=on,
        output_dir=str(tmp_path),
    )
    result = process_video(src, tmp_path / "out.mp4", TwinPredictor(), config, progress=False)
    rows = read_csv(result.outputs["csv"])
    per_frame = Counter(r["frame"] for r in rows)
    assert len(per_frame) == 8
    if on:
        assert set(per_frame.values()) == {2} and result.tracks == 2
        names = Counter(r["class"] for r in rows)
        assert names == {"dog": 8, "cat": 8}  # the red animal's better label, the blue cat
    else:  # without suppression the red animal is counted twice: the test sees the feature
        assert set(per_frame.values()) == {3} and result.tracks == 3


def test_tensor_path_suppresses_as_the_host_path() -> None:
    """The CUDA path's suppression (run here on CPU tensors) keeps exactly what Config.keep
    keeps on the host: same instances, masks, classes and CSV rows."""
    source = [Frame(i, scene(i), i / 25, i * 3600) for i in range(5)]
    config = Config(display_things=["cat", "dog"], inference_batch=2)
    needs = Needs(detections=True, rows=True, union=True)
    out = {}
    for tensors in (False, True):
        with cutout_stream(
            source, TwinPredictor(), config, Canvas("black"), needs=needs, tensors=tensors
        ) as cuts:
            out[tensors] = list(cuts)
    for host, dev in zip(out[False], out[True], strict=True):
        assert host.count == dev.count == 2
        assert np.array_equal(host.detections.masks, dev.detections.masks)
        assert list(host.detections.class_names) == list(dev.detections.class_names)
        assert list(dev.rows.class_names) == ["dog", "cat"]
        assert np.array_equal(host.rows.areas, dev.rows.areas)
        assert np.array_equal(host.cutout, dev.cutout)
