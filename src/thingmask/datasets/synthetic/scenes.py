"""Scenes and the demo clip: things composed back to front over a background, finished like a
camera (blur, gain, colour cast, sensor noise), with exact visible-instance masks.

Pure: every function takes a ``numpy.random.Generator`` (or a seed) and returns arrays.
"""

from __future__ import annotations

import numpy as np

from thingmask.datasets.synthetic.background import Background, random_background, render_background
from thingmask.datasets.synthetic.shapes import TAU
from thingmask.datasets.synthetic.things import Thing, random_thing, render_thing

__all__ = ["VideoFrameGT", "render_scene", "render_video"]

# A per-frame ground truth entry: masks (N, H, W) bool, class names (N,), stable ids (N,) int64.
VideoFrameGT = tuple[np.ndarray, list[str], np.ndarray]


def _compose(
    bg: Background,
    things: list[Thing],
    ids: list[int],
    t: float,
    size: int,
    cam_x: float,
    rng: np.random.Generator,
    gain: float,
    cast: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Paint things (in list order = back to front) over the background; finish like a camera."""
    import cv2

    img = render_background(bg, t, size, size, cam_x)
    masks = np.zeros((len(things), size, size), bool)
    for i, thing in enumerate(things):
        colour, mask = render_thing(thing, t, size, size, cam_x)
        img[mask] = colour[mask]
        masks[:i, mask] = False  # occluded by the later thing
        masks[i] = mask
    img = cv2.GaussianBlur(img, (3, 3), 0.6)  # soft edges, like optics
    img = img * gain * cast + rng.normal(0.0, rng.uniform(2.0, 6.0), img.shape).astype(np.float32)
    bgr = np.clip(img[..., ::-1], 0, 255).astype(np.uint8)
    keep = masks.reshape(len(things), -1).sum(1) > 0
    names = [things[i].name for i in range(len(things)) if keep[i]]
    return np.ascontiguousarray(bgr), masks[keep], names, np.asarray(ids, np.int64)[keep]


def _place(
    rng: np.random.Generator, thing: Thing, placed: list[np.ndarray], size: int, tries: int = 12
) -> np.ndarray | None:
    """Choose a position keeping most of the thing in frame and at most partly covered/covering.

    Returns the thing's full mask at the accepted position, or None.
    """
    for _ in range(tries):
        thing.x0 = float(rng.uniform(-0.1, 1.1) * size)
        thing.y0 = float(rng.uniform(-0.05, 1.05) * size)
        _, mask = render_thing(thing, 0.0, size, size, 0.0)
        area = mask.sum()
        if area < 0.5 * _full_area(thing):  # mostly outside the frame
            continue
        if all((mask & m).sum() <= 0.35 * min(area, m.sum()) for m in placed):
            return mask
    return None


def _full_area(thing: Thing) -> float:
    # rough silhouette area in pixels (units of L²), for the in-frame check
    return {"cat": 0.50, "bird": 0.40, "leaf": 0.22}[thing.name] * thing.length**2


def render_scene(
    rng: np.random.Generator, size: int = 160, must_include: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One still scene of the synthetic world.

    Args:
        rng: the only source of randomness (same state → same scene).
        size: image side in pixels (square).
        must_include: a class name the scene is guaranteed to contain.
    Returns:
        ``image_bgr`` (H, W, 3) uint8 **BGR**; ``masks`` (N, H, W) bool, the *visible* pixels of
        each instance (occlusion applied, so masks do not overlap); ``class_names`` (N,) from
        :data:`CLASS_NAMES`. N >= 1 when ``must_include`` is given.
    """
    world_w = size * 2
    bg = random_background(rng, size, world_w)
    cam_x = float(rng.uniform(0, world_w - size))
    t = float(rng.uniform(0, 10))
    names = [str(rng.choice(["cat", "bird"])) for _ in range(int(rng.integers(1, 4)))]
    names += ["leaf"] * int(rng.choice([0, 0, 1, 1, 2]))
    if must_include is not None:
        names[0:0] = [must_include]
    things: list[Thing] = []
    placed: list[np.ndarray] = []
    for name in names:
        thing = random_thing(rng, name, size, world_w)
        thing.freq = 0.0  # stills: the pose is drawn directly
        thing.phase = float(rng.uniform(0, TAU))
        thing.flaps = False
        mask = _place(rng, thing, placed, size)
        if mask is None and not things and must_include is not None:
            thing.x0, thing.y0 = size / 2.0, size / 2.0  # the guaranteed class always shows
            mask = render_thing(thing, 0.0, size, size, 0.0)[1]
        if mask is not None:
            thing.x0 += cam_x
            things.append(thing)
            placed.append(mask)
    order = rng.permutation(len(things))  # z-order independent of the guaranteed class
    things = [things[i] for i in order]
    gain = float(rng.uniform(0.8, 1.15))
    cast = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    image, masks, out_names, _ = _compose(
        bg, things, list(range(1, len(things) + 1)), t, size, cam_x, rng, gain, cast
    )
    return image, masks, out_names


def render_video(
    n_frames: int, size: int = 160, seed: int = 0, fps: float = 12.0
) -> tuple[list[np.ndarray], list[VideoFrameGT]]:
    """The demo clip: two cats, two birds and drifting leaves over a panning, swaying scene.

    Returns:
        ``frames``: n_frames BGR uint8 (size, size, 3) images.
        ``gt``: per frame ``(masks (N, H, W) bool, class_names list[str], ids (N,) int64)``;
        an id stays with its animal for the whole clip (1-based, in creation order); instances
        with no visible pixel in a frame are left out of that frame.
    """
    rng = np.random.default_rng([seed, 7_777])
    duration = n_frames / fps
    pan_speed = size * rng.uniform(0.08, 0.14)  # camera pans right, world px per second
    world_w = int(size + pan_speed * duration + 4)
    bg = random_background(rng, size, world_w, water=True)  # the demo shows every dynamic layer
    things: list[Thing] = []
    # (class, x, y as fractions of the frame, speed in units of the pan speed; the camera moves
    # right, so speed 1 keeps pace with it, 0 sits still in the world and drifts out to the left)
    layout = [
        ("leaf", 0.15, 0.3, 0.2),
        ("cat", 0.22, 0.74, 1.0),
        ("bird", 0.75, 0.27, 0.0),
        ("cat", 1.1, 0.62, -0.4),
        ("bird", 0.05, 0.12, 2.2),
        ("leaf", 0.7, 0.88, 0.5),
    ]
    for name, fx, fy, speed in layout:
        thing = random_thing(rng, name, size, world_w)
        if name != "leaf":
            thing.length = float(size * rng.uniform(0.36, 0.46))
        thing.x0 = float(fx * size + rng.uniform(-0.05, 0.05) * size)
        thing.y0 = float(fy * size)
        thing.angle = float(rng.normal(0.0, 0.15))
        thing.vx = pan_speed * speed
        thing.flip = speed < 0 if name != "leaf" else thing.flip
        thing.vy = float(rng.normal(0, 3))
        thing.bob = float(rng.uniform(1.0, 4.0))
        thing.spin = 0.3 if name == "leaf" else 0.08
        thing.freq = float(rng.uniform(0.6, 1.0))
        thing.flaps = name == "bird" and speed > 1
        things.append(thing)
    ids = list(range(1, len(things) + 1))
    frames: list[np.ndarray] = []
    gts: list[VideoFrameGT] = []
    for f in range(n_frames):
        t = f / fps
        cam_x = min(pan_speed * t, world_w - size)
        frame_rng = np.random.default_rng([seed, 7_777, f])  # sensor noise, per frame
        img, masks, names, kept_ids = _compose(
            bg, things, ids, t, size, cam_x, frame_rng, 1.0, np.ones(3, np.float32)
        )
        frames.append(img)
        gts.append((masks, names, kept_ids))
    return frames, gts
