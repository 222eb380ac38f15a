"""What ``Engine.train`` and ``Engine.evaluate`` return: frozen dataclasses, the same in every
engine. ``str()`` gives the lines a notebook prints; ``to_dict()`` the JSON written to the run
folder (``metrics.json``, ``eval.json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["EvalResult", "TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """One ``train`` call of an engine.

    Attributes:
        engine: ``"torchvision"`` or ``"detectron2"``.
        run_dir: the run folder.
        model: the final weights (``run_dir/model_final.pth``; in a multi-process run the first
            process writes it, the others return the same path).
        start_iteration: steps already done when this call started (0 fresh, k resumed).
        iterations: steps the final model has had (``config.iterations`` once complete).
        final_loss: total loss of the last step, None when this call ran no step.
        wall_time_s: seconds this call trained.
        seconds_per_iteration: ``wall_time_s`` / steps run in this call.
        loss_history: one ``{"iteration", "loss", "loss_*", ...}`` mapping per logged step.
        details: what the engine adds (torchvision: ``backbone``, ``device``, ``amp``,
            ``train_images``, ``batch_size``, ``mask_threshold``, ``mask_threshold_val_iou``).
    """

    engine: str
    run_dir: Path
    model: Path
    start_iteration: int
    iterations: int
    final_loss: float | None
    wall_time_s: float
    seconds_per_iteration: float
    loss_history: tuple[Mapping[str, float], ...] = field(default=(), repr=False)
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields (paths as text) with ``details`` merged in at the top level."""
        return {
            "engine": self.engine,
            "run_dir": str(self.run_dir),
            "model": str(self.model),
            "start_iteration": self.start_iteration,
            "iterations": self.iterations,
            "final_loss": self.final_loss,
            "wall_time_s": self.wall_time_s,
            "seconds_per_iteration": self.seconds_per_iteration,
            **self.details,
            "loss_history": [dict(h) for h in self.loss_history],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainResult:
        """The inverse of :meth:`to_dict` (keys it does not name go to ``details``)."""
        own = {f.name for f in fields(cls)} - {"details"}
        loss = data.get("final_loss")
        return cls(
            engine=str(data["engine"]),
            run_dir=Path(data["run_dir"]),
            model=Path(data["model"]),
            start_iteration=int(data["start_iteration"]),
            iterations=int(data["iterations"]),
            final_loss=None if loss is None else float(loss),
            wall_time_s=float(data["wall_time_s"]),
            seconds_per_iteration=float(data["seconds_per_iteration"]),
            loss_history=tuple(data.get("loss_history", ())),
            details={k: v for k, v in data.items() if k not in own},
        )

    def __str__(self) -> str:
        steps = self.iterations - self.start_iteration
        resumed = f", resumed at {self.start_iteration}" if self.start_iteration else ""
        loss = "n/a" if self.final_loss is None else f"{self.final_loss:.4f}"
        lines = [
            f"{self.engine}: {self.iterations} iterations ({steps} in this call{resumed})",
            f"time        : {self.wall_time_s:.1f} s ({self.seconds_per_iteration:.3f} s/it)",
            f"final loss  : {loss}",
            f"model       : {self.model}",
        ]
        lines += [f"{k:<12}: {v}" for k, v in self.details.items()]
        return "\n".join(lines)


_HEAD = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass(frozen=True)
class EvalResult:
    """COCO box and mask AP of a run's model on a dataset's validation split.

    AP figures are percentages (0..100); NaN where the split has no ground truth for it (COCO's
    convention), e.g. ``APl`` without large objects.

    Attributes:
        bbox: box AP: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` and ``AP-<class>``.
        segm: mask AP, the same keys.
        num_images: validation images scored.
        num_detections: detections scored (down to the engines' ``EVAL_SCORE_THRESHOLD``).
        checkpoint: the weights file scored (``"coco"`` for a COCO-pretrained model).
    """

    bbox: Mapping[str, float]
    segm: Mapping[str, float]
    num_images: int
    num_detections: int
    checkpoint: str

    @property
    def box_ap(self) -> float:
        """Box AP (IoU 0.50:0.95), percent."""
        return float(self.bbox["AP"])

    @property
    def mask_ap(self) -> float:
        """Mask AP (IoU 0.50:0.95), percent: the figure that says how clean cut-outs are."""
        return float(self.segm["AP"])

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], checkpoint: str) -> EvalResult:
        """From :func:`thingmask.evaluation.coco.coco_evaluate`'s dict (or ``eval.json``)."""
        return cls(
            bbox=dict(metrics["bbox"]),
            segm=dict(metrics["segm"]),
            num_images=int(metrics["num_images"]),
            num_detections=int(metrics["num_detections"]),
            checkpoint=checkpoint,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``eval.json`` layout: ``num_images``, ``num_detections``, ``bbox``, ``segm``,
        ``checkpoint``."""
        return {
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "bbox": dict(self.bbox),
            "segm": dict(self.segm),
            "checkpoint": self.checkpoint,
        }

    def __str__(self) -> str:
        keys = [k for k in _HEAD if k in self.segm or k in self.bbox]
        keys += [k for k in self.segm if k.startswith("AP-")]
        names = [k.removeprefix("AP-") for k in keys]
        width = max(6, *(len(n) + 1 for n in names))

        def row(label: str, values: Mapping[str, float]) -> str:
            cells = (_fmt(values.get(k, math.nan)).rjust(width) for k in keys)
            return f"{label:<5}" + "".join(cells)

        return "\n".join(
            [
                f"validation AP (%) of {self.checkpoint}: {self.num_images} images, "
                f"{self.num_detections} detections",
                " " * 5 + "".join(n.rjust(width) for n in names),
                row("box", self.bbox),
                row("mask", self.segm),
            ]
        )


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"
