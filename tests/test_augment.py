"""Augmentation names → specs, and image/mask geometric consistency."""

from __future__ import annotations

import numpy as np
import pytest

from thingmask.augment import AUGMENTATIONS, apply_numpy, parse_augmentations
from thingmask.config import ConfigError


def test_parse_fills_defaults_and_keeps_order():
    specs = parse_augmentations(["flip_horizontal", {"name": "brightness", "min": 0.5}])
    assert [s.name for s in specs] == ["flip_horizontal", "brightness"]
    assert specs[1].params == {"min": 0.5, "max": 1.2}


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("blur", "unknown augmentation 'blur'"),
        (42, "neither a name nor a mapping"),
        ({"name": "flip_horizontal", "prob": 2}, "prob = 2; expected 0..1"),
        ({"name": "contrast", "min": 2, "max": 1}, "min 2 > max 1"),
        ({"name": "crop", "fraction": 0}, "crop.fraction = 0"),
        ({"name": "rotation", "angle": "x"}, "expected a number"),
    ],
)
def test_parse_errors_list_the_valid_names(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_augmentations([item])


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_masks_follow_the_image(name):
    # A white square on black: after any augmentation the mask must still cover bright pixels.
    image = np.zeros((40, 50, 3), np.uint8)
    image[10:25, 12:30] = 200
    masks = np.zeros((1, 40, 50), bool)
    masks[0, 10:25, 12:30] = True
    params = {"prob": 1.0} if name.startswith("flip") else {}
    spec = parse_augmentations([{"name": name, **params}])
    out, out_masks = apply_numpy(spec, image, masks, np.random.default_rng(3))
    assert out.shape[:2] == out_masks.shape[1:]
    assert image.max() == 200 and masks.sum() == 15 * 18  # inputs untouched
    inside = out[out_masks[0]].mean()
    outside = out[~out_masks[0]].mean()
    assert inside > outside + 50


def test_flip_mirrors_mask_and_image_together():
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, 0] = 255
    masks = np.zeros((1, 4, 6), bool)
    masks[0, :, 0] = True
    out, out_masks = apply_numpy(
        parse_augmentations([{"name": "flip_horizontal", "prob": 1}]),
        image,
        masks,
        np.random.default_rng(0),
    )
    assert out[:, 5].min() == 255 and out_masks[0, :, 5].all() and not out_masks[0, :, 0].any()
