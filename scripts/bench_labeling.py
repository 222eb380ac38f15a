"""Label less, measured: a simulated labelling loop on the synthetic generator.

The generator is a perfect annotator: it has every frame's true masks. A pool of unlabelled
frames (synthetic demo-style videos), a fixed held-out set (frames of other videos), and a
loop: start from ``--start`` labelled frames (the same random ones for every strategy), then
``--rounds`` times add ``--step`` frames picked

* ``random`` — uniformly among the unlabelled frames;
* ``kmeans`` — as ``thingmask frames`` appends: k-means diversity per video, earlier picks kept;
* ``suggest`` — as ``thingmask suggest``: the current model on every pool frame, the flagged
  frames reduced by k-means diversity (topped up by k-means when too few fire);

training the same model from scratch each round and measuring segm AP on the held-out set.
Also measured: how often a flagged (suggested) frame is wrong compared with a random pool frame,
error = foreground IoU of the kept animals < 0.5.

    python scripts/bench_labeling.py --json bench_labeling.json          # full (~1 h, 2 cores)
    python scripts/bench_labeling.py --quick --json bench_labeling.json  # <= 15 min, 1 seed
    python scripts/bench_labeling.py --quick --set iterations=300 --set start=10 --set step=10

On cores shared with other work set ``OMP_NUM_THREADS=1``: two torch threads fighting other
processes for two cores ran ~10x slower per step than one thread here.

JSON: ``{"curves": {strategy: [[labels, AP], ...]}, "labels_to_reach_random_final_AP":
{strategy: n or null}, "flagged_error_rate": x, "random_error_rate": y}`` plus the settings
under ``"settings"`` and per-seed curves under ``"per_seed"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from thingmask import pipeline
from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset, load_prepared
from thingmask.datasets.synthetic import CLASS_NAMES, render_video
from thingmask.detections import Detections, keep
from thingmask.labeling.frames import FrameOptions, pick_frames
from thingmask.labeling.polygons import mask_to_polygons
from thingmask.labeling.suggest import find_suggestions
from thingmask.video import write_video

STRATEGIES = ("random", "kmeans", "suggest")
FULL = {
    "seeds": 3,
    "pool_videos": 4,
    "pool_frames": 72,
    "heldout_videos": 2,
    "heldout_frames": 36,
    "size": 128,
    "iterations": 300,
    "start": 20,
    "step": 20,
    "rounds": 5,
}
QUICK = {**FULL, "seeds": 1, "pool_videos": 3, "pool_frames": 48, "heldout_videos": 1}
QUICK |= {"size": 96, "iterations": 120, "rounds": 3}
DISPLAY = ("cat", "bird")


class Frame:
    """One generated frame: its BGR image and true instance masks / class names."""

    def __init__(self, name: str, image: np.ndarray, masks: np.ndarray, names: Sequence[str]):
        self.name, self.image, self.masks, self.names = name, image, masks, list(names)

    def fg(self) -> np.ndarray:
        keep_ = [k for k, n in enumerate(self.names) if n in DISPLAY]
        if not keep_:
            return np.zeros(self.image.shape[:2], bool)
        return np.asarray(self.masks[keep_].any(axis=0))


def make_videos(root: Path, n_videos: int, n_frames: int, size: int, seed0: int) -> list[Any]:
    """Write ``n_videos`` synthetic clips; returns ``(video path, [Frame])`` per clip."""
    out = []
    for v in range(n_videos):
        frames, gt = render_video(n_frames, size, seed=seed0 + v, fps=12.0)
        path = write_video(root / f"clip{seed0 + v}.mp4", iter(frames), 12.0)
        items = [
            Frame(f"clip{seed0 + v}_{i}", img, np.asarray(m), names)
            for i, (img, (m, names, _ids)) in enumerate(zip(frames, gt, strict=True))
        ]
        out.append((Path(path), items))
    return out


def _coco(frames: Sequence[Frame]) -> dict[str, Any]:
    cat = {n: i for i, n in enumerate(CLASS_NAMES, 1)}
    images, anns = [], []
    for img_id, f in enumerate(frames, 1):
        h, w = f.image.shape[:2]
        images.append({"id": img_id, "file_name": f"{f.name}.png", "width": w, "height": h})
        for m, name in zip(f.masks, f.names, strict=True):
            polys = mask_to_polygons(m)
            if not polys:
                continue
            ys, xs = np.nonzero(m)
            x0, y0 = float(xs.min()), float(ys.min())
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat[name],
                    "segmentation": polys,
                    "area": float(m.sum()),
                    "bbox": [x0, y0, float(xs.max()) - x0 + 1, float(ys.max()) - y0 + 1],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": i, "name": n, "supercategory": "thing"} for n, i in cat.items()]
    return {"images": images, "annotations": anns, "categories": cats}


def write_dataset(
    root: Path, images: Path, train: Sequence[Frame], val: Sequence[Frame]
) -> PreparedDataset:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "images").exists():
        (root / "images").symlink_to(images.resolve(), target_is_directory=True)
    for split, frames in (("train", train), ("val", val)):
        (root / f"{split}.json").write_text(json.dumps(_coco(frames)))
    return load_prepared(root)


class Recorder:
    """Wraps a predictor; keeps the kept animals' union mask of every call (in call order)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor, self.unions = predictor, []
        self.class_names = predictor.class_names

    def __call__(self, frame: np.ndarray) -> Detections:
        dets = self.predictor(frame)
        self.unions.append(keep(dets, DISPLAY).union_mask())
        return dets


