"""The bundled synthetic world: animals on a dynamic background, generated, never downloaded.

Three classes, COCO category ids 1..3 in this order (:data:`CLASS_NAMES`):

* ``cat``  — round body, head, triangular ears, legs, thick tail; orange-brown with dark stripes.
* ``bird`` — body, head, beak, wings (folded or raised), fanned tail; blue-ish with spots.
* ``leaf`` — a distractor: a big green leaf drifting like the background foliage. The demo's
  ``display_things`` leave it out, so a good model must segment it *and* not call it an animal.

Backgrounds are deliberately busy: multi-scale noise in colours that overlap the animals' (brown
earth, blue water), swaying grass blades, small foliage leaves, rippling water and, in the video,
a camera pan. Animals overlap partially and leave the frame.

Pure core: :func:`render_scene` / :func:`render_video` take a ``numpy.random.Generator`` and
return BGR ``uint8`` images with exact ``(N, H, W) bool`` visible-instance masks. Thin I/O shell:
:func:`generate_dataset`, :func:`generate_video`, :func:`generate` write the prepared COCO layout
(see :mod:`thingmask.datasets`), the demo video and its ground truth, atomically.

Everything is a pure function of the seed: same seed → identical arrays and identical files.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.coco import DatasetError, PreparedDataset, load_prepared
from thingmask.io_utils import atomic_path, atomic_write_json

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "VideoFrameGT",
    "generate",
    "generate_dataset",
    "generate_video",
    "load_video_gt",
    "mask_to_polygons",
    "render_scene",
    "render_video",
]

log = logging.getLogger(__name__)

CLASS_NAMES = ("cat", "bird", "leaf")  # category id = index + 1
GENERATOR_VERSION = 4  # bump when the rendering changes: cached datasets are then regenerated
MANIFEST = "synthetic_manifest.json"
VIDEO_NAME = "demo.mp4"
VIDEO_GT_NAME = "demo_gt.npz"

# A per-frame ground truth entry: masks (N, H, W) bool, class names (N,), stable ids (N,) int64.
VideoFrameGT = tuple[np.ndarray, list[str], np.ndarray]

_TAU = 2.0 * math.pi
# Background themes (RGB low/high colours of the ground noise). Brown and blue themes are there
# on purpose: colour alone must not separate cats and birds from the background.
_THEMES = (
    ((70, 105, 40), (165, 190, 85)),  # meadow
    ((60, 45, 30), (160, 125, 75)),  # forest floor (cat-like browns)
    ((30, 65, 85), (95, 150, 165)),  # pond bank (bird-like blues)
    ((115, 60, 25), (210, 150, 70)),  # autumn (orange)
    ((85, 85, 90), (175, 170, 160)),  # rocks
)
_CAT_COLOURS = ((220, 130, 50), (200, 105, 40), (145, 90, 50), (230, 170, 100), (170, 120, 80))
_BIRD_COLOURS = ((50, 100, 200), (40, 140, 165), (75, 70, 175), (90, 150, 225), (70, 95, 150))
_LEAF_COLOURS = ((60, 140, 50), (95, 165, 40), (40, 110, 60), (150, 170, 50))


# ----------------------------------------------------------------------------------------------
# geometry helpers (local coordinates in units of the body length L; x forward, y down)
# ----------------------------------------------------------------------------------------------
def _ellipse(
    cx: float, cy: float, ax: float, ay: float, rot: float = 0.0, n: int = 40
) -> np.ndarray:
    a = np.linspace(0.0, _TAU, n, endpoint=False)
    x, y = ax * np.cos(a), ay * np.sin(a)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _stroke(points: np.ndarray, radius: float, n_cap: int = 10) -> list[np.ndarray]:
    """A polyline of the given half-width as polygons (a band plus round caps)."""
    p = np.asarray(points, np.float64)
    d = np.gradient(p, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) * radius
    band = np.concatenate([p + normal, (p - normal)[::-1]])
    caps = [
        _ellipse(p[0, 0], p[0, 1], radius, radius, n=n_cap),
        _ellipse(p[-1, 0], p[-1, 1], radius, radius, n=n_cap),
    ]
    return [band, *caps]


def _bezier(p0: tuple, p1: tuple, p2: tuple, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def _fill(polys: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Rasterise polygons given in image pixel coordinates → (H, W) bool (sub-pixel exact)."""
    import cv2

    canvas = np.zeros((h, w), np.uint8)
    for p in polys:  # one call per polygon: fillPoly would XOR overlapping polygons
        pts = np.round(p * 16.0).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


