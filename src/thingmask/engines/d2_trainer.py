"""detectron2-side classes of the detectron2 engine: ``MyTrainer``, checkpointer, hook adapter.

Imports detectron2 at module level: only :mod:`thingmask.engines.detectron2_engine` imports this,
inside functions, once detectron2 is known to be installed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import transforms as T  # noqa: N812 - detectron2's own alias
from detectron2.engine import DefaultTrainer, HookBase, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn

from thingmask.augment import parse_augmentations, to_detectron2
from thingmask.engines import TrainHook
from thingmask.engines.checkpoints import save_checkpoint
from thingmask.engines.detectron2_engine import ZOO_URL_PREFIX
from thingmask.io_utils import atomic_write_text

__all__ = [
    "BitmaskMapper",
    "MyTrainer",
    "SafeCheckpointer",
    "TinyNet",
    "TrainHookAdapter",
    "build_tiny_fpn_backbone",
    "zoo_cache_path",
]

log = logging.getLogger(__name__)


def zoo_cache_path(url: str) -> Path:
    """Where detectron2 (iopath) caches the download of ``url``; a copy placed there is used
    offline."""
    from iopath.common.file_io import get_cache_dir

    parsed = urlparse(url)
    return Path(get_cache_dir()) / parsed.path.lstrip("/")


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that writes atomically and loads only what is safe.

    - ``save`` writes ``<name>.pth`` under a temporary name and renames it, then rewrites
      ``last_checkpoint`` the same way, so an interruption never leaves a partial file under a
      final name; ``last_saved`` records ``(path, iteration)`` for :class:`TrainHookAdapter`.
    - ``.pth`` files load with ``torch.load(weights_only=True)`` (fvcore leaves the argument to
      torch's default, which changed in torch 2.6; detectron2 issue #5456): tensors and plain
      containers only, which is all our checkpoints hold (model, optimizer, scheduler, iteration).
    - ``.pkl`` files are pickles and can run code when loaded: only the official detectron2
      model-zoo weights (downloaded from ``dl.fbaipublicfiles.com``) are opened, through
      detectron2's own loader; any other ``.pkl`` is refused.
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", **checkpointables: Any) -> None:
        super().__init__(model, save_dir, **checkpointables)
        self.last_saved: tuple[Path, int] | None = None
        self._loading_zoo_url = False

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._loading_zoo_url = bool(path) and str(path).startswith(ZOO_URL_PREFIX)
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading_zoo_url = False

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl") and not self._loading_zoo_url:
            raise ValueError(
                f"{filename}: .pkl weights are Python pickles, which can run code "
                "when loaded; thingmask opens only the official detectron2 model-zoo "
                ".pkl files (by their URL) and its own .pth checkpoints."
            )
        if filename.endswith(".pyth"):
            raise ValueError(
                f"{filename}: pycls .pyth checkpoints are not supported; use a .pth "
                "checkpoint written by thingmask."
            )
        return super()._load_file(filename)

    def _torch_load(self, f: str) -> dict[str, Any]:
        return torch.load(f, map_location="cpu", weights_only=True)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = Path(self.save_dir) / f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", path)
        save_checkpoint(data, path)
        self.tag_last_checkpoint(path.name)
        self.last_saved = (path, int(data.get("iteration", -1)))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(Path(self.save_dir) / "last_checkpoint", last_filename_basename)


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 16), channels)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _gn(cout), nn.ReLU(inplace=True)
    )


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), _gn(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(x + self.body(x))


class TinyNet(Backbone):
    """A 4-stage GroupNorm CNN for CPU training from scratch: features ``res2..res5`` at strides
    4, 8, 16, 32 with ``widths`` channels (the torchvision engine's ``tiny_fpn`` body).

    A ResNet-18 is the smallest backbone detectron2 builds itself, and its forward pass alone
    takes about a second per batch of four 160 px images on a shared CPU core; this one is ~10x
    cheaper and trains the synthetic demo well.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 96, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(in_channels, 24, 2), _conv(24, widths[0], 2))
        self.names = [f"res{i + 2}" for i in range(len(widths))]
        cin = widths[0]
        for i, (name, width) in enumerate(zip(self.names, widths, strict=True)):
            self.add_module(
                name, nn.Sequential(_conv(cin, width, 1 if i == 0 else 2), _Residual(width))
            )
            cin = width
        self._shapes = {
            name: ShapeSpec(channels=w, stride=4 * 2**i)
            for i, (name, w) in enumerate(zip(self.names, widths, strict=True))
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, x = {}, self.stem(x)
        for name in self.names:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)


