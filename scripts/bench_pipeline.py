"""Benchmark the video stage side by side: one video, one model, every way of running it.

    python scripts/bench_pipeline.py                              # CUDA if present, 1080p clip
    python scripts/bench_pipeline.py --device cpu --size 720p --run outputs/demo-20261130-1200
    python scripts/bench_pipeline.py --video clip.mp4 --instances 5 --json bench.json

Rows (frames per second, end to end unless said otherwise):

==================  =========================================================================
model_b1            the model alone, batch 1, frames already tensors on the device
model_bN            the same, ``--batch`` frames per forward
plain_loop          cv2 read → the same predictor → numpy composite → cv2 write (mp4v)
detectron2_loop     detectron2's ``demo.py`` loop (DefaultPredictor + VideoVisualizer), needs
                    detectron2 and ``--model r50`` (a detectron2 R50-FPN with random weights)
serial_loop         thingmask's own loop in series (reader → predictor → keep →
                    get_masked_image → writer): what process_video did before the pipeline
thingmask           ``process_video``: the pipeline, H.264 MP4, CSV on
thingmask_webm      ``process_video``, transparent canvas, VP9 WebM with alpha
train_s_per_iter    seconds per training step of the engine's ``Trainer`` (R50-FPN, 800 px,
                    batch 4, synthetic data; ``scripts/bench_train.py``), float32; on CUDA
                    also ``train_s_per_iter_amp`` (mixed precision); images/s printed beside
==================  =========================================================================

Models: ``--run RUN_DIR`` (a trained torchvision run), or random weights with ``--model r50``
(torchvision's Mask R-CNN R50-FPN, the default on CUDA) or ``--model tiny`` (the demo's
tiny_fpn, the default on CPU). ``--instances N`` forces N instances per frame (score threshold
0, no NMS, N detections per image, every class displayed) so every row does the same work.
Peak host memory (VmHWM, reset before each row) and peak GPU memory are printed per row.
``--json PATH`` writes ``{"device", "fps": {model_b1, model_bN, plain_loop, detectron2_loop,
thingmask, thingmask_webm}, "train_s_per_iter", "train_images_per_s"}`` (plus
``"train_s_per_iter_amp"``, ``"train_images_per_s_amp"`` on CUDA); rows that could not run are
absent (the printout says why). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_train import train_rows  # noqa: E402

from thingmask.config import Config  # noqa: E402
from thingmask.cutout.composite import Canvas, get_masked_image  # noqa: E402
from thingmask.detections import keep  # noqa: E402
from thingmask.engines import torchvision_engine as tv  # noqa: E402
from thingmask.jobs.job import process_video  # noqa: E402
from thingmask.video import VideoWriter, open_video, write_video  # noqa: E402

SIZES = {"1080p": (1080, 1920), "720p": (720, 1280)}
CLASSES = ("cat", "bird")


# -- inputs --------------------------------------------------------------------------------------
def synthetic_clip(path: Path, size: str, frames: int) -> Path:
    """A textured background with moving blobs: realistic work for the decoder and encoders."""
    h, w = SIZES[size]
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.dstack([x * 255 // w, y * 255 // h, np.full_like(x, 100)]).astype(np.int16)
    noise = [rng.integers(-25, 25, (h, w, 3)).astype(np.int16) for _ in range(4)]

    def frame(t: int) -> np.ndarray:
        img = np.clip(base + noise[t % 4], 0, 255).astype(np.uint8)
        for k in range(5):
            cx = int((0.1 + 0.18 * k) * w + 6 * t) % w
            cy = int((0.3 + 0.1 * k) * h)
            cv2.ellipse(img, (cx, cy), (h // 10, h // 16), 0, 0, 360, (40 * k, 200, 90), -1)
        return img

    return write_video(path, (frame(t) for t in range(frames)), 30)


def make_predictor(args: argparse.Namespace, device: torch.device) -> Any:
    """A torchvision predictor forced to ``args.instances`` instances per frame."""
    if args.run:
        config = Config(device=device.type, display_things=["cat"])
        predictor = tv.load_predictor(config, Path(args.run), score_threshold=0.0)
    elif args.model == "r50":
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        model = maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=len(CLASSES) + 1
        )
        predictor = tv.TorchvisionPredictor(model, ["", *CLASSES], device, 0.0)
    else:
        model = tv.build_model("tiny_fpn", len(CLASSES), 160, 256)
        predictor = tv.TorchvisionPredictor(model, ["", *CLASSES], device, 0.0)
    heads = predictor.model.roi_heads
    heads.score_thresh, heads.nms_thresh = 0.0, 1.0  # random weights: keep every box ...
    heads.detections_per_img = args.instances  # ... and exactly N of them
    predictor.score_threshold = 0.0
    return predictor


# -- measuring -----------------------------------------------------------------------------------
def _vm(key: str) -> float:
    """A /proc/self/status memory figure in MB (0 where /proc is missing)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


_START = {"rss": 0.0}


