"""thingmask.composite: every canvas mode, purity, alpha, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from thingmask.composite import Canvas, composite_mask, get_masked_image
from thingmask.config import CANVAS_MODES, Config
from thingmask.detections import Detections

H, W = 40, 60


def frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), np.uint8)


def detections() -> Detections:
    masks = np.zeros((2, H, W), bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 20:35, 30:55] = True
    return Detections(
        masks=masks,
        boxes=[[5, 5, 20, 15], [30, 20, 55, 35]],
        class_names=["cat", "bird"],
        scores=[0.9, 0.8],
    )


BACKGROUND = np.zeros((10, 10, 3), np.uint8)
BACKGROUND[:, :, 1] = 200  # a green picture


# each check gets the frame, the composite and the pixels outside the animals (bool H x W)
def _expect_black(img, out, outside):
    return np.all(out[outside] == 0)


def _expect_white(img, out, outside):
    return np.all(out[outside] == 255)


def _expect_color(img, out, outside):  # canvas_color is RGB (10, 20, 250): BGR (250, 20, 10)
    return np.all(out[outside] == (250, 20, 10))


def _expect_grey(img, out, outside):
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(int)
    o = out[outside].astype(int)
    return (
        np.all(o[:, 0] == o[:, 1])
        and np.all(o[:, 1] == o[:, 2])
        and np.abs(o[:, 0] - grey[outside]).max() <= 1
    )


def _expect_blur(img, out, outside):  # far smoother than the noise frame, same mean colour
    corner_in, corner_out = img[25:, :25].astype(int), out[25:, :25].astype(int)
    return (
        np.abs(np.diff(corner_out, axis=1)).mean() < 0.2 * np.abs(np.diff(corner_in, axis=1)).mean()
        and abs(corner_out.mean() - corner_in.mean()) < 10
    )


def _expect_image(img, out, outside):
    return np.all(out[outside] == (0, 200, 0))


@pytest.mark.parametrize(
    "mode, check",
    [
        ("black", _expect_black),
        ("white", _expect_white),
        ("color", _expect_color),
        ("grey", _expect_grey),
        ("blur", _expect_blur),
        ("image", _expect_image),
    ],
)
def test_canvas_modes(mode: str, check) -> None:
    img, dets = frame(), detections()
    img_before, masks_before = img.copy(), dets.masks.copy()
    canvas = Canvas(mode, color_rgb=(10, 20, 250), image=BACKGROUND if mode == "image" else None)
    out = get_masked_image(img, dets, canvas)
    assert np.array_equal(img, img_before) and np.array_equal(dets.masks, masks_before)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert not np.shares_memory(out, img)
    union = dets.masks.any(axis=0)
    assert np.array_equal(out[union], img[union])  # the animals' own pixels, untouched
    assert check(img, out, ~union)
    assert np.array_equal(get_masked_image(img, dets, canvas), out)  # caches keep no state


def test_transparent_alpha_is_the_mask() -> None:
    img, dets = frame(), detections()
    before = img.copy()
    out = get_masked_image(img, dets, Canvas("transparent"))
    assert np.array_equal(img, before)
    union = dets.masks.any(axis=0)
    assert out.shape == (H, W, 4) and out.dtype == np.uint8
    assert np.all(out[..., 3][union] == 255) and np.all(out[..., 3][~union] == 0)
    assert np.array_equal(out[..., :3][union], img[union])
    assert np.all(out[..., :3][~union] == 0)


@pytest.mark.parametrize("mode", CANVAS_MODES)
def test_every_config_mode_composites(mode: str) -> None:
    extra = {"image": np.full((5, 7, 3), 9, np.uint8)} if mode == "image" else {}
    out = get_masked_image(frame(), detections(), Canvas(mode=mode, **extra))
    assert out.shape[:2] == (H, W)


@pytest.mark.parametrize("mode", ["black", "white", "grey", "blur", "transparent"])
def test_no_detections_gives_the_bare_canvas(mode: str) -> None:
    img = frame()
    out = get_masked_image(img, Detections.empty(H, W), Canvas(mode))
    if mode in ("transparent", "black"):
        assert np.all(out == 0)
    elif mode == "white":
        assert np.all(out == 255)
    else:
        assert not np.array_equal(out, img)


def test_composite_mask_accepts_uint8_masks() -> None:
    img = frame()
    m = np.zeros((H, W), np.uint8)
    m[0:5, 0:5] = 7
    out = composite_mask(img, m, Canvas("white"))
    assert np.array_equal(out[0:5, 0:5], img[0:5, 0:5]) and np.all(out[10:, 10:] == 255)


def test_image_canvas_is_resized_to_each_frame_size() -> None:
    canvas = Canvas("image", image=BACKGROUND)
    for h, w in ((H, W), (17, 33), (H, W)):
        img = np.zeros((h, w, 3), np.uint8)
        out = get_masked_image(img, Detections.empty(h, w), canvas)
        assert out.shape == (h, w, 3) and np.all(out == (0, 200, 0))
        out[:] = 1  # callers may draw on the result: it must not be the cached canvas
    assert np.all(get_masked_image(img, Detections.empty(H, W), canvas) == (0, 200, 0))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"mode": "sepia"}, "canvas"),
        ({"mode": "color", "color_rgb": (0, 0, 300)}, "canvas_color"),
        ({"mode": "color", "color_rgb": (0, 0)}, "canvas_color"),
        ({"mode": "image"}, "canvas_image"),
        ({"mode": "blur", "blur_strength": 0}, "blur_strength"),
    ],
)
def test_canvas_rejects_bad_settings(kwargs, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Canvas(**kwargs)


@pytest.mark.parametrize(
    "image, dets, error",
    [
        (np.zeros((H, W), np.uint8), detections(), "uint8 BGR"),
        (np.zeros((H, W, 3), np.float32), detections(), "uint8 BGR"),
        (np.zeros((H + 1, W, 3), np.uint8), detections(), "detections are for"),
    ],
)
def test_get_masked_image_rejects_bad_input(image, dets, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        get_masked_image(image, dets, Canvas("black"))


def test_from_config(tmp_path: Path) -> None:
    pic = tmp_path / "meadow.png"
    cv2.imwrite(str(pic), BACKGROUND)
    canvas = Canvas.from_config(Config(canvas="image", canvas_image=str(pic)))
    assert canvas.mode == "image" and canvas.image.shape == (10, 10, 3)
    canvas = Canvas.from_config(Config(canvas="color", canvas_color=[1, 2, 3]))
    assert canvas.color_rgb == (1, 2, 3)
    with pytest.raises(ValueError, match=r"nowhere\.png"):
        Canvas.from_config(Config(canvas="image", canvas_image=str(tmp_path / "nowhere.png")))
    bad = tmp_path / "broken.png"
    bad.write_text("not a picture")
    with pytest.raises(ValueError, match=r"broken\.png"):
        Canvas.from_config(Config(canvas="image", canvas_image=str(bad)))