# ----------------------------------------------------------------------------------------------
# things (cats, birds, leaves)
# ----------------------------------------------------------------------------------------------
@dataclass
class Thing:
    """One foreground object and its motion. Positions are world pixels (before the camera pan).

    ``cx(t) = x0 + vx * t + bob * sin(...)``; pose values (``gait``, ``wing``) animate with t.
    """

    name: str
    length: float  # body length L in pixels
    x0: float
    y0: float
    angle: float  # radians, body axis vs image x
    flip: bool  # mirror (faces left)
    colour: tuple[float, float, float]  # RGB base colour
    vx: float = 0.0  # world pixels per second
    vy: float = 0.0
    bob: float = 0.0  # vertical oscillation amplitude, pixels
    spin: float = 0.0  # angle oscillation amplitude, radians
    freq: float = 1.0  # Hz of bob / spin / gait / wing beats
    phase: float = 0.0
    wing: float = 0.0  # bird: 0 folded .. 1 raised (static part)
    flaps: bool = False  # bird: wings beat over time
    stripe_period: float = 0.14
    spots: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # u, v, r, light(+1/-1)

    def state(self, t: float) -> tuple[float, float, float, float]:
        """(cx, cy, angle, pose) at time t; pose in [0, 1] drives legs / tail / wings."""
        w = _TAU * self.freq * t + self.phase
        cx = self.x0 + self.vx * t
        cy = self.y0 + self.vy * t + self.bob * math.sin(w)
        ang = self.angle + self.spin * math.sin(0.7 * w)
        pose = 0.5 + 0.5 * math.sin(w)
        return cx, cy, ang, pose


def _cat_parts(pose: float) -> list[tuple[str, list[np.ndarray]]]:
    swing = 0.08 * (pose - 0.5)
    tail_tip = (-0.78, -0.35 - 0.25 * pose)
    parts = [
        ("tail", _stroke(_bezier((-0.42, -0.02), (-0.75, 0.05), tail_tip), 0.065)),
        ("leg", _stroke(np.array([[-0.30, 0.10], [-0.30 + swing, 0.42]]), 0.065)),
        ("leg", _stroke(np.array([[-0.16, 0.12], [-0.16 - swing, 0.42]]), 0.065)),
        ("leg", _stroke(np.array([[0.20, 0.12], [0.20 - swing, 0.42]]), 0.065)),
        ("leg", _stroke(np.array([[0.33, 0.10], [0.33 + swing, 0.42]]), 0.065)),
        ("body", [_ellipse(0.0, 0.0, 0.47, 0.24)]),
        (
            "ear",
            [
                np.array([[0.44, -0.32], [0.47, -0.58], [0.58, -0.38]]),
                np.array([[0.62, -0.40], [0.74, -0.57], [0.75, -0.32]]),
            ],
        ),
        ("head", [_ellipse(0.58, -0.24, 0.19, 0.17)]),
    ]
    return parts


def _bird_parts(wing: float) -> list[tuple[str, list[np.ndarray]]]:
    lift = 0.15 + 0.5 * wing  # raised wings stick out above the back
    parts = [
        (
            "tail",
            [
                np.array(
                    [[-0.30, -0.02], [-0.72, -0.16], [-0.74, 0.02], [-0.68, 0.16], [-0.30, 0.08]]
                )
            ],
        ),
        (
            "wing_far",
            [
                np.array(
                    [
                        [-0.18, -0.10],
                        [0.10, -0.12],
                        [-0.05 - 0.2 * wing, -0.1 - lift],
                        [-0.25, -0.12 - 0.6 * lift],
                    ]
                )
            ],
        ),
        ("body", [_ellipse(0.0, 0.0, 0.40, 0.21, rot=-0.15)]),
        ("head", [_ellipse(0.36, -0.19, 0.15, 0.14)]),
        ("beak", [np.array([[0.47, -0.26], [0.68, -0.17], [0.47, -0.10]])]),
        (
            "wing",
            [
                np.array(
                    [
                        [-0.22, -0.02],
                        [0.16, -0.06],
                        [-0.02 - 0.15 * wing, -0.05 - 0.9 * lift],
                        [-0.32, -0.05 - 0.7 * lift],
                    ]
                )
            ],
        ),
    ]
    return parts