def reset_peaks(device: torch.device) -> None:
    with contextlib.suppress(OSError):  # Linux: "5" resets this process's VmHWM (peak RSS)
        Path("/proc/self/clear_refs").write_text("5")
    _START["rss"] = _vm("VmRSS")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device: torch.device) -> str:
    """Peak host memory of the row (and its growth over the row's start), peak GPU memory."""
    peak = _vm("VmHWM")
    text = f"peak host {peak:.0f} MB (+{peak - _START['rss']:.0f})"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB"
    return text


def timed(device: torch.device, fn: Callable[[], int]) -> float:
    """Frames per second of ``fn`` (which returns how many frames it did)."""
    reset_peaks(device)
    t0 = time.perf_counter()
    n = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


# -- rows ----------------------------------------------------------------------------------------
def model_only(predictor: Any, images: list[np.ndarray], batch: int) -> Callable[[], int]:
    """The model's forward (incl. mask paste) on frames already on the device."""
    device = predictor.device
    if callable(getattr(predictor, "predict_tensors", None)):
        tensors = [torch.from_numpy(im).to(device) for im in images]

        def call(chunk: list[Any]) -> Any:
            return predictor.predict_tensors(chunk)
    else:  # before seam A: torchvision's model on RGB float tensors, as the predictor feeds it
        tensors = [
            torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).permute(2, 0, 1).to(device)
            / 255.0
            for im in images
        ]

        def call(chunk: list[Any]) -> Any:
            return predictor.model(chunk)

    def run() -> int:
        with torch.inference_mode():
            for i in range(0, len(tensors), batch):
                call(tensors[i : i + batch])
                if device.type == "cuda":
                    torch.cuda.synchronize()
        return len(tensors)

    with torch.inference_mode():  # warm-up: allocator, cuDNN / oneDNN kernels for these shapes
        for _ in range(3):
            call(tensors[:batch])
    return run


