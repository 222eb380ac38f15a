"""The engine seam: training and inference back-ends behind one small interface.

Each engine module provides::

    train(config, dataset, run_dir) -> dict          # metrics; writes model + checkpoints
    evaluate(config, dataset, run_dir) -> dict       # box/mask AP, per class; writes JSON + plot
    load_predictor(config, run_dir | None) -> Predictor

A run folder written by ``train`` holds ``model_meta.json`` (engine, class names, model settings),
so ``load_predictor`` needs nothing else. ``run_dir=None`` with ``config.zero_training`` loads a
COCO-pretrained model. Everything downstream receives :class:`~thingmask.detections.Detections`
with class names; class-id conventions stay inside each engine.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from thingmask.detections import Detections

__all__ = ["COCO_CLASSES", "Predictor", "TrainHook", "get_engine", "read_model_meta"]

# COCO's 80 thing classes, in detectron2's contiguous order (torchvision adds background and gaps).
COCO_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)


class Predictor(Protocol):
    """Callable on one ``(H, W, 3)`` uint8 **BGR** image (OpenCV / detectron2 order)."""

    class_names: tuple[str, ...]

    def __call__(self, image_bgr: np.ndarray) -> Detections: ...


class TrainHook:
    """Side jobs during training, engine-neutral (periodic Drive copy, extra logging).

    Both engines call these; detectron2's engine wraps them in a ``HookBase``. Override what you
    need; the defaults do nothing.
    """

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        """Called after optimizer step ``iteration`` (1-based) with scalar losses."""

    def after_checkpoint(self, checkpoint_path: Path, iteration: int) -> None:
        """Called once ``checkpoint_path`` is completely written (renamed into place)."""

    def after_train(self, run_dir: Path) -> None:
        """Called after the final model is written."""


_MODULES = {
    "torchvision": "thingmask.engines.torchvision_engine",
    "detectron2": "thingmask.engines.detectron2_engine",
}


def get_engine(name: str) -> ModuleType:
    """The engine module for ``name`` (``"torchvision"`` or ``"detectron2"``)."""
    if name not in _MODULES:
        raise ValueError(f"engine: got {name!r}; expected one of {sorted(_MODULES)}")
    if name == "detectron2":
        try:
            importlib.import_module("detectron2")
        except ImportError:
            raise ImportError(
                "engine='detectron2' but detectron2 is not installed. In Colab run the install "
                "cell of section 0; elsewhere set engine='torchvision' (pure pip, CPU/CUDA/MPS)."
            ) from None
    return importlib.import_module(_MODULES[name])


def read_model_meta(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/model_meta.json`` with a clear error when the folder holds no trained model."""
    path = Path(run_dir) / "model_meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no trained model here (model_meta.json missing). "
            "Train one with `thingmask train` or the notebook's section 4."
        )
    return json.loads(path.read_text(encoding="utf-8"))