def fg_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def train_and_score(
    config: Config, work: Path, images: Path, train: list[Frame], heldout: list[Frame], tag: str
) -> tuple[float, Path]:
    dataset = write_dataset(work / f"ds-{tag}", images, train, heldout)
    cfg = config.replace(dataset_dir=str(dataset.root), run_name=tag)
    run_dir = pipeline.start_run(cfg)
    pipeline.train(cfg, dataset, run_dir)
    result = pipeline.evaluate(cfg, dataset, run_dir)
    return (result.mask_ap if result else float("nan")), run_dir


def pick(
    strategy: str,
    labelled: dict[str, set[int]],
    pool: list[Any],
    step: int,
    rng: np.random.Generator,
    config: Config,
    run_dir: Path | None,
    errors: dict[str, list[bool]],
) -> None:
    """Add ``step`` frames to ``labelled`` (per video stem → frame indices), in place."""
    per_video = [step // len(pool) + (v < step % len(pool)) for v in range(len(pool))]
    predictor = pipeline.load_predictor(config, run_dir) if strategy == "suggest" else None
    for (video, frames), extra in zip(pool, per_video, strict=True):
        have = labelled[video.stem]
        if strategy == "random":
            free = [i for i in range(len(frames)) if i not in have]
            have.update(int(i) for i in rng.choice(free, size=extra, replace=False))
            continue
        if strategy == "suggest":
            rec = Recorder(predictor)
            found = find_suggestions(video, rec, config, extra, exclude=sorted(have))
            ious = [fg_iou(u, f.fg()) for u, f in zip(rec.unions, frames, strict=False)]
            wrong = [iou < 0.5 for iou in ious]
            errors["random"] += wrong  # a random pool frame: every frame counts once
            errors["flagged"] += [wrong[s.index] for s in found if s.index < len(wrong)]
            errors["random_iou"] += ious
            errors["flagged_iou"] += [ious[s.index] for s in found if s.index < len(ious)]
            have.update(s.index for s in found)
        short = extra - len(found) if strategy == "suggest" else extra
        need = len(have) + max(0, short)
        if need > len(have):  # k-means, as `thingmask frames` appends with earlier picks kept
            opts = FrameOptions(n=need, seed=int(rng.integers(1 << 30)))
            have.update(pick_frames(video, opts, keep=sorted(have)))


def run_seed(seed: int, s: dict[str, Any], work: Path, log: Any) -> dict[str, Any]:
    root = work / f"seed{seed}"
    vids = root / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    pool = make_videos(vids, s["pool_videos"], s["pool_frames"], s["size"], 1000 * seed + 100)
    held = make_videos(vids, s["heldout_videos"], s["heldout_frames"], s["size"], 1000 * seed + 900)
    heldout = [f for _, frames in held for f in frames[::2]]
    images = root / "images"
    images.mkdir(exist_ok=True)
    for _, frames in pool + held:
        for f in frames:
            cv2.imwrite(str(images / f"{f.name}.png"), f.image)
    config = Config(
        run_name="bench",
        output_dir=str(root / "runs"),
        device="cpu",
        seed=seed,
        generate_synthetic=False,
        backbone="tiny_fpn",
        optimizer="adamw",
        learning_rate=0.002,
        iterations=s["iterations"],
        batch_size=4,
        image_size=s["size"],
        max_image_size=s["size"],
        checkpoint_period=s["iterations"],
        resume=False,
        augmentations=["flip_horizontal", "brightness", "contrast"],
        display_things=list(DISPLAY),
        score_threshold=0.5,
        tracking=True,
    )
    rng0 = np.random.default_rng(seed)
    all_idx = [(v, i) for v, (_, frames) in enumerate(pool) for i in range(len(frames))]
    start = rng0.choice(len(all_idx), size=s["start"], replace=False)
    first: dict[str, set[int]] = {video.stem: set() for video, _ in pool}
    for k in start:
        v, i = all_idx[int(k)]
        first[pool[v][0].stem].add(i)

    def frames_of(labelled: dict[str, set[int]]) -> list[Frame]:
        return [frames[i] for video, frames in pool for i in sorted(labelled[video.stem])]

    t0 = time.time()
    ap0, run0 = train_and_score(config, root, images, frames_of(first), heldout, "start")
    log(f"seed {seed}: {s['start']} labels → AP {ap0:.1f} ({time.time() - t0:.0f} s)")
    curves: dict[str, list[list[float]]] = {}
    errors: dict[str, list[Any]] = {
        "flagged": [],
        "random": [],
        "flagged_iou": [],
        "random_iou": [],
    }
    for strategy in STRATEGIES:
        labelled = {k: set(v) for k, v in first.items()}
        rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
        curve, run_dir = [[s["start"], ap0]], run0
        for r in range(1, s["rounds"] + 1):
            pick(strategy, labelled, pool, s["step"], rng, config, run_dir, errors)
            n = sum(len(v) for v in labelled.values())
            t0 = time.time()
            ap, run_dir = train_and_score(
                config, root, images, frames_of(labelled), heldout, f"{strategy}{r}"
            )
            curve.append([n, ap])
            took = time.time() - t0
            log(f"seed {seed} {strategy} round {r}: {n} labels → AP {ap:.1f} ({took:.0f} s)")
        curves[strategy] = curve
    return {"curves": curves, "errors": errors}


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    curves = {}
    for strategy in STRATEGIES:
        rows = [np.asarray(r["curves"][strategy], float) for r in per_seed]
        mean = np.mean(rows, axis=0)
        curves[strategy] = [[int(n), round(float(ap), 2)] for n, ap in mean]
    target = curves["random"][-1][1]
    reach = {
        strategy: next((n for n, ap in curves[strategy] if ap >= target), None)
        for strategy in STRATEGIES
    }
    flagged = [e for r in per_seed for e in r["errors"]["flagged"]]
    random_ = [e for r in per_seed for e in r["errors"]["random"]]
    return {
        "curves": curves,
        "labels_to_reach_random_final_AP": reach,
        "flagged_error_rate": round(float(np.mean(flagged)), 4) if flagged else None,
        "random_error_rate": round(float(np.mean(random_)), 4) if random_ else None,
        "flagged_frames": len(flagged),
        "random_frames": len(random_),
        # beside the error rates: the mean foreground IoU of the same frames (finer than < 0.5)
        "flagged_mean_fg_iou": _mean([x for r in per_seed for x in r["errors"]["flagged_iou"]]),
        "random_mean_fg_iou": _mean([x for r in per_seed for x in r["errors"]["random_iou"]]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures here")
    p.add_argument("--quick", action="store_true", help="1 seed, 3 rounds, smaller (<= 15 min)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=N",
        help=f"a reduced (or larger) variant, e.g. --set iterations=40; keys: {', '.join(FULL)}",
    )
    p.add_argument("--keep", default=None, metavar="DIR", help="work folder kept (default: temp)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")  # one line per round, not progress bars
    settings = dict(QUICK if args.quick else FULL)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in FULL or not value.isdigit():
            p.error(f"--set {item}: expected KEY=N with KEY one of {', '.join(FULL)}")
        settings[key] = int(value)
    variant = "quick" if args.quick else "full"
    if args.set:
        variant += " (reduced/changed: " + ", ".join(args.set) + ")"
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_labeling_"))
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    log(f"{variant}: settings {settings}; OMP_NUM_THREADS {threads}")
    try:
        per_seed = [run_seed(seed, settings, work, log) for seed in range(settings["seeds"])]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = summarise(per_seed)
    seconds = round(time.time() - started)
    result["settings"] = {**settings, "variant": variant, "seconds": seconds}
    result["per_seed"] = [r["curves"] for r in per_seed]
    for strategy, curve in result["curves"].items():
        print(f"{strategy:8s} " + "  ".join(f"{n}:{ap:.1f}" for n, ap in curve))
    print(
        "labels to reach random's final AP:",
        result["labels_to_reach_random_final_AP"],
        f"| error rate: flagged {result['flagged_error_rate']},",
        f"random {result['random_error_rate']}",
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
