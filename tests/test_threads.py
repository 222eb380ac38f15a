"""Threads that fit the machine: the per-stage plan, the load watch, and that training and the
video stage really run with the planned pool sizes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from thingmask import threads as th
from thingmask.config import Config, ConfigError
from thingmask.detections import Detections
from thingmask.threads import LoadWatch, ThreadGovernor, ThreadPlan, free_cores, plan_threads


# -- the plan (pure) ------------------------------------------------------------------------------
@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("stage", th.STAGES)
def test_every_plan_fits_the_cores(cores: int, device: str, stage: str) -> None:
    """Each part gets at least one thread; the model never more than the cores; on a GPU the
    parts together stay within the cores (one thread each as the floor)."""
    p = plan_threads(cores, device, stage)
    assert min(p.torch, p.opencv, p.decode, p.encode) >= 1
    if stage == "video" and device == "cpu":  # decode, cut-out, encode: one thread each
        assert p.torch == (cores if cores <= 3 else cores - 1)
        assert (p.opencv, p.decode, p.encode) == (1, 1, 1)
    elif stage == "video":  # the model on the device: the codecs and cut-out get the cores
        assert p.torch == 1
        assert p.torch + p.opencv + p.decode + p.encode <= max(cores, 4)
    else:  # the model alone (augmentation runs between steps, not beside them)
        assert p.torch == p.opencv == cores


def test_plan_table() -> None:
    assert plan_threads(2, "cpu", "video") == ThreadPlan(torch=2, opencv=1, decode=1, encode=1)
    assert plan_threads(8, "cpu", "video") == ThreadPlan(torch=7, opencv=1, decode=1, encode=1)
    assert plan_threads(16, "cuda", "video") == ThreadPlan(torch=1, opencv=3, decode=3, encode=9)
    assert plan_threads(2, "cpu", "train") == ThreadPlan(torch=2, opencv=2, decode=1, encode=1)
    assert plan_threads(4, "cpu", "train", workers=2).torch == 2  # workers take a core each
    assert plan_threads(2, "cpu", "train", workers=5).torch == 1
    assert plan_threads(0, "cpu", "images").torch == 1
    with pytest.raises(ValueError, match="stage"):
        plan_threads(2, "cpu", "encode")


def test_threads_setting() -> None:
    assert th.parse_threads("auto") is None
    assert th.parse_threads(3) == 3 and th.parse_threads("4") == 4
    assert Config(threads=2).threads == 2 and Config().threads == "auto"
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="threads"):
            Config(threads=bad)


# -- the load watch ------------------------------------------------------------------------------
class Fake:
    """Scripted /proc/stat busy seconds, own CPU seconds and clock."""

    def __init__(self) -> None:
        self.busy, self.own, self.now = 100.0, 10.0, 0.0

    def advance(self, seconds: float, busy_cores: float, own_cores: float) -> None:
        self.now += seconds
        self.busy += seconds * busy_cores
        self.own += seconds * own_cores


def test_load_watch_counts_only_other_processes() -> None:
    f = Fake()
    watch = LoadWatch(busy=lambda: f.busy, own=lambda: f.own, clock=lambda: f.now)
    f.advance(2.0, busy_cores=2.0, own_cores=1.0)  # we use one core, someone else the other
    assert watch.others() == pytest.approx(1.0)
    f.advance(4.0, busy_cores=1.0, own_cores=1.0)  # alone
    assert watch.others() == pytest.approx(0.0)
    unknown = LoadWatch(busy=lambda: None, own=lambda: 0.0, clock=lambda: f.now)
    f.advance(1.0, 0, 0)
    assert unknown.others() is None


def test_free_cores() -> None:
    assert free_cores(2, None) == 2
    assert free_cores(2, 0.2) == 2  # a little background work takes no core away
    assert free_cores(2, 1.0) == 1
    assert free_cores(2, 3.5) == 1  # never below one
    assert free_cores(16, 4.0) == 12


def test_governor_refits_torch_to_a_competing_load(monkeypatch) -> None:
    before = (torch.get_num_threads(), cv2.getNumThreads())
    monkeypatch.setattr(th, "machine_cores", lambda: 2)
    f = Fake()
    watch = LoadWatch(busy=lambda: f.busy, own=lambda: f.own, clock=lambda: f.now)
    gov = ThreadGovernor("auto", "cpu", "train", watch=watch, clock=lambda: f.now, first_look_s=0)
    try:
        assert gov.apply().torch == 2 and torch.get_num_threads() == 2
        f.advance(1.0, busy_cores=2.0, own_cores=1.0)
        assert not gov.check()  # looks again only every few seconds
        f.advance(5.0, busy_cores=2.0, own_cores=1.0)  # a busy neighbour appeared
        assert gov.check() and gov.plan.torch == 1 and torch.get_num_threads() == 1
        f.advance(6.0, busy_cores=2.0, own_cores=2.0)  # still there... it left: all ours
        f.advance(6.0, busy_cores=2.0, own_cores=2.0)
        assert gov.check() and torch.get_num_threads() == 2
    finally:
        gov.restore()
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    fixed = ThreadGovernor(1, "cpu", "train")
    assert fixed.plan.torch == 1 and not fixed.check()  # a number is never re-planned


# -- the stages use the plan --------------------------------------------------------------------
class PoolSpy:
    """A predictor recording torch's pool size in the thread that runs inference."""

    class_names = ("cat",)

    def __init__(self) -> None:
        self.pools: list[int] = []
        self.device = torch.device("cpu")

    def __call__(self, image: np.ndarray) -> Detections:
        self.pools.append(torch.get_num_threads())
        return Detections.empty(*image.shape[:2])


