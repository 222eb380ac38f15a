"""The engine seam: what every engine provides and what every predictor returns.

An engine (``get_engine(name)`` in :mod:`thingmask.engines.registry`) implements :class:`Engine`:

* ``train(config, dataset, run_dir, *, hooks=(), resume_from=None, trainer=None)
  -> TrainResult``
* ``evaluate(config, dataset, run_dir) -> EvalResult``
* ``load_predictor(config, run_dir) -> Predictor``

with the same meaning in both engines (see :class:`Engine`). Everything past the seam receives
:class:`~thingmask.detections.Detections` with class *names*; class-id conventions (torchvision:
0 = background, detectron2: contiguous 0-based ids) stay inside each engine.

A predictor (:class:`Predictor`) runs on ``(H, W, 3)`` uint8 **BGR** images (OpenCV order) in
three ways: one image, a batch returned on the host, or a batch kept on the device as
:class:`InstanceTensors`. The host forms are :func:`to_detections` of the device form, one
function for both engines, so identical model outputs give identical ``Detections``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.detections import Detections
from thingmask.engines.results import EvalResult, TrainResult
from thingmask.runs import MODEL_META

__all__ = [
    "EVAL_SCORE_THRESHOLD",
    "Engine",
    "EngineTrainer",
    "InstanceTensors",
    "Predictor",
    "PredictorBase",
    "Registration",
    "TrainHook",
    "check_image",
    "checked_trainer",
    "read_model_meta",
    "to_detections",
]

# COCO AP integrates over all confidences: evaluation keeps detections down to this score
# (the display threshold, config.score_threshold, would cut the precision-recall curve short).
EVAL_SCORE_THRESHOLD = 0.05


# ----------------------------------------------------------------------------------------------
# predictions
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceTensors:
    """One image's instances as tensors on the predictor's device (nothing copied to the host).

    Attributes:
        boxes: ``(N, 4)`` float32, xyxy pixels of the input image.
        scores: ``(N,)`` float32, already ``>=`` the predictor's score threshold.
        class_index: ``(N,)`` int64, index into ``predictor.class_names`` (0-based, names order;
            no background class).
        mask_probs: ``(N, H, W)`` float32 in [0, 1], the mask probability pasted at the input
            image size (``(0, H, W)`` when nothing was found, so the size is always known).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    class_index: torch.Tensor
    mask_probs: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image the masks belong to."""
        return int(self.mask_probs.shape[1]), int(self.mask_probs.shape[2])


def to_detections(
    instances: InstanceTensors,
    class_names: Sequence[str],
    mask_threshold: float = 0.5,
    soft_masks: bool = False,
) -> Detections:
    """Device tensors → host :class:`Detections` (the one conversion both engines use).

    ``masks = mask_probs > mask_threshold`` (thresholded on the device, so only bools cross to
    the host); with ``soft_masks`` also ``probs = round(mask_probs * 255)`` as uint8.
    ``class_names[class_index]`` gives the names.
    """
    h, w = instances.image_size
    if len(instances) == 0:
        empty = Detections.empty(h, w)
        return replace(empty, probs=np.zeros((0, h, w), np.uint8)) if soft_masks else empty
    probs = instances.mask_probs
    masks = (probs > mask_threshold).cpu().numpy()
    names = np.asarray(class_names, dtype=object)[instances.class_index.cpu().numpy()]
    soft = None
    if soft_masks:
        soft = (probs.clamp(0, 1) * 255).round_().to(torch.uint8).cpu().numpy()
    return Detections(
        masks=masks,
        boxes=instances.boxes.float().cpu().numpy(),
        class_names=names,
        scores=instances.scores.float().cpu().numpy(),
        probs=soft,
    )


def check_image(image_bgr: object, index: int = 0) -> np.ndarray:
    """``image_bgr`` if it is an ``(H, W, 3)`` uint8 numpy array, else a clear error."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        got = getattr(image_bgr, "shape", type(image_bgr).__name__)
        raise ValueError(
            f"predictor: image {index} must be an (H, W, 3) BGR numpy array, got {got}. "
            "Read frames with cv2.imread or thingmask.video (BGR), or convert RGB with "
            "img[..., ::-1]."
        )
    if image_bgr.dtype != np.uint8:
        raise TypeError(
            f"predictor: image {index} must be uint8 (0..255), got {image_bgr.dtype}; "
            "convert with (img * 255).clip(0, 255).astype(np.uint8) if it is 0..1 floats."
        )
    return image_bgr


