"""thingmask.cutout.refine: the guided filter follows image edges; refinement snaps a blurred,
offset soft mask onto the animal's true outline and keeps everything else."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.cutout.refine import EdgeRefiner, guided_filter
from thingmask.detections import Detections
from thingmask.evaluation.masks import boundary_f, mask_iou

H, W = 96, 128
TRUTH = (30, 20, 90, 70)  # x1, y1, x2, y2 of a bright animal on a dark background


def scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((H, W, 3), 40, np.uint8)
    truth = np.zeros((H, W), bool)
    x1, y1, x2, y2 = TRUTH
    truth[y1:y2, x1:x2] = True
    image[truth] = (60, 200, 220)
    return image, truth


def blurred_guess(shift: int = 1, blur: int = 2) -> np.ndarray:
    """A coarse soft mask like a 28 x 28 prediction pasted: offset and blurred."""
    import cv2

    soft = np.zeros((H, W), np.float32)
    x1, y1, x2, y2 = TRUTH
    soft[y1 + shift : y2 + shift, x1 + shift : x2 + shift] = 1.0
    soft = cv2.GaussianBlur(soft, (0, 0), blur)
    return (soft * 255 + 0.5).astype(np.uint8)


def test_guided_filter_with_a_flat_guide_only_smooths() -> None:
    src = np.zeros((32, 32), np.uint8)
    src[:, 16:] = 255
    out = guided_filter(np.full((32, 32), 100, np.uint8), src, radius=2, eps=1e-3)
    assert out[:, 0] == pytest.approx(0, abs=1) and out[:, -1] == pytest.approx(255, abs=1)
    assert 0 < out[5, 15] < 255 and 0 < out[5, 16] < 255  # the step is blurred, not kept


def test_guided_filter_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="must match"):
        guided_filter(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8), 2, 1e-3)
    with pytest.raises(ValueError, match="multiple of subsample"):
        guided_filter(np.zeros((9, 9), np.uint8), np.zeros((9, 9), np.uint8), 4, 1e-3, 2)


@pytest.mark.parametrize(("shift", "gain"), [(0, 0.0), (1, 0.05)])
def test_refinement_snaps_the_mask_to_the_edges(shift: int, gain: float) -> None:
    """The filter reaches one mask-grid cell (here 2 px): a guess one pixel off and blurred,
    as a pasted 28 x 28 mask is, lands on the true outline."""
    image, truth = scene()
    probs = blurred_guess(shift)[None]
    dets = Detections(
        masks=probs > 127,
        boxes=np.array([[30 + shift, 20 + shift, 90 + shift, 70 + shift]], np.float32),
        class_names=["cat"],
        scores=[0.8],
        track_ids=[7],
        probs=probs,
    )
    out = EdgeRefiner(mask_threshold=0.5).refine(image, dets)
    before_j, after_j = mask_iou(dets.masks[0], truth), mask_iou(out.masks[0], truth)
    before_f, after_f = boundary_f(dets.masks[0], truth), boundary_f(out.masks[0], truth)
    assert after_j > 0.98 and after_j >= before_j + gain
    assert after_f > 0.98 and after_f >= before_f
    assert list(out.track_ids) == [7] and list(out.class_names) == ["cat"]
    assert out.scores[0] == pytest.approx(0.8)
    assert out.boxes[0] == pytest.approx(TRUTH, abs=1)  # tightened to the refined mask
    assert out.probs is not None and out.probs.dtype == np.uint8
    assert np.array_equal(dets.probs, probs)  # input untouched


def test_refinement_without_probs_uses_the_binary_mask() -> None:
    image, truth = scene()
    mask = blurred_guess(1)[None] > 127
    dets = Detections(mask, np.array([[32, 22, 92, 72]], np.float32), ["cat"], [0.9])
    out = EdgeRefiner().refine(image, dets)
    assert mask_iou(out.masks[0], truth) >= mask_iou(mask[0], truth)
    assert out.track_ids is None


def test_refine_wants_the_frame_the_detections_belong_to() -> None:
    image, _ = scene()
    probs = blurred_guess()[None]
    dets = Detections(probs > 127, [[30, 20, 90, 70]], ["cat"], [0.9], probs=probs)
    with pytest.raises(ValueError, match="reaches past"):
        EdgeRefiner().refine(image[:40, :40], dets)


@pytest.mark.parametrize("kwargs", [{"eps": 0}, {"mask_threshold": 0}, {"mask_threshold": 1}])
def test_rejects_bad_settings(kwargs) -> None:
    with pytest.raises(ValueError):
        EdgeRefiner(**kwargs)
