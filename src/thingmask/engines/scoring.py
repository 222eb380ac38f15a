"""Validation AP of any predictor: the one evaluation path both engines' ``evaluate`` use.

Both engines score their model the same way (the same images, the same pycocotools code, the
same output files), so their AP figures are comparable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset, load_coco_json
from thingmask.detections import Detections
from thingmask.engines.base import EVAL_SCORE_THRESHOLD, Predictor, read_model_meta
from thingmask.engines.results import EvalResult
from thingmask.evaluation.coco import coco_evaluate
from thingmask.evaluation.plots import save_ap_plot
from thingmask.io_utils import atomic_write_json, read_image_bgr
from thingmask.runs import MODEL_META

__all__ = ["evaluate_predictor", "evaluate_run"]

log = logging.getLogger(__name__)


def evaluate_run(
    config: Config,
    dataset: PreparedDataset,
    run_dir: str | Path,
    load_predictor: Callable[..., Predictor],
) -> EvalResult:
    """An engine's ``evaluate``: its run's model (loaded by the engine's ``load_predictor`` with
    detections down to :data:`EVAL_SCORE_THRESHOLD`) through :func:`evaluate_predictor`,
    ``config.inference_batch`` images at a time. With ``zero_training`` and no trained model in
    ``run_dir``, the COCO model is scored (classes matched by name)."""
    run_dir = Path(run_dir)
    trained = not (config.zero_training and not (run_dir / MODEL_META).is_file())
    meta = read_model_meta(run_dir) if trained else {}  # a clear error before building anything
    predictor = load_predictor(
        config, run_dir if trained else None, score_threshold=EVAL_SCORE_THRESHOLD
    )
    weights = getattr(predictor, "weights", None) or meta.get("weights", "model_final.pth")
    return evaluate_predictor(
        predictor,
        dataset,
        run_dir,
        Path(str(weights)).name if trained else "coco",
        batch_size=config.inference_batch,
        same_classes=trained,
    )


def evaluate_predictor(
    predictor: Predictor,
    dataset: PreparedDataset,
    run_dir: str | Path,
    checkpoint: str,
    batch_size: int = 4,
    same_classes: bool = True,
) -> EvalResult:
    """COCO box and mask AP of ``predictor`` on ``dataset``'s val split.

    Images go through :meth:`Predictor.predict_batch` ``batch_size`` at a time. With
    ``same_classes`` the predictor must know exactly the dataset's classes (a model trained on
    it); otherwise (a COCO model) classes are matched by name and the others score nothing.

    Writes ``run_dir/eval.json`` (:meth:`EvalResult.to_dict`) and ``run_dir/eval_ap.png``;
    returns :func:`thingmask.evaluation.coco.coco_evaluate`'s figures as an
    :class:`~thingmask.engines.results.EvalResult` naming ``checkpoint``.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    if same_classes and tuple(predictor.class_names) != tuple(dataset.class_names):
        raise ValueError(
            f"{dataset.root}: classes {list(dataset.class_names)} differ from the model's "
            f"{list(predictor.class_names)} ({run_dir}); evaluate on the dataset it was "
            "trained on."
        )
    images = load_coco_json(dataset.val_json)["images"]
    what = f"{dataset.val_json} file_name"
    predictions: dict[int, Detections] = {}
    for start in tqdm(range(0, len(images), batch_size), desc="evaluate", unit="batch"):
        chunk = images[start : start + batch_size]
        bgr = [read_image_bgr(dataset.image_root / im["file_name"], what) for im in chunk]
        for info, dets in zip(chunk, predictor.predict_batch(bgr), strict=True):
            predictions[int(info["id"])] = dets
    result = EvalResult.from_metrics(
        coco_evaluate(dataset.val_json, predictions, dataset.class_names), checkpoint
    )
    atomic_write_json(run_dir / "eval.json", result.to_dict())
    save_ap_plot(result.to_dict(), run_dir / "eval_ap.png", title=f"Validation AP ({run_dir.name})")
    log.info(
        "validation AP: box %.1f, mask %.1f (%s)",
        result.box_ap,
        result.mask_ap,
        run_dir / "eval.json",
    )
    return result
