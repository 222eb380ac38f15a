"""thingmask.jobs.job: streaming job, resume/skip, kill safety, batch, CLI hooks.

The predictor is a stand-in (colour threshold): red squares are cats, blue squares are dogs.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import thingmask
from thingmask.cli import main
from thingmask.config import Config, ConfigError
from thingmask.detections import Detections
from thingmask.jobs.batch import find_videos
from thingmask.jobs.commit import open_stage
from thingmask.jobs.job import process_many, process_video
from thingmask.jobs.outputs import output_paths
from thingmask.runs import find_latest_run
from thingmask.video import VideoError, open_video, partial_path, write_video

H, W = 48, 64
BACKGROUND = (60, 140, 60)  # BGR green meadow


def scene(t: int) -> np.ndarray:
    img = np.full((H, W, 3), BACKGROUND, np.uint8)
    cv2.rectangle(img, (2 + t, 8), (13 + t, 19), (0, 0, 255), -1)  # red cat walking right
    cv2.rectangle(img, (44, 28), (55, 39), (255, 0, 0), -1)  # blue dog sitting
    return img


def make_input(path: Path, n: int = 12, rate: float = 25) -> Path:
    return write_video(path, (scene(t) for t in range(n)), rate)


class ColourPredictor:
    """Stand-in for an engine's predictor: BGR frame -> Detections by colour."""

    class_names = ("cat", "dog")

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        self.calls += 1
        b, g, r = (image_bgr[..., k].astype(int) for k in range(3))
        found = [
            ("cat", (r > 150) & (g < 100) & (b < 100)),
            ("dog", (b > 150) & (r < 100) & (g < 100)),
        ]
        found = [(name, m) for name, m in found if m.sum() > 4]
        if not found:
            return Detections.empty(*image_bgr.shape[:2])
        boxes = []
        for _, m in found:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return Detections(
            masks=np.stack([m for _, m in found]),
            boxes=boxes,
            class_names=[n for n, _ in found],
            scores=[0.9] * len(found),
        )


def read_csv(path: str | Path) -> list[dict[str, str]]:
    return list(csv.DictReader(Path(path).read_text().splitlines()))


def cfg(**kw) -> Config:
    return Config(**{"display_things": ["cat"], **kw})


def test_process_video_cuts_out_the_display_things(tmp_path: Path) -> None:
    src = make_input(tmp_path / "walk.mp4")
    seen = []
    result = process_video(
        src,
        tmp_path / "out" / "walk_cutout.mp4",
        ColourPredictor(),
        cfg(canvas="white"),
        on_frame=lambda i, f, d: seen.append((i, f.shape, list(d.class_names))),
        progress=False,
    )
    assert result.status == "done" and result.frames_written == 12 and result.instances == 12
    assert seen == [(i, (H, W, 3), ["cat"]) for i in range(12)]  # dogs filtered out
    out = Path(result.output)
    with open_video(out) as r:
        frames = list(r.frames())
    assert len(frames) == 12
    img = frames[5].image
    assert img[13, 12, 2] > 180 and img[13, 12, 0] < 80  # the cat, in colour
    assert img[33, 49].min() > 230  # the dog is gone: white canvas
    assert img[40, 5].min() > 230  # the meadow is gone
    meta = json.loads(Path(result.metadata).read_text())
    assert meta["status"] == "done" and meta["source"]["frames"] == 12
    assert meta["output"]["codec"].startswith("h264") and "timestamps" in meta["output"]["timing"]
    rows = read_csv(result.outputs["csv"])
    assert len(rows) == 12 and {r["class"] for r in rows} == {"cat"}
    assert float(rows[5]["cx"]) == pytest.approx(2 + 5 + 5.5, abs=1.0)


def test_rerun_skips_finished_and_redoes_on_changed_settings(tmp_path: Path) -> None:
    src = make_input(tmp_path / "walk.mp4", n=6)
    dst = tmp_path / "walk_cutout.mp4"
    pred = ColourPredictor()
    assert process_video(src, dst, pred, cfg(), progress=False).status == "done"
    calls = pred.calls
    again = process_video(src, dst, pred, cfg(), progress=False)
    assert again.status == "skipped" and pred.calls == calls and again.frames_written == 6
    changed = process_video(src, dst, pred, cfg(canvas="grey"), progress=False)
    assert changed.status == "done" and pred.calls == calls + 6
    forced = process_video(src, dst, pred, cfg(canvas="grey"), force=True, progress=False)
    assert forced.status == "done"
    Path(forced.outputs["csv"]).unlink()  # a deleted output means the video is not done
    assert process_video(src, dst, pred, cfg(canvas="grey"), progress=False).status == "done"


