"""The detectron2 engine behind the :class:`~thingmask.engines.base.Engine` seam.

Imports without detectron2 (the detectron2 modules of this package are imported inside the
functions, once the engine is used), so the pure parts stay importable and testable anywhere.

Checkpoints are ours only: ``.pth`` files written atomically and loaded with
``torch.load(weights_only=True)``. The one pickle that is loaded is the official detectron2
model-zoo ``.pkl`` downloaded from ``dl.fbaipublicfiles.com`` (pretrained / zero-training).

A run folder written by :func:`train`::

    model_0000199.pth ...   checkpoints every checkpoint_period steps (0-based iteration)
    model_final.pth         the final model; last_checkpoint names the newest file
    d2_config.yaml          the resolved detectron2 config (a record; read with safe_load)
    metrics.json            detectron2's event log (one JSON object per line)
    loss_curve.png          the losses from it
    model_meta.json         engine, class names, zoo base config + overrides (written last)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.base import (
    EngineTrainer,
    Registration,
    TrainHook,
    checked_trainer,
    no_run_dir_error,
)
from thingmask.engines.coco_classes import COCO_CLASSES
from thingmask.engines.detectron2_engine.bridge import (
    D2_CONFIG_FILE,
    FINAL_MODEL,
    augmentation_records,
    cfg_overrides,
)
from thingmask.engines.detectron2_engine.resume import model_section, prepare_resume
from thingmask.engines.distributed import is_main
from thingmask.engines.facade import EngineFacade
from thingmask.engines.results import TrainResult
from thingmask.errors import ConfigError
from thingmask.evaluation.plots import save_loss_curve
from thingmask.io_utils import atomic_write_json, atomic_write_text
from thingmask.runs import MODEL_META

if TYPE_CHECKING:  # detectron2 is imported only when the engine is used
    from thingmask.engines.detectron2_engine.predictor import D2Predictor

__all__ = ["ENGINE", "ENGINE_NAME", "evaluate", "load_predictor", "register_dataset", "train"]

log = logging.getLogger(__name__)

ENGINE_NAME = "detectron2"


def _write_meta(
    config: Config, dataset: PreparedDataset, run_dir: Path, weights: str, device: str
) -> None:
    import detectron2

    atomic_write_json(
        run_dir / MODEL_META,
        {
            "engine": ENGINE_NAME,
            "class_names": list(dataset.class_names),
            "d2_base_config": config.d2_base_config,
            "overrides": cfg_overrides(config, dataset, device=device),
            "augmentations": augmentation_records(config),
            "weights": weights,
            "detectron2_version": detectron2.__version__,
        },
    )


def loss_history(event_log: Path) -> list[dict[str, float]]:
    """detectron2's event log (``metrics.json``, one JSON object per line) → one
    ``{"iteration", "loss", "loss_*"}`` dict per logged step (lines cut short are skipped)."""
    history = []
    if event_log.is_file():
        for line in event_log.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption
                continue
            if "total_loss" in event and "iteration" in event:
                history.append(
                    {
                        "iteration": event["iteration"],
                        "loss": event["total_loss"],
                        **{k: v for k, v in event.items() if k.startswith("loss_")},
                    }
                )
    return history


def train(
    config: Config,
    dataset: PreparedDataset,
    run_dir: str | Path,
    *,
    hooks: Sequence[TrainHook] = (),
    resume_from: str | Path | None = None,
    trainer: type[EngineTrainer] | None = None,
) -> TrainResult:
    """Train Mask R-CNN on ``dataset`` into ``run_dir`` with ``trainer`` (a
    :class:`~.trainer.SafeTrainer` subclass; default :class:`~.trainer.MyTrainer`).

    Registers the dataset, builds the config (:func:`~.cfg.build_cfg`), points
    ``last_checkpoint`` at the checkpoint to resume from (:func:`~.resume.prepare_resume`:
    ``resume_from``, a ``.pth`` file or run folder, else with ``config.resume`` the newest of
    this and earlier ``<run_name>-*`` folders), then ``trainer(cfg, hooks).resume_or_load()``
    and ``.train()``. ``hooks`` get ``after_step`` / ``after_checkpoint`` during training and
    ``after_train`` once the run folder is complete.

    Returns:
        The :class:`~thingmask.engines.results.TrainResult` (``iterations``:
        ``SOLVER.MAX_ITER``, or the resumed checkpoint's if it was further; ``loss_history``
        from detectron2's ``metrics.json``).
    """
    from detectron2.utils.env import seed_all_rng

    from thingmask.engines.detectron2_engine.catalog import register_dataset
    from thingmask.engines.detectron2_engine.cfg import build_cfg
    from thingmask.engines.detectron2_engine.trainer import MyTrainer, SafeTrainer

    if config.zero_training:
        raise ConfigError(
            "zero_training=True uses the COCO model as is: there is nothing to "
            "train. Set zero_training=False to train on your dataset."
        )
    cls = checked_trainer(trainer, SafeTrainer, MyTrainer)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    register_dataset(dataset)
    cfg = build_cfg(config, dataset, run_dir)
    dumped = cfg.dump()
    # Before d2_config.yaml is rewritten: it tells whether run_dir's own checkpoints still fit.
    prepare_resume(config, run_dir, resume_from, model=model_section(dumped))
    if is_main():  # under detectron2's launch (several GPUs) the first process writes files
        atomic_write_text(run_dir / D2_CONFIG_FILE, dumped)

    seed_all_rng(config.seed)
    started = time.perf_counter()
    runner = cls(cfg, hooks=hooks)
    # last_checkpoint when prepare_resume set one, else MODEL.WEIGHTS (zoo URL or none).
    runner.resume_or_load(resume=True)
    start = int(runner.start_iter)
    max_iter = int(cfg.SOLVER.MAX_ITER)
    if start >= max_iter:
        log.info(
            "checkpoint is at iteration %d of %d: training is already complete", start, max_iter
        )
    runner.train()
    wall = time.perf_counter() - started
    final = run_dir / FINAL_MODEL
    losses = runner.storage.latest() if runner.storage is not None else {}
    result = TrainResult(
        engine=ENGINE_NAME,
        run_dir=run_dir,
        model=final,
        start_iteration=start,
        iterations=max(start, max_iter),
        final_loss=float(losses["total_loss"][0]) if "total_loss" in losses else None,
        wall_time_s=round(wall, 2),
        seconds_per_iteration=round(wall / max(1, max_iter - start), 4),
    )
    if not is_main():  # the first process writes the run folder
        return result
    if not final.is_file():  # resumed from a checkpoint at or past MAX_ITER
        runner.checkpointer.save("model_final", iteration=max(start - 1, 0))
    _write_meta(config, dataset, run_dir, FINAL_MODEL, str(cfg.MODEL.DEVICE))
    history = loss_history(run_dir / "metrics.json")
    if history:
        save_loss_curve(history, run_dir / "loss_curve.png")
    else:
        log.warning("%s: no losses logged; no loss curve", run_dir / "metrics.json")
    for hook in hooks:
        hook.after_train(run_dir)
    return replace(result, loss_history=tuple(history))


def load_predictor(
    config: Config,
    run_dir: str | Path | None,
    score_threshold: float | None = None,
    soft_masks: bool = False,
) -> D2Predictor:
    """The predictor of the trained run in ``run_dir``; ``run_dir=None``: the COCO zoo model
    (80 COCO classes) when ``config.zero_training``, else a ValueError (see
    :class:`~thingmask.engines.base.Engine`).

    ``score_threshold`` defaults to ``config.score_threshold``; ``soft_masks`` fills
    ``Detections.probs``.
    """
    if run_dir is None and not config.zero_training:
        raise no_run_dir_error(ENGINE_NAME)
    from thingmask.engines.detectron2_engine.cfg import build_cfg, run_cfg
    from thingmask.engines.detectron2_engine.predictor import D2Predictor

    if run_dir is None:
        cfg = build_cfg(config, None, None)
        class_names: tuple[str, ...] = COCO_CLASSES
    else:
        run_dir = Path(run_dir)
        cfg, class_names, _ = run_cfg(config, run_dir)
    if score_threshold is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
    return D2Predictor(cfg, class_names, soft_masks=soft_masks, run_dir=run_dir)


def register_dataset(dataset: PreparedDataset) -> Registration:
    """The train/val splits in detectron2's ``DatasetCatalog`` / ``MetadataCatalog`` (a name
    registered before is replaced, so this is safe to call again).

    detectron2's records carry contiguous 0-based ``category_id``s in ``dataset.class_names``
    order; they are turned back into names here.
    """
    from detectron2.data import DatasetCatalog

    from thingmask.engines.detectron2_engine.catalog import register_dataset as register

    train_name, val_name = register(dataset)
    records = DatasetCatalog.get(train_name)
    first = records[0]["annotations"] if records else []
    return Registration(
        engine=ENGINE_NAME,
        catalog=(train_name, val_name),
        class_names=tuple(dataset.class_names),
        train_images=len(records),
        first_image_classes=tuple(dataset.class_names[a["category_id"]] for a in first),
    )


ENGINE = EngineFacade(
    ENGINE_NAME, train=train, load_predictor=load_predictor, register_dataset=register_dataset
)
evaluate = ENGINE.evaluate  # the shared evaluation path, also as a function of this module
