"""Benchmark figures of the whole pipeline, printed (never asserted in tests).

    python scripts/benchmark.py                        # both engines where installed + video
    python scripts/benchmark.py --engines torchvision  # one engine
    python scripts/benchmark.py --skip-video           # engines only

For each engine: the demo config (configs/demo.yaml, configs/d2_demo.yaml) is run through the
same pipeline functions the notebook calls — generate data, train, COCO AP, cut the demo video —
and the wall time, mask AP and mean foreground IoU of the cut-out against ground truth are
printed side by side. Then scripts/bench_video.py --quick prints compositing/encoding/memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "torchvision": ROOT / "configs" / "demo.yaml",
    "detectron2": ROOT / "configs" / "d2_demo.yaml",
}


def run_engine(engine: str, out_dir: Path) -> dict:
    from thingmask import pipeline
    from thingmask.config import load_config

    config = load_config(
        CONFIGS[engine],
        {
            "engine": engine,
            "output_dir": str(out_dir),
            "run_name": f"bench-{engine}",
            "resume": False,
        },
    )
    started = time.time()
    dataset = pipeline.prepare_data(config)
    run_dir = pipeline.start_run(config)
    t0 = time.time()
    pipeline.train(config, dataset, run_dir)
    train_s = time.time() - t0
    ap = pipeline.evaluate(config, dataset, run_dir)
    predictor = pipeline.load_predictor(config, run_dir)
    t0 = time.time()
    video = pipeline.cut_video(config, predictor, run_dir)
    video_s = time.time() - t0
    return {
        "engine": engine,
        "iterations": config.iterations,
        "train_s": round(train_s, 1),
        "video_s": round(video_s, 1),
        "total_s": round(time.time() - started, 1),
        "mask_AP": ap.mask_ap if ap else None,
        "box_AP": ap.box_ap if ap else None,
        "mean_iou": round(video.scores.mean_iou, 4) if video.scores else float("nan"),
        "run_dir": str(run_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", nargs="+", default=["torchvision", "detectron2"], choices=sorted(CONFIGS)
    )
    parser.add_argument("--output", default=str(ROOT / "outputs" / "benchmark"))
    parser.add_argument("--skip-video", action="store_true")
    args = parser.parse_args()

    rows = []
    for engine in args.engines:
        if engine == "detectron2" and importlib.util.find_spec("detectron2") is None:
            print("detectron2: not installed here, skipped (see README: Engines)")
            continue
        rows.append(run_engine(engine, Path(args.output)))
    if rows:
        keys = [
            "engine",
            "iterations",
            "train_s",
            "video_s",
            "total_s",
            "box_AP",
            "mask_AP",
            "mean_iou",
        ]
        print("\n" + " | ".join(f"{k:>10}" for k in keys))
        for row in rows:
            print(" | ".join(f"{row[k]!s:>10}" for k in keys))
        print("(mean_iou: foreground IoU of the cut-out vs ground truth; target >= 0.85)")
        print(json.dumps(rows, indent=2))
    if not args.skip_video:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "bench_video.py"), "--quick"], check=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
