"""The config bridge: thingmask's :class:`~thingmask.config.Config` → detectron2 settings.

Pure (no detectron2 import), so it is tested everywhere. :func:`cfg_overrides` computes a flat
dict of dotted keys, ``{"SOLVER.BASE_LR": 0.01, ...}``; :mod:`.cfg` applies it with
:func:`apply_overrides` on top of a model-zoo base config. The overrides are plain JSON, stored
in ``model_meta.json`` and re-applied to rebuild a run's model on another machine.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from thingmask.augment import parse_augmentations
from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.coco_classes import COCO_CLASSES
from thingmask.errors import ConfigError

if TYPE_CHECKING:  # detectron2 is not imported at load: this module is pure Python
    from detectron2.config import CfgNode

__all__ = [
    "D2_CONFIG_FILE",
    "DEFAULT_BASE_CONFIG",
    "FINAL_MODEL",
    "ZOO_URL_PREFIX",
    "apply_overrides",
    "augmentation_records",
    "cfg_overrides",
    "dataset_names",
    "solver_steps",
    "thingmask_keys",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
# Official detectron2 model-zoo downloads: the only pickles this engine will open.
ZOO_URL_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
D2_CONFIG_FILE = "d2_config.yaml"  # a run's resolved detectron2 config (a record; safe_load only)
FINAL_MODEL = "model_final.pth"
# ImageNet pixel std (BGR) used by detectron2's scratch configs' comment; with random init the
# first layers see inputs of unit scale instead of +-128.
PIXEL_STD_SCRATCH = (57.375, 57.12, 58.395)


def dataset_names(dataset: PreparedDataset) -> tuple[str, str]:
    """detectron2 catalog names of the train and val splits."""
    return f"{dataset.name}_train", f"{dataset.name}_val"


def solver_steps(iterations: int) -> list[int]:
    # Decay the learning rate x0.1 at 70 % and 90 % of a short schedule (the zoo's 3x steps lie
    # far beyond a few hundred iterations and would never fire).
    steps = sorted({int(iterations * f) for f in (0.7, 0.9)} - {0})
    return [s for s in steps if s < iterations]


def cfg_overrides(
    config: Config, dataset: PreparedDataset | None, device: str = "cpu"
) -> dict[str, Any]:
    """The detectron2 settings derived from ``config``, as ``{"SECTION.KEY": value}``.

    Pure: no detectron2 import. ``dataset=None`` means zero-training (the zoo model with COCO's
    classes, only test-time settings change). Run-dependent keys (``OUTPUT_DIR``,
    ``MODEL.DEVICE``, ``MODEL.WEIGHTS``) are set by :func:`build_cfg`, so these overrides can be
    stored in ``model_meta.json`` and re-applied on another machine. ``device`` is the
    ``MODEL.DEVICE`` that :func:`build_cfg` decided (``"cpu"`` | ``"cuda"``): mixed precision
    (``SOLVER.AMP.ENABLED``) is on exactly when ``config.amp`` and it is CUDA, since
    detectron2's ``AMPTrainer`` runs on CUDA only.

    Raises:
        ConfigError: a setting detectron2 cannot honour (named, with the fix).
    """
    base = config.d2_base_config
    if not base.endswith(".yaml"):
        raise ConfigError(
            f"d2_base_config: got {base!r}; expected a detectron2 model-zoo YAML "
            f"config such as {DEFAULT_BASE_CONFIG!r} (LazyConfig .py files are "
            "not supported)."
        )
    class_names = COCO_CLASSES if dataset is None else tuple(dataset.class_names)
    ov: dict[str, Any] = {
        "MODEL.MASK_ON": True,
        "MODEL.ROI_HEADS.NUM_CLASSES": len(class_names),
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": float(config.score_threshold),
        "INPUT.MIN_SIZE_TEST": config.image_size,
        "INPUT.MAX_SIZE_TEST": config.max_image_size,
    }
    if dataset is None:
        coco_mask = base.startswith("COCO-InstanceSegmentation/") or (
            base.startswith("Misc/") and "mask_rcnn" in base
        )
        if not coco_mask:
            raise ConfigError(
                f"d2_base_config: got {base!r}; zero_training needs a COCO "
                f"instance-segmentation model, e.g. {DEFAULT_BASE_CONFIG!r}."
            )
        if config.image_size < 480:
            log.info(
                "zero_training with image_size=%d: COCO models were trained at 640-800 px; "
                "set image_size=800 if animals are missed",
                config.image_size,
            )
        return ov

    train_name, val_name = dataset_names(dataset)
    iters = config.iterations
    ov.update(
        {
            "DATASETS.TRAIN": [train_name],
            "DATASETS.TEST": [val_name],
            "INPUT.MIN_SIZE_TRAIN": [config.image_size],
            "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
            "INPUT.MAX_SIZE_TRAIN": config.max_image_size,
            # Bitmasks accept polygons and RLE alike and survive crops/rotations without degenerate
            # polygons; at these image sizes their memory cost is negligible.
            "INPUT.MASK_FORMAT": "bitmask",
            # Flips come from config.augmentations only (MyTrainer), not detectron2's default.
            "INPUT.RANDOM_FLIP": "none",
            "SOLVER.BASE_LR": float(config.learning_rate),
            "SOLVER.MAX_ITER": iters,
            "SOLVER.IMS_PER_BATCH": config.batch_size,
            "SOLVER.CHECKPOINT_PERIOD": config.checkpoint_period,
            "SOLVER.WARMUP_ITERS": min(1000, max(1, iters // 10)),
            "SOLVER.STEPS": solver_steps(iters),
            "SOLVER.REFERENCE_WORLD_SIZE": 0,
            "DATALOADER.NUM_WORKERS": config.num_workers,
            # AMPTrainer: float16 autocast + GradScaler, whose step unscales the gradients before
            # the optimizer's own clipping (SOLVER.CLIP_GRADIENTS) sees them.
            "SOLVER.AMP.ENABLED": bool(config.amp) and device.split(":")[0] == "cuda",
            "TEST.EVAL_PERIOD": 0,  # evaluation is its own stage (evaluate())
            "SEED": config.seed,
        }
    )
    if config.pretrained:
        if config.backbone != "resnet50_fpn":
            log.info(
                "pretrained=True: the architecture is %s's (the zoo weights fix it); "
                "backbone=%r applies to training from scratch only",
                base,
                config.backbone,
            )
        return ov

    # From scratch: the zoo's frozen BatchNorm has no statistics without pretrained weights and
    # diverges ("Predicted boxes or scores contain Inf/NaN"); GroupNorm as in detectron2's
    # Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml trains from random init.
    ov.update(
        {
            "MODEL.BACKBONE.FREEZE_AT": 0,
            "MODEL.RESNETS.NORM": "GN",
            "MODEL.RESNETS.STRIDE_IN_1X1": False,
            "MODEL.FPN.NORM": "GN",
            "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NORM": "GN",
            "MODEL.ROI_MASK_HEAD.NORM": "GN",
            "MODEL.PIXEL_STD": list(PIXEL_STD_SCRATCH),
            # Random init gives occasional large gradients early on; clipping keeps them finite.
            "SOLVER.CLIP_GRADIENTS.ENABLED": True,
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "norm",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 5.0,
        }
    )
    if config.image_size <= 400:
        # Small images hold small objects: shift the FPN anchors (P2..P6) one octave down.
        ov["MODEL.ANCHOR_GENERATOR.SIZES"] = [[16], [32], [64], [128], [256]]
    if config.backbone == "resnet50_fpn":
        ov.update(
            {
                "MODEL.RESNETS.DEPTH": 50,
                "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
                "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
            }
        )
    elif config.backbone == "resnet18_fpn":
        # detectron2 supports R18/R34 with BasicBlocks when RES2_OUT_CHANNELS is 64.
        ov.update(
            {
                "MODEL.RESNETS.DEPTH": 18,
                "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
                "MODEL.ROI_BOX_HEAD.NUM_CONV": 4,
                "MODEL.ROI_BOX_HEAD.NUM_FC": 1,
            }
        )
    elif config.backbone == "tiny_fpn":
        # CPU-sized: thingmask.engines.tiny.TinyBody (registered with detectron2's backbone
        # registry by .backbone) under a 64-channel FPN, slim heads, fewer proposals and RoIs.
        ov.update(
            {
                "MODEL.BACKBONE.NAME": "build_tiny_fpn_backbone",
                "MODEL.FPN.OUT_CHANNELS": 64,
                "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
                "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
                "MODEL.ROI_BOX_HEAD.FC_DIM": 256,
                "MODEL.ROI_MASK_HEAD.CONV_DIM": 64,
                "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128,
                "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 128,
                "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 600,
                "MODEL.RPN.POST_NMS_TOPK_TRAIN": 300,
                "MODEL.RPN.PRE_NMS_TOPK_TEST": 300,
                "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
                "TEST.DETECTIONS_PER_IMAGE": 50,
            }
        )
    else:
        raise ConfigError(
            f"backbone: got {config.backbone!r}, which the detectron2 engine does "
            "not build; choose resnet50_fpn, resnet18_fpn or tiny_fpn, or set "
            "engine='torchvision'."
        )
    return ov


def apply_overrides(cfg: CfgNode, overrides: dict[str, Any]) -> CfgNode:
    """Set each dotted key of ``overrides`` on the detectron2 ``CfgNode`` ``cfg`` (in place).

    Keys must exist in ``cfg`` (a misspelt key is a ``KeyError``, not a silent new setting);
    lists become tuples where detectron2 keeps tuples.
    """
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"detectron2 config has no key {dotted}")
        old = node[leaf]
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        node[leaf] = value
    return cfg


def augmentation_records(config: Config) -> list[dict[str, Any]]:
    """``config.augmentations`` validated, as ``[{"name": ..., **params}]`` (JSON-ready)."""
    return [{"name": s.name, **s.params} for s in parse_augmentations(config.augmentations)]


def thingmask_keys(config: Config) -> dict[str, str]:
    """The ``cfg.THINGMASK`` node: project settings the trainer's classmethods read from ``cfg``.

    ``AUGMENTATIONS`` is JSON text (a CfgNode leaf cannot hold a list of mappings); ``MyTrainer``
    parses it back. Both are recorded in ``d2_config.yaml`` with the rest.
    """
    return {
        "AUGMENTATIONS": json.dumps(augmentation_records(config)),
        "OPTIMIZER": config.optimizer,
    }
