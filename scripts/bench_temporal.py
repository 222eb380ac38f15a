"""CPU time per frame of the temporal stage at 1080p: tracking, smoothing, edge refinement.

    python scripts/bench_temporal.py [--frames 60] [--animals 4] [--size 1920x1080]

Synthetic input: a textured frame and ``--animals`` soft elliptic masks (each about a fifth
of the frame high, the size Mask R-CNN pastes from a 28 x 28 grid: edges blurred over one
grid cell), moving a few pixels per frame, one of them missing every 10th frame. Prints
milliseconds per frame (median and 90th percentile) for each part and for smoothing plus
refinement together (the budget of issue 12: <= 3 ms per 1080p frame on CPU). Timings on
shared cores are noisy; run on an idle machine, single-threaded (OMP_NUM_THREADS=1 and
cv2.setNumThreads(1) unless --threads is given).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from thingmask.cutout.refine import EdgeRefiner
from thingmask.cutout.smoothing import TemporalSmoother
from thingmask.cutout.tracking import Tracker
from thingmask.cutout.windows import to_detections
from thingmask.detections import Detections


def make_frames(n: int, width: int, height: int, animals: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), np.uint8), (0, 0), 3)
    ah = height // 5
    starts = [
        (int(rng.integers(ah, width - 3 * ah)), int(rng.integers(ah, height - 2 * ah)))
        for _ in range(animals)
    ]
    frames, dets = [], []
    for t in range(n):
        frame = base.copy()
        masks, probs, boxes = [], [], []
        for a, (x, y) in enumerate(starts):
            if a == 0 and t % 10 == 5:
                continue  # a one-frame dropout to fill
            cx, cy = x + 3 * t, y + (t % 7)
            soft = np.zeros((height, width), np.float32)
            cv2.ellipse(soft, (cx, cy), (int(0.8 * ah), ah // 2), 0, 0, 360, 1.0, -1)
            frame[soft > 0] = (40 + 50 * a, 160, 200 - 40 * a)
            cell = max(3, (2 * ah) // 28)
            x0, y0 = cx - int(0.8 * ah) - 2 * cell, cy - ah // 2 - 2 * cell
            x1, y1 = cx + int(0.8 * ah) + 2 * cell, cy + ah // 2 + 2 * cell
            soft[y0:y1, x0:x1] = cv2.GaussianBlur(soft[y0:y1, x0:x1], (0, 0), cell)
            p = (soft * 255 + 0.5).astype(np.uint8)
            probs.append(p)
            masks.append(p > 127)
            boxes.append([cx - 0.8 * ah, cy - ah / 2, cx + 0.8 * ah, cy + ah / 2])
        frames.append(frame)
        dets.append(
            Detections(
                np.stack(masks),
                np.array(boxes, np.float32),
                ["cat"] * len(masks),
                np.full(len(masks), 0.9, np.float32),
                probs=np.stack(probs),
            )
        )
    return frames, dets


def ms(values: list[float]) -> str:
    a = np.array(values) * 1000
    return f"median {np.median(a):6.2f} ms   p90 {np.percentile(a, 90):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--animals", type=int, default=4)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    frames, dets = make_frames(args.frames, width, height, args.animals)
    tracker, smoother, refiner = Tracker(), TemporalSmoother(1), EdgeRefiner()
    t_track, t_smooth, t_refine, t_paste = [], [], [], []
    held: dict[int, np.ndarray] = {}
    for i, (frame, d) in enumerate(zip(frames, dets, strict=True)):
        t0 = time.thread_time()
        tracked = tracker.update(d)
        t1 = time.thread_time()
        ready = smoother.push_windows(i, tracked)  # what TemporalPipeline does
        t2 = time.thread_time()
        held[i] = frame
        refined = [(j, refiner.refine_windows(held.pop(j), ws)) for j, ws in ready]
        t3 = time.thread_time()
        for _, ws in refined:
            to_detections(ws, height, width, True)
        t4 = time.thread_time()
        t_track.append(t1 - t0)
        if ready:  # the first frame releases nothing yet
            t_smooth.append(t2 - t1)
            t_refine.append(t3 - t2)
            t_paste.append(t4 - t3)
    both = [a + b + c for a, b, c in zip(t_smooth, t_refine, t_paste, strict=True)]
    print(
        f"{width}x{height}, {args.animals} animals, {args.frames} frames, {args.threads} thread(s)"
    )
    print(f"tracking              {ms(t_track)}")
    print(f"smoothing             {ms(t_smooth)}")
    print(f"refinement            {ms(t_refine)}")
    print(f"paste to Detections   {ms(t_paste)}")
    print(f"smoothing+refinement  {ms(both)}  (all three above)")


if __name__ == "__main__":
    main()
