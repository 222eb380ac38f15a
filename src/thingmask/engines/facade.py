"""One :class:`~thingmask.engines.base.Engine` implementation for every engine package.

An engine package supplies what differs (its ``train``, ``load_predictor`` and
``register_dataset`` functions); ``evaluate`` is the same for all of them
(:func:`~thingmask.engines.scoring.evaluate_run`, so AP figures are comparable). Engines never
import each other; both import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.base import Predictor, Registration
from thingmask.engines.results import EvalResult, TrainResult
from thingmask.engines.scoring import evaluate_run

__all__ = ["EngineFacade"]


class EngineFacade:
    """The :class:`~thingmask.engines.base.Engine` called ``name``, made of an engine package's
    functions (see :class:`~thingmask.engines.base.Engine` for what each one means); only
    :meth:`evaluate` is this class's own.

    Args:
        name: the engine's name (``config.engine``).
        train: ``train(config, dataset, run_dir, *, hooks, resume_from, trainer) -> TrainResult``.
        load_predictor: ``load_predictor(config, run_dir, score_threshold=None,
            soft_masks=False) -> Predictor``.
        register_dataset: ``register_dataset(dataset) -> Registration``.
    """

    def __init__(
        self,
        name: str,
        *,
        train: Callable[..., TrainResult],
        load_predictor: Callable[..., Predictor],
        register_dataset: Callable[[PreparedDataset], Registration],
    ) -> None:
        self.name = name
        self.train = train
        self.load_predictor = load_predictor
        self.register_dataset = register_dataset

    def __repr__(self) -> str:
        return f"<thingmask engine {self.name!r}>"

    def evaluate(self, config: Config, dataset: PreparedDataset, run_dir: str | Path) -> EvalResult:
        """COCO box + mask AP of the run's model on the validation split, the same path for every
        engine (:func:`~thingmask.engines.scoring.evaluate_run`): images through the predictor
        ``config.inference_batch`` at a time, masks at the run's ``mask_threshold`` (torchvision
        calibrates it on this same split, so its mask AP is slightly optimistic). With
        ``zero_training`` and no trained model in ``run_dir``, the COCO model is scored (classes
        matched by name)."""
        return evaluate_run(config, dataset, run_dir, self.load_predictor)
