"""The torchvision engine behind the :class:`~thingmask.engines.base.Engine` seam.

Pure pip (CPU, CUDA or Apple MPS). The classes come from ``dataset.class_names``: 1..N classes
with no code change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.base import (
    EngineTrainer,
    Registration,
    TrainHook,
    check_engine,
    checked_trainer,
    no_run_dir_error,
    read_model_meta,
)
from thingmask.engines.device import resolve_device
from thingmask.engines.facade import EngineFacade
from thingmask.engines.results import TrainResult
from thingmask.engines.torchvision_engine.data import CocoInstances
from thingmask.engines.torchvision_engine.model import build_model
from thingmask.engines.torchvision_engine.predictor import TorchvisionPredictor, coco_label_names
from thingmask.engines.torchvision_engine.trainer import ENGINE_NAME, Trainer

__all__ = ["ENGINE", "evaluate", "load_predictor", "register_dataset", "train"]

log = logging.getLogger(__name__)


def train(
    config: Config,
    dataset: PreparedDataset,
    run_dir: str | Path,
    *,
    hooks: Sequence[TrainHook] = (),
    resume_from: str | Path | None = None,
    trainer: type[EngineTrainer] | None = None,
) -> TrainResult:
    """Train Mask R-CNN on ``dataset`` into ``run_dir`` with ``trainer`` (a subclass of
    :class:`~thingmask.engines.torchvision_engine.trainer.Trainer`, the default); see
    :class:`~thingmask.engines.base.Engine` for the arguments and :meth:`Trainer.train` for the
    result.

    Resumes from ``resume_from`` (a checkpoint file; a mismatching one is an error), else, with
    ``config.resume``, from the newest valid checkpoint in
    ``<output_dir>/<run_name>-*/checkpoints``: model, optimizer, scheduler, RNG and iteration are
    restored, and training continues to ``config.iterations``.
    """
    cls = checked_trainer(trainer, Trainer, Trainer)
    return cls(config, dataset, run_dir, hooks=hooks, resume_from=resume_from).train()


def load_predictor(
    config: Config,
    run_dir: str | Path | None,
    score_threshold: float | None = None,
    soft_masks: bool = False,
) -> TorchvisionPredictor:
    """The predictor of the trained run in ``run_dir``; ``run_dir=None``: the COCO model when
    ``config.zero_training``, else a ValueError (see :class:`~thingmask.engines.base.Engine`).

    ``score_threshold`` defaults to ``config.score_threshold``; ``soft_masks`` fills
    ``Detections.probs``.
    """
    device = resolve_device(config.device)
    threshold = config.score_threshold if score_threshold is None else score_threshold
    if run_dir is None:
        if not config.zero_training:
            raise no_run_dir_error(ENGINE_NAME)
        if config.image_size < 480:
            log.warning(
                "zero_training with image_size=%d: COCO models see 800 px images in "
                "training; set image_size=800, max_image_size=1333 for better masks",
                config.image_size,
            )
        model = build_model(
            "resnet50_fpn", 90, config.image_size, config.max_image_size, zero_training=True
        )
        return TorchvisionPredictor(
            model, coco_label_names(), device, threshold, soft_masks=soft_masks
        )
    run_dir = Path(run_dir)
    meta = read_model_meta(run_dir)
    check_engine(meta, run_dir, ENGINE_NAME)
    class_names = list(meta["class_names"])
    model = build_model(
        meta["backbone"],
        len(class_names),
        int(meta["image_size"]),
        int(meta["max_image_size"]),
        norm=meta.get("norm", "group_norm"),
        mask_size=int(meta.get("mask_size", 28)),
    )
    state = torch.load(
        run_dir / meta.get("weights", "model_final.pth"), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state.get("model", state))
    return TorchvisionPredictor(
        model,
        ["", *class_names],
        device,
        threshold,
        mask_threshold=float(meta.get("mask_threshold", 0.5)),
        soft_masks=soft_masks,
        run_dir=run_dir,
    )


def register_dataset(dataset: PreparedDataset) -> Registration:
    """torchvision has no catalog: the training split as the dataset object the loader reads.

    Its labels are 1..K in ``dataset.class_names`` order (0 is the background); they are turned
    back into names here, so nothing past the engine sees them.
    """
    train_set = CocoInstances(dataset.train_json, dataset.image_root, dataset.class_names)
    labels = train_set.load(0)[2] if len(train_set) else np.zeros(0, np.int64)
    return Registration(
        engine=ENGINE_NAME,
        catalog=None,
        class_names=tuple(dataset.class_names),
        train_images=len(train_set),
        first_image_classes=tuple(dataset.class_names[int(k) - 1] for k in labels),
    )


ENGINE = EngineFacade(
    ENGINE_NAME, train=train, load_predictor=load_predictor, register_dataset=register_dataset
)
evaluate = ENGINE.evaluate  # the shared evaluation path, also as a function of this module
