"""Training and the CPU video stage, idle and beside a competing busy process, per thread setting.

    python scripts/bench_threads.py                    # threads=auto and torch on every core
    python scripts/bench_threads.py --steps 20 --busy 1 --size 720p

Rows: seconds per training step of the demo's model (tiny_fpn, 160 px synthetic images, batch 4,
AdamW, the demo's augmentations; the engine's ``Trainer``) and frames per second of
``process_video`` on a synthetic clip (``bench_pipeline.synthetic_clip``, the demo's tiny_fpn
with random weights forced to 5 instances per frame, CSV on), each

* ``threads=auto`` — thingmask's plan (:mod:`thingmask.threads`), refitted to the load;
* ``every core`` — training as before the setting: ``threads=<cores>``, torch with one thread
  per core whatever the load; video: ``threads=<cores + 1>``, one torch thread more than there
  are cores (the video plan of ``auto`` already gives inference every core on 2-3 cores);

and each ``idle`` (whatever else the machine runs) and ``busy`` (``--busy`` extra processes,
each a Python busy loop, started before and stopped after the row). The load average before each
row is printed: on a shared machine "idle" is not idle. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_pipeline import synthetic_clip  # noqa: E402

from thingmask.config import Config  # noqa: E402
from thingmask.datasets.synthetic import generate_dataset  # noqa: E402
from thingmask.engines import torchvision_engine as tv  # noqa: E402
from thingmask.engines.base import TrainHook  # noqa: E402
from thingmask.jobs.job import process_video  # noqa: E402
from thingmask.threads import machine_cores  # noqa: E402


class StepTimes(TrainHook):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def after_step(self, iteration: int, losses: dict[str, float]) -> None:
        self.stamps.append(time.perf_counter())


def train_s_per_step(root: Path, dataset: Any, threads: int | str, steps: int) -> float:
    config = Config(
        output_dir=str(root / "runs"),
        device="cpu",
        dataset_dir=str(dataset.root),
        generate_synthetic=False,
        backbone="tiny_fpn",
        optimizer="adamw",
        learning_rate=0.002,
        iterations=steps + 2,
        batch_size=4,
        image_size=160,
        max_image_size=256,
        checkpoint_period=10_000,
        resume=False,
        augmentations=["flip_horizontal", "brightness", "contrast", "saturation"],
        threads=threads,
    )
    hook = StepTimes()
    tv.Trainer(config, dataset, config.new_run_dir(), hooks=[hook]).train()
    times = hook.stamps[2:]  # after two warm-up steps
    return (times[-1] - hook.stamps[1]) / max(1, len(times))


def video_fps(root: Path, clip: Path, threads: int | str, n: int) -> float:
    model = tv.build_model("tiny_fpn", 2, 160, 256)
    predictor = tv.TorchvisionPredictor(model, ["", "cat", "bird"], torch.device("cpu"), 0.0)
    heads = predictor.model.roi_heads
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 0.0, 1.0, 5
    predictor.score_threshold = 0.0
    config = Config(
        device="cpu",
        display_things=["cat", "bird"],
        score_threshold=0.0,
        keep_audio=False,
        one_label_per_animal=False,
        threads=threads,
    )
    t0 = time.perf_counter()
    out = root / f"out-{threads}.mp4"
    result = process_video(clip, out, predictor, config, progress=False, force=True)
    return result.frames_written / (time.perf_counter() - t0)


def busy_loops(n: int) -> list[subprocess.Popen[bytes]]:
    code = "import time\nwhile True:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    time.sleep(1.0)
    return procs


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    p.add_argument("--frames", type=int, default=48, help="frames of the synthetic clip")
    p.add_argument("--size", default="720p", choices=("720p", "1080p"))
    p.add_argument("--busy", type=int, default=1, help="competing busy processes")
    p.add_argument("--only", choices=("train", "video"), default=None)
    args = p.parse_args()
    cores = machine_cores()
    print(f"{cores} cores, torch {torch.__version__}, busy rows: {args.busy} busy loop(s)")
    modes: list[tuple[str, dict[str, int | str]]] = [
        ("threads=auto", {"train": "auto", "video": "auto"}),
        ("every core", {"train": cores, "video": cores + 1}),
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dataset = generate_dataset(tmp / "data", n_train=24, n_val=4, image_size=160, seed=0)
        clip = synthetic_clip(tmp / "clip.mp4", args.size, args.frames)
        for load in ("idle", "busy"):
            for label, setting in modes:
                procs = busy_loops(args.busy) if load == "busy" else []
                try:
                    avg = os.getloadavg()[0]
                    parts = []
                    if args.only in (None, "train"):
                        s = train_s_per_step(tmp, dataset, setting["train"], args.steps)
                        parts.append(f"train {s:6.3f} s/step")
                    if args.only in (None, "video"):
                        fps = video_fps(tmp, clip, setting["video"], args.frames)
                        parts.append(f"video {fps:6.2f} fps")
                finally:
                    for proc in procs:
                        proc.kill()
                        proc.wait()
                print(f"  {load:5s} {label:13s} {'   '.join(parts)}   (load avg {avg:.2f})")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
