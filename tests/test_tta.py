"""Test-time flip (torchvision engine): masks averaged with the mirror image's, same instances."""

from __future__ import annotations

import numpy as np
import torch

from thingmask.engines import torchvision_engine as tv
from thingmask.engines.torchvision_engine.tta import forward_with_flip


def test_flip_changes_masks_only(tiny_trained_run) -> None:
    config, run_dir = tiny_trained_run
    plain = tv.load_predictor(config, run_dir)
    flipped = tv.load_predictor(config.replace(test_time_flip=True), run_dir)
    assert flipped.test_time_flip and not plain.test_time_flip
    frames = [torch.from_numpy(f) for f in synthetic_frames(tiny_trained_run)]
    a, b = plain.predict_tensors(frames), flipped.predict_tensors(frames)
    assert sum(len(x.scores) for x in a) > 0
    differ = False
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.boxes, y.boxes)
        torch.testing.assert_close(x.scores, y.scores)
        assert torch.equal(x.class_index, y.class_index)
        assert y.mask_probs.min() >= 0 and y.mask_probs.max() <= 1
        differ |= not torch.allclose(x.mask_probs, y.mask_probs)
    assert differ  # the mirrored branch contributed


def test_flip_is_the_mean_of_the_two_branches(tiny_trained_run) -> None:
    """Pasting is linear, so 2 x flip-averaged - plain = the mirrored branch, which must itself
    be a probability map (a wrong mirroring of boxes or masks leaves values outside [0, 1]
    or identical to the plain branch)."""
    config, run_dir = tiny_trained_run
    model = tv.load_predictor(config, run_dir).model
    rgb = [torch.from_numpy(f[..., ::-1].copy()).permute(2, 0, 1).float() / 255
           for f in synthetic_frames(tiny_trained_run)]  # fmt: skip
    with torch.inference_mode():
        plain, both = model(rgb), forward_with_flip(model, rgb)
    for p, q in zip(plain, both, strict=True):
        mirror = 2 * q["masks"] - p["masks"]
        assert mirror.min() >= -1e-4 and mirror.max() <= 1 + 1e-4
    empty = forward_with_flip(model, [torch.zeros(3, 64, 64)])  # nothing found: no error
    assert set(empty[0]) >= {"boxes", "masks"}


def synthetic_frames(run) -> list[np.ndarray]:
    """Validation images of the tiny synthetic dataset (BGR)."""
    import cv2

    from thingmask.datasets import load_prepared

    config, _ = run
    dataset = load_prepared(config.dataset_dir)
    paths = sorted(p for p in dataset.image_root.rglob("*") if p.suffix in (".png", ".jpg"))
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths[:4]]
