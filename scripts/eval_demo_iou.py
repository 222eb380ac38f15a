"""Measure the demo's headline figures: train time, validation AP and cut-out foreground IoU.

    python scripts/eval_demo_iou.py --config configs/demo.yaml [KEY=VALUE ...]
    python scripts/eval_demo_iou.py --config configs/demo.yaml --run-dir outputs/demo-...
    (with --run-dir: evaluate that trained run, no training)

Steps: generate the synthetic data (idempotent) → train the torchvision engine (unless
``--run-dir``) → COCO AP on the validation split → predict every frame of the demo video (decoded
from the MP4, as the pipeline sees it) → mean foreground IoU of the display things' union against
the ground truth. Prints one JSON summary; also writes it to ``<run dir>/demo_iou.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

from thingmask.config import load_config, parse_overrides
from thingmask.datasets import synthetic
from thingmask.detections import keep
from thingmask.engines import torchvision_engine as engine
from thingmask.evaluation.masks import boundary_f, gt_foreground, video_foreground_iou
from thingmask.io_utils import atomic_write_json
from thingmask.video import open_video


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--run-dir", default=None, help="evaluate this trained run, no training")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config, parse_overrides(args.overrides))

    t0, c0 = time.perf_counter(), _cpu_seconds()
    dataset = synthetic.generate(config)
    gen_s = time.perf_counter() - t0

    if args.run_dir is None:
        run_dir = config.new_run_dir()
        config.save_yaml(run_dir / "config.yaml")
        t1, c1 = time.perf_counter(), _cpu_seconds()
        engine.train(config, dataset, run_dir)
        train_s, train_cpu = time.perf_counter() - t1, _cpu_seconds() - c1
    else:
        run_dir, train_s, train_cpu = Path(args.run_dir), None, None

    t2 = time.perf_counter()
    ev = engine.evaluate(config, dataset, run_dir)
    eval_s = time.perf_counter() - t2

    t3 = time.perf_counter()
    predictor = engine.load_predictor(config, run_dir)
    video_dir = Path(config.dataset_dir) / "video"
    gt = synthetic.load_video_gt(video_dir / synthetic.VIDEO_GT_NAME)
    preds = []
    with open_video(video_dir / synthetic.VIDEO_NAME) as reader:
        for frame in reader.frames():
            dets = keep(predictor(frame.image), config.display_things)
            preds.append(dets.union_mask())
    iou, per_frame = video_foreground_iou(preds, gt, config.display_things, per_frame=True)
    f_scores = [
        boundary_f(p, gt_foreground(m, n, config.display_things))
        for p, (m, n, _) in zip(preds, gt, strict=True)
    ]
    video_s = time.perf_counter() - t3

    summary = {
        "run_dir": str(run_dir),
        "settings": {
            k: getattr(config, k)
            for k in (
                "backbone",
                "iterations",
                "batch_size",
                "learning_rate",
                "optimizer",
                "image_size",
                "synthetic_train_images",
                "synthetic_image_size",
                "augmentations",
            )
        },
        "generate_s": round(gen_s, 1),
        "train_wall_s": None if train_s is None else round(train_s, 1),
        "train_cpu_s": None if train_cpu is None else round(train_cpu, 1),
        "eval_s": round(eval_s, 1),
        "video_predict_s": round(video_s, 1),
        "total_cpu_s": round(_cpu_seconds() - c0, 1),
        "val_box_AP": round(ev.box_ap, 2),
        "val_mask_AP": round(ev.mask_ap, 2),
        "val_mask_AP_per_class": {
            k: round(v, 2) for k, v in ev.segm.items() if k.startswith("AP-")
        },
        "video_foreground_iou": round(iou, 4),
        "video_iou_min_frame": round(float(np.min(per_frame)), 4),
        "video_boundary_f": round(float(np.mean(f_scores)), 4),
    }
    atomic_write_json(run_dir / "demo_iou.json", summary)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