def _leaf_parts(pose: float) -> list[tuple[str, list[np.ndarray]]]:
    t = np.linspace(0.0, 1.0, 24)
    x = -0.5 + t
    half = 0.19 * np.sin(math.pi * t) ** 0.8 * (1.0 + 0.1 * (pose - 0.5))
    outline = np.concatenate([np.stack([x, -half], 1), np.stack([x[::-1], half[::-1]], 1)])
    stem = _stroke(np.array([[-0.62, 0.03], [-0.5, 0.0]]), 0.025)
    return [("stem", stem), ("blade", [outline])]


def _local_coords(
    h: int, w: int, cx: float, cy: float, ang: float, flip: bool, length: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (u, v) in the thing's local frame (units of L)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (xs + 0.5 - cx) / length, (ys + 0.5 - cy) / length
    c, s = math.cos(ang), math.sin(ang)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (-u if flip else u), v


def _render_thing(
    thing: Thing, t: float, h: int, w: int, cam_x: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one thing → (colour layer (H, W, 3) float32 RGB, mask (H, W) bool)."""
    cx, cy, ang, pose = thing.state(t)
    cx -= cam_x
    if thing.name == "cat":
        parts = _cat_parts(pose)
    elif thing.name == "bird":
        wing = (
            thing.wing
            if not thing.flaps
            else 0.5 + 0.5 * math.sin(_TAU * 2.5 * thing.freq * t + thing.phase)
        )
        parts = _bird_parts(wing)
    else:
        parts = _leaf_parts(pose)
    c, s = math.cos(ang), math.sin(ang)
    rot = np.array([[c, -s], [s, c]])
    sign = np.array([-1.0 if thing.flip else 1.0, 1.0])
    u, v = _local_coords(h, w, cx, cy, ang, thing.flip, thing.length)
    colour = np.zeros((h, w, 3), np.float32)
    mask = np.zeros((h, w), bool)
    base = np.asarray(thing.colour, np.float32)
    for kind, polys in parts:
        img_polys = [(p * sign) @ rot.T * thing.length + (cx, cy) for p in polys]
        part = _fill(img_polys, h, w)
        if not part.any():
            continue
        colour[part] = _shade(thing, kind, base, u[part], v[part])
        mask |= part
    return colour, mask


def _shade(thing: Thing, kind: str, base: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB colours (M, 3) of one part at local coordinates (u, v): texture + simple lighting."""
    light = (1.08 - 0.35 * np.clip(v + 0.25, 0.0, 1.0))[:, None]  # lit from above
    if thing.name == "cat":
        wave = u + 0.04 * np.sin(v * 25.0)
        stripe = np.sin(_TAU * wave / thing.stripe_period) > 0.35
        col = np.repeat(base[None], len(u), 0)
        if kind == "ear":
            col = col * 0.85
        col[stripe & (kind != "ear")] *= 0.5
        if kind == "head":  # eyes and nose tell the head from the body
            eye = ((u - 0.64) ** 2 + (v + 0.28) ** 2 < 0.03**2) | (
                (u - 0.52) ** 2 + (v + 0.28) ** 2 < 0.03**2
            )
            col[eye] = (40, 90, 30)
            col[(u - 0.73) ** 2 + (v + 0.2) ** 2 < 0.025**2] = (220, 120, 130)
        if kind == "body":
            col[v > 0.12] = col[v > 0.12] * 0.6 + np.array([240, 220, 190]) * 0.4
    elif thing.name == "bird":
        col = np.repeat(base[None], len(u), 0)
        if kind in ("wing", "wing_far", "tail"):
            feather = np.sin(_TAU * (u * 0.6 + v) / 0.07) > 0.2
            col = col * (0.62 if kind != "wing_far" else 0.5)
            col[feather] *= 0.75
        elif kind == "beak":
            col[:] = (235, 180, 40)
        elif kind == "head":
            eye = (u - 0.42) ** 2 + (v + 0.22) ** 2
            col[eye < 0.035**2] = (245, 245, 245)
            col[eye < 0.02**2] = (10, 10, 10)
        if kind == "body":
            col[v > 0.06] = col[v > 0.06] * 0.45 + np.array([225, 225, 235]) * 0.55
        for su, sv, sr, sign in thing.spots:
            if kind in ("body", "head", "wing"):
                hit = (u - su) ** 2 + (v - sv) ** 2 < sr**2
                col[hit] = col[hit] * 0.45 + (np.array([250, 250, 255]) if sign > 0 else 0) * 0.55
    else:
        col = np.repeat(base[None], len(u), 0)
        if kind == "blade":
            vein = (np.abs(v) < 0.012) | (
                np.abs(np.sin(_TAU * (u - 1.3 * np.abs(v)) / 0.16)) < 0.12
            )
            col[vein] *= 0.65
            col *= (1.0 + 0.15 * np.sign(v))[:, None] * 0.5 + 0.5  # two leaf halves lit unevenly
        else:
            col *= 0.7
    return col * light


def _random_thing(rng: np.random.Generator, name: str, size: int, world_w: int) -> Thing:
    if name == "leaf":
        length = size * rng.uniform(0.16, 0.32)
        colour = np.asarray(_LEAF_COLOURS[rng.integers(len(_LEAF_COLOURS))], float)
        angle = rng.uniform(-math.pi, math.pi)
    else:
        length = size * rng.uniform(0.30, 0.50)
        table = _CAT_COLOURS if name == "cat" else _BIRD_COLOURS
        colour = np.asarray(table[rng.integers(len(table))], float)
        angle = rng.normal(0.0, 0.25) if name == "cat" else rng.normal(0.0, 0.4)
    colour = np.clip(colour * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 0, 255)
    spots = np.zeros((0, 4))
    if name == "bird":
        k = int(rng.integers(4, 12))
        spots = np.stack(
            [
                rng.uniform(-0.35, 0.45, k),
                rng.uniform(-0.25, 0.12, k),
                rng.uniform(0.02, 0.05, k),
                rng.choice([-1.0, 1.0], k),
            ],
            1,
        )
    return Thing(
        name=name,
        length=float(length),
        x0=float(rng.uniform(0, world_w)),
        y0=float(rng.uniform(0, size)),
        angle=float(angle),
        flip=bool(rng.random() < 0.5),
        colour=tuple(float(c) for c in colour),
        freq=float(rng.uniform(0.4, 1.2)),
        phase=float(rng.uniform(0, _TAU)),
        wing=float(rng.uniform(0, 1)),
        stripe_period=float(rng.uniform(0.1, 0.17)),
        spots=spots,
    )


# ----------------------------------------------------------------------------------------------
# background
# ----------------------------------------------------------------------------------------------
@dataclass
class Background:
    """Static ground texture (world-sized) and the animated layers' parameters."""

    ground: np.ndarray  # (H, W_world, 3) float32 RGB
    water_top: np.ndarray | None  # (W_world,) float: water below this y, None = no water
    ripple: tuple[float, float, float]  # spatial freq x, freq y, speed
    grass: np.ndarray  # (G, 7): x, y, height, lean, phase, thickness, colour index
    foliage: np.ndarray  # (F, 6): x, y, length, angle, phase, colour index
    wind: float  # sway amplitude (radians / pixels scale)


def _fractal_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...]) -> np.ndarray:
    import cv2

    out = np.zeros((h, w), np.float32)
    total = 0.0
    for i, c in enumerate(cells):
        amp = 0.55**i
        grid = rng.random((c + 1, max(2, round(c * w / h) + 1))).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
    return np.clip(out / total, 0.0, 1.0)


