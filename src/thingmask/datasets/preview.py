"""A look at a prepared dataset: a grid of images with their masks and class names, and a
per-class count table (instances and images per split) with a bar plot.

Files written (atomically) to the folder given: ``samples.png``, ``class_counts.png``,
``class_counts.csv``. Images are read with EXIF orientation applied (RGB), masks drawn by
:func:`thingmask.visualize.draw_instances`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.datasets.coco import PreparedDataset, annotation_to_mask, load_coco_json
from thingmask.io_utils import atomic_write_text
from thingmask.visualize import finish_figure

__all__ = [
    "ClassCount",
    "Preview",
    "class_counts",
    "format_counts",
    "plot_counts",
    "preview_dataset",
    "sample_grid",
]


@dataclass(frozen=True)
class ClassCount:
    """Instances and images (with at least one instance) of one class in each split."""

    name: str
    train_instances: int
    train_images: int
    val_instances: int
    val_images: int


@dataclass(frozen=True)
class Preview:
    """What :func:`preview_dataset` wrote (paths are None when no folder was given)."""

    counts: list[ClassCount]
    samples_png: Path | None
    counts_png: Path | None
    counts_csv: Path | None

    @property
    def table(self) -> str:
        return format_counts(self.counts)


def _dataset(dataset: PreparedDataset | str | Path) -> PreparedDataset:
    if isinstance(dataset, PreparedDataset):
        return dataset
    from thingmask.datasets.coco import load_prepared

    return load_prepared(dataset)


def class_counts(dataset: PreparedDataset | str | Path) -> list[ClassCount]:
    """Per-class counts in class-id order (crowd regions not counted)."""
    ds = _dataset(dataset)
    stats: dict[str, dict[str, Any]] = {
        n: {"train": [0, set()], "val": [0, set()]} for n in ds.class_names
    }
    for split, path in (("train", ds.train_json), ("val", ds.val_json)):
        data = load_coco_json(path)
        names = {c["id"]: c["name"] for c in data["categories"]}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            entry = stats[names[ann["category_id"]]][split]
            entry[0] += 1
            entry[1].add(ann["image_id"])
    return [
        ClassCount(n, s["train"][0], len(s["train"][1]), s["val"][0], len(s["val"][1]))
        for n, s in stats.items()
    ]


def format_counts(counts: Sequence[ClassCount]) -> str:
    """A fixed-width text table of :func:`class_counts`."""
    width = max([5, *(len(c.name) for c in counts)])
    head = (
        f"{'class':<{width}}  {'train inst':>10}  {'train img':>9}  {'val inst':>8}  {'val img':>7}"
    )
    rows = [head, "-" * len(head)]
    for c in counts:
        rows.append(
            f"{c.name:<{width}}  {c.train_instances:>10}  {c.train_images:>9}  "
            f"{c.val_instances:>8}  {c.val_images:>7}"
        )
    return "\n".join(rows)


def _pyplot(show: bool):
    import matplotlib

    if not show:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_counts(counts: Sequence[ClassCount], path: str | Path | None = None, show: bool = False):
    """Horizontal bars of instances per class (train and val); saved as PNG atomically."""
    plt = _pyplot(show)
    names = [c.name for c in counts]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * max(1, len(names))))
    ax.barh(y - 0.2, [c.train_instances for c in counts], 0.4, label="train")
    ax.barh(y + 0.2, [c.val_instances for c in counts], 0.4, label="val")
    for i, c in enumerate(counts):
        ax.text(
            max(c.train_instances, c.val_instances),
            i,
            f"  {c.train_images}+{c.val_images} img",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("instances")
    ax.set_title("instances per class (train / val)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(x=0.2)
    return finish_figure(fig, path, show)


def _choose(
    items: list[tuple[str, dict, list[dict]]], names: dict[int, str], n: int, seed: int
) -> list[tuple[str, dict, list[dict]]]:
    """Up to ``n`` of ``(split, image, annotations)``: one per class first (rarest first), then
    random annotated ones, then the rest."""
    rng = random.Random(seed)
    with_class: dict[str, list[int]] = defaultdict(list)
    for k, (_, _, anns) in enumerate(items):
        for cls in sorted({names[a["category_id"]] for a in anns}):
            with_class[cls].append(k)
    chosen: list[int] = []
    for cls in sorted(with_class, key=lambda c: (len(with_class[c]), c)):
        options = [k for k in with_class[cls] if k not in chosen]
        if options and len(chosen) < n:
            chosen.append(rng.choice(options))
    rest = [k for k in range(len(items)) if k not in chosen]
    rng.shuffle(rest)
    rest.sort(key=lambda k: not items[k][2])  # annotated images first
    return [items[k] for k in chosen + rest[: max(0, n - len(chosen))]]


def _load_rgb(path: Path, max_side: int) -> tuple[np.ndarray, float]:
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        im = ImageOps.exif_transpose(opened).convert("RGB")
        scale = min(1.0, max_side / max(im.size))
        if scale < 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
        return np.asarray(im).copy(), scale


def sample_grid(
    dataset: PreparedDataset | str | Path,
    path: str | Path | None = None,
    *,
    split: str = "all",
    n_images: int = 8,
    seed: int = 0,
    columns: int = 4,
    show: bool = False,
    max_side: int = 480,
):
    """Draw masks and class names on ``n_images`` images of ``split`` (``train``, ``val`` or
    ``all``; every class shown when there are enough images); saved as PNG atomically; returns
    the matplotlib figure."""
    import cv2

    from thingmask.visualize import draw_instances, save_grid

    ds = _dataset(dataset)
    items: list[tuple[str, dict, list[dict]]] = []
    names: dict[int, str] = {}
    for which, json_path in (("train", ds.train_json), ("val", ds.val_json)):
        if split not in ("all", which):
            continue
        data = load_coco_json(json_path)
        names.update({c["id"]: c["name"] for c in data["categories"]})
        by_image: dict[int, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            if not ann.get("iscrowd", 0):  # crowd/ignore regions are not objects to show
                by_image[ann["image_id"]].append(ann)
        items += [(which, img, by_image.get(img["id"], [])) for img in data["images"]]
    drawn, titles = [], []
    for which, img, anns in _choose(items, names, n_images, seed):
        rgb, _ = _load_rgb(ds.image_root / img["file_name"], max_side)
        h, w = rgb.shape[:2]
        masks = np.zeros((len(anns), h, w), bool)
        for k, ann in enumerate(anns):
            full = annotation_to_mask(ann, img["height"], img["width"]).astype(np.uint8)
            masks[k] = cv2.resize(full, (w, h), interpolation=cv2.INTER_NEAREST) > 0
        labels = [names[a["category_id"]] for a in anns]
        drawn.append(draw_instances(rgb, masks, labels, class_names=list(ds.class_names)))
        titles.append(f"{which}: {img['file_name']} ({len(anns)})")
    return save_grid(drawn, path, titles=titles, columns=columns, show=show)


def preview_dataset(
    dataset: PreparedDataset | str | Path,
    out_dir: str | Path | None = None,
    *,
    n_images: int = 8,
    seed: int = 0,
    show: bool = False,
) -> Preview:
    """Sample grid + class counts (table, CSV, bar plot) of a prepared dataset.

    Writes ``samples.png``, ``class_counts.png`` and ``class_counts.csv`` to ``out_dir`` (when
    given); ``show=True`` displays the figures inline (notebook).
    """
    ds = _dataset(dataset)
    out = Path(out_dir) if out_dir is not None else None
    counts = class_counts(ds)
    samples_png = out / "samples.png" if out else None
    counts_png = out / "class_counts.png" if out else None
    counts_csv = out / "class_counts.csv" if out else None
    sample_grid(ds, samples_png, n_images=n_images, seed=seed, show=show)
    plot_counts(counts, counts_png, show=show)
    if counts_csv is not None:
        lines = ["class,train_instances,train_images,val_instances,val_images"]
        lines += [
            f"{_csv(c.name)},{c.train_instances},{c.train_images},{c.val_instances},{c.val_images}"
            for c in counts
        ]
        atomic_write_text(counts_csv, "\n".join(lines) + "\n")
    return Preview(counts, samples_png, counts_png, counts_csv)


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
