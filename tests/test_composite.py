"""thingmask.cutout.composite: every canvas mode, purity, alpha, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from thingmask.config import CANVAS_MODES, Config
from thingmask.cutout.composite import (
    Canvas,
    composite_mask,
    composite_tensor,
    get_masked_image,
    union_mask_tensor,
)
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


def _expect_image(img, out, outside):
    return np.all(out[outside] == (0, 200, 0))


@pytest.mark.parametrize(
    "mode, check",
    [
        ("black", _expect_black),
        ("white", _expect_white),
        ("color", _expect_color),
        ("image", _expect_image),
        ("grey", None),  # exact values: test_grey_canvas_is_bt601_luma
        ("blur", None),  # exact values: test_blur_canvas_exact_pixels
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
    assert check is None or check(img, out, ~union)
    assert not np.array_equal(out[~union], img[~union])  # the background did change
    assert np.array_equal(get_masked_image(img, dets, canvas), out)  # caches keep no state


def bt601(b: int, g: int, r: int) -> int:
    """ITU-R BT.601 luma, rounded: what a greyscale picture of a BGR pixel must show."""
    return round(0.299 * r + 0.587 * g + 0.114 * b)


# (B, G, R) patches, each away from a .5 rounding tie so the expected grey is unambiguous
PATCHES = [(10, 200, 50), (250, 20, 10), (0, 0, 255), (255, 255, 255), (0, 0, 0), (40, 90, 160)]


def test_grey_canvas_is_bt601_luma() -> None:
    img = np.zeros((H, W, 3), np.uint8)
    for k, colour in enumerate(PATCHES):  # vertical stripes of 10 px
        img[:, 10 * k : 10 * (k + 1)] = colour
    dets = detections()
    out = get_masked_image(img, dets, Canvas("grey"))
    union = dets.masks.any(axis=0)
    assert np.array_equal(out[union], img[union])
    for k, colour in enumerate(PATCHES):
        stripe = np.zeros((H, W), bool)
        stripe[:, 10 * k : 10 * (k + 1)] = True
        assert np.all(out[stripe & ~union] == bt601(*colour)), colour


BLUR_H, BLUR_W = 64, 96
LEFT, RIGHT = (30, 60, 90), (200, 180, 160)  # BGR halves of the blur test frame


def two_tone() -> np.ndarray:
    img = np.empty((BLUR_H, BLUR_W, 3), np.uint8)
    img[:, : BLUR_W // 2], img[:, BLUR_W // 2 :] = LEFT, RIGHT
    return img


def test_blur_canvas_exact_pixels() -> None:
    """A blur keeps flat colour exactly (also at the frame's border: reflected, not darkened)
    and turns a hard edge into a symmetric ramp about 4 sigma wide (sigma = 3 % of 64 px)."""
    img = two_tone()
    masks = np.zeros((1, BLUR_H, BLUR_W), bool)
    masks[0, 2:10, 40:56] = True  # an animal on the edge, top
    dets = Detections(masks=masks, boxes=[[40, 2, 56, 10]], class_names=["cat"], scores=[0.9])
    out = get_masked_image(img, dets, Canvas("blur", blur_strength=0.03))
    assert np.array_equal(out[masks[0]], img[masks[0]])
    assert np.all(out[:, :28] == LEFT) and np.all(out[:, 68:] == RIGHT)  # far from the edge
    row = out[40].astype(int)  # a row away from the animal
    for c in range(3):
        ramp = row[28:68, c]
        step = np.sign(RIGHT[c] - LEFT[c])
        assert np.all(np.diff(ramp) * step >= 0)  # monotone from one colour to the other
        assert abs(row[47, c] + row[48, c] - (LEFT[c] + RIGHT[c])) <= 1  # symmetric about 47.5
        assert LEFT[c] != row[47, c] != RIGHT[c]  # and really blurred across the edge
    flat = np.full((BLUR_H, BLUR_W, 3), (7, 77, 177), np.uint8)
    blurred = get_masked_image(flat, Detections.empty(BLUR_H, BLUR_W), Canvas("blur"))
    assert np.all(blurred == (7, 77, 177))


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
    elif mode == "grey":
        b, g, r = (img[..., k].astype(float) for k in range(3))
        luma = np.floor(0.299 * r + 0.587 * g + 0.114 * b + 0.5)
        assert np.abs(out[..., 0] - luma).max() <= 1  # the noise frame hits rounding ties
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    else:  # blur of noise: its local mean, far smoother than the frame
        assert (
            np.abs(np.diff(out.astype(int), axis=1)).mean()
            < 0.1 * np.abs(np.diff(img.astype(int), axis=1)).mean()
        )
        assert abs(out.astype(float).mean() - img.astype(float).mean()) < 3


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


# -- the tensor twin (the GPU path of the video pipeline) -----------------------------------------
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("mode", CANVAS_MODES)
@pytest.mark.parametrize("size", [(H, W), (BLUR_H, BLUR_W), (47, 63)])
def test_composite_tensor_equals_composite_mask(mode: str, device: str, size) -> None:
    h, w = size
    rng = np.random.default_rng(h)
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([x * 255 // w, y * 255 // h, np.full_like(x, 90)]).astype(np.int16)
    img = np.clip(img + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 5 : w // 2] = True
    canvas = Canvas(mode, color_rgb=(10, 20, 250), image=BACKGROUND if mode == "image" else None)
    want = composite_mask(img, mask, canvas)
    frame_t = torch.from_numpy(img).to(device)
    got = composite_tensor(frame_t, torch.from_numpy(mask).to(device), canvas)
    assert got.device.type == device and got.dtype == torch.uint8
    got_np = got.cpu().numpy()
    assert got_np.shape == want.shape
    assert np.array_equal(frame_t.cpu().numpy(), img)  # input not modified
    if mode == "blur":  # same steps, float rounding: at most 2 levels apart
        diff = np.abs(got_np.astype(int) - want.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.5
        assert np.array_equal(got_np[mask], img[mask])
    else:
        assert np.array_equal(got_np, want)


def test_union_mask_tensor() -> None:
    dets = detections()
    got = union_mask_tensor(torch.from_numpy(dets.masks), H, W)
    assert np.array_equal(got.numpy(), dets.union_mask())
    empty = union_mask_tensor(torch.zeros((0, H, W), dtype=torch.bool), H, W)
    assert empty.shape == (H, W) and not empty.any()


@pytest.mark.parametrize(
    "frame_t, mask_t, error",
    [
        (
            torch.zeros((H, W, 3), dtype=torch.float32),
            torch.zeros((H, W), dtype=torch.bool),
            "uint8",
        ),
        (torch.zeros((H, W, 3), dtype=torch.uint8), torch.zeros((H, W), dtype=torch.uint8), "bool"),
        (torch.zeros((H, W, 3), dtype=torch.uint8), torch.zeros((H, 1), dtype=torch.bool), "shape"),
    ],
)
def test_composite_tensor_rejects_bad_input(frame_t, mask_t, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        composite_tensor(frame_t, mask_t, Canvas("white"))
