"""Writing the synthetic world to disk: the prepared COCO layout (polygons traced from the exact
masks), the demo video and its ground truth, a manifest that makes re-runs idempotent.

Every file is written atomically; same arguments → identical files.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.config import Config
from thingmask.datasets.coco import DatasetError, PreparedDataset, load_prepared
from thingmask.datasets.geometry import polygons_to_rle
from thingmask.datasets.synthetic.scenes import render_scene, render_video
from thingmask.datasets.synthetic.things import CLASS_NAMES
from thingmask.datasets.synthetic.video_gt import save_video_gt
from thingmask.io_utils import atomic_path, atomic_write_json

__all__ = ["generate", "generate_dataset", "generate_video", "mask_to_polygons"]

log = logging.getLogger(__name__)

_OWN_IMAGE = re.compile(r"(train|val)_\d{5}\.(jpg|png)")  # the names _split writes

GENERATOR_VERSION = 4  # bump when the rendering changes: cached datasets are then regenerated
MANIFEST = "synthetic_manifest.json"
VIDEO_NAME = "demo.mp4"
VIDEO_GT_NAME = "demo_gt.npz"


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
    merged = polygons_to_rle(polys, h, w)
    if merged is not None:
        back = mask_utils.decode(merged).astype(bool)
        inter, union = (back & mask).sum(), (back | mask).sum()
        if union and inter / union >= 0.98:
            return polys
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _split(out_dir: Path, split: str, n: int, size: int, seed: int, ext: str) -> dict[str, Any]:
    import cv2
    from tqdm.auto import tqdm

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
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
        if stale.name not in wanted and _OWN_IMAGE.fullmatch(stale.name) and stale.is_file():
            stale.unlink()  # only names this generator writes: never the user's files
    if not (out_dir / MANIFEST).is_file():  # marks the folder as ours (generate() writes its own)
        atomic_write_json(out_dir / MANIFEST, _manifest(n_train, n_val, image_size, seed))
    return load_prepared(out_dir)


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


def generate(config: Config) -> PreparedDataset:
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
        for name in (VIDEO_NAME, VIDEO_GT_NAME):  # only our own files: never the folder
            (out_dir / "video" / name).unlink(missing_ok=True)
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
