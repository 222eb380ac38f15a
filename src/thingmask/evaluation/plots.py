"""Training and evaluation plots written into a run folder (PNG, written atomically).

Both engines draw with these: :func:`save_loss_curve` from a loss history, :func:`save_ap_plot`
from the COCO metrics layout of :mod:`thingmask.evaluation.coco`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.io_utils import atomic_path

__all__ = ["save_ap_plot", "save_loss_curve"]


def save_loss_curve(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Plot the total and component losses per iteration (moving average) to a PNG.

    ``history``: one mapping per step with ``"iteration"``, ``"loss"`` (the total) and any
    ``"loss_*"`` components.
    """
    from matplotlib.figure import Figure

    if not history:
        raise ValueError(f"save_loss_curve: no losses to plot for {path}")
    its = np.asarray([h["iteration"] for h in history])
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    keys = ["loss", *sorted(k for k in history[0] if k.startswith("loss_"))]
    k = max(1, len(history) // 50)
    for key in keys:
        vals = np.asarray([h.get(key, np.nan) for h in history], float)
        smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
        ax.plot(its[k - 1 :], smooth, label=key, linewidth=2.0 if key == "loss" else 1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (moving average of {k})")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return Path(path)


def save_ap_plot(
    metrics: Mapping[str, Any], path: str | Path, title: str = "Validation AP"
) -> Path:
    """Grouped bar plot of AP, AP50, AP75 and per-class AP for bbox and segm → PNG at ``path``.

    Accepts :func:`thingmask.evaluation.coco.coco_evaluate`'s metrics or detectron2's
    ``COCOEvaluator`` results (same layout). NaN values (no ground truth) are drawn as empty
    bars labelled "n/a".
    """
    from matplotlib.figure import Figure

    types = [t for t in ("bbox", "segm") if isinstance(metrics.get(t), Mapping)]
    if not types:
        raise ValueError("save_ap_plot: metrics have neither 'bbox' nor 'segm' results")
    keys = ["AP", "AP50", "AP75"]
    for t in types:  # per-class keys in the order the results list them
        keys += [k for k in metrics[t] if k.startswith("AP-") and k not in keys]
    x = np.arange(len(keys))
    width = 0.8 / len(types)
    fig = Figure(figsize=(max(5.0, 0.9 * len(keys) + 2), 3.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for j, t in enumerate(types):
        vals = [float(metrics[t].get(k, float("nan"))) for k in keys]
        pos = x + (j - (len(types) - 1) / 2) * width
        bars = ax.bar(
            pos,
            [0.0 if math.isnan(v) else v for v in vals],
            width,
            label={"bbox": "box", "segm": "mask"}[t],
        )
        for b, v in zip(bars, vals, strict=False):
            ax.annotate(
                "n/a" if math.isnan(v) else f"{v:.0f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(x)
    ax.set_xticklabels(
        [k.removeprefix("AP-") if k.startswith("AP-") else k for k in keys], rotation=30, ha="right"
    )
    ax.set_ylim(0, 105)
    ax.set_ylabel("AP (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return Path(path)
