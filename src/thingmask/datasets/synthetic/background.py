"""Busy, animated backgrounds: multi-scale ground noise in animal-like colours, rippling water,
swaying grass blades and foliage, seen through a panning camera (RGB float images)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from thingmask.datasets.synthetic.shapes import LEAF_COLOURS, TAU, bezier, ellipse

__all__ = ["Background", "random_background", "render_background"]

# Background themes (RGB low/high colours of the ground noise). Brown and blue themes are there
# on purpose: colour alone must not separate cats and birds from the background.
_THEMES = (
    ((70, 105, 40), (165, 190, 85)),  # meadow
    ((60, 45, 30), (160, 125, 75)),  # forest floor (cat-like browns)
    ((30, 65, 85), (95, 150, 165)),  # pond bank (bird-like blues)
    ((115, 60, 25), (210, 150, 70)),  # autumn (orange)
    ((85, 85, 90), (175, 170, 160)),  # rocks
)


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


def random_background(
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
            rng.uniform(0, TAU, n_grass),
            rng.integers(1, 3, n_grass),
            rng.integers(0, len(LEAF_COLOURS), n_grass),
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
            rng.uniform(0, TAU, n_fol),
            rng.integers(0, len(LEAF_COLOURS), n_fol),
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


def render_background(bg: Background, t: float, h: int, w: int, cam_x: float) -> np.ndarray:
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
    sway = math.sin(TAU * 0.35 * t)
    for gx, gy, gh, lean, ph, thick, ci in bg.grass:
        sx = gx - x0
        if sx < -gh or sx > w + gh:
            continue
        bend = (lean + bg.wind * math.sin(TAU * 0.8 * t + ph) + 0.3 * bg.wind * sway) * gh
        pts = bezier((sx, gy), (sx + 0.2 * bend, gy - 0.5 * gh), (sx + bend, gy - gh), n=6)
        col = np.asarray(LEAF_COLOURS[int(ci)], float) * (0.7 + 0.3 * math.cos(ph))
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
        sx = fx_ - x0 + 3.0 * bg.wind * math.sin(TAU * 0.6 * t + ph)
        if sx < -fl or sx > w + fl:
            continue
        ang = fa + 0.6 * bg.wind * math.sin(TAU * 0.6 * t + ph)
        poly = ellipse(sx, fy_, fl, 0.35 * fl, rot=ang, n=14)
        col = np.asarray(LEAF_COLOURS[int(ci)], float) * (0.6 + 0.4 * math.sin(ph) ** 2)
        cv2.fillPoly(
            img, [np.round(poly * 16).astype(np.int32)], col.tolist(), cv2.LINE_AA, shift=4
        )
    return img