def check_tensor_image(image_bgr: object, index: int = 0) -> torch.Tensor:
    """``image_bgr`` if it is an ``(H, W, 3)`` uint8 tensor, else a clear error."""
    if not isinstance(image_bgr, torch.Tensor) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        got = getattr(image_bgr, "shape", type(image_bgr).__name__)
        raise ValueError(
            f"predict_tensors: image {index} must be an (H, W, 3) BGR uint8 tensor, got {got}; "
            "e.g. torch.from_numpy(frame_bgr)"
        )
    if image_bgr.dtype != torch.uint8:
        raise TypeError(
            f"predict_tensors: image {index} must be uint8 (0..255), got {image_bgr.dtype}"
        )
    return image_bgr


@runtime_checkable
class Predictor(Protocol):
    """A trained (or COCO) model: ``(H, W, 3)`` uint8 **BGR** images → instances.

    Attributes:
        class_names: the classes it can return, in its class-index order.
        device: where the model runs (``predict_tensors`` results live there).
        mask_threshold: a pixel belongs to an instance where its mask probability is above it.
        soft_masks: when True, :class:`Detections` carry ``probs`` (uint8 probability x 255).
    """

    class_names: tuple[str, ...]
    device: torch.device
    mask_threshold: float
    soft_masks: bool

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        """One ``(H, W, 3)`` uint8 BGR image → its detections (masks at the image size)."""
        ...

    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """Several images (sizes may differ) in one forward pass → one result each, in order."""
        ...

    def predict_tensors(self, images_bgr: Sequence[torch.Tensor]) -> list[InstanceTensors]:
        """``(H, W, 3)`` uint8 BGR tensors on any device (moved to :attr:`device`) → instances
        on the device, one batched forward pass; no host copies of masks."""
        ...


