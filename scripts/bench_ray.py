"""Benchmark the Ray video batch: videos per hour, sequential vs 1 and 2 Ray workers.

    python scripts/bench_ray.py                 # 4 demo-sized clips (160 px, 48 frames)
    python scripts/bench_ray.py --videos 2 --frames 12   # a quick look
    python scripts/bench_ray.py --gpu           # on a GPU machine: 1 vs 2 actors on one GPU

The model is the demo's architecture (tiny_fpn, 160 px) trained for a few steps: its speed, not
its accuracy, is measured; every wall time includes loading it. Each Ray figure includes starting
the workers and loading the model in each (what a user waits for), not starting Ray itself
(printed apart). ``--gpu`` also samples ``nvidia-smi`` while the batch runs and prints the mean
GPU utilisation.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import ray  # noqa: E402
import torch  # noqa: E402

from thingmask.config import Config  # noqa: E402
from thingmask.datasets.synthetic import generate_dataset, render_video  # noqa: E402
from thingmask.distributed.ray_batch import process_many_ray  # noqa: E402
from thingmask.engines import get_engine  # noqa: E402
from thingmask.jobs.job import process_many  # noqa: E402
from thingmask.pipeline import load_predictor  # noqa: E402
from thingmask.video import write_video  # noqa: E402


def train_model(root: Path, device: str) -> tuple[Config, Path]:
    dataset = generate_dataset(root / "data", n_train=8, n_val=3, image_size=160, seed=0)
    config = Config(
        output_dir=str(root / "outputs"),
        dataset_dir=str(dataset.root),
        generate_synthetic=False,
        device=device,
        backbone="tiny_fpn",
        iterations=20,
        batch_size=2,
        image_size=160,
        max_image_size=256,
        checkpoint_period=20,
        resume=False,
        score_threshold=0.3,
        display_things=["cat", "bird"],
    )
    run_dir = config.new_run_dir()
    get_engine(config.engine).train(config, dataset, run_dir)
    return config, run_dir


class GpuSampler:
    """Mean ``utilization.gpu`` (%) of GPU 0 from nvidia-smi, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = "--query-gpu=utilization.gpu"
        cmd = ["nvidia-smi", query, "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            if out.strip():
                self.samples.append(float(out.split()[0]))
            time.sleep(0.2)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--gpu", action="store_true", help="GPU actors: 1 vs 2 on one GPU")
    args = parser.parse_args()
    device = "cuda" if args.gpu else "cpu"
    root = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    config, run_dir = train_model(root, device)
    clips = root / "clips"
    clips.mkdir()
    for k in range(args.videos):
        frames, _ = render_video(args.frames, 160, seed=k)
        write_video(clips / f"clip{k}.mp4", frames, 12)
    total = args.videos * args.frames
    print(f"{args.videos} videos x {args.frames} frames, 160x160, tiny_fpn, device {device}")

    rows: list[tuple[str, float, str]] = []
    if not args.gpu:  # as one CPU worker has: torch threads spin-wait badly on shared cores
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    predictor = load_predictor(config, run_dir)
    process_many(clips, root / "seq", predictor, config, progress=False)
    rows.append(("sequential process_many (1 torch thread on CPU)", time.perf_counter() - t0, ""))

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="WARNING")
    print(f"Ray start: {time.perf_counter() - t0:.1f} s; cluster {ray.cluster_resources()}")
    if args.gpu:
        runs = [("1 actor on the GPU", 1, 1.0, 1.0), ("2 actors sharing the GPU", 2, 0.5, 1.0)]
    else:
        runs = [
            ("1 Ray worker, 1 CPU", 1, 0.0, 1.0),
            ("1 Ray worker, 2 CPUs (2 threads)", 1, 0.0, 2.0),
            ("2 Ray workers, 1 CPU each", 2, 0.0, 1.0),
        ]
    for k, (name, actors, gpus, cpus) in enumerate(runs):
        sampler = GpuSampler()
        t0 = time.perf_counter()
        with sampler if args.gpu else contextlib.nullcontext():
            process_many_ray(
                clips,
                root / f"ray{k}",
                config,
                run_dir,
                actors=actors,
                gpus_per_actor=gpus,
                cpus_per_actor=cpus,
                progress=False,
            )
        wall = time.perf_counter() - t0
        rows.append((name, wall, f"GPU busy {sampler.mean:.0f}%" if args.gpu else ""))
    ray.shutdown()

    print(f"\n{'run':<48} {'wall s':>7} {'videos/h':>9} {'frames/s':>9}")
    for name, wall, note in rows:
        print(f"{name:<48} {wall:7.1f} {args.videos / wall * 3600:9.0f} {total / wall:9.1f} {note}")


if __name__ == "__main__":
    main()
