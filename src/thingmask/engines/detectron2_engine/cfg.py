"""detectron2 ``CfgNode`` objects: a zoo base config + the bridge's overrides + run keys.

Only detectron2's own zoo YAML files pass through ``merge_from_file`` (which may fall back to an
unsafe YAML loader); a run folder is re-opened from ``model_meta.json`` (plain JSON) the same
way. Imports detectron2 at module level: the engine imports this only once detectron2 is chosen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.base import check_engine, read_model_meta
from thingmask.engines.checkpoints import is_valid_checkpoint
from thingmask.engines.detectron2_engine import backbone  # noqa: F401 (registers tiny_fpn)
from thingmask.engines.detectron2_engine.bridge import (
    DEFAULT_BASE_CONFIG,
    FINAL_MODEL,
    apply_overrides,
    cfg_overrides,
    dataset_names,
    thingmask_keys,
)
from thingmask.engines.detectron2_engine.resume import run_checkpoints
from thingmask.engines.device import resolve_device
from thingmask.errors import ConfigError

__all__ = ["build_cfg", "run_cfg", "zoo_cfg"]

log = logging.getLogger(__name__)


def zoo_cfg(base: str) -> CfgNode:
    """detectron2's default config merged with the model-zoo file ``base`` (e.g.
    ``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"``)."""
    try:
        path = model_zoo.get_config_file(base)
    except RuntimeError:
        raise ConfigError(
            f"d2_base_config: {base!r} is not in detectron2's model zoo. Use e.g. "
            f"{DEFAULT_BASE_CONFIG!r} (see detectron2's MODEL_ZOO.md)."
        ) from None
    cfg = get_cfg()
    # Trusted: a YAML file shipped inside the detectron2 package itself.
    cfg.merge_from_file(path)
    return cfg


def _zoo_weights_url(base: str) -> str:
    try:
        return str(model_zoo.get_checkpoint_url(base))
    except RuntimeError:
        raise ConfigError(
            f"d2_base_config: {base!r} has no pretrained weights in detectron2's "
            f"model zoo; set pretrained=False or use {DEFAULT_BASE_CONFIG!r}."
        ) from None


def _device(config: Config) -> str:
    return str(resolve_device(config.device, engine="detectron2"))


def build_cfg(
    config: Config, dataset: PreparedDataset | None, run_dir: str | Path | None
) -> CfgNode:
    """The detectron2 ``CfgNode`` for ``config``: zoo base + ``cfg_overrides`` + run keys.

    ``dataset`` must be registered (:func:`~.catalog.register_dataset`); ``dataset=None``
    builds the zero-training COCO model. ``cfg.THINGMASK`` holds the settings the trainer reads
    (augmentations, optimizer). The result is not frozen.
    """
    device = _device(config)
    overrides = cfg_overrides(config, dataset, device=device)
    cfg = apply_overrides(zoo_cfg(config.d2_base_config), overrides)
    cfg.MODEL.DEVICE = device
    if run_dir is not None:
        cfg.OUTPUT_DIR = str(run_dir)
    if dataset is None or config.pretrained:
        cfg.MODEL.WEIGHTS = _zoo_weights_url(config.d2_base_config)
    else:
        cfg.MODEL.WEIGHTS = ""
    if dataset is not None:
        thing = tuple(MetadataCatalog.get(dataset_names(dataset)[0]).get("thing_classes", ()))
        if thing != tuple(dataset.class_names):
            raise ValueError(
                f"{dataset.train_json}: registered classes {list(thing)} differ from "
                f"the dataset's {list(dataset.class_names)}; call "
                "register_dataset(dataset) before build_cfg."
            )
        cfg.THINGMASK = CfgNode(thingmask_keys(config))
    return cfg


def run_cfg(config: Config, run_dir: Path) -> tuple[CfgNode, tuple[str, ...], Path]:
    """A trained run's detectron2 config from ``model_meta.json`` (plain JSON only).

    ``config.device`` and ``config.score_threshold`` apply. The weights are the recorded final
    model, or (missing or unreadable: a warning) the newest loadable checkpoint.

    Returns:
        ``(cfg, class_names, weights path)``.
    """
    meta = read_model_meta(run_dir)
    check_engine(meta, run_dir, "detectron2")
    cfg: Any = apply_overrides(zoo_cfg(meta["d2_base_config"]), meta["overrides"])
    cfg.MODEL.DEVICE = _device(config)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(config.score_threshold)
    cfg.OUTPUT_DIR = str(run_dir)
    weights = run_dir / meta.get("weights", FINAL_MODEL)
    if not (weights.is_file() and is_valid_checkpoint(weights)):
        found = next((p for p in run_checkpoints([run_dir]) if is_valid_checkpoint(p)), None)
        if found is None:
            raise FileNotFoundError(
                f"{run_dir}: no loadable model checkpoint (.pth). Train again "
                "(resume picks up where it stopped)."
            )
        log.warning("%s: %s is missing or unreadable; using %s", run_dir, weights.name, found.name)
        weights = found
    cfg.MODEL.WEIGHTS = str(weights)
    return cfg, tuple(meta["class_names"]), weights
