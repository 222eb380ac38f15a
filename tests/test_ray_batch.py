"""thingmask.distributed.ray_batch on a local Ray with 2 CPU workers and the tiny trained model.

One Ray session for the module (start-up costs seconds). Each test compares the Ray batch with
the sequential ``process_many`` on the same videos: decoded frames, CSVs, done-markers, summary.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from thingmask.cli import main  # noqa: E402
from thingmask.config import Config  # noqa: E402
from thingmask.distributed.ray_batch import process_many_ray  # noqa: E402
from thingmask.errors import InputError  # noqa: E402
from thingmask.jobs.job import process_many  # noqa: E402
from thingmask.pipeline import load_predictor  # noqa: E402
from thingmask.video import open_video, write_video  # noqa: E402

NAMES = ("a", "b", "c")
FRAMES = 6


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray with 2 CPUs (as CI has), shared by the module's tests."""
    # The worker processes must unpickle this module's loaders, but cannot import a test file.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short 64x48 videos with moving squares (different per video)."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(1)
    for k, name in enumerate(NAMES):
        base = rng.integers(40, 200, (48, 64, 3), dtype=np.uint8)
        frames = []
        for t in range(FRAMES):
            img = base.copy()
            img[8 + k * 4 : 24 + k * 4, 4 + 3 * t : 20 + 3 * t] = (30, 30, 220)
            frames.append(img)
        write_video(folder / f"{name}.mp4", frames, 10)
    return folder


@pytest.fixture(scope="module")
def tiny_trained_run(tiny_trained_run: tuple[Config, Path]) -> tuple[Config, Path]:
    """The shared tiny run with a fixed ``threads``: torch's sums depend on its thread count
    (the last digit of a score can differ), and "auto" plans a Ray worker within the CPUs it
    reserved but the sequential batch within the whole machine."""
    config, run_dir = tiny_trained_run
    return config.replace(threads=1), run_dir


@pytest.fixture(scope="module")
def sequential(
    clips: Path, tiny_trained_run: tuple[Config, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference: the sequential batch's output folder."""
    config, run_dir = tiny_trained_run
    out = tmp_path_factory.mktemp("sequential")
    results = process_many(clips, out, load_predictor(config, run_dir), config, progress=False)
    assert [r.status for r in results] == ["done"] * len(NAMES)
    return out


def decoded(path: Path) -> list[np.ndarray]:
    with open_video(path) as reader:
        return [f.image for f in reader.frames()]


def summary_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "summary.csv").read_text().splitlines()))


def hidden_partials(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".part" in p.name)


def assert_same_outputs(out: Path, reference: Path, names: tuple[str, ...] = NAMES) -> None:
    """Every video's frames, CSV and job key as the sequential run wrote them."""
    for name in names:
        got, want = decoded(out / f"{name}_cutout.mp4"), decoded(reference / f"{name}_cutout.mp4")
        assert len(got) == len(want) == FRAMES
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
        got_csv = (out / f"{name}_cutout.csv").read_text()
        assert got_csv == (reference / f"{name}_cutout.csv").read_text()
        meta = json.loads((out / f"{name}_cutout.json").read_text())
        ref_meta = json.loads((reference / f"{name}_cutout.json").read_text())
        assert meta["status"] == "done" and meta["job"]["key"] == ref_meta["job"]["key"]


class Dying:
    """The real predictor, except that the first worker to reach its 3rd frame dies there, once
    (``os._exit``: no clean-up runs, as with ``kill -9`` or a lost machine). Everything else
    (class names, run folder, batched calls) is the wrapped predictor's."""

    def __init__(self, predictor: Any, flag: str) -> None:
        self.predictor, self.flag, self.frames = predictor, flag, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)

    def _count(self, n: int) -> None:
        self.frames += n
        if self.frames >= 3:
            try:  # O_EXCL: exactly one worker, once
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))
                os._exit(1)
            except FileExistsError:
                pass

    def __call__(self, image: np.ndarray) -> Any:
        self._count(1)
        return self.predictor(image)

    def predict_batch(self, images: Any) -> Any:
        self._count(len(images))
        return self.predictor.predict_batch(images)

    def predict_tensors(self, images: Any) -> Any:
        self._count(len(images))
        return self.predictor.predict_tensors(images)


