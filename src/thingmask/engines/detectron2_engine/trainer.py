"""detectron2 trainers: :class:`SafeTrainer` (the base a notebook subclasses) and ``MyTrainer``.

The notebook's training cell is a subclass that builds its mapper from the global variables::

    class MyTrainer(SafeTrainer):
        @classmethod
        def build_train_loader(cls, cfg):
            augs = recorded_augmentations(cfg)  # config.augmentations -> detectron2 Augmentations
            return build_detection_train_loader(cfg, mapper=train_mapper(cfg, augs))

    get_engine("detectron2").train(config, dataset, run_dir, trainer=MyTrainer)

Imports detectron2 at module level: the engine imports this only once detectron2 is chosen.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import transforms as T  # noqa: N812 - detectron2's own alias
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn

from thingmask.augment import parse_augmentations, to_detectron2
from thingmask.datasets.geometry import polygons_to_rle
from thingmask.engines.base import TrainHook
from thingmask.engines.detectron2_engine.checkpointer import SafeCheckpointer, load_with_advice

__all__ = [
    "BitmaskMapper",
    "MyTrainer",
    "SafeTrainer",
    "TrainHookAdapter",
    "recorded_augmentations",
    "train_mapper",
]

log = logging.getLogger(__name__)


class BitmaskMapper(DatasetMapper):
    """``DatasetMapper`` that turns polygon annotations into RLE before augmenting.

    detectron2 transforms polygons as polygons, and cropping them needs ``shapely``; as RLE the
    masks are transformed like images (crop, flip, rotate) with nothing extra to install, and
    they end up as bitmasks anyway (``INPUT.MASK_FORMAT = "bitmask"``).
    """

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        h, w = dataset_dict["height"], dataset_dict["width"]
        annos = []
        for ann in dataset_dict.get("annotations", []):
            seg = ann.get("segmentation")
            if isinstance(seg, list):
                rle = polygons_to_rle(seg, h, w)
                if rle is None:
                    continue  # no area: nothing to learn from
                ann = {**ann, "segmentation": rle}
            annos.append(ann)
        mapped: dict[str, Any] = super().__call__({**dataset_dict, "annotations": annos})
        return mapped


def train_mapper(cfg: CfgNode, augmentations: Sequence[T.Augmentation]) -> DatasetMapper:
    """The training mapper: ``ResizeShortestEdge`` from ``cfg.INPUT``, then ``augmentations``.

    Masks stay bitmasks through crops and rotations, and boxes are recomputed from them.
    """
    resize = T.ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    )
    augs = [resize, *augmentations]
    log.info("training augmentations: %s", ", ".join(str(a) for a in augs))
    return BitmaskMapper(
        cfg, is_train=True, augmentations=augs, recompute_boxes=bool(cfg.MODEL.MASK_ON)
    )


def recorded_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """The augmentations ``build_cfg`` recorded in ``cfg.THINGMASK.AUGMENTATIONS`` (from
    ``config.augmentations``), as detectron2 ``Augmentation`` objects (none, with a warning,
    when ``cfg`` was not built by ``build_cfg``)."""
    node = cfg.get("THINGMASK")
    if node is None or "AUGMENTATIONS" not in node:
        log.warning(
            "cfg has no THINGMASK.AUGMENTATIONS (not built by build_cfg); training "
            "with resizing only"
        )
        return []
    augs: list[T.Augmentation] = to_detectron2(parse_augmentations(json.loads(node.AUGMENTATIONS)))
    return augs


class TrainHookAdapter(HookBase):
    """Calls thingmask :class:`~thingmask.engines.base.TrainHook` objects from detectron2's loop.

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


class SafeTrainer(DefaultTrainer):
    """``DefaultTrainer`` made safe for notebooks that get cut off; subclass it.

    - checkpoints are written atomically and loaded safely (:class:`SafeCheckpointer`);
    - ``hooks`` (:class:`~thingmask.engines.base.TrainHook`, e.g. a periodic Drive copy) run
      after each step and each completed checkpoint;
    - :meth:`resume_or_load` turns a failed model-zoo download into advice;
    - ``cfg.THINGMASK.OPTIMIZER = "adamw"`` selects AdamW (default SGD);
    - :meth:`build_evaluator` is COCO box + mask AP;
    - :meth:`build_train_loader` resizes only (``ResizeShortestEdge``, no augmentations):
      override it (or :meth:`build_mapper`) to add yours with :func:`train_mapper`;
    - with ``SOLVER.AMP.ENABLED`` (``config.amp`` on CUDA) a checkpoint written without mixed
      precision still resumes (:meth:`load_state_dict`: the gradient scaler starts afresh).
    """

    checkpointer: SafeCheckpointer  # replaced in build_hooks(), before any hook captures it

    def __init__(self, cfg: CfgNode, hooks: Sequence[TrainHook] = ()) -> None:
        self._thingmask_hooks = tuple(hooks)  # read by build_hooks() during super().__init__
        super().__init__(cfg)

    @classmethod
    def build_mapper(cls, cfg: CfgNode) -> DatasetMapper:
        """The training mapper; here resizing only."""
        return train_mapper(cfg, [])

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        return build_detection_train_loader(cfg, mapper=cls.build_mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """SGD (detectron2's default) or, with ``THINGMASK.OPTIMIZER = "adamw"``, AdamW with
        the same parameter groups, weight decay and gradient clipping."""
        node = cfg.get("THINGMASK")
        if node is None or node.get("OPTIMIZER", "sgd") == "sgd":
            sgd: torch.optim.Optimizer = super().build_optimizer(cfg, model)
            return sgd
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
        optimizer: torch.optim.Optimizer = adamw(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )
        return optimizer

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> COCOEvaluator:
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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """detectron2's, but an ``AMPTrainer`` resuming a checkpoint without a gradient scaler
        (trained in float32) keeps its fresh scaler instead of failing on the missing key."""
        inner = state_dict.get("_trainer", {})
        if isinstance(self._trainer, AMPTrainer) and "grad_scaler" not in inner:
            log.info("checkpoint has no gradient-scaler state (float32 run); starting a new one")
            fresh = {**inner, "grad_scaler": self._trainer.grad_scaler.state_dict()}
            state_dict = {**state_dict, "_trainer": fresh}
        super().load_state_dict(state_dict)

    def resume_or_load(self, resume: bool = True) -> None:
        """``run_dir/last_checkpoint`` when there is one (and ``resume``), else
        ``MODEL.WEIGHTS`` (a zoo URL, or none from scratch); a failed download says what to do."""
        load_with_advice(
            lambda: super(SafeTrainer, self).resume_or_load(resume=resume),
            self.cfg.MODEL.WEIGHTS,
            "or set pretrained=False to train from scratch",
        )


class MyTrainer(SafeTrainer):
    """The package default, and the class the notebook's training cell shows (a test keeps the
    two the same): :class:`SafeTrainer` whose loader applies ``config.augmentations`` (recorded
    in ``cfg.THINGMASK.AUGMENTATIONS`` by ``build_cfg``) after the resize."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Any:
        augs = recorded_augmentations(cfg)  # config.augmentations -> detectron2 Augmentations
        return build_detection_train_loader(cfg, mapper=train_mapper(cfg, augs))
