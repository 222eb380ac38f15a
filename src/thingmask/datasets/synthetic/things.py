"""The synthetic world's things: cats, birds and leaves as posed polygon parts, shaded with
stripes, feathers and veins, and their random appearance and motion.

Local coordinates are in units of the body length L (x forward, y down); the image is RGB float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from thingmask.datasets.synthetic.shapes import (
    LEAF_COLOURS,
    TAU,
    bezier,
    ellipse,
    fill_polygons,
    stroke,
)

__all__ = ["CLASS_NAMES", "Thing", "random_thing", "render_thing"]

CLASS_NAMES = ("cat", "bird", "leaf")  # category id = index + 1
_CAT_COLOURS = ((220, 130, 50), (200, 105, 40), (145, 90, 50), (230, 170, 100), (170, 120, 80))
_BIRD_COLOURS = ((50, 100, 200), (40, 140, 165), (75, 70, 175), (90, 150, 225), (70, 95, 150))


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
        w = TAU * self.freq * t + self.phase
        cx = self.x0 + self.vx * t
        cy = self.y0 + self.vy * t + self.bob * math.sin(w)
        ang = self.angle + self.spin * math.sin(0.7 * w)
        pose = 0.5 + 0.5 * math.sin(w)
        return cx, cy, ang, pose


def _cat_parts(pose: float) -> list[tuple[str, list[np.ndarray]]]:
    swing = 0.08 * (pose - 0.5)
    tail_tip = (-0.78, -0.35 - 0.25 * pose)
    parts = [
        ("tail", stroke(bezier((-0.42, -0.02), (-0.75, 0.05), tail_tip), 0.065)),
        ("leg", stroke(np.array([[-0.30, 0.10], [-0.30 + swing, 0.42]]), 0.065)),
        ("leg", stroke(np.array([[-0.16, 0.12], [-0.16 - swing, 0.42]]), 0.065)),
        ("leg", stroke(np.array([[0.20, 0.12], [0.20 - swing, 0.42]]), 0.065)),
        ("leg", stroke(np.array([[0.33, 0.10], [0.33 + swing, 0.42]]), 0.065)),
        ("body", [ellipse(0.0, 0.0, 0.47, 0.24)]),
        (
            "ear",
            [
                np.array([[0.44, -0.32], [0.47, -0.58], [0.58, -0.38]]),
                np.array([[0.62, -0.40], [0.74, -0.57], [0.75, -0.32]]),
            ],
        ),
        ("head", [ellipse(0.58, -0.24, 0.19, 0.17)]),
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
        ("body", [ellipse(0.0, 0.0, 0.40, 0.21, rot=-0.15)]),
        ("head", [ellipse(0.36, -0.19, 0.15, 0.14)]),
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
    stem = stroke(np.array([[-0.62, 0.03], [-0.5, 0.0]]), 0.025)
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


def render_thing(
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
            else 0.5 + 0.5 * math.sin(TAU * 2.5 * thing.freq * t + thing.phase)
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
        part = fill_polygons(img_polys, h, w)
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
        stripe = np.sin(TAU * wave / thing.stripe_period) > 0.35
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
            feather = np.sin(TAU * (u * 0.6 + v) / 0.07) > 0.2
            col = col * (0.62 if kind != "wing_far" else 0.5)
            col[feather] *= 0.75
        elif kind == "beak":
            col[:] = (235, 180, 40)
        elif kind == "head":
            eye_d2 = (u - 0.42) ** 2 + (v + 0.22) ** 2  # squared distance to the eye
            col[eye_d2 < 0.035**2] = (245, 245, 245)
            col[eye_d2 < 0.02**2] = (10, 10, 10)
        if kind == "body":
            col[v > 0.06] = col[v > 0.06] * 0.45 + np.array([225, 225, 235]) * 0.55
        for su, sv, sr, sign in thing.spots:
            if kind in ("body", "head", "wing"):
                hit = (u - su) ** 2 + (v - sv) ** 2 < sr**2
                col[hit] = col[hit] * 0.45 + (np.array([250, 250, 255]) if sign > 0 else 0) * 0.55
    else:
        col = np.repeat(base[None], len(u), 0)
        if kind == "blade":
            vein = (np.abs(v) < 0.012) | (np.abs(np.sin(TAU * (u - 1.3 * np.abs(v)) / 0.16)) < 0.12)
            col[vein] *= 0.65
            col *= (1.0 + 0.15 * np.sign(v))[:, None] * 0.5 + 0.5  # two leaf halves lit unevenly
        else:
            col *= 0.7
    return col * light


def random_thing(rng: np.random.Generator, name: str, size: int, world_w: int) -> Thing:
    if name == "leaf":
        length = size * rng.uniform(0.16, 0.32)
        colour = np.asarray(LEAF_COLOURS[rng.integers(len(LEAF_COLOURS))], float)
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
        colour=(float(colour[0]), float(colour[1]), float(colour[2])),
        freq=float(rng.uniform(0.4, 1.2)),
        phase=float(rng.uniform(0, TAU)),
        wing=float(rng.uniform(0, 1)),
        stripe_period=float(rng.uniform(0.1, 0.17)),
        spots=spots,
    )