@BACKBONE_REGISTRY.register()
def build_tiny_fpn_backbone(cfg: Any, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME = "build_tiny_fpn_backbone"``: :class:`TinyNet` + detectron2's FPN."""
    return FPN(
        bottom_up=TinyNet(input_shape.channels),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


class BitmaskMapper(DatasetMapper):
    """``DatasetMapper`` that turns polygon annotations into RLE before augmenting.

    detectron2 transforms polygons as polygons, and cropping them needs ``shapely``; as RLE the
    masks are transformed like images (crop, flip, rotate) with nothing extra to install, and
    they end up as bitmasks anyway (``INPUT.MASK_FORMAT = "bitmask"``).
    """

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        from pycocotools import mask as mask_utils

        h, w = dataset_dict["height"], dataset_dict["width"]
        annos = []
        for ann in dataset_dict.get("annotations", []):
            seg = ann.get("segmentation")
            if isinstance(seg, list):
                polys = [p for p in seg if len(p) >= 6]
                if not polys:
                    continue  # no area: nothing to learn from
                ann = {**ann, "segmentation": mask_utils.merge(mask_utils.frPyObjects(polys, h, w))}
            annos.append(ann)
        return super().__call__({**dataset_dict, "annotations": annos})


class TrainHookAdapter(HookBase):
    """Calls thingmask :class:`~thingmask.engines.TrainHook` objects from detectron2's loop.

    Registered right after ``PeriodicCheckpointer``, so when ``after_checkpoint`` fires the file
    has been completely written and renamed into place. Iterations passed on are 1-based counts
    of finished steps (a checkpoint saved after step 200 reports 200). ``after_train`` is called
    by the engine's ``train()`` once ``model_meta.json`` is written, not here.
    """

    def __init__(self, train_hooks: Sequence[TrainHook], checkpointer: SafeCheckpointer) -> None:
        self._hooks = tuple(train_hooks)
        self._checkpointer = checkpointer
        self._reported: tuple[Path, int] | None = None

    def after_step(self) -> None:
        step = self.trainer.iter + 1
        losses = {k: float(v[0]) for k, v in self.trainer.storage.latest().items() if "loss" in k}
        for hook in self._hooks:
            hook.after_step(step, losses)
        saved = self._checkpointer.last_saved
        if saved is not None and saved != self._reported:
            self._reported = saved
            for hook in self._hooks:
                hook.after_checkpoint(saved[0], saved[1] + 1)


class MyTrainer(DefaultTrainer):
    """``DefaultTrainer`` with thingmask's augmentations, COCO evaluation and safe checkpoints.

    ``cfg.THINGMASK.AUGMENTATIONS`` (JSON, set by ``build_cfg`` from ``config.augmentations``)
    names the augmentations applied after detectron2's ``ResizeShortestEdge``.
    """

    def __init__(self, cfg: Any, hooks: Sequence[TrainHook] = ()) -> None:
        self._thingmask_hooks = tuple(hooks)  # read by build_hooks() during super().__init__
        super().__init__(cfg)

    @classmethod
    def train_augmentations(cls, cfg: Any) -> list[T.Augmentation]:
        """``ResizeShortestEdge`` from ``cfg.INPUT`` followed by the config's augmentations."""
        resize = T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
        node = cfg.get("THINGMASK")
        if node is None or "AUGMENTATIONS" not in node:
            log.warning(
                "cfg has no THINGMASK.AUGMENTATIONS (not built by build_cfg); training "
                "with resizing only"
            )
            return [resize]
        return [resize, *to_detectron2(parse_augmentations(json.loads(node.AUGMENTATIONS)))]

    @classmethod
    def build_mapper(cls, cfg: Any) -> DatasetMapper:
        """The training mapper (boxes recomputed from masks after crops/rotations)."""
        augs = cls.train_augmentations(cfg)
        log.info("training augmentations: %s", ", ".join(str(a) for a in augs))
        return BitmaskMapper(
            cfg, is_train=True, augmentations=augs, recompute_boxes=bool(cfg.MODEL.MASK_ON)
        )

    @classmethod
    def build_train_loader(cls, cfg: Any) -> Any:
        return build_detection_train_loader(cfg, mapper=cls.build_mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
        """SGD (detectron2's default) or, with ``THINGMASK.OPTIMIZER = "adamw"``, AdamW with
        the same parameter groups, weight decay and gradient clipping."""
        node = cfg.get("THINGMASK")
        if node is None or node.get("OPTIMIZER", "sgd") == "sgd":
            return super().build_optimizer(cfg, model)
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        return adamw(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)

    @classmethod
    def build_evaluator(cls, cfg: Any, dataset_name: str) -> COCOEvaluator:
        return COCOEvaluator(
            dataset_name,
            tasks=("bbox", "segm"),
            distributed=False,
            output_dir=os.path.join(cfg.OUTPUT_DIR, "eval"),
        )

    def build_hooks(self) -> list[HookBase]:
        # Swap in the safe checkpointer before the default hooks capture self.checkpointer.
        self.checkpointer = SafeCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        out = []
        for hook in super().build_hooks():
            if isinstance(hook, hooks.EvalHook) and self.cfg.TEST.EVAL_PERIOD == 0:
                continue  # evaluation is its own stage; don't run it again after training
            out.append(hook)
            if isinstance(hook, hooks.PeriodicCheckpointer):
                out.append(TrainHookAdapter(self._thingmask_hooks, self.checkpointer))
        return out


class _CountingEvaluator(DatasetEvaluator):
    """Counts evaluated images and detections (the ``num_*`` keys of thingmask's metrics)."""

    def reset(self) -> None:
        self._images = 0
        self._detections = 0

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        self._images += len(inputs)
        self._detections += sum(len(o["instances"]) for o in outputs)

    def evaluate(self) -> dict[str, int]:
        return {"num_images": self._images, "num_detections": self._detections}