def _random_background(
    rng: np.random.Generator, h: int, world_w: int, water: bool | None = None
) -> Background:
    low, high = (np.asarray(c, np.float32) for c in _THEMES[rng.integers(len(_THEMES))])
    n1 = _fractal_noise(rng, h, world_w, (2, 5, 11, 23, 47))
    n2 = _fractal_noise(rng, h, world_w, (3, 9, 27))
    ground = low + (high - low) * n1[..., None]
    ground += (n2[..., None] - 0.5) * rng.uniform(20, 60, 3).astype(np.float32)
    water_top = None
    if (rng.random() < 0.55) if water is None else water:
        xs = np.arange(world_w, dtype=np.float32)
        water_top = (h * rng.uniform(0.35, 0.8) + 6 * np.sin(xs / rng.uniform(15, 40))).astype(
            np.float32
        )
    n_grass = int(rng.integers(40, 140) * world_w / h)
    grass = np.stack(
        [
            rng.uniform(0, world_w, n_grass),
            rng.uniform(0.3 * h, 1.15 * h, n_grass),
            rng.uniform(0.06, 0.25, n_grass) * h,
            rng.normal(0, 0.25, n_grass),
            rng.uniform(0, _TAU, n_grass),
            rng.integers(1, 3, n_grass),
            rng.integers(0, len(_LEAF_COLOURS), n_grass),
        ],
        1,
    )
    n_fol = int(rng.integers(10, 60) * world_w / h)
    centres = rng.uniform((0, 0), (world_w, 0.7 * h), (max(1, n_fol // 6), 2))
    pick = centres[rng.integers(len(centres), size=n_fol)]
    foliage = np.stack(
        [
            pick[:, 0] + rng.normal(0, 10, n_fol),
            pick[:, 1] + rng.normal(0, 8, n_fol),
            rng.uniform(0.025, 0.07, n_fol) * h,
            rng.uniform(0, math.pi, n_fol),
            rng.uniform(0, _TAU, n_fol),
            rng.integers(0, len(_LEAF_COLOURS), n_fol),
        ],
        1,
    )
    return Background(
        ground=ground.astype(np.float32),
        water_top=water_top,
        ripple=(
            float(rng.uniform(0.15, 0.4)),
            float(rng.uniform(0.4, 0.9)),
            float(rng.uniform(2, 5)),
        ),
        grass=grass,
        foliage=foliage,
        wind=float(rng.uniform(0.1, 0.35)),
    )


def _render_background(bg: Background, t: float, h: int, w: int, cam_x: float) -> np.ndarray:
    """The background seen by a camera at world x ``cam_x`` at time t → (H, W, 3) float32 RGB."""
    import cv2

    x0 = round(cam_x)
    img = bg.ground[:, x0 : x0 + w].copy()
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if bg.water_top is not None:
        top = bg.water_top[x0 : x0 + w][None, :]
        water = ys > top
        fx, fy, speed = bg.ripple
        wx = xs + x0
        ripple = np.sin(fx * wx + 0.35 * np.sin(0.13 * ys) * 6 + speed * t) * np.sin(
            fy * (ys - top) - speed * 1.3 * t
        )
        tint = np.array([45, 95, 145], np.float32) + 45 * ripple[..., None] * (0.5, 0.7, 0.8)
        img[water] = 0.35 * img[water] + 0.65 * tint[water]
    sway = math.sin(_TAU * 0.35 * t)
    for gx, gy, gh, lean, ph, thick, ci in bg.grass:
        sx = gx - x0
        if sx < -gh or sx > w + gh:
            continue
        bend = (lean + bg.wind * math.sin(_TAU * 0.8 * t + ph) + 0.3 * bg.wind * sway) * gh
        pts = _bezier((sx, gy), (sx + 0.2 * bend, gy - 0.5 * gh), (sx + bend, gy - gh), n=6)
        col = np.asarray(_LEAF_COLOURS[int(ci)], float) * (0.7 + 0.3 * math.cos(ph))
        cv2.polylines(
            img,
            [np.round(pts * 16).astype(np.int32)],
            False,
            col.tolist(),
            int(thick),
            cv2.LINE_AA,
            shift=4,
        )
    for fx_, fy_, fl, fa, ph, ci in bg.foliage:
        sx = fx_ - x0 + 3.0 * bg.wind * math.sin(_TAU * 0.6 * t + ph)
        if sx < -fl or sx > w + fl:
            continue
        ang = fa + 0.6 * bg.wind * math.sin(_TAU * 0.6 * t + ph)
        poly = _ellipse(sx, fy_, fl, 0.35 * fl, rot=ang, n=14)
        col = np.asarray(_LEAF_COLOURS[int(ci)], float) * (0.6 + 0.4 * math.sin(ph) ** 2)
        cv2.fillPoly(
            img, [np.round(poly * 16).astype(np.int32)], col.tolist(), cv2.LINE_AA, shift=4
        )
    return img


# ----------------------------------------------------------------------------------------------
# scenes
# ----------------------------------------------------------------------------------------------
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

    img = _render_background(bg, t, size, size, cam_x)
    masks = np.zeros((len(things), size, size), bool)
    for i, thing in enumerate(things):
        colour, mask = _render_thing(thing, t, size, size, cam_x)
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
        _, mask = _render_thing(thing, 0.0, size, size, 0.0)
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
    bg = _random_background(rng, size, world_w)
    cam_x = float(rng.uniform(0, world_w - size))
    t = float(rng.uniform(0, 10))
    names = [str(rng.choice(["cat", "bird"])) for _ in range(int(rng.integers(1, 4)))]
    names += ["leaf"] * int(rng.choice([0, 0, 1, 1, 2]))
    if must_include is not None:
        names[0:0] = [must_include]
    things, placed = [], []
    for name in names:
        thing = _random_thing(rng, name, size, world_w)
        thing.freq = 0.0  # stills: the pose is drawn directly
        thing.phase = float(rng.uniform(0, _TAU))
        thing.flaps = False
        mask = _place(rng, thing, placed, size)
        if mask is None and not things and must_include is not None:
            thing.x0, thing.y0 = size / 2.0, size / 2.0  # the guaranteed class always shows
            mask = _render_thing(thing, 0.0, size, size, 0.0)[1]
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
    bg = _random_background(rng, size, world_w, water=True)  # the demo shows every dynamic layer
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
        thing = _random_thing(rng, name, size, world_w)
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


# ----------------------------------------------------------------------------------------------
# COCO conversion
# ----------------------------------------------------------------------------------------------
def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """``(H, W)`` bool → COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` (outer boundaries).

    Traced on a 2x nearest-upsampled mask so the polygons follow pixel *edges*: pycocotools then
    rasterises them back to exactly the same pixels (holes excepted, see the caller).
    """
    import cv2

    h, w = mask.shape
    up = cv2.resize(mask.astype(np.uint8), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(pts) >= 3:
            polys.append([round(float(v), 2) for v in pts.ravel()])
    return polys


def _segmentation(mask: np.ndarray) -> dict[str, Any] | list[list[float]]:
    """Polygons when they reproduce the mask (IoU >= 0.98), else compressed RLE (holes)."""
    from pycocotools import mask as mask_utils

    h, w = mask.shape
    polys = mask_to_polygons(mask)
    if polys:
        back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)
        inter, union = (back & mask).sum(), (back | mask).sum()
        if union and inter / union >= 0.98:
            return polys
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _split(out_dir: Path, split: str, n: int, size: int, seed: int, ext: str) -> dict[str, Any]:
    import cv2
    from tqdm.auto import tqdm

    images, anns = [], []
    code = {"train": 1, "val": 2}[split]
    for i in tqdm(range(n), desc=f"synthetic {split}", leave=False):
        rng = np.random.default_rng([seed, code, i])
        image, masks, names = render_scene(rng, size, must_include=CLASS_NAMES[i % 3])
        file_name = f"{split}_{i:05d}{ext}"
        with atomic_path(out_dir / "images" / file_name) as tmp:
            params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
            if not cv2.imwrite(str(tmp), image, params):
                raise OSError(f"could not write {tmp}")
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
        for mask, name in zip(masks, names, strict=True):
            ys, xs = np.nonzero(mask)
            x1, y1 = int(xs.min()), int(ys.min())
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": CLASS_NAMES.index(name) + 1,
                    "segmentation": _segmentation(mask),
                    "area": int(mask.sum()),
                    "bbox": [x1, y1, int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1],
                    "iscrowd": 0,
                }
            )
    cats = [
        {"id": i + 1, "name": n, "supercategory": "animal" if n != "leaf" else "plant"}
        for i, n in enumerate(CLASS_NAMES)
    ]
    data = {
        "info": {"description": f"thingmask synthetic {split}", "version": GENERATOR_VERSION},
        "images": images,
        "annotations": anns,
        "categories": cats,
    }
    present = {CLASS_NAMES[a["category_id"] - 1] for a in anns}
    missing = [c for c in CLASS_NAMES if c not in present]
    if missing:  # only possible for tiny splits; each class is requested in turn
        raise ValueError(
            f"synthetic {split} split of {n} images lacks classes {missing}; use at "
            f"least {len(CLASS_NAMES)} images per split (synthetic_*_images)"
        )
    return data


def _manifest(
    n_train: int, n_val: int, image_size: int, seed: int, video_frames: int = 0, fps: float = 12.0
) -> dict[str, Any]:
    return {
        "generator": "thingmask.synthetic",
        "version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "image_size": image_size,
        "seed": seed,
        "video_frames": video_frames,
        "fps": fps,
    }


def _check_target(out_dir: Path) -> None:
    """Refuse to overwrite a folder that holds something other than a synthetic dataset."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise DatasetError(
            f"dataset_dir {out_dir} already holds files that the synthetic generator did not "
            "write. Set generate_synthetic=False to use that dataset, or choose an empty "
            "dataset_dir for the synthetic demo data."
        )


def generate_dataset(
    out_dir: str | Path,
    n_train: int = 120,
    n_val: int = 24,
    image_size: int = 160,
    seed: int = 0,
    ext: str = ".jpg",
) -> PreparedDataset:
    """Write the synthetic dataset in the prepared layout and return it.

    ``<out_dir>/train.json``, ``val.json`` (COCO instance segmentation, categories 1..3 =
    :data:`CLASS_NAMES`, polygons traced from the exact masks) and ``images/{split}_NNNNN.jpg``.
    Every file is written atomically; same arguments → identical files.
    """
    out_dir = Path(out_dir)
    for label, n in (("n_train", n_train), ("n_val", n_val)):
        if n < len(CLASS_NAMES):
            raise ValueError(
                f"synthetic dataset: {label}={n}; need at least {len(CLASS_NAMES)} "
                "images so every class appears in both splits"
            )
    if ext not in (".jpg", ".png"):
        raise ValueError(f"synthetic dataset: ext={ext!r}; expected '.jpg' or '.png'")
    _check_target(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    wanted = set()
    for split, n in (("train", n_train), ("val", n_val)):
        data = _split(out_dir, split, n, image_size, seed, ext)
        atomic_write_json(out_dir / f"{split}.json", data)
        wanted |= {im["file_name"] for im in data["images"]}
    for stale in (out_dir / "images").iterdir():  # leftovers of a larger earlier generation
        if stale.name not in wanted and stale.is_file():
            stale.unlink()
    if not (out_dir / MANIFEST).is_file():  # marks the folder as ours (generate() writes its own)
        atomic_write_json(out_dir / MANIFEST, _manifest(n_train, n_val, image_size, seed))
    return load_prepared(out_dir)


def _pack_gt(gt: list[VideoFrameGT], h: int, w: int) -> dict[str, np.ndarray]:
    masks = [m for m, _, _ in gt if len(m)]
    stack = np.concatenate(masks) if masks else np.zeros((0, h, w), bool)
    return {
        "masks_packed": np.packbits(stack.reshape(len(stack), -1), axis=1),
        "frame_index": np.concatenate(
            [np.full(len(m), f, np.int32) for f, (m, _, _) in enumerate(gt)]
            or [np.zeros(0, np.int32)]
        ),
        "class_names": np.asarray([n for _, names, _ in gt for n in names], dtype="<U32"),
        "instance_ids": np.concatenate([ids for _, _, ids in gt] or [np.zeros(0, np.int64)]),
        "n_frames": np.int64(len(gt)),
        "height": np.int64(h),
        "width": np.int64(w),
    }


def save_video_gt(path: str | Path, gt: list[VideoFrameGT], height: int, width: int) -> Path:
    """Write per-frame ground truth as a compressed ``.npz`` (format in :func:`load_video_gt`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **_pack_gt(gt, height, width))
    return path


def load_video_gt(path: str | Path) -> list[VideoFrameGT]:
    """Read ``demo_gt.npz`` → per frame ``(masks (N, H, W) bool, class_names, ids (N,) int64)``.

    File format (``numpy.savez_compressed``, no pickles) — one row per (frame, instance):

    * ``masks_packed``  (M, ceil(H*W/8)) uint8: ``np.packbits`` of each flattened H x W mask
    * ``frame_index``   (M,) int32: the frame (0-based) the row belongs to
    * ``class_names``   (M,) str;  ``instance_ids`` (M,) int64, stable across frames
    * ``n_frames``, ``height``, ``width``: scalars
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: video ground truth not found. Generate the demo data "
            "with generate_synthetic=True (thingmask generate)."
        )
    with np.load(path, allow_pickle=False) as z:
        h, w, n = int(z["height"]), int(z["width"]), int(z["n_frames"])
        flat = np.unpackbits(z["masks_packed"], axis=1, count=h * w).astype(bool)
        masks = flat.reshape(-1, h, w)
        frame_index, names, ids = z["frame_index"], z["class_names"], z["instance_ids"]
    out: list[VideoFrameGT] = []
    for f in range(n):
        sel = np.nonzero(frame_index == f)[0]
        out.append((masks[sel], [str(names[i]) for i in sel], ids[sel].astype(np.int64)))
    return out


def generate_video(
    out_dir: str | Path, n_frames: int = 48, size: int = 160, seed: int = 0, fps: float = 12.0
) -> Path:
    """Write ``<out_dir>/video/demo.mp4`` (H.264 via :func:`thingmask.video.write_video`) and its
    ground truth ``<out_dir>/video/demo_gt.npz`` beside it. Returns the video path."""
    from thingmask.video import write_video

    frames, gt = render_video(n_frames, size, seed, fps)
    video_dir = Path(out_dir) / "video"
    video_dir.mkdir(parents=True, exist_ok=True)
    save_video_gt(video_dir / VIDEO_GT_NAME, gt, size, size)
    return Path(write_video(video_dir / VIDEO_NAME, iter(frames), fps))


def generate(config: Any) -> PreparedDataset:
    """Dataset + demo video from the config (``dataset_dir``, ``synthetic_*``, ``seed``).

    Idempotent: when ``dataset_dir`` already holds exactly this generation (its manifest matches
    and the files are there) nothing is rewritten.
    """
    out_dir = Path(config.dataset_dir)
    wanted = _manifest(
        config.synthetic_train_images,
        config.synthetic_val_images,
        config.synthetic_image_size,
        config.seed,
        config.synthetic_video_frames,
    )
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        try:
            current = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            current = None
        complete = all(
            (out_dir / p).is_file()
            for p in ("train.json", "val.json", f"video/{VIDEO_NAME}", f"video/{VIDEO_GT_NAME}")
        )
        if current == wanted and complete:
            log.info("synthetic dataset in %s is up to date; not regenerating", out_dir)
            return load_prepared(out_dir)
    _check_target(out_dir)
    if manifest_path.is_file():
        manifest_path.unlink()  # an interrupted regeneration must not look complete
        if (out_dir / "video").is_dir():
            shutil.rmtree(out_dir / "video")
    log.info(
        "generating synthetic dataset in %s (%d train, %d val, %d px, seed %d)",
        out_dir,
        config.synthetic_train_images,
        config.synthetic_val_images,
        config.synthetic_image_size,
        config.seed,
    )
    # The manifest goes first in spirit: write a placeholder so _check_target accepts the folder
    # on a retry, with a version that can never match.
    atomic_write_json(manifest_path, {**wanted, "version": -1})
    dataset = generate_dataset(
        out_dir,
        config.synthetic_train_images,
        config.synthetic_val_images,
        config.synthetic_image_size,
        config.seed,
    )
    generate_video(out_dir, config.synthetic_video_frames, config.synthetic_image_size, config.seed)
    atomic_write_json(manifest_path, wanted)
    return dataset