def test_video_inference_runs_with_the_planned_pool(tmp_path: Path, monkeypatch) -> None:
    from thingmask.jobs import job as video_job
    from thingmask.jobs.job import process_video
    from thingmask.video import write_video
    from thingmask.video.writer import VideoWriter

    codec_threads = []
    original = VideoWriter._add_video_stream

    def spy(self, crf):
        stream = original(self, crf)
        codec_threads.append(stream.codec_context.thread_count)
        return stream

    src = write_video(tmp_path / "in.mp4", (np.zeros((32, 48, 3), np.uint8) for _ in range(5)), 25)
    monkeypatch.setattr(VideoWriter, "_add_video_stream", spy)
    decoders = []
    opened = video_job.open_video

    def open_spy(path, max_bad_frames=0.05, threads=0):
        reader = opened(path, max_bad_frames, threads)
        decoders.append(reader._stream.thread_count)
        return reader

    monkeypatch.setattr(video_job, "open_video", open_spy)
    before = torch.get_num_threads()
    predictor = PoolSpy()
    config = Config(display_things=["cat"], threads=5, keep_audio=False, export_csv=False)
    process_video(src, tmp_path / "out.mp4", predictor, config, progress=False)
    assert predictor.pools == [4] * 5  # 5 cores on CPU: inference 4, the light stages 1 each
    assert codec_threads == [1] and decoders == [1]
    assert torch.get_num_threads() == before  # put back after the video


def test_training_runs_with_the_planned_pool(tiny_config, tiny_dataset) -> None:
    from thingmask.engines import torchvision_engine as tv
    from thingmask.engines.base import TrainHook

    pools = []

    class Spy(TrainHook):
        def after_step(self, iteration, losses):
            pools.append(torch.get_num_threads())

    before = torch.get_num_threads()
    config = tiny_config.replace(threads=1, iterations=2, checkpoint_period=2)
    tv.Trainer(config, tiny_dataset, config.new_run_dir(), hooks=[Spy()]).train()
    assert pools == [1, 1]
    assert torch.get_num_threads() == before


def test_auto_starts_from_the_load_it_sees(monkeypatch) -> None:
    """With auto the first plan already leaves out the cores a competing job keeps busy."""

    class Busy(LoadWatch):
        def __init__(self, others: float) -> None:
            self.value = others

        def others(self) -> float | None:
            return self.value

    monkeypatch.setattr(th, "machine_cores", lambda: 2)
    assert (
        ThreadGovernor("auto", "cpu", "train", watch=Busy(1.0), first_look_s=1e-3).plan.torch == 1
    )
    assert (
        ThreadGovernor("auto", "cpu", "train", watch=Busy(0.1), first_look_s=1e-3).plan.torch == 2
    )
    assert ThreadGovernor(2, "cpu", "train", watch=Busy(1.0), first_look_s=1e-3).plan.torch == 2
    # the video stage's large operations keep gaining from every core: not shrunk
    video = ThreadGovernor("auto", "cpu", "video", watch=Busy(1.0), first_look_s=1e-3)
    assert video.plan.torch == 2 and not video.check()


def test_auto_respects_omp_num_threads(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert th.machine_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert th.machine_cores() >= 1
