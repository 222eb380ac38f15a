"""Training data for the torchvision engine: COCO instances → augmented tensors → batches.

Class ids: label 0 is the background, label ``i + 1`` is ``class_names[i]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from thingmask.augment import AugSpec, apply_numpy, parse_augmentations
from thingmask.config import Config
from thingmask.datasets.coco import (
    DatasetError,
    PreparedDataset,
    annotation_to_mask,
    load_coco_json,
)
from thingmask.engines.device import resolve_device
from thingmask.engines.distributed import rank as dist_rank
from thingmask.engines.distributed import shard_batch_size, world_size
from thingmask.io_utils import read_image_bgr

__all__ = [
    "CocoInstances",
    "Target",
    "TrainSamples",
    "boxes_from_masks",
    "loader_options",
    "train_loader",
]

log = logging.getLogger(__name__)

Target = dict[str, torch.Tensor]  # torchvision's target: boxes (N, 4), labels (N,), masks


class CocoInstances:
    """Images + instance masks of one COCO json (prepared layout), labels 1..K by class name.

    ``load(i)`` → ``(image_bgr (H, W, 3) uint8, masks (N, H, W) bool, labels (N,) int64)``.
    Crowd annotations (``iscrowd=1``) are skipped: Mask R-CNN trains on single instances.
    """

    def __init__(self, json_path: Path, image_root: Path, class_names: Sequence[str]) -> None:
        data = load_coco_json(json_path)
        self.json_path, self.image_root = Path(json_path), Path(image_root)
        id_to_name = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        unknown = sorted(set(id_to_name.values()) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{json_path}: categories {unknown} are not among the classes {list(class_names)}"
            )
        self.id_to_label = {cid: list(class_names).index(n) + 1 for cid, n in id_to_name.items()}
        self.images: list[dict[str, Any]] = list(data["images"])
        self.anns: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in self.images}
        crowd = 0
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            self.anns.setdefault(int(ann["image_id"]), []).append(ann)
        if crowd:
            log.warning(
                "%s: %d crowd annotations (iscrowd=1) are not used for training", json_path, crowd
            )

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, index: int) -> np.ndarray:
        """Image ``index`` as ``(H, W, 3)`` uint8 BGR."""
        name = self.images[index]["file_name"]
        return read_image_bgr(self.image_root / name, f"{self.json_path} file_name")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        info = self.images[index]
        image = self.read_image(index)
        h, w = image.shape[:2]
        anns = self.anns.get(int(info["id"]), [])
        masks = (
            np.stack([annotation_to_mask(a, h, w) for a in anns])
            if anns
            else np.zeros((0, h, w), bool)
        )
        labels = np.asarray([self.id_to_label[int(a["category_id"])] for a in anns], np.int64)
        return image, masks, labels


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool masks (none empty) → ``(N, 4)`` float32 xyxy boxes (exclusive max)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


class TrainSamples(Dataset[tuple[torch.Tensor, Target]]):
    """Sample ``p`` of the whole run (p = step * batch + j), augmented; deterministic in p.

    Image order is a per-epoch permutation seeded by (seed, epoch); augmentation randomness is
    seeded by (seed, p). Resuming at step k therefore sees exactly the samples an uninterrupted
    run would, whatever the number of loader workers. Item ``i`` is sample ``start + i`` as
    ``(image (3, H, W) float32 RGB in [0, 1], target)``.
    """

    def __init__(
        self,
        data: CocoInstances,
        augmentations: Sequence[Any],
        seed: int,
        total: int,
        start: int = 0,
    ) -> None:
        self.data, self.seed, self.total, self.start = data, seed, total, start
        self.specs = parse_augmentations(augmentations)
        self._perm: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.total - self.start

    def index_of(self, p: int) -> int:
        n = len(self.data)
        epoch = p // n
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(n)}
        return int(self._perm[epoch][p % n])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        p = self.start + i
        image, masks, labels = self.data.load(self.index_of(p))
        image, masks = apply_numpy(
            self.specs, image, masks, np.random.default_rng([self.seed, 1, p])
        )
        keep = masks.any(axis=(1, 2))  # instances cropped/rotated away vanish
        masks, labels = masks[keep], labels[keep]
        rgb = np.ascontiguousarray(image[..., ::-1])
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
        target = {
            "boxes": torch.from_numpy(boxes_from_masks(masks)).reshape(-1, 4),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
        }
        return tensor, target


def _collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def loader_options(num_workers: int, device: torch.device | str) -> dict[str, Any]:
    """The ``DataLoader`` keyword arguments for ``num_workers`` worker processes feeding
    ``device``: ``num_workers``, ``pin_memory``, ``persistent_workers``.

    ``pin_memory`` on CUDA only: batches in page-locked memory copy to the GPU asynchronously
    (``Trainer.run_step`` copies with ``non_blocking=True``); elsewhere it would only add a copy.
    ``persistent_workers`` whenever there are workers: a loader iterated again (a new pass)
    reuses them instead of starting the processes anew.
    """
    return {
        "num_workers": num_workers,
        "pin_memory": torch.device(device).type == "cuda",
        "persistent_workers": num_workers > 0,
    }


def train_loader(
    config: Config,
    dataset: PreparedDataset,
    augmentations: Sequence[AugSpec | str | dict[str, Any]],
    start_iteration: int = 0,
    *,
    num_replicas: int | None = None,
    rank: int | None = None,
    device: torch.device | str | None = None,
) -> DataLoader[tuple[torch.Tensor, Target]]:
    """Batches of ``config.batch_size`` augmented training samples, ``(images, targets)`` lists.

    Yields the samples of steps ``start_iteration + 1 .. config.iterations`` (pass the trainer's
    ``start_iteration`` when resuming, so the run sees the data an unbroken one would).
    ``augmentations``: :class:`~thingmask.augment.AugSpec` objects or the config's form (names or
    ``{"name": ..., params}``), applied in order to each image and its masks.

    Several processes (torch.distributed; or ``num_replicas`` / ``rank`` given): process
    ``rank`` gets ``batch_size / num_replicas`` samples of each step (a DistributedSampler
    without shuffling), and the processes' batches of a step together are the one-process batch.

    ``device``: where the batches go (default: ``config.device`` resolved); on CUDA they come in
    pinned memory (see :func:`loader_options`, with ``config.num_workers`` workers).
    """
    items = [{"name": a.name, **a.params} if isinstance(a, AugSpec) else a for a in augmentations]
    data = CocoInstances(dataset.train_json, dataset.image_root, dataset.class_names)
    samples = TrainSamples(
        data,
        items,
        config.seed,
        config.iterations * config.batch_size,
        start=min(start_iteration, config.iterations) * config.batch_size,
    )
    target = resolve_device(config.device) if device is None else device
    replicas = world_size() if num_replicas is None else num_replicas
    sampler: DistributedSampler[Any] | None = None
    if replicas > 1:  # process r takes samples r, r + n, ...: its share of every step, in order
        me = dist_rank() if rank is None else rank
        sampler = DistributedSampler(samples, num_replicas=replicas, rank=me, shuffle=False)
    # Own generator: the loader would otherwise draw its base seed from the global RNG, whose
    # state a resumed run restores from the checkpoint.
    return DataLoader(
        samples,
        batch_size=shard_batch_size(config.batch_size, replicas),
        sampler=sampler,
        shuffle=False,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(config.seed),
        **loader_options(config.num_workers, target),
    )
