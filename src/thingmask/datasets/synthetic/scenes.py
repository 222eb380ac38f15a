"""Scenes and the demo clip: things composed back to front over a background, finished like a
camera (blur, gain, colour cast, sensor noise), with exact visible-instance masks.

Pure: every function takes a ``numpy.random.Generator`` (or a seed) and returns arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thingmask.datasets.synthetic.background import Background, random_background, render_background
from thingmask.datasets.synthetic.shapes import TAU
from thingmask.datasets.synthetic.things import Thing, random_thing, render_thing

__all__ = ["DemoScene", "VideoFrameGT", "demo_scene", "render_scene", "render_video"]

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


@dataclass(frozen=True)
class DemoScene:
    """The demo clip's world: a background, the things (back to front) and a camera pan.

    The id of ``things[k]`` is ``k + 1`` for the whole clip, whether it is visible or not.
    """

    background: Background
    things: tuple[Thing, ...]
    size: int  # frame side, pixels
    fps: float
    pan_speed: float  # camera pan to the right, world pixels per second
    world_w: int  # world width, pixels (the camera never looks past it)

    def time(self, frame: int) -> float:
        return frame / self.fps

    def camera_x(self, frame: int) -> float:
        """World x of the frame's left edge."""
        return min(self.pan_speed * self.time(frame), self.world_w - self.size)


def demo_scene(n_frames: int, size: int = 160, seed: int = 0, fps: float = 12.0) -> DemoScene:
    """The world of :func:`render_video`: two cats, two birds and two drifting leaves over a
    panning, swaying scene (a pure function of the arguments)."""
    rng = np.random.default_rng([seed, 7_777])
    duration = n_frames / fps
    pan_speed = size * rng.uniform(0.08, 0.14)
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
    return DemoScene(bg, tuple(things), size, fps, float(pan_speed), world_w)


def render_video(
    n_frames: int, size: int = 160, seed: int = 0, fps: float = 12.0
) -> tuple[list[np.ndarray], list[VideoFrameGT]]:
    """The demo clip (the world of :func:`demo_scene`), frame by frame.

    Returns:
        ``frames``: n_frames BGR uint8 (size, size, 3) images.
        ``gt``: per frame ``(masks (N, H, W) bool, class_names list[str], ids (N,) int64)``:
        the *visible* pixels of each thing (occlusion resolved: the masks do not overlap), its
        class, and its id, which stays with the same animal (or leaf) for the whole clip
        (1-based, back to front, the same for every frame size); things with no visible pixel
        in a frame are left out of that frame. The union of the masks is the foreground.
    """
    scene = demo_scene(n_frames, size, seed, fps)
    ids = list(range(1, len(scene.things) + 1))
    frames: list[np.ndarray] = []
    gts: list[VideoFrameGT] = []
    for f in range(n_frames):
        frame_rng = np.random.default_rng([seed, 7_777, f])  # sensor noise, per frame
        img, masks, names, kept_ids = _compose(
            scene.background,
            list(scene.things),
            ids,
            scene.time(f),
            size,
            scene.camera_x(f),
            frame_rng,
            1.0,
            np.ones(3, np.float32),
        )
        frames.append(img)
        gts.append((masks, names, kept_ids))
    return frames, gts
