"""Training throughput of the torchvision engine's ``Trainer``: R50-FPN Mask R-CNN, 800 px, batch 4.

    python scripts/bench_train.py                      # CUDA if present: float32, then amp
    python scripts/bench_train.py --device cpu --iters 2

The data: 800 x 1067 JPEGs (the frame size of the plain-loop row this replaces, issue 11's
"0.294 s per iteration") with three elliptic instances each, a prepared COCO dataset in a
temporary folder. The engine's own loader reads it (``config.num_workers`` workers, pinned
memory on CUDA) and its own ``Trainer.run_step`` trains (float16 autocast + gradient scaling
with ``amp``): the step ``thingmask train`` runs, without the run folder's bookkeeping. Random
init (``pretrained=False``). Each row times ``--iters`` steps after untimed warm-up steps (3 on
CUDA, 1 on CPU: loader workers start, the CUDA allocator and kernels warm up), loader waits
included. ``scripts/bench_pipeline.py`` prints these rows as its training figures. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from thingmask.config import Config  # noqa: E402
from thingmask.datasets.coco import PreparedDataset, load_prepared  # noqa: E402
from thingmask.engines.torchvision_engine import Trainer  # noqa: E402

IMAGE_SIZE = 800  # shortest side, as detectron2's and torchvision's COCO recipes train
WIDTH = 1067  # 4:3
BATCH = 4
CLASSES = ("cat", "bird")


def _split(root: Path, split: str, n: int, rng: np.random.Generator) -> dict[str, Any]:
    h, w = IMAGE_SIZE, WIDTH
    y, x = np.mgrid[0:h, 0:w]
    base = np.dstack([x * 255 // w, y * 255 // h, np.full_like(x, 100)]).astype(np.int16)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i in range(n):
        image = np.clip(base + rng.integers(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        for k in range(3):
            mask = np.zeros((h, w), np.uint8)
            center = (int(rng.integers(150, w - 150)), int(rng.integers(150, h - 150)))
            axes = (int(rng.integers(40, 140)), int(rng.integers(30, 100)))
            cv2.ellipse(mask, center, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
            image[mask > 0] = (40 * k, 200, 90)
            rle = mask_utils.encode(np.asfortranarray(mask))
            x0, y0, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": k % 2 + 1,
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    "area": int(mask.sum()),
                    "bbox": [x0, y0, bw, bh],
                    "iscrowd": 0,
                }
            )
        name = f"{split}_{i:03d}.jpg"
        cv2.imwrite(str(root / "images" / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def make_dataset(root: Path, n_train: int = 8) -> PreparedDataset:
    """A prepared dataset of ``n_train`` + 2 images, 800 x 1067, three instances each."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", 2)):
        data = _split(root, split, n, rng)
        (root / f"{split}.json").write_text(json.dumps(data), encoding="utf-8")
    return load_prepared(root)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_iter(
    device: torch.device,
    dataset: PreparedDataset,
    out_dir: Path,
    *,
    amp: bool,
    iters: int,
    warmup: int,
    workers: int,
) -> float:
    """Seconds per training step of the engine's ``Trainer`` (loader wait included)."""
    config = Config(
        run_name="bench-train",
        output_dir=str(out_dir),
        device=device.type,
        dataset_dir=str(dataset.root),
        generate_synthetic=False,
        backbone="resnet50_fpn",
        pretrained=False,
        image_size=IMAGE_SIZE,
        max_image_size=1333,
        batch_size=BATCH,
        iterations=warmup + iters,
        resume=False,
        num_workers=workers,
        amp=amp,
        display_things=list(CLASSES),
    )
    trainer = Trainer(config, dataset, out_dir / f"run-{'amp' if amp else 'fp32'}")
    trainer.model.train()
    batches = iter(trainer.build_train_loader())
    for _ in range(warmup):
        trainer.run_step(*next(batches))
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):  # run_step reads its losses back: each step ends synchronised
        trainer.run_step(*next(batches))
    _sync(device)
    elapsed = time.perf_counter() - t0
    del trainer, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return elapsed / iters


def train_rows(
    device: torch.device,
    tmp: Path,
    iters: int | None = None,
    workers: int | None = None,
    log: bool = True,
) -> dict[str, float]:
    """Float32 and (on CUDA) amp rows: ``{"train_s_per_iter", "train_images_per_s"}`` plus the
    same keys ending in ``_amp``. Defaults: 20 timed steps and 4 workers on CUDA, 2 and 0 on
    CPU (the demo's setting there)."""
    cuda = device.type == "cuda"
    iters = iters or (20 if cuda else 2)
    workers = (4 if cuda else 0) if workers is None else workers
    dataset = make_dataset(tmp / "train-data")
    out: dict[str, float] = {}
    for amp in (False, True) if cuda else (False,):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        warmup = 3 if cuda else 1
        runs = tmp / "train-runs"
        s = seconds_per_iter(
            device, dataset, runs, amp=amp, iters=iters, warmup=warmup, workers=workers
        )
        suffix = "_amp" if amp else ""
        out["train_s_per_iter" + suffix] = s
        out["train_images_per_s" + suffix] = BATCH / s
        if log:
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
            gpu = f", peak GPU {peak:.0f} MB" if cuda else ""
            name = "train_s_per_iter" + suffix
            print(
                f"  {name:20s}{s:8.3f} s  {BATCH / s:7.2f} images/s   engine Trainer, R50-FPN "
                f"{IMAGE_SIZE}x{WIDTH} px, batch {BATCH}, {'amp' if amp else 'float32'}, "
                f"{workers} workers, {iters} steps{gpu}",
                flush=True,
            )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--iters", type=int, default=None, help="timed steps (CUDA 20, CPU 2)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (CUDA 4, CPU 0)")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        p.error("--device cuda, but torch sees no CUDA device")
    device = torch.device("cuda" if cuda and args.device != "cpu" else "cpu")
    print(f"device {device}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        train_rows(device, Path(tmp), args.iters, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
