"""Benchmark the video stage: compositing per canvas mode, encoding speed, streaming memory.

    python scripts/bench_video.py            # full: 1080p compositing + encode, RSS 1x vs 10x
    python scripts/bench_video.py --quick    # smaller numbers, a few seconds

Prints three tables:
1. milliseconds per 1080p frame for ``get_masked_image`` in every canvas mode (3 animals);
2. frames per second of the writer (1080p cut-out frames) for mp4 / webm / mov;
3. peak resident memory (VmHWM) of ``process_video`` on a video and on one 10x longer (each in
   a fresh subprocess; streaming means the ratio stays near 1.0, the target is <= 1.1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from thingmask.cutout.composite import CANVAS_MODES, Canvas, get_masked_image  # noqa: E402
from thingmask.detections import Detections  # noqa: E402
from thingmask.video import VideoWriter, write_video  # noqa: E402


def synthetic_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured BGR frame (noise on a gradient): realistic work for blur and the encoders."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.dstack([x * 255 // w, y * 255 // h, np.full_like(x, 100)]).astype(np.int16)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def three_animals(h: int, w: int, t: int = 0) -> Detections:
    masks = np.zeros((3, h, w), bool)
    yy, xx = np.ogrid[0:h, 0:w]
    boxes = []
    for k in range(3):
        cx, cy, r = (0.25 + 0.25 * k) * w + 3 * t, 0.5 * h, 0.12 * h
        masks[k] = (xx - cx) ** 2 / (1.6 * r) ** 2 + (yy - cy) ** 2 / r**2 <= 1
        boxes.append([cx - 1.6 * r, cy - r, cx + 1.6 * r, cy + r])
    return Detections(
        masks=masks, boxes=boxes, class_names=["cat", "cat", "bird"], scores=[0.9, 0.8, 0.7]
    )


def bench_composite(h: int, w: int, repeats: int) -> None:
    frame, dets = synthetic_frame(h, w), three_animals(h, w)
    picture = synthetic_frame(480, 640, seed=1)
    print(f"\ncompositing, {w}x{h}, 3 animals, ms per frame (median of {repeats}):")
    for mode in CANVAS_MODES:
        canvas = Canvas(mode, color_rgb=(0, 255, 0), image=picture if mode == "image" else None)
        get_masked_image(frame, dets, canvas)  # warm-up (caches, allocator)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            get_masked_image(frame, dets, canvas)
            times.append(time.perf_counter() - t0)
        print(f"  {mode:12s} {1000 * float(np.median(times)):7.2f} ms")


def bench_encode(h: int, w: int, frames: int, tmp: Path) -> None:
    """Writer speed on realistic input: cut-out frames (black canvas / transparent)."""
    sources = [synthetic_frame(h, w, seed=i) for i in range(4)]
    cutouts = {
        alpha: [
            get_masked_image(
                sources[i % 4], three_animals(h, w, i), Canvas("transparent" if alpha else "black")
            )
            for i in range(8)
        ]
        for alpha in (False, True)
    }
    print(f"\nencoding cut-out frames, {w}x{h}:")
    for fmt, alpha in (("mp4", False), ("webm", True), ("mov", True)):
        n = frames if fmt == "mp4" else max(4, frames // 3)
        t0 = time.perf_counter()
        with VideoWriter(tmp / f"enc.{fmt}", w, h, 30, fmt=fmt, alpha=alpha) as writer:
            for i in range(n):
                writer.write(cutouts[alpha][i % 8])
        dt = time.perf_counter() - t0
        size = (tmp / f"enc.{fmt}").stat().st_size / 1e6
        print(
            f"  {fmt:5s} {writer.describe()['codec']:36s} {n / dt:7.1f} fps  ({n} frames, "
            f"{size:.1f} MB)"
        )


CHILD = """
import json, sys
sys.path.insert(0, {src!r})
sys.path.insert(0, {scripts!r})
from bench_video import three_animals
from thingmask.config import Config
from thingmask.jobs.job import process_video

class Predictor:
    class_names = ("cat", "bird")
    def __init__(self):
        self.t = 0
    def __call__(self, image):
        self.t += 1
        return three_animals(image.shape[0], image.shape[1], self.t % 20)

def vm(key):  # /proc, not getrusage: ru_maxrss is inherited from the parent across exec
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

baseline = vm("VmRSS")  # after imports
result = process_video({video!r}, {out!r}, Predictor(),
                       Config(display_things=["cat", "bird"], export_csv=True, tracking=True),
                       progress=False)
print(json.dumps({{"rss_mb": vm("VmHWM"),
                   "baseline_mb": baseline, "frames": result.frames_written,
                   "fps": result.fps}}))
"""


def bench_memory(h: int, w: int, frames: int, tmp: Path) -> None:
    print(f"\nstreaming memory, process_video at {w}x{h} (fresh process each):")
    rows = []
    for n in (frames, 10 * frames):
        video = write_video(
            tmp / f"in_{n}.mp4", (synthetic_frame(h, w, seed=i % 4) for i in range(n)), 30
        )
        code = CHILD.format(
            src=str(ROOT / "src"),
            scripts=str(ROOT / "scripts"),
            video=str(video),
            out=str(tmp / f"out_{n}.mp4"),
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(stats)
        growth = stats["rss_mb"] - stats["baseline_mb"]
        print(
            f"  {n:5d} frames: peak RSS {stats['rss_mb']:7.1f} MB (imports "
            f"{stats['baseline_mb']:.1f} MB + job {growth:.1f} MB), {stats['fps']:6.1f} fps "
            "(fake predictor)"
        )
    ratio = rows[1]["rss_mb"] / rows[0]["rss_mb"]
    job = [max(r["rss_mb"] - r["baseline_mb"], 1e-3) for r in rows]
    print(
        f"  peak RSS ratio 10x / 1x: {ratio:.3f} (target <= 1.1); job-only growth ratio "
        f"{job[1] / job[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args()
    h, w = (1080, 1920)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bench_composite(h, w, repeats=5 if args.quick else 30)
        bench_encode(h, w, frames=6 if args.quick else 60, tmp=tmp)
        if args.quick:
            bench_memory(120, 160, 10, tmp)
        else:
            bench_memory(720, 1280, 20, tmp)


if __name__ == "__main__":
    main()