class DyingLoader:
    """A loader whose predictors die once (see :class:`Dying`)."""

    def __init__(self, flag: Path) -> None:
        self.flag = str(flag)

    def __call__(self, config: Config, run_dir: Path | None) -> Any:
        return Dying(load_predictor(config, run_dir), self.flag)


def test_worker_killed_mid_video_is_redone_on_rerun(
    ray_session: None, clips: Path, sequential: Path, tiny_trained_run, tmp_path: Path
) -> None:
    config, run_dir = tiny_trained_run
    out = tmp_path / "out"
    dying = DyingLoader(tmp_path / "died")
    first = process_many_ray(
        clips, out, config, run_dir, actors=2, retries=0, progress=False, loader=dying
    )
    failed = [r for r in first if r.status == "failed"]
    assert len(failed) == 1 and "WorkerDied" in failed[0].error
    assert sorted(r.status for r in first) == ["done", "done", "failed"]
    victim = Path(failed[0].source).stem
    # killed mid-video: nothing under the final names; its stage went when the batch ended
    assert hidden_partials(out) == [] and not list(out.glob(".thingmask-stage-*"))
    assert not any(p.name.startswith(f"{victim}_cutout") for p in out.iterdir())

    rerun = process_many_ray(clips, out, config, run_dir, actors=2, progress=False)
    assert {Path(r.source).stem: r.status for r in rerun} == {
        n: "done" if n == victim else "skipped" for n in NAMES
    }
    assert_same_outputs(out, sequential)
    assert hidden_partials(out) == []
    assert [r["source"] for r in summary_rows(out)] == [str(clips / f"{n}.mp4") for n in NAMES]


@pytest.mark.slow
def test_dead_worker_replaced_and_video_redone_in_the_same_run(
    ray_session: None, clips: Path, sequential: Path, tiny_trained_run, tmp_path: Path
) -> None:
    config, run_dir = tiny_trained_run
    dying = DyingLoader(tmp_path / "died")
    results = process_many_ray(
        clips, tmp_path / "out", config, run_dir, actors=2, retries=1, progress=False, loader=dying
    )
    assert (tmp_path / "died").exists()  # a worker really died
    assert [r.status for r in results] == ["done"] * len(NAMES)
    assert_same_outputs(tmp_path / "out", sequential)
    assert hidden_partials(tmp_path / "out") == []


def test_cli_video_ray_writes_what_the_sequential_batch_writes(
    ray_session: None, clips: Path, sequential: Path, tiny_trained_run, tmp_path: Path, capsys
) -> None:
    """``thingmask video SRC --output OUT --run RUN --ray`` (using this process's Ray session):
    the same files and summary as the sequential batch."""
    config, run_dir = tiny_trained_run
    settings = config.save_yaml(tmp_path / "config.yaml")
    out = tmp_path / "out"
    args = ["video", str(clips), "--output", str(out), "--run", str(run_dir)]
    assert main([*args, "--config", str(settings), "--ray", "--ray-actors", "2"]) == 0
    assert capsys.readouterr().out.count(": done ->") == len(NAMES)
    assert_same_outputs(out, sequential)
    rows, ref_rows = summary_rows(out), summary_rows(sequential)
    keys = ("source", "status", "frames_read", "frames_written", "instances")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in ref_rows]


def failing_loader(config: Config, run_dir: Path | None) -> object:
    raise ValueError("display_things: ['dog'] are not classes of the dataset/model")


def test_worker_that_cannot_load_the_model_is_a_clear_error(
    ray_session: None, clips: Path, tiny_trained_run, tmp_path: Path
) -> None:
    config, run_dir = tiny_trained_run
    with pytest.raises(FileNotFoundError, match=r"model_meta\.json missing"):  # before any worker
        process_many_ray(clips, tmp_path, config, tmp_path / "no_run", progress=False)
    with pytest.raises(RuntimeError, match=r"could not load the model: ValueError: display_thi"):
        process_many_ray(clips, tmp_path, config, run_dir, progress=False, loader=failing_loader)


def test_ray_batch_never_writes_into_its_input_folder(clips: Path, tiny_trained_run) -> None:
    """The sequential batch's input-safety checks hold (before any worker starts)."""
    config, run_dir = tiny_trained_run
    before = sorted(p.name for p in clips.iterdir())
    with pytest.raises(InputError, match="input folder"):
        process_many_ray(clips, clips, config, run_dir, progress=False)
    assert sorted(p.name for p in clips.iterdir()) == before
