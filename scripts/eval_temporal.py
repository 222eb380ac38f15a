"""Before/after figures of the temporal switches (tracking, smoothing, edge refinement) on the
synthetic demo video, measured with ``evaluate_video`` against the generator's ground truth.

    python scripts/eval_temporal.py --run-dir outputs/demo-... [--config configs/demo.yaml]
        [--perturb]  [--out outputs/eval_temporal]

Each frame of ``data/synthetic/video/demo.mp4`` is predicted once (soft masks kept), then every
combination of the switches runs through ``make_temporal_stage`` (the streaming stage of the
video pipeline) and is written as an ``export_rle`` file and evaluated. ``--perturb`` also runs
a stress copy of the predictions (seeded): each detection dropped with probability 0.08
(one-frame dropouts), per left-to-right rank one two-frame disappearance, and the class of 10 %
of the detections flipped (cat <-> bird) — the failures tracking, voting and smoothing are for.
Prints one table and writes ``<out>/temporal_eval.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from thingmask.config import load_config, parse_overrides
from thingmask.cutout.temporal import make_temporal_stage
from thingmask.datasets import synthetic
from thingmask.detections import Detections, keep
from thingmask.engines import torchvision_engine as engine
from thingmask.evaluation.video_report import evaluate_video
from thingmask.io_utils import atomic_write_json
from thingmask.jobs.exports import RleExporter
from thingmask.video import open_video

KEYS = ("fg_J", "fg_F", "J", "F", "T", "num_switches", "num_fragmentations", "class_errors")
KEYS += ("track_class_changes", "vanished", "dropouts", "num_false_positives", "num_misses")


def soft_predictions(predictor: Any, frames: list[np.ndarray]) -> list[Detections]:
    """Detections with ``probs`` (until the engines fill them: the model's pasted mask
    probabilities, selected exactly as the predictor selects its instances)."""
    import torch

    out = []
    for img in frames:
        rgb = torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1).float()
        with torch.inference_mode():
            raw = predictor.model([rgb / 255])[0]
        dets = predictor._to_detections(raw, *img.shape[:2])
        scores = raw["scores"].numpy()
        labels = raw["labels"].numpy()
        names = predictor._label_names
        sel = (scores >= predictor.score_threshold) & np.array(
            [0 < lab < len(names) and bool(names[lab]) for lab in labels], bool
        ).reshape(-1)
        probs = (raw["masks"][np.flatnonzero(sel), 0].numpy() * 255 + 0.5).astype(np.uint8)
        out.append(
            Detections(
                dets.masks,
                dets.boxes,
                dets.class_names,
                dets.scores,
                probs=probs.reshape(dets.masks.shape),
            )
        )
    return out


def perturb(dets: list[Detections], seed: int = 0) -> list[Detections]:
    """A stress copy (see the module docstring); ``seed`` fixes it."""
    rng = np.random.default_rng(seed)
    out = []
    hide2 = {}  # detection rank (by x position) → first frame of its two-frame gap
    for rank in range(8):
        hide2[rank] = int(rng.integers(5, max(6, len(dets) - 5)))
    for t, d in enumerate(dets):
        order = np.argsort(d.boxes[:, 0]) if len(d) else np.zeros(0, int)
        rank_of = {int(k): r for r, k in enumerate(order)}
        keep_rows, names = [], list(d.class_names)
        for k in range(len(d)):
            r = rank_of[k]
            if rng.random() < 0.08 or hide2[r] <= t < hide2[r] + 2:
                continue
            if rng.random() < 0.10:
                names[k] = "bird" if names[k] == "cat" else "cat"
            keep_rows.append(k)
        sel = np.array(keep_rows, int)
        out.append(
            Detections(
                d.masks[sel],
                d.boxes[sel],
                np.array(names, object)[sel] if len(sel) else np.zeros(0, object),
                d.scores[sel],
                probs=None if d.probs is None else d.probs[sel],
            )
        )
    return out


def run_variant(
    config: Any, frames: list[np.ndarray], dets: list[Detections], mask_threshold: float, path: Path
) -> Path:
    stage = make_temporal_stage(config, mask_threshold=mask_threshold)
    with RleExporter(path) as rle:
        released = []
        for i, (frame, d) in enumerate(zip(frames, dets, strict=True)):
            released += stage.push(i, frame, keep(d, config.display_things))
        released += stage.flush()
        if [i for i, _ in released] != list(range(len(frames))):
            raise RuntimeError("the temporal stage released frames out of order")
        for i, d in released:
            rle.add(i, i / 12.0, d)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--run-dir", required=True, help="a trained torchvision run folder")
    parser.add_argument("--out", default="outputs/eval_temporal")
    parser.add_argument("--perturb", action="store_true", help="also the stress copy")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config, parse_overrides(args.overrides))
    synthetic.generate(config)
    video_dir = Path(config.dataset_dir) / "video"
    gt_path = video_dir / synthetic.VIDEO_GT_NAME
    predictor = engine.load_predictor(config, args.run_dir)
    with open_video(video_dir / synthetic.VIDEO_NAME) as reader:
        frames = [f.image for f in reader.frames()]
    sets = {"demo": soft_predictions(predictor, frames)}
    if args.perturb:
        sets["stress"] = perturb(sets["demo"])
    rows: list[dict[str, Any]] = []
    for (name, dets), (tr, sm, rf) in itertools.product(
        sets.items(), itertools.product([False, True], repeat=3)
    ):
        if sm and not tr:
            continue  # smoothing switches tracking on: the same as tracking + smoothing
        cfg = config.replace(tracking=tr, temporal_smoothing=sm, edge_refinement=rf)
        label = f"{name}-track{int(tr)}-smooth{int(sm)}-refine{int(rf)}"
        path = run_variant(
            cfg, frames, dets, predictor.mask_threshold, Path(args.out) / f"{label}.rle.jsonl"
        )
        report = evaluate_video(path, gt_path, config.display_things)
        rows.append({"variant": label, **{k: report.get(k) for k in KEYS}})
    atomic_write_json(Path(args.out) / "temporal_eval.json", rows)
    header = ["variant", *KEYS]
    print("  ".join(f"{h:>10}" if i else f"{h:<30}" for i, h in enumerate(header)))
    for row in rows:
        cells = [f"{row['variant']:<30}"]
        for k in KEYS:
            v = row[k]
            cells.append(f"{v:>10.4f}" if isinstance(v, float) else f"{v!s:>10}")
        print("  ".join(cells))
    json.dump({"mask_threshold": predictor.mask_threshold}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
