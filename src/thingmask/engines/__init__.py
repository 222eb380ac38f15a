"""The engine seam: training and inference back-ends behind one typed interface.

* :mod:`.base`: the :class:`Engine` and :class:`Predictor` protocols, :class:`InstanceTensors`,
  :func:`to_detections`, :class:`TrainHook`, :func:`read_model_meta`.
* :mod:`.results`: :class:`TrainResult`, :class:`EvalResult`, what ``train`` and ``evaluate``
  return; :mod:`.facade`: :class:`EngineFacade`, the one ``Engine`` implementation.
* :mod:`.coco_classes`: ``COCO_CLASSES``, the 80 classes of a COCO-pretrained model.
* :mod:`.registry`: :func:`get_engine`, the one place an engine is chosen.
* :mod:`.device`: :func:`resolve_device` (``config.device`` → ``torch.device``).
* :mod:`.tiny`: the ``tiny_fpn`` body both engines share; :mod:`.checkpoints`: checkpoint files;
  :mod:`.scoring`: the validation AP both engines report.
* :mod:`.torchvision_engine`, :mod:`.detectron2_engine`: the engines (neither imports the
  other; import them through :func:`get_engine`).

A run folder written by ``train`` holds ``model_meta.json`` (engine, class names, model
settings), so ``load_predictor`` needs nothing else. Everything downstream receives
:class:`~thingmask.detections.Detections` with class names; class-id conventions stay inside
each engine.
"""

from thingmask.engines.base import (
    EVAL_SCORE_THRESHOLD,
    Engine,
    EngineTrainer,
    InstanceTensors,
    Predictor,
    PredictorBase,
    Registration,
    TrainHook,
    read_model_meta,
    to_detections,
)
from thingmask.engines.coco_classes import COCO_CLASSES
from thingmask.engines.device import resolve_device
from thingmask.engines.registry import ENGINE_NAMES, get_engine
from thingmask.engines.results import EvalResult, TrainResult

__all__ = [
    "COCO_CLASSES",
    "ENGINE_NAMES",
    "EVAL_SCORE_THRESHOLD",
    "Engine",
    "EngineTrainer",
    "EvalResult",
    "InstanceTensors",
    "Predictor",
    "PredictorBase",
    "Registration",
    "TrainHook",
    "TrainResult",
    "get_engine",
    "read_model_meta",
    "resolve_device",
    "to_detections",
]
