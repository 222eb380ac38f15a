"""The detectron2 engine: Mask R-CNN from detectron2's model zoo, trained with ``MyTrainer``.

The engine seam (see :mod:`thingmask.engines`)::

    train(config, dataset, run_dir, hooks=(), resume_from=None) -> dict
    evaluate(config, dataset, run_dir) -> dict        # run_dir/eval.json + eval_ap.png
    load_predictor(config, run_dir=None) -> Predictor # BGR uint8 image -> Detections

The project config is the only user input. It becomes a detectron2 ``CfgNode`` in two steps:
:func:`cfg_overrides` (pure, testable without detectron2) computes a flat dict of dotted keys,
and :func:`build_cfg` applies it on top of a model-zoo base config. Only detectron2's own zoo
YAML files pass through ``merge_from_file`` (which may fall back to an unsafe YAML loader); a run
folder is re-opened from ``model_meta.json`` (plain JSON) the same way; its ``d2_config.yaml``
(a record of the resolved config) is only ever read with ``yaml.safe_load``.

Class ids: detectron2 uses contiguous 0-based ids in ``dataset.class_names`` order (COCO
category id k -> k - 1); everything returned from here speaks class names.

Checkpoints are ours only: ``.pth`` files written atomically by this engine and loaded with
``torch.load(weights_only=True)``. The one pickle that is loaded is the official detectron2
model-zoo ``.pkl`` downloaded from ``dl.fbaipublicfiles.com`` (pretrained / zero-training).

Everything that imports detectron2 does so inside functions (or in :mod:`.d2_trainer`), so this
module imports without detectron2 installed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.augment import parse_augmentations
from thingmask.config import Config, ConfigError
from thingmask.datasets import PreparedDataset
from thingmask.detections import Detections
from thingmask.engines import COCO_CLASSES, TrainHook, read_model_meta
from thingmask.engines.checkpoints import checkpoint_iteration, is_valid_checkpoint
from thingmask.io_utils import atomic_write_json, atomic_write_text

__all__ = [
    "D2_CONFIG_FILE",
    "DEFAULT_BASE_CONFIG",
    "ZOO_URL_PREFIX",
    "D2Predictor",
    "apply_overrides",
    "available",
    "build_cfg",
    "cfg_overrides",
    "colab_install_cell",
    "dataset_names",
    "evaluate",
    "load_predictor",
    "register_dataset",
    "resolve_device",
    "resolve_engine",
    "train",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
# Official detectron2 model-zoo downloads: the only pickles this engine will open.
ZOO_URL_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
D2_CONFIG_FILE = "d2_config.yaml"
META_FILE = "model_meta.json"
FINAL_MODEL = "model_final.pth"
EVAL_SCORE_THRESHOLD = 0.05  # COCO AP integrates over all confidences (same as torchvision engine)
# detectron2 commit the Colab install cell pins (the one this engine was tested against).
DETECTRON2_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
# ImageNet pixel std (BGR) used by detectron2's scratch configs' comment; with random init the
# first layers see inputs of unit scale instead of +-128.
_PIXEL_STD_SCRATCH = [57.375, 57.12, 58.395]


# --- engine availability ---------------------------------------------------------------------


def available() -> bool:
    """True when detectron2 (with its compiled extension) imports."""
    try:
        import detectron2  # noqa: F401
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(config: Config | str) -> str:
    """The engine to use: ``config.engine`` (or the engine name given), or ``"torchvision"`` (with
    a warning) when detectron2 was asked for but is not importable (install cell skipped/failed)."""
    engine = config if isinstance(config, str) else config.engine
    if engine == "detectron2" and not available():
        log.warning(
            "engine='detectron2' but detectron2 is not installed (or its compiled part "
            "failed to import); using engine='torchvision' instead. In Colab run the "
            "detectron2 install cell (section 0) to use detectron2."
        )
        return "torchvision"
    return engine


def colab_install_cell(commit: str = DETECTRON2_COMMIT) -> str:
    """The notebook's detectron2 install cell, pinned to ``commit``.

    It reads the global variable ``engine`` (so it runs after the global-variables cell), builds
    detectron2 in Colab only, when asked for and missing (elsewhere: install it yourself, or the
    notebook falls back to torchvision), never reinstalls Colab's torch
    (``--no-build-isolation`` compiles against it; ``setuptools<81`` keeps ``pkg_resources``,
    which detectron2's model zoo imports), and falls back to torchvision when the import fails.
    """
    return (
        "# detectron2 engine: built from source against Colab's torch (~5 min, once per runtime)\n"
        "import importlib, importlib.util, subprocess, sys\n"
        "if (engine == 'detectron2' and 'google.colab' in sys.modules\n"
        "        and importlib.util.find_spec('detectron2') is None):\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', 'setuptools<81', "
        "'wheel', 'ninja'], check=True)\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', "
        "'--no-build-isolation',\n"
        f"                    'git+https://github.com/facebookresearch/detectron2.git@{commit}'],\n"
        "                   check=False)\n"
        "    importlib.invalidate_caches()\n"
        "from thingmask.engines.detectron2_engine import resolve_engine\n"
        "engine = resolve_engine(engine)  # falls back (with a message) if detectron2 is missing\n"
        "print('engine:', engine)\n"
    )


def resolve_device(device: str) -> str:
    """``config.device`` -> detectron2's ``MODEL.DEVICE`` (``"cpu"`` or ``"cuda"``)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "mps":
        raise ConfigError(
            "device: got 'mps'; detectron2 runs on cpu or cuda. Set device='cpu' "
            "(or 'auto'), or use engine='torchvision' on Apple silicon."
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: got 'cuda' but no CUDA GPU is visible. In Colab choose "
            "Runtime > Change runtime type > GPU, or set device='auto'."
        )
    return device


# --- the config bridge -----------------------------------------------------------------------


def dataset_names(dataset: PreparedDataset) -> tuple[str, str]:
    """detectron2 catalog names of the train and val splits."""
    return f"{dataset.name}_train", f"{dataset.name}_val"


def _solver_steps(iterations: int) -> list[int]:
    # Decay the learning rate x0.1 at 70 % and 90 % of a short schedule (the zoo's 3x steps lie
    # far beyond a few hundred iterations and would never fire).
    steps = sorted({int(iterations * f) for f in (0.7, 0.9)} - {0})
    return [s for s in steps if s < iterations]


def cfg_overrides(config: Config, dataset: PreparedDataset | None) -> dict[str, Any]:
    """The detectron2 settings derived from ``config``, as ``{"SECTION.KEY": value}``.

    Pure: no detectron2 import. ``dataset=None`` means zero-training (the zoo model with COCO's
    classes, only test-time settings change). Run-dependent keys (``OUTPUT_DIR``,
    ``MODEL.DEVICE``, ``MODEL.WEIGHTS``) are set by :func:`build_cfg`, so these overrides can be
    stored in ``model_meta.json`` and re-applied on another machine.

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
            "SOLVER.STEPS": _solver_steps(iters),
            "SOLVER.REFERENCE_WORLD_SIZE": 0,
            "DATALOADER.NUM_WORKERS": config.num_workers,
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
            "MODEL.PIXEL_STD": list(_PIXEL_STD_SCRATCH),
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
        # CPU-sized: a small GroupNorm CNN (d2_trainer.TinyNet, registered with detectron2's
        # backbone registry) under a 64-channel FPN, slim heads, fewer proposals and RoIs.
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


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
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


def _zoo_cfg(base: str) -> Any:
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

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
    from detectron2 import model_zoo

    try:
        return model_zoo.get_checkpoint_url(base)
    except RuntimeError:
        raise ConfigError(
            f"d2_base_config: {base!r} has no pretrained weights in detectron2's "
            f"model zoo; set pretrained=False or use {DEFAULT_BASE_CONFIG!r}."
        ) from None


def _set_thingmask_keys(cfg: Any, config: Config) -> None:
    """``cfg.THINGMASK``: the project settings ``MyTrainer`` reads (its classmethods get only
    ``cfg``), recorded in ``d2_config.yaml`` with the rest."""
    from detectron2.config import CfgNode

    specs = parse_augmentations(config.augmentations)
    cfg.THINGMASK = CfgNode()
    # JSON text: a CfgNode leaf cannot hold a list of mappings; MyTrainer parses it back.
    cfg.THINGMASK.AUGMENTATIONS = json.dumps([{"name": s.name, **s.params} for s in specs])
    cfg.THINGMASK.OPTIMIZER = getattr(config, "optimizer", "sgd")


def build_cfg(config: Config, dataset: PreparedDataset | None, run_dir: str | Path | None) -> Any:
    """The detectron2 ``CfgNode`` for ``config``: zoo base + :func:`cfg_overrides` + run keys.

    ``dataset`` must be registered (:func:`register_dataset`); ``dataset=None`` builds the
    zero-training COCO model. The result is not frozen.
    """
    overrides = cfg_overrides(config, dataset)
    cfg = apply_overrides(_zoo_cfg(config.d2_base_config), overrides)
    cfg.MODEL.DEVICE = resolve_device(config.device)
    if run_dir is not None:
        cfg.OUTPUT_DIR = str(run_dir)
    if dataset is None or config.pretrained:
        cfg.MODEL.WEIGHTS = _zoo_weights_url(config.d2_base_config)
    else:
        cfg.MODEL.WEIGHTS = ""
    if dataset is not None:
        from detectron2.data import MetadataCatalog

        thing = tuple(MetadataCatalog.get(dataset_names(dataset)[0]).get("thing_classes", ()))
        if thing != tuple(dataset.class_names):
            raise ValueError(
                f"{dataset.train_json}: registered classes {list(thing)} differ from "
                f"the dataset's {list(dataset.class_names)}; call "
                "register_dataset(dataset) before build_cfg."
            )
        if len(thing) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but "
                f"the dataset has {len(thing)} classes"
            )
        _set_thingmask_keys(cfg, config)
    return cfg


# --- registration ------------------------------------------------------------------------------


def register_dataset(dataset: PreparedDataset) -> tuple[str, str]:
    """Register the prepared train/val splits in detectron2's catalogs; safe to call again.

    A name already registered (a re-run notebook cell, a regenerated dataset) is removed and
    registered afresh, so its classes and files are always the current ones.
    Returns the ``(train, val)`` dataset names.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    names = dataset_names(dataset)
    for name, json_file in zip(names, (dataset.train_json, dataset.val_json), strict=True):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        register_coco_instances(
            name,
            {"thing_classes": list(dataset.class_names)},
            str(json_file),
            str(dataset.image_root),
        )
    _warn_crowd(dataset.train_json)
    return names


def _warn_crowd(train_json: Path) -> None:
    data = json.loads(Path(train_json).read_text(encoding="utf-8"))
    crowd = sum(1 for a in data.get("annotations", []) if a.get("iscrowd", 0))
    if crowd:
        log.warning(
            "%s: %d of %d annotations have iscrowd=1; detectron2 ignores them in "
            "training (CVAT COCO exports mark every mask so). Re-import with "
            "`thingmask prepare`, which resets iscrowd.",
            train_json,
            crowd,
            len(data["annotations"]),
        )


# --- resume --------------------------------------------------------------------------------------


def _ckpt_sort_key(path: Path) -> tuple[int, float]:
    it = checkpoint_iteration(path)
    if it < 0:  # model_final.pth: its iteration is inside
        from thingmask.engines.checkpoints import load_checkpoint

        try:
            it = int(load_checkpoint(path).get("iteration", -1))
        except Exception:  # unreadable: sorted last, rejected by validation later
            it = -1
    return it, path.stat().st_mtime


def _checkpoints(folders: Iterable[Path]) -> list[Path]:
    """``*.pth`` files of ``folders``, newest iteration first (temporary ``.part`` files out)."""
    found = [
        p for f in folders if f.is_dir() for p in f.glob("model_*.pth") if ".part" not in p.name
    ]
    return sorted(found, key=_ckpt_sort_key, reverse=True)


def _previous_runs(config: Config, run_dir: Path) -> list[Path]:
    root = Path(config.output_dir)
    if not root.is_dir():
        return []
    return [
        p
        for p in root.glob(f"{config.run_name}-*")
        if p.is_dir() and p.resolve() != run_dir.resolve()
    ]


def _model_section(cfg_yaml: str) -> dict[str, Any]:
    """The ``MODEL`` settings that make checkpoints interchangeable (weights/device aside)."""
    import yaml

    model = dict((yaml.safe_load(cfg_yaml) or {}).get("MODEL") or {})
    for key in ("WEIGHTS", "DEVICE"):
        model.pop(key, None)
    return model


def _compatible(checkpoint: Path, model: dict[str, Any] | None) -> bool:
    """False when the checkpoint's run folder records different model settings."""
    recorded = checkpoint.parent / D2_CONFIG_FILE
    if model is None or not recorded.is_file():
        return True
    if _model_section(recorded.read_text(encoding="utf-8")) == model:
        return True
    log.warning(
        "not resuming from %s: its run (%s) used different model settings "
        "(classes, backbone or heads); set resume=False or a new run_name to start "
        "afresh",
        checkpoint,
        recorded,
    )
    return False


def prepare_resume(
    config: Config,
    run_dir: str | Path,
    resume_from: str | Path | None = None,
    model: dict[str, Any] | None = None,
) -> Path | None:
    """Point ``run_dir/last_checkpoint`` at the checkpoint to resume from, copying it in.

    Sources: ``resume_from`` (a ``.pth`` file, e.g. on Drive, or a run folder) when given; else,
    when ``config.resume``, ``run_dir``'s own checkpoints, then those of earlier run folders
    ``<output_dir>/<run_name>-*`` (highest iteration first). Files that do not load (truncated
    by an interrupted copy or write) are skipped with a warning, so the previous one is used;
    with ``model`` (the ``MODEL`` section of the new detectron2 config), so are checkpoints whose
    run recorded different model settings. Returns the checkpoint in ``run_dir``, or ``None``
    (start afresh).
    """
    run_dir = Path(run_dir)
    marker = run_dir / "last_checkpoint"
    if resume_from is not None:
        src = Path(resume_from)
        if src.is_dir():
            candidates = _checkpoints([src])
        elif src.is_file():
            if src.suffix != ".pth":
                raise ValueError(
                    f"resume_from {src}: expected a .pth checkpoint written by "
                    "thingmask (other formats, e.g. .pkl pickles, are not loaded: "
                    "they can run code)."
                )
            candidates = [src]
        else:
            raise FileNotFoundError(
                f"resume_from {src} does not exist. Pass a checkpoint file "
                "(model_XXXXXXX.pth) or a run folder."
            )
    elif config.resume:
        candidates = _checkpoints([run_dir]) + _checkpoints(_previous_runs(config, run_dir))
    else:
        marker.unlink(missing_ok=True)
        return None

    for cand in candidates:
        # is_valid_checkpoint logs a warning naming the file and the reason.
        if not (is_valid_checkpoint(cand) and _compatible(cand, model)):
            continue
        target = run_dir / cand.name
        if cand.resolve() != target.resolve():
            from thingmask.io_utils import atomic_path

            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(cand, tmp)
            log.info("resuming from %s (copied into %s)", cand, run_dir)
        else:
            log.info("resuming from %s", cand)
        atomic_write_text(marker, target.name)
        return target
    if resume_from is not None:
        raise ValueError(
            f"resume_from {resume_from}: no usable checkpoint there (see the "
            "warnings above). Pass another file or set resume_from=None."
        )
    marker.unlink(missing_ok=True)
    return None


# --- train / evaluate --------------------------------------------------------------------------


def _write_meta(config: Config, dataset: PreparedDataset, run_dir: Path, weights: str) -> None:
    import detectron2

    atomic_write_json(
        run_dir / META_FILE,
        {
            "engine": "detectron2",
            "class_names": list(dataset.class_names),
            "d2_base_config": config.d2_base_config,
            "overrides": cfg_overrides(config, dataset),
            "augmentations": [
                {"name": s.name, **s.params} for s in parse_augmentations(config.augmentations)
            ],
            "weights": weights,
            "detectron2_version": detectron2.__version__,
        },
    )


def train(
    config: Config,
    dataset: PreparedDataset,
    run_dir: str | Path,
    hooks: Sequence[TrainHook] = (),
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train Mask R-CNN on ``dataset`` into ``run_dir``; resume when configured.

    Writes ``d2_config.yaml`` (resolved detectron2 config), ``model_XXXXXXX.pth`` checkpoints
    every ``checkpoint_period`` steps, ``model_final.pth``, ``metrics.json`` (detectron2's
    event log) and, when done, ``model_meta.json``. ``hooks`` receive ``after_step`` /
    ``after_checkpoint`` during training and ``after_train`` once the run folder is complete.

    Returns:
        ``{"start_iter", "iterations", "final_loss", "seconds", "model"}``.
    """
    from detectron2.utils.env import seed_all_rng

    from thingmask.engines.d2_trainer import MyTrainer

    if config.zero_training:
        raise ConfigError(
            "zero_training=True uses the COCO model as is: there is nothing to "
            "train. Set zero_training=False to train on your dataset."
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    register_dataset(dataset)
    cfg = build_cfg(config, dataset, run_dir)
    dumped = cfg.dump()
    # Before d2_config.yaml is rewritten: it tells whether run_dir's own checkpoints still fit.
    prepare_resume(config, run_dir, resume_from, model=_model_section(dumped))
    atomic_write_text(run_dir / D2_CONFIG_FILE, dumped)

    seed_all_rng(config.seed)
    started = time.monotonic()
    trainer = MyTrainer(cfg, hooks=hooks)
    # last_checkpoint when prepare_resume set one, else MODEL.WEIGHTS (zoo URL or none).
    _load_weights(
        lambda: trainer.resume_or_load(resume=True),
        cfg.MODEL.WEIGHTS,
        "or set pretrained=False to train from scratch",
    )
    start_iter = trainer.start_iter
    if start_iter >= cfg.SOLVER.MAX_ITER:
        log.info(
            "checkpoint is at iteration %d of %d: training is already complete",
            start_iter,
            cfg.SOLVER.MAX_ITER,
        )
    trainer.train()
    final = run_dir / FINAL_MODEL
    if not final.is_file():  # resumed from a checkpoint at or past MAX_ITER
        trainer.checkpointer.save("model_final", iteration=max(start_iter - 1, 0))
    _write_meta(config, dataset, run_dir, FINAL_MODEL)
    _save_loss_curve(run_dir)
    losses = trainer.storage.latest() if trainer.storage is not None else {}
    result = {
        "start_iter": int(start_iter),
        "iterations": int(cfg.SOLVER.MAX_ITER),
        "final_loss": float(losses["total_loss"][0]) if "total_loss" in losses else None,
        "seconds": round(time.monotonic() - started, 1),
        "model": str(final),
    }
    for hook in hooks:
        hook.after_train(run_dir)
    return result


def _save_loss_curve(run_dir: Path) -> Path | None:
    """``loss_curve.png`` from detectron2's event log (``metrics.json``: one JSON per line)."""
    from thingmask.engines.torchvision_engine import save_loss_curve

    history = []
    log_file = run_dir / "metrics.json"
    if log_file.is_file():
        for line in log_file.read_text(encoding="utf-8").splitlines():
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
    if not history:
        log.warning("%s: no losses logged; no loss curve", log_file)
        return None
    return save_loss_curve(history, run_dir / "loss_curve.png")


def _run_cfg(config: Config, run_dir: Path) -> tuple[Any, tuple[str, ...], Path]:
    """Rebuild a trained run's detectron2 config from ``model_meta.json`` (plain JSON only)."""
    meta = read_model_meta(run_dir)
    if meta.get("engine") != "detectron2":
        raise ValueError(
            f"{run_dir}: trained with engine={meta.get('engine')!r}, not "
            "detectron2; load it with that engine (engine setting)."
        )
    cfg = apply_overrides(_zoo_cfg(meta["d2_base_config"]), meta["overrides"])
    cfg.MODEL.DEVICE = resolve_device(config.device)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(config.score_threshold)
    cfg.OUTPUT_DIR = str(run_dir)
    weights = run_dir / meta.get("weights", FINAL_MODEL)
    if not (weights.is_file() and is_valid_checkpoint(weights)):
        found = next((p for p in _checkpoints([run_dir]) if is_valid_checkpoint(p)), None)
        if found is None:
            raise FileNotFoundError(
                f"{run_dir}: no loadable model checkpoint (.pth). Train again "
                "(resume picks up where it stopped)."
            )
        log.warning("%s: %s is missing or unreadable; using %s", run_dir, weights.name, found.name)
        weights = found
    cfg.MODEL.WEIGHTS = str(weights)
    return cfg, tuple(meta["class_names"]), weights


def _no_prediction_results(raw: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """Fill in AP 0 where COCOEvaluator returned nothing (the model detected nothing at all)."""
    out = dict(raw)
    for task in ("bbox", "segm"):
        if not out.get(task):
            log.warning("evaluation: no %s predictions on the val set; AP = 0", task)
            out[task] = {
                **{k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                **{f"AP-{n}": 0.0 for n in class_names},
            }
    return out


def evaluate(config: Config, dataset: PreparedDataset, run_dir: str | Path) -> dict[str, Any]:
    """Box and mask AP of the run's model on ``dataset``'s val split.

    The metrics use detectron2's ``COCOEvaluator`` layout, as :mod:`thingmask.evaluation` (both
    engines): ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...},
    "segm": {...}, "num_images", "num_detections", "checkpoint"}``, AP in percent, NaN for a
    class without val instances.

    Detections count down to a score of 0.05 (not ``score_threshold``), as COCO AP expects.

    Writes ``run_dir/eval.json`` and the per-class bar plot ``run_dir/eval_ap.png``.
    """
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, inference_on_dataset
    from detectron2.modeling import build_model

    from thingmask.engines.d2_trainer import SafeCheckpointer, _CountingEvaluator
    from thingmask.evaluation import save_ap_plot

    run_dir = Path(run_dir)
    _, val_name = register_dataset(dataset)
    cfg, class_names, weights = _run_cfg(config, run_dir)
    if tuple(dataset.class_names) != class_names:
        raise ValueError(
            f"{dataset.root}: classes {list(dataset.class_names)} differ from the "
            f"model's {list(class_names)} ({run_dir}); evaluate on the dataset it "
            "was trained on."
        )
    cfg.DATASETS.TEST = (val_name,)
    # The display threshold would cut the precision-recall curve short and understate AP.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = EVAL_SCORE_THRESHOLD
    model = build_model(cfg)
    SafeCheckpointer(model).load(str(weights))
    model.eval()
    evaluators = DatasetEvaluators(
        [
            COCOEvaluator(
                val_name,
                tasks=("bbox", "segm"),
                distributed=False,
                output_dir=str(run_dir / "eval"),
            ),
            _CountingEvaluator(),
        ]
    )
    loader = build_detection_test_loader(cfg, val_name)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # pycocotools prints; the package logs
        raw = inference_on_dataset(model, loader, evaluators)
    log.debug("COCOeval output:\n%s", buf.getvalue())
    metrics = {**_no_prediction_results(raw, class_names), "checkpoint": weights.name}
    atomic_write_json(run_dir / "eval.json", metrics)
    save_ap_plot(metrics, run_dir / "eval_ap.png", title=f"Validation AP ({run_dir.name})")
    log.info(
        "validation AP: box %.1f, mask %.1f (%s)",
        metrics["bbox"]["AP"],
        metrics["segm"]["AP"],
        run_dir / "eval.json",
    )
    return metrics


# --- prediction --------------------------------------------------------------------------------


class D2Predictor:
    """detectron2's ``DefaultPredictor`` returning :class:`~thingmask.detections.Detections`.

    Call it on one ``(H, W, 3)`` uint8 **BGR** image. Masks are ``(N, H, W)`` bool at the input
    size, boxes ``(N, 4)`` float32 xyxy pixels, class names from ``class_names`` (index =
    detectron2's contiguous class id), scores float32 >= ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.
    """

    def __init__(self, cfg: Any, class_names: Sequence[str]) -> None:
        from detectron2.engine import DefaultPredictor

        from thingmask.engines.d2_trainer import SafeCheckpointer

        weights = cfg.MODEL.WEIGHTS
        empty = cfg.clone()
        empty.MODEL.WEIGHTS = ""  # DefaultPredictor's own loader is skipped; ours is safe
        self._predictor = DefaultPredictor(empty)
        checkpointer = SafeCheckpointer(self._predictor.model)
        _load_weights(
            lambda: checkpointer.load(weights),
            weights,
            "or train a model on your data (zero_training=False)",
        )
        self.class_names = tuple(class_names)
        self.cfg = cfg

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
            raise TypeError(
                f"predictor: expected a uint8 numpy image, got "
                f"{getattr(image_bgr, 'dtype', type(image_bgr).__name__)}"
            )
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(
                f"predictor: expected an (H, W, 3) BGR image, got shape {image_bgr.shape}"
            )
        h, w = image_bgr.shape[:2]
        inst = self._predictor(image_bgr)["instances"].to("cpu")
        if len(inst) == 0:
            return Detections.empty(h, w)
        classes = inst.pred_classes.numpy()
        return Detections(
            masks=inst.pred_masks.numpy().astype(bool),
            boxes=inst.pred_boxes.tensor.numpy().astype(np.float32),
            class_names=np.array([self.class_names[c] for c in classes], dtype=object),
            scores=inst.scores.numpy().astype(np.float32),
        )


def _load_weights(load: Callable[[], Any], weights: str, alternative: str) -> None:
    """Run ``load()`` (which reads ``weights``), turning a failed model-zoo download into advice
    on what to do."""
    try:
        load()
    except OSError as exc:
        if not weights.startswith(ZOO_URL_PREFIX):
            raise
        from thingmask.engines.d2_trainer import zoo_cache_path

        raise RuntimeError(
            f"could not download the COCO-pretrained weights {weights} ({exc}). Either go "
            "online once (they are cached for later offline use), or download that file on "
            f"another machine and copy it to {zoo_cache_path(weights)} (the cache detectron2 "
            f"reads; set FVCORE_CACHE to move it), {alternative}."
        ) from None


def load_predictor(config: Config, run_dir: str | Path | None = None) -> D2Predictor:
    """The predictor of the run in ``run_dir``, or with ``run_dir=None`` and
    ``config.zero_training`` the COCO-pretrained zoo model (80 COCO classes)."""
    if run_dir is None:
        if not config.zero_training:
            raise ValueError(
                "load_predictor: no run folder given. Train first (section 4) or "
                "set zero_training=True to use the COCO-pretrained model."
            )
        cfg = build_cfg(config, None, None)
        return D2Predictor(cfg, COCO_CLASSES)
    cfg, class_names, _ = _run_cfg(config, Path(run_dir))
    return D2Predictor(cfg, class_names)
