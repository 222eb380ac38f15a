"""Training augmentations named in the config, built for each engine.

The config lists augmentations as names, optionally with parameters::

    augmentations = ["flip_horizontal", {"name": "brightness", "min": 0.7, "max": 1.3}]

:func:`parse_augmentations` validates that list once (unknown names and parameters are a clear
error listing the valid ones). :func:`apply_numpy` applies the specs to an image and its instance
masks together (torchvision engine); :func:`to_detectron2` builds the equivalent
``detectron2.data.transforms`` objects for ``MyTrainer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thingmask.errors import ConfigError

__all__ = ["AUGMENTATIONS", "AugSpec", "apply_numpy", "parse_augmentations", "to_detectron2"]

# name -> (default parameters, one-line description)
AUGMENTATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "flip_horizontal": ({"prob": 0.5}, "mirror left-right with probability prob"),
    "flip_vertical": ({"prob": 0.5}, "mirror top-bottom with probability prob"),
    "brightness": ({"min": 0.8, "max": 1.2}, "scale intensity by a factor in [min, max]"),
    "contrast": ({"min": 0.8, "max": 1.2}, "scale contrast by a factor in [min, max]"),
    "saturation": ({"min": 0.8, "max": 1.2}, "scale colour saturation by a factor in [min, max]"),
    "rotation": ({"angle": 15.0}, "rotate by a random angle in [-angle, angle] degrees"),
    "crop": ({"fraction": 0.8}, "random crop covering `fraction` of height and width"),
}


@dataclass(frozen=True)
class AugSpec:
    """One validated augmentation: its registry name and complete parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _err(msg: str) -> ValueError:
    valid = ", ".join(f"{n} ({d[1]}; defaults {d[0]})" for n, d in AUGMENTATIONS.items())
    return ValueError(f"augmentations: {msg}. Valid augmentations: {valid}")


def parse_augmentations(items: Iterable[Any]) -> list[AugSpec]:
    """Validate the config's augmentation list → specs with defaults filled in.

    Items are a name (``"flip_horizontal"``) or a mapping with ``name`` and parameters.
    Raises ``ValueError`` (naming the bad item and the valid choices) on anything else.
    """
    specs = []
    if isinstance(items, (str, Mapping)):
        raise ConfigError(
            f'augmentations: expected a list, got {items!r}; e.g. ["flip_horizontal", "brightness"]'
        )
    for item in items:
        if isinstance(item, str):
            name, given = item, {}
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name, given = item["name"], {k: v for k, v in item.items() if k != "name"}
        else:
            raise ConfigError(str(_err(f"{item!r} is neither a name nor a mapping with 'name'")))
        if name not in AUGMENTATIONS:
            raise ConfigError(str(_err(f"unknown augmentation {name!r}")))
        defaults = AUGMENTATIONS[name][0]
        bad = sorted(set(given) - set(defaults))
        if bad:
            raise ConfigError(
                f"augmentations: {name} has no parameter(s) {bad}; "
                f"its parameters are {sorted(defaults)}"
            )
        params = {**defaults, **given}
        for key, value in params.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"augmentations: {name}.{key} = {value!r}; expected a number >= 0"
                )
        if name.startswith("flip") and params["prob"] > 1:
            raise ConfigError(f"augmentations: {name}.prob = {params['prob']}; expected 0..1")
        if "min" in params and params["min"] > params["max"]:
            raise ConfigError(f"augmentations: {name}: min {params['min']} > max {params['max']}")
        if name == "crop" and not 0 < params["fraction"] <= 1:
            raise ConfigError(f"augmentations: crop.fraction = {params['fraction']}; expected 0..1")
        specs.append(AugSpec(name, params))
    return specs


def _rotate(image: np.ndarray, masks: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)
    image = cv2.warpAffine(
        image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    if len(masks):
        stack = np.ascontiguousarray(masks.transpose(1, 2, 0).astype(np.uint8))
        out = cv2.warpAffine(stack, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        masks = out.reshape(h, w, -1).transpose(2, 0, 1).astype(bool)
    return image, masks


def apply_numpy(
    specs: Iterable[AugSpec], image: np.ndarray, masks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``specs`` in order to one image and its instance masks, geometrically in step.

    Args:
        image: ``(H, W, 3)`` uint8 (RGB or BGR: colour ops are channel-order agnostic).
        masks: ``(N, H, W)`` bool.
        rng: source of randomness (seeded by the caller for reproducibility).
    Returns:
        New ``(image, masks)``; inputs are not modified. A crop may change H and W.
    """
    img = image.astype(np.float32)
    m = masks
    for spec in specs:
        p = spec.params
        if spec.name == "flip_horizontal" and rng.random() < p["prob"]:
            img, m = img[:, ::-1], m[:, :, ::-1]
        elif spec.name == "flip_vertical" and rng.random() < p["prob"]:
            img, m = img[::-1], m[:, ::-1]
        elif spec.name == "brightness":
            img = img * rng.uniform(p["min"], p["max"])
        elif spec.name == "contrast":
            mean = img.mean()
            img = (img - mean) * rng.uniform(p["min"], p["max"]) + mean
        elif spec.name == "saturation":
            grey = img.mean(axis=2, keepdims=True)
            img = (img - grey) * rng.uniform(p["min"], p["max"]) + grey
        elif spec.name == "rotation" and p["angle"] > 0:
            rotated, m = _rotate(
                np.clip(img, 0, 255).astype(np.uint8),
                np.ascontiguousarray(m),
                rng.uniform(-p["angle"], p["angle"]),
            )
            img = rotated.astype(np.float32)
        elif spec.name == "crop" and p["fraction"] < 1:
            h, w = img.shape[:2]
            ch, cw = max(1, int(h * p["fraction"])), max(1, int(w * p["fraction"]))
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            img, m = img[y0 : y0 + ch, x0 : x0 + cw], m[:, y0 : y0 + ch, x0 : x0 + cw]
    out = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), np.ascontiguousarray(m)


def to_detectron2(specs: Iterable[AugSpec]) -> list[Any]:
    """The same augmentations as ``detectron2.data.transforms.Augmentation`` objects."""
    from detectron2.data import transforms as T  # noqa: N812 - detectron2's own alias

    out: list[Any] = []
    for spec in specs:
        p = spec.params
        if spec.name == "flip_horizontal":
            out.append(T.RandomFlip(prob=p["prob"], horizontal=True, vertical=False))
        elif spec.name == "flip_vertical":
            out.append(T.RandomFlip(prob=p["prob"], horizontal=False, vertical=True))
        elif spec.name == "brightness":
            out.append(T.RandomBrightness(p["min"], p["max"]))
        elif spec.name == "contrast":
            out.append(T.RandomContrast(p["min"], p["max"]))
        elif spec.name == "saturation":
            out.append(T.RandomSaturation(p["min"], p["max"]))
        elif spec.name == "rotation":
            out.append(T.RandomRotation(angle=[-p["angle"], p["angle"]], expand=False))
        elif spec.name == "crop":
            out.append(T.RandomCrop("relative", (p["fraction"], p["fraction"])))
    return out