def test_leftover_stage_is_removed_and_nothing_else(tmp_path: Path, caplog) -> None:
    src = make_input(tmp_path / "walk.mp4", n=6)
    dst = tmp_path / "walk_cutout.mp4"
    stage = open_stage(tmp_path, "walk_cutout")  # what a killed run leaves
    (stage / partial_path(dst).name).write_bytes(b"half a video from a killed run")
    lookalike = tmp_path / ".thingmask-stage-mine"  # a user's folder of that name: no mark
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("mine")
    with caplog.at_level(logging.INFO, logger="thingmask.jobs.commit"):
        result = process_video(src, dst, ColourPredictor(), cfg(), progress=False)
    assert "unfinished" in caplog.text
    assert result.status == "done" and not stage.exists()
    assert (lookalike / "keep.txt").read_text() == "mine"


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {test_dir!r})
    from test_video_job import ColourPredictor, cfg
    from thingmask.jobs.job import process_video

    def stall(index, frame, kept):
        if index == 90:  # past several 2 s fragments at 10 fps, even with a deep encoder delay
            print("stalled", flush=True)
            time.sleep(120)

    process_video({src!r}, {dst!r}, ColourPredictor(), cfg(), on_frame=stall, progress=False)
""")


def test_killed_run_leaves_playable_partial_then_resumes(tmp_path: Path) -> None:
    src = write_video(tmp_path / "long.mp4", (scene(t % 40) for t in range(100)), 10)
    dst = tmp_path / "long_cutout.mp4"
    env = {**os.environ, "PYTHONPATH": str(Path(thingmask.__file__).parents[1])}
    script = KILL_SCRIPT.format(test_dir=str(Path(__file__).parent), src=str(src), dst=str(dst))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "stalled"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not dst.exists() and not output_paths(dst, cfg())["metadata"].exists()
    (stage,) = tmp_path.glob(".thingmask-stage-*")  # all that a killed run leaves
    with open_video(stage / partial_path(dst).name) as r:  # fragmented MP4: playable so far
        partial = list(r.frames())
    assert 20 <= len(partial) <= 91
    result = process_video(src, dst, ColourPredictor(), cfg(), progress=False)
    assert result.status == "done" and result.frames_written == 100
    assert not stage.exists()
    assert not list(tmp_path.glob(".*part*"))
    assert process_video(src, dst, ColourPredictor(), cfg(), progress=False).status == "skipped"


def test_transparent_png_job(tmp_path: Path) -> None:
    src = make_input(tmp_path / "walk.mp4", n=4)
    result = process_video(
        src,
        tmp_path / "walk_png",
        ColourPredictor(),
        cfg(canvas="transparent", video_format="png", export_csv=False),
        progress=False,
    )
    pngs = sorted(Path(result.output).glob("frame_*.png"))
    assert len(pngs) == 4 and "csv" not in result.outputs
    rgba = cv2.imread(str(pngs[2]), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (H, W, 4)
    assert rgba[13, 10, 3] == 255 and rgba[33, 49, 3] == 0 and rgba[40, 5, 3] == 0


def test_all_exports_and_clips(tmp_path: Path) -> None:
    src = make_input(tmp_path / "walk.mp4", n=8)
    config = cfg(
        display_things=["cat", "dog"],
        export_rle=True,
        export_mask_video=True,
        per_instance_clips=True,
    )
    result = process_video(src, tmp_path / "w.mp4", ColourPredictor(), config, progress=False)
    assert result.tracks == 2
    assert sorted(Path(p).name for p in result.outputs["clips"]) == [
        "w_track001_cat.mp4",
        "w_track002_dog.mp4",
    ]
    assert len(Path(result.outputs["rle"]).read_text().splitlines()) == 8
    rows = read_csv(result.outputs["csv"])
    assert {(r["class"], r["track_id"]) for r in rows} == {("cat", "1"), ("dog", "2")}
    with open_video(result.outputs["mask_video"]) as r:
        assert len(list(r.frames())) == 8


@pytest.mark.parametrize(
    "config, dst, error",
    [
        (cfg(display_things=["zebra"]), "x.mp4", ConfigError),
        (cfg(video_format="webm"), "x.mp4", ValueError),
    ],
)
def test_bad_job_settings(tmp_path: Path, config, dst, error) -> None:
    src = make_input(tmp_path / "walk.mp4", n=2)
    with pytest.raises(error):
        process_video(src, tmp_path / dst, ColourPredictor(), config, progress=False)


def test_process_many_continues_after_a_bad_file(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    make_input(folder / "a.mp4", n=4)
    (folder / "b.mp4").write_text("this is not a video")
    make_input(folder / "c.mp4", n=4)
    (folder / "notes.txt").write_text("ignored")
    results = process_many(folder, tmp_path / "out", ColourPredictor(), cfg(), progress=False)
    assert [(Path(r.source).name, r.status) for r in results] == [
        ("a.mp4", "done"),
        ("b.mp4", "failed"),
        ("c.mp4", "done"),
    ]
    assert "b.mp4" in results[1].error
    assert (tmp_path / "out" / "a_cutout.mp4").is_file()
    assert (tmp_path / "out" / "c_cutout.mp4").is_file()
    summary = read_csv(tmp_path / "out" / "summary.csv")
    assert [r["status"] for r in summary] == ["done", "failed", "done"]
    again = process_many(
        str(folder / "*.mp4"), tmp_path / "out", ColourPredictor(), cfg(), progress=False
    )
    assert [r.status for r in again] == ["skipped", "failed", "skipped"]


def test_find_videos(tmp_path: Path) -> None:
    make_input(tmp_path / "x.mp4", n=2)
    assert find_videos(tmp_path / "x.mp4") == [tmp_path / "x.mp4"]
    for bad in (tmp_path / "nothing.mp4", tmp_path / "*.avi", tmp_path / "empty"):
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(VideoError, match=bad.name.replace("*", r"\*")):
            find_videos(bad)


# -- CLI -----------------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    return main(["video", *argv])


def test_cli_without_a_trained_model_says_train_first(tmp_path: Path, capsys) -> None:
    src = make_input(tmp_path / "walk.mp4", n=2)
    args = [str(src), "--output", str(tmp_path / "o.mp4"), f"--set=output_dir={tmp_path}/x"]
    assert run_cli(args) == 2
    assert "thingmask train" in capsys.readouterr().err


def test_cli_runs_with_newest_run(tmp_path: Path, monkeypatch) -> None:
    src = make_input(tmp_path / "walk.mp4", n=3)
    runs = tmp_path / "outputs"
    for name in ("demo-20250101-000000", "demo-20250102-000000"):
        (runs / name).mkdir(parents=True)
        (runs / name / "model_meta.json").write_text(json.dumps({"engine": "torchvision"}))
        os.utime(
            runs / name / "model_meta.json", (1e9, 1e9) if name == "demo-20250101-000000" else None
        )
    assert find_latest_run(runs) == runs / "demo-20250102-000000"
    loaded = []

    class FakeEngine:
        @staticmethod
        def load_predictor(config, run_dir):
            loaded.append((config.canvas, run_dir))
            return ColourPredictor()

    import thingmask.pipeline

    monkeypatch.setattr(thingmask.pipeline, "get_engine", lambda name: FakeEngine)
    args = [str(src), "--canvas", "grey", "--track", "--no-csv"]
    args += [f"--set=output_dir={runs}", "--set=display_things=[cat]"]
    assert run_cli(args) == 0
    assert loaded == [("grey", runs / "demo-20250102-000000")]
    out = runs / "demo-20250102-000000" / "walk_cutout.mp4"
    meta = json.loads((runs / "demo-20250102-000000" / "walk_cutout.json").read_text())
    assert out.is_file() and meta["job"]["settings"]["tracking"] is True
    assert not (runs / "demo-20250102-000000" / "walk_cutout.csv").exists()
    single = tmp_path / "single.webm"
    args = [str(src), "-o", str(single), "--format", "webm", f"--set=output_dir={runs}"]
    assert run_cli([*args, "--set=display_things=[cat]"]) == 0
    assert single.is_file()
