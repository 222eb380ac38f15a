"""torchvision Mask R-CNN engine: train / resume / evaluate / predict on any prepared COCO dataset.

Modules, one per stage of the engine:

* :mod:`.model`: ``build_model`` for ``config.backbone`` (tiny_fpn, resnet18/50_fpn, mobilenet).
* :mod:`.data`: ``CocoInstances``, ``TrainSamples``, ``train_loader`` (augmented batches).
* :mod:`.trainer`: the ``Trainer`` class (override ``build_*`` / ``run_step`` in a notebook).
* :mod:`.calibrate`: the mask threshold chosen on the validation split.
* :mod:`.predictor`: ``TorchvisionPredictor`` (batched; :class:`~thingmask.engines.Predictor`).
* :mod:`.engine`: ``train`` / ``evaluate`` / ``load_predictor`` and ``ENGINE`` (the
  :class:`~thingmask.engines.Engine` that ``get_engine("torchvision")`` returns).

Class-id convention inside this package only: torchvision label 0 is the background and label
``i + 1`` is ``class_names[i]``; everything returned speaks class *names*.
"""

from thingmask.engines.torchvision_engine.calibrate import MASK_THRESHOLDS
from thingmask.engines.torchvision_engine.data import train_loader
from thingmask.engines.torchvision_engine.engine import ENGINE, evaluate, load_predictor, train
from thingmask.engines.torchvision_engine.model import build_model
from thingmask.engines.torchvision_engine.predictor import TorchvisionPredictor
from thingmask.engines.torchvision_engine.trainer import Trainer

__all__ = [
    "ENGINE",
    "MASK_THRESHOLDS",
    "TorchvisionPredictor",
    "Trainer",
    "build_model",
    "evaluate",
    "load_predictor",
    "train",
    "train_loader",
]