def cv2_loop(video: Path, out: Path, frame_out: Callable[[np.ndarray], np.ndarray]) -> int:
    """The usual loop of OpenCV tutorials: cv2 read → ``frame_out(frame)`` → cv2 ``mp4v`` write."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30
    writer, n = None, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        result = frame_out(frame)
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(result)
        n += 1
    cap.release()
    if writer is not None:
        writer.release()
    return n


def plain_loop(video: Path, out: Path, predictor: Any) -> Callable[[], int]:
    def cut(frame: np.ndarray) -> np.ndarray:
        dets = predictor(frame)
        union = dets.masks.any(axis=0) if len(dets) else np.zeros(frame.shape[:2], bool)
        return np.where(union[..., None], frame, 0).astype(np.uint8)

    return lambda: cv2_loop(video, out, cut)


def serial_loop(video: Path, out: Path, predictor: Any, config: Config) -> Callable[[], int]:
    def run() -> int:
        canvas = Canvas.from_config(config)
        with open_video(video) as reader:
            info = reader.info
            with VideoWriter(out, info.width, info.height, info.rate) as writer:
                for frame in reader.frames():
                    kept = keep(predictor(frame.image), config.display_things)
                    writer.write(get_masked_image(frame.image, kept, canvas), frame.time)
            return reader.frames_read

    return run


def thingmask_row(video: Path, out: Path, predictor: Any, config: Config) -> Callable[[], int]:
    def run() -> int:
        result = process_video(video, out, predictor, config, force=True, progress=False)
        return result.frames_written

    return run


def detectron2_loop(video: Path, out: Path, args: argparse.Namespace, device: torch.device):
    """detectron2's demo.py flow: DefaultPredictor per frame, VideoVisualizer, cv2 write."""
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog
    from detectron2.engine import DefaultPredictor
    from detectron2.model_zoo import get_config_file
    from detectron2.utils.video_visualizer import VideoVisualizer

    cfg = get_cfg()
    cfg.merge_from_file(get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.WEIGHTS = ""  # random weights, like the other rows
    cfg.MODEL.DEVICE = device.type
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(CLASSES)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 1.0
    cfg.TEST.DETECTIONS_PER_IMAGE = args.instances
    predictor = DefaultPredictor(cfg)
    meta = MetadataCatalog.get("bench_pipeline").set(thing_classes=list(CLASSES))

    def run() -> int:
        visualizer = VideoVisualizer(meta)

        def draw(frame: np.ndarray) -> np.ndarray:
            instances = predictor(frame)["instances"].to("cpu")
            vis = visualizer.draw_instance_predictions(frame[:, :, ::-1], instances)
            return vis.get_image()[:, :, ::-1]

        return cv2_loop(video, out, draw)

    return run


# -- main ----------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--video", default=None, help="a video file (default: a synthetic clip)")
    p.add_argument("--size", default="1080p", choices=sorted(SIZES), help="synthetic clip size")
    p.add_argument("--frames", type=int, default=None, help="synthetic clip length")
    p.add_argument("--instances", type=int, default=5, help="instances forced per frame")
    p.add_argument("--batch", type=int, default=4, help="frames per forward (N; the pipeline's)")
    p.add_argument("--run", default=None, help="a trained torchvision run folder")
    p.add_argument("--model", default=None, choices=("r50", "tiny"), help="random-weight model")
    p.add_argument("--train-iters", type=int, default=None, help="timed training iterations")
    p.add_argument("--train-workers", type=int, default=None, help="training loader workers")
    p.add_argument("--skip-train", action="store_true", help="leave out the training row")
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if args.device == "auto" and cuda else args.device)
    if args.device == "auto" and not cuda:
        device = torch.device("cpu")
    if device.type == "cuda" and not cuda:
        p.error("--device cuda, but torch sees no CUDA device")
    args.model = args.model or ("r50" if device.type == "cuda" else "tiny")
    frames = args.frames or (240 if device.type == "cuda" else 48)
    fps: dict[str, float] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        video = (
            Path(args.video) if args.video else synthetic_clip(tmp / "in.mp4", args.size, frames)
        )
        with open_video(video) as reader:
            info = reader.info
            images = [
                f.image for _, f in zip(range(min(frames, 60)), reader.frames(), strict=False)
            ]
        model = args.run or args.model
        print(
            f"device {device}, video {video.name} {info.width}x{info.height} "
            f"{info.frames} frames, model {model}, {args.instances} instances/frame, "
            f"batch {args.batch}, torch {torch.__version__}, {os.cpu_count()} CPUs"
        )
        predictor = make_predictor(args, device)
        base = Config(
            device=device.type,
            display_things=list(predictor.class_names),
            inference_batch=args.batch,
            score_threshold=0.0,
            keep_audio=False,
        )
        rows: list[tuple[str, Callable[[], Callable[[], int]]]] = [
            ("model_b1", lambda: model_only(predictor, images, 1)),
            ("model_bN", lambda: model_only(predictor, images, args.batch)),
            ("plain_loop", lambda: plain_loop(video, tmp / "plain.mp4", predictor)),
            ("detectron2_loop", lambda: detectron2_loop(video, tmp / "d2.mp4", args, device)),
            ("serial_loop", lambda: serial_loop(video, tmp / "serial.mp4", predictor, base)),
            ("thingmask", lambda: thingmask_row(video, tmp / "tm.mp4", predictor, base)),
            (
                "thingmask_webm",
                lambda: thingmask_row(
                    video,
                    tmp / "tm.webm",
                    predictor,
                    base.replace(canvas="transparent", video_format="webm", export_csv=False),
                ),
            ),
        ]
        for name, build in rows:
            if name == "detectron2_loop" and importlib.util.find_spec("detectron2") is None:
                notes[name] = "skipped: detectron2 is not installed"
            elif name == "detectron2_loop" and (args.run or args.model != "r50"):
                notes[name] = "skipped: needs --model r50 (detectron2 has no twin of this model)"
            else:
                try:
                    fps[name] = timed(device, build())
                    notes[name] = peaks(device)
                except Exception as exc:  # a row that cannot run is reported, not fatal
                    notes[name] = f"failed: {type(exc).__name__}: {exc}"
            shown = f"{fps[name]:8.2f} fps" if name in fps else " " * 12
            print(f"  {name:16s}{shown}   {notes[name]}", flush=True)
    train: dict[str, float] = {}
    if args.skip_train:
        print("  train_s_per_iter  skipped (--skip-train)")
    else:
        reset_peaks(device)
        try:
            with tempfile.TemporaryDirectory() as tmp_name:
                train = train_rows(device, Path(tmp_name), args.train_iters, args.train_workers)
            print(f"  training: {peaks(device)}")
        except Exception as exc:  # reported like the other rows; the figures so far still count
            print(f"  train_s_per_iter  failed: {type(exc).__name__}: {exc}")
    report_ratios(fps, device)
    if args.json:
        keys = (
            "model_b1",
            "model_bN",
            "plain_loop",
            "detectron2_loop",
            "thingmask",
            "thingmask_webm",
        )
        data: dict[str, Any] = {
            "device": str(device),
            "fps": {k: round(fps[k], 3) for k in keys if k in fps},
        }
        data.update({k: round(v, 4) for k, v in train.items()})
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def report_ratios(fps: dict[str, float], device: torch.device) -> None:
    def ratio(a: str, b: str, target: float | None = None) -> None:
        if a in fps and b in fps:
            r = fps[a] / fps[b]
            goal = (
                ""
                if target is None
                else f"  (target >= {target}: {'met' if r >= target else 'NOT met'})"
            )
            print(f"  {a} / {b}: {r:.2f}{goal}")

    print("ratios:")
    ratio("thingmask", "plain_loop", 1.15 if device.type == "cpu" else None)
    ratio("thingmask", "serial_loop", 1.0)
    ratio("thingmask", "model_bN", 0.85 if device.type == "cuda" else None)
    ratio("thingmask", "model_b1")
    ratio("thingmask", "detectron2_loop", 5.0 if device.type == "cuda" else None)
    ratio("thingmask_webm", "thingmask")


if __name__ == "__main__":
    sys.exit(main())