class PredictorBase:
    """``__call__`` and ``predict_batch`` for a predictor that implements ``predict_tensors``.

    Both engines' predictors inherit these, so their host output is :func:`to_detections` of
    their device output, validated the same way.
    """

    class_names: tuple[str, ...]
    device: torch.device
    mask_threshold: float = 0.5
    soft_masks: bool = False

    def predict_tensors(self, images_bgr: Sequence[torch.Tensor]) -> list[InstanceTensors]:
        raise NotImplementedError

    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for each ``(H, W, 3)`` uint8 BGR image (sizes may differ), one forward."""
        # ascontiguousarray: a view such as rgb[..., ::-1] has negative strides torch refuses
        tensors = [
            torch.from_numpy(np.ascontiguousarray(check_image(img, i)))
            for i, img in enumerate(images_bgr)
        ]
        if not tensors:
            return []
        return [
            to_detections(inst, self.class_names, self.mask_threshold, self.soft_masks)
            for inst in self.predict_tensors(tensors)
        ]

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.predict_batch([image_bgr])[0]


# ----------------------------------------------------------------------------------------------
# training and engines
# ----------------------------------------------------------------------------------------------
class TrainHook:
    """Side jobs during training, engine-neutral (periodic Drive copy, extra logging).

    Both engines call these from their training loop (detectron2 through a ``HookBase``
    adapter registered after its ``PeriodicCheckpointer``). Override what you need; the
    defaults do nothing. An exception raised in a hook stops training (the checkpoints written
    so far stay valid, so a later run resumes from them).
    """

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        """Called after optimizer step ``iteration`` (1-based count of finished steps) with
        the step's scalar losses (torchvision: ``"loss"`` and ``"loss_*"``; detectron2:
        ``"total_loss"`` and ``"loss_*"``)."""

    def after_checkpoint(self, checkpoint_path: Path, iteration: int) -> None:
        """Called once ``checkpoint_path`` is completely written (renamed into place) after
        ``iteration`` finished steps."""

    def after_train(self, run_dir: Path) -> None:
        """Called once the run folder is complete (final model and ``model_meta.json``)."""


@dataclass(frozen=True)
class Registration:
    """A prepared dataset as an engine sees it, by class **name** (ids never leave the engine).

    ``catalog``: the ``(train, val)`` names in detectron2's ``DatasetCatalog`` and
    ``MetadataCatalog``, or None for an engine without a catalog (torchvision reads the files
    through a dataset object). ``class_names``: the model's classes in output order.
    ``first_image_classes``: the classes of the first training image's instances, as the
    engine's loader decodes them (a check that its id conversion is right).
    """

    engine: str
    catalog: tuple[str, str] | None
    class_names: tuple[str, ...]
    train_images: int
    first_image_classes: tuple[str, ...]

    def __str__(self) -> str:
        where = f"catalog {self.catalog[0]!r} / {self.catalog[1]!r}" if self.catalog else "files"
        return (
            f"{self.engine}: {self.train_images} training images ({where}); classes "
            f"{list(self.class_names)}; the first image holds {list(self.first_image_classes)}"
        )


class EngineTrainer(Protocol):
    """What an engine's trainer class builds: an object whose ``train()`` runs the training loop.

    Each engine builds it from the class given as ``Engine.train(..., trainer=cls)``:
    torchvision ``cls(config, dataset, run_dir, hooks=..., resume_from=...)`` for a subclass of
    its ``Trainer``; detectron2 ``cls(cfg, hooks=...)`` for a subclass of its ``SafeTrainer``
    (a detectron2 ``DefaultTrainer``). Subclass those to change a step (the notebook's
    ``MyTrainer`` changes the data loader).
    """

    def train(self) -> object:
        """Train to the configured number of iterations."""
        ...


T = TypeVar("T")


def checked_trainer(
    trainer: type[EngineTrainer] | None, base: type[T], default: type[T]
) -> type[T]:
    """``trainer`` (``default`` when None) after checking it subclasses ``base``: the check both
    engines make on ``Engine.train(..., trainer=...)``; a TypeError naming ``base`` otherwise."""
    cls = default if trainer is None else trainer
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(
            f"trainer: got {cls!r}; expected a subclass of {base.__module__}.{base.__qualname__} "
            "(or None for the default)"
        )
    return cls


@runtime_checkable
class Engine(Protocol):
    """Training, evaluation and inference back-end; the same meaning in every engine.

    ``train(config, dataset, run_dir, *, hooks=(), resume_from=None, trainer=None)``
        Trains on ``dataset``'s train split into ``run_dir`` (created), writing checkpoints
        every ``config.checkpoint_period`` steps, ``model_final.pth`` and, last,
        ``model_meta.json`` (engine, class names, model settings: all ``load_predictor``
        needs). ``hooks``: :class:`TrainHook` objects called during training.
        ``resume_from``: a checkpoint file (or, detectron2, a run folder) to continue from;
        a mismatching one is an error. Without it, ``config.resume`` continues from the newest
        valid checkpoint of earlier ``<output_dir>/<run_name>-*`` folders (truncated files are
        skipped with a warning; checkpoints of other classes or models are ignored).
        ``trainer``: an :class:`EngineTrainer` class (torchvision: a ``Trainer`` subclass;
        detectron2: a ``SafeTrainer`` subclass; another is a TypeError) or None for the
        package default. Returns a :class:`~thingmask.engines.results.TrainResult`.
    ``evaluate(config, dataset, run_dir)``
        COCO box and mask AP of the run's model on ``dataset``'s val split (images through
        the predictor ``config.inference_batch`` at a time), detections down to
        :data:`EVAL_SCORE_THRESHOLD`; writes ``run_dir/eval.json`` and
        ``run_dir/eval_ap.png``; returns an :class:`~thingmask.engines.results.EvalResult`
        (``checkpoint``: the weights file scored).
    ``register_dataset(dataset)``
        Makes ``dataset`` known to the engine (detectron2: its catalogs, safe to call again)
        and returns a :class:`Registration` with class names, never ids.
    ``load_predictor(config, run_dir)``
        The :class:`Predictor` of the trained run in ``run_dir``; ``run_dir=None`` means the
        COCO-pretrained model when ``config.zero_training`` and is a ValueError otherwise (the
        newest run is found by the caller: :func:`thingmask.runs.require_latest_run`).
        ``config.device`` and ``config.score_threshold`` apply.
    """

    name: str

    def train(
        self,
        config: Config,
        dataset: PreparedDataset,
        run_dir: str | Path,
        *,
        hooks: Sequence[TrainHook] = (),
        resume_from: str | Path | None = None,
        trainer: type[EngineTrainer] | None = None,
    ) -> TrainResult: ...

    def evaluate(
        self, config: Config, dataset: PreparedDataset, run_dir: str | Path
    ) -> EvalResult: ...

    def register_dataset(self, dataset: PreparedDataset) -> Registration: ...

    def load_predictor(self, config: Config, run_dir: str | Path | None) -> Predictor: ...


def no_run_dir_error(engine: str) -> ValueError:
    """The error both engines raise for ``load_predictor(config, None)`` without zero_training."""
    return ValueError(
        f"load_predictor ({engine}): no run folder given and zero_training is off. Pass the "
        "run folder (thingmask.runs.require_latest_run(config.output_dir, config.run_name) "
        "finds the newest), or set zero_training=True to use a COCO-pretrained model."
    )


def read_model_meta(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/model_meta.json`` with a clear error when the folder holds no trained model."""
    path = Path(run_dir) / MODEL_META
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no trained model here ({MODEL_META} missing). "
            "Train one with `thingmask train` or the notebook's training section."
        )
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta


def check_engine(meta: dict[str, Any], run_dir: str | Path, engine: str) -> None:
    """A clear error when ``run_dir`` was trained by another engine than ``engine``."""
    if meta.get("engine") != engine:
        raise ValueError(
            f"{run_dir}: trained with engine={meta.get('engine')!r}, not {engine!r}; load it "
            f"with engine={meta.get('engine')!r} (thingmask.engines.get_engine)."
        )
