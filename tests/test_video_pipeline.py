"""The streaming pipeline (thingmask.jobs.cutout over thingmask.jobs.stream): equal to the
serial loop frame for frame, bounded, ordered, timestamps kept, failures named and clean, the
temporal-stage protocol, and the GPU (tensor) path, run on the CPU here and on CUDA when present.

Predictors are stand-ins (colour thresholds: red = cat, blue = dog) unless said otherwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from thingmask.config import CANVAS_MODES, Config
from thingmask.cutout.composite import Canvas, get_masked_image
from thingmask.cutout.temporal import TemporalPipeline, make_stage
from thingmask.detections import Detections, keep
from thingmask.jobs.cutout import Needs, cutout_stream
from thingmask.jobs.exports import CsvExporter, instance_rows
from thingmask.jobs.job import process_video
from thingmask.jobs.outputs import output_paths
from thingmask.jobs.stream import StageError, Stream
from thingmask.video import Frame, VideoError, VideoReader, open_video, partial_path, write_video

H, W = 48, 64
MEADOW = (60, 140, 60)  # BGR
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ],
)


def scene(t: int) -> np.ndarray:
    img = np.full((H, W, 3), MEADOW, np.uint8)
    img[20:30, :] = (90 + 5 * (t % 7), 120, 200)  # a band the blur and grey canvases show
    cv2.rectangle(img, (2 + t % 40, 8), (13 + t % 40, 19), (0, 0, 255), -1)  # red cat
    cv2.rectangle(img, (44, 28), (55, 39), (255, 0, 0), -1)  # blue dog
    if t % 5 == 3:
        cv2.rectangle(img, (20, 36), (27, 43), (0, 0, 250), -1)  # a second cat now and then
    return img


def frames(n: int, times: list[float] | None = None) -> list[Frame]:
    times = times if times is not None else [i / 25 for i in range(n)]
    return [Frame(i, scene(i), t, round(t * 90000)) for i, t in enumerate(times)]


def colour_masks(image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    b, g, r = (image[..., k].astype(int) for k in range(3))
    found = [("cat", (r > 150) & (g < 100) & (b < 100)), ("dog", (b > 150) & (r < 100) & (g < 100))]
    return [(name, m) for name, m in found if m.sum() > 4]


def colour_detections(image: np.ndarray) -> Detections:
    found = colour_masks(image)
    if not found:
        return Detections.empty(*image.shape[:2])
    boxes = []
    for _, m in found:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return Detections(
        masks=np.stack([m for _, m in found]),
        boxes=boxes,
        class_names=[n for n, _ in found],
        scores=[0.9 - 0.1 * k for k in range(len(found))],
    )


@dataclass(frozen=True)
class Instances:
    """Seam A's InstanceTensors (boxes, scores, class_index, mask_probs) for the stand-ins."""

    boxes: torch.Tensor
    scores: torch.Tensor
    class_index: torch.Tensor
    mask_probs: torch.Tensor


class ColourPredictor:
    """A stand-in for an engine predictor with all three calls of seam A."""

    class_names = ("cat", "dog")
    mask_threshold = 0.5

    def __init__(self, device: str = "cpu", fail_at: int | None = None) -> None:
        self.device = torch.device(device)
        self.soft_masks = False
        self.fail_at = fail_at
        self.seen = 0
        self.batches: list[int] = []

    def _count(self, n: int) -> None:
        self.batches.append(n)
        self.seen += n
        if self.fail_at is not None and self.seen > self.fail_at:
            raise RuntimeError("out of memory (stand-in)")

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.predict_batch([image_bgr])[0]

    def predict_batch(self, images_bgr) -> list[Detections]:
        self._count(len(images_bgr))
        out = []
        for image in images_bgr:
            d = colour_detections(image)
            if self.soft_masks:  # soft masks: 0.8 inside, 0 outside
                d = replace(d, probs=(d.masks * 204).astype(np.uint8))
            out.append(d)
        return out

    def predict_tensors(self, images) -> list[Instances]:
        self._count(len(images))
        out = []
        for image in images:
            d = colour_detections(image.cpu().numpy())
            index = [self.class_names.index(n) for n in d.class_names]
            out.append(
                Instances(
                    boxes=torch.from_numpy(d.boxes).to(self.device),
                    scores=torch.from_numpy(d.scores).to(self.device),
                    class_index=torch.tensor(index, dtype=torch.int64, device=self.device),
                    mask_probs=torch.from_numpy(d.masks.astype(np.float32) * 0.8).to(self.device),
                )
            )
        return out


def cfg(**kw) -> Config:
    return Config(**{"display_things": ["cat"], "inference_batch": 3, **kw})


def serial(source: list[Frame], predictor, config: Config, canvas: Canvas) -> list[np.ndarray]:
    """The loop in view in the notebook: predictor → keep → get_masked_image, one frame at a
    time."""
    return [get_masked_image(f.image, config.keep(predictor(f.image)), canvas) for f in source]


def run(source, predictor, config, canvas=None, **kw):
    canvas = canvas or Canvas.from_config(config)
    with cutout_stream(source, predictor, config, canvas, **kw) as cuts:
        out = list(cuts)
    return out, cuts


# -- equal to the serial path ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["black", "grey", "blur", "white", "transparent"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_pipeline_equals_serial_loop(mode: str, batch: int) -> None:
    source = frames(11)
    config = cfg(canvas=mode, video_format="webm" if mode == "transparent" else "mp4")
    canvas = Canvas.from_config(config)
    want = serial(source, ColourPredictor(), config, canvas)
    predictor = ColourPredictor()
    got, _ = run(source, predictor, config, canvas, batch=batch)
    assert [c.frame.index for c in got] == list(range(11))
    assert all(np.array_equal(c.cutout, w) for c, w in zip(got, want, strict=True))
    assert predictor.batches == [batch] * (11 // batch) + ([11 % batch] if 11 % batch else [])


def test_process_video_equals_serial_loop_with_the_trained_model(
    tmp_path, tiny_trained_run, monkeypatch
) -> None:
    """process_video hands the encoder exactly the frames of the serial loop (the real
    torchvision predictor, 50 instances per frame at score threshold 0)."""
    from thingmask.engines import torchvision_engine
    from thingmask.video.writer import VideoWriter

    config, run_dir = tiny_trained_run
    predictor = torchvision_engine.load_predictor(config, run_dir)
    src = write_video(tmp_path / "in.mp4", (scene(t) for t in range(6)), 25)
    with open_video(src) as reader:
        source = list(reader.frames())
    canvas = Canvas("grey")
    config = config.replace(canvas="grey", inference_batch=1, keep_audio=False)
    want = serial(source, predictor, config, canvas)
    fed = []
    original = VideoWriter.write

    def write(self, image, time=None):
        fed.append((image.copy(), time))
        return original(self, image, time)

    monkeypatch.setattr(VideoWriter, "write", write)
    result = process_video(src, tmp_path / "ours.mp4", predictor, config, progress=False)
    assert result.frames_written == len(fed) == 6
    assert all(np.array_equal(image, w) for (image, _), w in zip(fed, want, strict=True))
    assert [t for _, t in fed] == [f.time for f in source]


# -- bounded, ordered, timed -----------------------------------------------------------------------
class SlowList:
    """A frame source counting how far decoding ran ahead of the consumer."""

    def __init__(self, n: int) -> None:
        self.items = frames(n)

    def __iter__(self):
        yield from self.items


@pytest.mark.parametrize("delay", [0, 2])
def test_queues_bound_the_frames_in_flight(delay: int) -> None:
    """Frames decoded but not yet consumed stay under the bound (queues + batch + held), the
    same for a short and a 4x longer video: memory flat in the video's length."""
    batch, queue_size = 3, 2
    peaks = []
    for n in (20, 80):
        stage = DelayStage(delay) if delay else None
        got = []
        with cutout_stream(
            SlowList(n),
            ColourPredictor(),
            cfg(),
            Canvas("black"),
            stage=stage,
            batch=batch,
            queue_size=queue_size,
        ) as cuts:
            for cut in cuts:
                got.append(cut.frame.index)
                if len(got) % 4 == 0:  # a slow encoder now and then
                    time.sleep(0.002)
        assert got == list(range(n))
        stats = cuts.stats
        peaks.append(stats.max_in_flight)
        # 3 links of queue_size + a batch in the inference stage + 1 in hand in the cut-out
        # stage + the frames the temporal stage holds + 1 in hand at the source
        assert stats.max_in_flight <= 3 * queue_size + batch + 1 + delay + 1
        assert all(v <= queue_size for v in stats.max_queued.values())
    assert peaks[1] <= 3 * queue_size + batch + delay + 2


def test_variable_frame_rate_order_and_timestamps_kept(tmp_path: Path) -> None:
    times_ms = [0, 40, 50, 130, 300, 310, 320, 400, 1000, 1033]
    src = tmp_path / "vfr.mp4"
    with_times(src, times_ms)
    seen = []
    result = process_video(
        src,
        tmp_path / "vfr_cutout.mp4",
        ColourPredictor(),
        cfg(inference_batch=4, export_rle=True, keep_audio=False),
        on_frame=lambda i, f, d: seen.append(i),
        progress=False,
    )
    assert seen == list(range(10))
    with open_video(result.output) as r:
        times = [round(f.time * 1000) for f in r.frames()]
    assert times == times_ms
    rows = [json.loads(line) for line in Path(result.outputs["rle"]).read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(10))
    assert [round(r["time_s"] * 1000) for r in rows] == times_ms


def with_times(path: Path, times_ms: list[int]) -> Path:
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(scene(i), format="bgr24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    return path


# -- failures: named, everything stops, nothing under a final name ---------------------------------
def _failing_frames(self):
    for i, f in enumerate(VideoReader_frames(self)):
        if i == 4:
            raise VideoError(f"{self.path}: 9 of 10 frames could not be decoded (stand-in)")
        yield f


VideoReader_frames = VideoReader.frames


class Boom:
    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.at:
            raise OSError("No space left on device (stand-in)")


@pytest.mark.parametrize(
    "where", ["decode", "inference", "temporal", "encode", "export", "on_frame"]
)
def test_failing_stage_is_named_and_leaves_no_final_file(tmp_path, monkeypatch, where) -> None:
    src = write_video(tmp_path / "in.mp4", (scene(t) for t in range(12)), 25)
    dst = tmp_path / "out" / "in_cutout.mp4"
    predictor = ColourPredictor(fail_at=5 if where == "inference" else None)
    config = cfg(export_rle=True, per_instance_clips=True)
    on_frame = Boom(6) if where == "on_frame" else None
    if where == "decode":
        monkeypatch.setattr(VideoReader, "frames", _failing_frames)
    elif where == "temporal":
        monkeypatch.setattr(TemporalPipeline, "push", Boom(3))
    elif where == "encode":
        original = __import__("thingmask.video.writer", fromlist=["VideoWriter"]).VideoWriter.write
        boom = Boom(7)

        def write(self, image, time=None):
            if self.path.name == dst.name:  # the cut-out video's encoder (in its stage)
                boom()
            return original(self, image, time)

        monkeypatch.setattr("thingmask.video.writer.VideoWriter.write", write)
    elif where == "export":
        monkeypatch.setattr(CsvExporter, "add_rows", Boom(2))
    with pytest.raises(StageError) as info:
        process_video(src, dst, predictor, config, on_frame=on_frame, progress=False)
    assert info.value.stage == where
    assert where in str(info.value)
    paths = output_paths(dst, config)
    for kind in ("video", "metadata", "csv", "rle", "clips"):
        assert not paths[kind].exists(), kind
        assert not partial_path(paths[kind]).exists(), kind
    # not even hidden files, but the folder's (empty) lock file, which stays by design
    assert not [p for p in dst.parent.iterdir() if p.name not in ("in.mp4", ".thingmask.lock")]


def test_a_failure_stops_the_other_stages() -> None:
    """After the inference stage fails, decoding stops too (it does not run to the end)."""
    pulled = []

    def source():
        for f in frames(200):
            pulled.append(f.index)
            yield f

    with pytest.raises(StageError, match="inference"):
        run(source(), ColourPredictor(fail_at=6), cfg(), batch=3, queue_size=2)
    assert len(pulled) < 30


def test_stream_rejects_a_bad_queue_size() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Stream([], [], queue_size=0)


# -- the temporal stage (seam D) -------------------------------------------------------------------
class DelayStage:
    """A fake temporal stage with delay k: releases frame i once frame i + k was pushed, and
    stamps each result with its frame index as a track id (to check pairing)."""

    needs_probs = False

    def __init__(self, delay: int = 2, needs_probs: bool = False) -> None:
        self.delay = delay
        self.needs_probs = needs_probs
        self.waiting: list[tuple[int, Detections]] = []
        self.probs_seen: list[bool] = []

    def _stamp(self, index: int, dets: Detections) -> tuple[int, Detections]:
        return index, replace(dets, track_ids=np.full(len(dets), index, np.int64))

    def push(self, index, frame_bgr, dets):
        assert frame_bgr.shape == (H, W, 3)
        self.probs_seen.append(dets.probs is not None)
        self.waiting.append((index, dets))
        ready = []
        while len(self.waiting) > self.delay:
            ready.append(self._stamp(*self.waiting.pop(0)))
        return ready

    def flush(self):
        ready = [self._stamp(i, d) for i, d in self.waiting]
        self.waiting = []
        return ready


@pytest.mark.parametrize("tensors", [False, True])
def test_delay_stage_gets_every_frame_back_in_order(tensors: bool) -> None:
    source = frames(10)
    stage = DelayStage(2)
    got, _ = run(
        source,
        ColourPredictor(),
        cfg(),
        stage=stage,
        needs=Needs(detections=True, rows=True),
        tensors=tensors,
    )
    assert [c.frame.index for c in got] == list(range(10))
    for c in got:  # each frame comes back with its own detections
        assert c.detections is not None and set(c.detections.track_ids) <= {c.frame.index}
        assert c.track_ids == [c.frame.index] * c.count
    want = serial(source, ColourPredictor(), cfg(), Canvas("black"))
    assert all(np.array_equal(c.cutout, w) for c, w in zip(got, want, strict=True))


class Misbehaving(DelayStage):
    def __init__(self, how: str) -> None:
        super().__init__(delay=1)
        self.how = how

    def push(self, index, frame_bgr, dets):
        if self.how == "hoards":  # holds everything despite delay=1
            self.waiting.append((index, dets))
            return []
        ready = super().push(index, frame_bgr, dets)
        if self.how == "twice" and ready:
            return ready + ready
        return ready

    def flush(self):
        if self.how == "forgets":
            return []
        return super().flush()


@pytest.mark.parametrize("how", ["hoards", "twice", "forgets"])
def test_a_misbehaving_temporal_stage_is_named(how: str) -> None:
    with pytest.raises(StageError, match="temporal") as info:
        run(frames(8), ColourPredictor(), cfg(), stage=Misbehaving(how))
    assert info.value.stage == "temporal"


def test_soft_masks_asked_for_only_while_the_stage_needs_them() -> None:
    predictor = ColourPredictor()
    stage = DelayStage(1, needs_probs=True)
    run(frames(4), predictor, cfg(), stage=stage)
    assert stage.probs_seen == [True] * 4 and predictor.soft_masks is False

    class NoSwitch:
        class_names = ("cat",)

        def __call__(self, image):
            return Detections.empty(*image.shape[:2])

    with pytest.raises(TypeError, match="soft masks"):
        run(frames(2), NoSwitch(), cfg(), stage=DelayStage(1, needs_probs=True))


@pytest.mark.parametrize(
    "settings, delay, needs_probs",
    [
        ({}, None, None),  # every switch off: no stage (the GPU path keeps the masks)
        ({"tracking": True}, 0, False),
        ({"per_instance_clips": True}, 0, False),  # clips need track ids
        ({"temporal_smoothing": True, "smoothing_window": 2}, 2, True),
        ({"edge_refinement": True}, 0, True),
    ],
)
def test_make_stage_follows_the_settings(settings, delay, needs_probs) -> None:
    stage = make_stage(cfg(**settings), mask_threshold=0.4)
    if delay is None:
        assert stage is None
    else:
        assert (stage.delay, stage.needs_probs) == (delay, needs_probs)


def test_smoothing_stage_runs_in_the_pipeline(tmp_path: Path) -> None:
    """The real temporal stage with a delay (smoothing) in process_video: every frame comes
    out once, in order, with track ids, on the source's timestamps."""
    src = write_video(tmp_path / "in.mp4", (scene(t) for t in range(9)), 25)
    seen = []
    config = cfg(temporal_smoothing=True, smoothing_window=2, export_rle=True)
    result = process_video(
        src,
        tmp_path / "smooth.mp4",
        ColourPredictor(),
        config,
        on_frame=lambda i, f, d: seen.append((i, d.track_ids is not None)),
        progress=False,
    )
    assert seen == [(i, True) for i in range(9)]
    assert result.frames_written == 9 and result.tracks >= 1
    with open_video(result.output) as r:
        assert [round(f.time, 3) for f in r.frames()] == [round(i / 25, 3) for i in range(9)]


# -- the tensor (GPU) path -------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("mode", CANVAS_MODES)
def test_tensor_path_equals_host_path(mode: str, device: str, tmp_path: Path) -> None:
    picture = tmp_path / "bg.png"
    cv2.imwrite(str(picture), np.full((9, 13, 3), (5, 99, 222), np.uint8))
    config = cfg(
        canvas=mode,
        canvas_image=str(picture) if mode == "image" else "",
        video_format="webm" if mode == "transparent" else "mp4",
    )
    needs = Needs(detections=True, rows=True, union=True)
    source = frames(9)
    host, _ = run(source, ColourPredictor(), config, needs=needs, tensors=False)
    gpu, _ = run(source, ColourPredictor(device), config, needs=needs, tensors=True)
    for a, b in zip(host, gpu, strict=True):
        assert a.frame.index == b.frame.index and a.count == b.count
        if mode == "blur":
            assert np.abs(a.cutout.astype(int) - b.cutout.astype(int)).max() <= 2
        else:
            assert np.array_equal(a.cutout, b.cutout)
        assert np.array_equal(a.union, b.union)
        assert np.array_equal(a.detections.masks, b.detections.masks)
        assert list(a.detections.class_names) == list(b.detections.class_names)
        assert list(a.rows.class_names) == list(b.rows.class_names)
        np.testing.assert_allclose(a.rows.centres, b.rows.centres, atol=1e-9)
        assert np.array_equal(a.rows.areas, b.rows.areas)
        np.testing.assert_array_equal(a.rows.boxes, b.rows.boxes)


def test_tensor_path_brings_back_only_what_is_asked() -> None:
    got, _ = run(frames(4), ColourPredictor(), cfg(), needs=Needs(), tensors=True)
    assert all(c.detections is None and c.rows is None and c.union is None for c in got)
    want = [len(keep(colour_detections(f.image), ["cat"])) for f in frames(4)]
    assert [c.count for c in got] == want == [1, 1, 1, 1]  # the dog is not counted


def test_gpu_rows_equal_host_rows_for_empty_masks() -> None:
    """An instance whose mask is empty after thresholding gets its box centre, as on the host."""
    source = frames(1)

    class Faint(ColourPredictor):
        def predict_tensors(self, images):
            out = super().predict_tensors(images)
            return [replace(o, mask_probs=o.mask_probs * 0.1) for o in out]

    got, _ = run(source, Faint(), cfg(), needs=Needs(rows=True), tensors=True)
    rows = got[0].rows
    assert rows.areas.tolist() == [0]
    box = rows.boxes[0]
    assert rows.centres[0].tolist() == [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
    host = instance_rows(Detections(np.zeros((1, H, W), bool), [box], ["cat"], [0.9]))
    np.testing.assert_allclose(rows.centres, host.centres)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_tensor_path_with_the_trained_model_equals_host_path(device, tiny_trained_run) -> None:
    """The real torchvision predictor (seam A): predict_tensors + compositing on the device
    give the frames, masks and CSV rows of predict_batch + compositing on the host."""
    from thingmask.engines import torchvision_engine

    config, run_dir = tiny_trained_run
    predictor = torchvision_engine.load_predictor(config.replace(device=device), run_dir)
    config = config.replace(canvas="white", inference_batch=2)
    needs = Needs(detections=True, rows=True, union=True)
    source = frames(5)
    host, _ = run(source, predictor, config, needs=needs, tensors=False)
    dev, _ = run(source, predictor, config, needs=needs, tensors=True)
    assert sum(c.count for c in host) > 0
    for a, b in zip(host, dev, strict=True):
        assert np.array_equal(a.cutout, b.cutout) and np.array_equal(a.union, b.union)
        assert np.array_equal(a.detections.masks, b.detections.masks)
        np.testing.assert_allclose(a.rows.centres, b.rows.centres, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_process_video_on_cuda_uses_the_tensor_path(tmp_path: Path) -> None:
    src = write_video(tmp_path / "in.mp4", (scene(t) for t in range(10)), 25)
    predictor = ColourPredictor("cuda")
    config = cfg(canvas="blur", export_mask_video=True)
    result = process_video(src, tmp_path / "cuda.mp4", predictor, config, progress=False)
    cpu = process_video(src, tmp_path / "cpu.mp4", ColourPredictor(), config, progress=False)
    assert result.frames_written == cpu.frames_written == 10
    assert result.instances == cpu.instances
    assert Path(result.outputs["csv"]).read_text() == Path(cpu.outputs["csv"]).read_text()
