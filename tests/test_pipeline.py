"""The notebook's section functions (thingmask.pipeline), called directly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from thingmask import pipeline
from thingmask.config import Config, ConfigError
from thingmask.video import VideoError, write_video


def _video(path: Path, frames: int = 3) -> Path:
    images = (np.full((16, 16, 3), 40 * i, np.uint8) for i in range(frames))
    return Path(write_video(path, images, 8.0))


def test_config_from_namespace_takes_the_settings_and_nothing_else():
    namespace = {"canvas": "white", "display_things": ["dog"], "np": np, "run_dir": ""}
    namespace["thingmask_source"] = "git+https://example.invalid/x@main"  # notebook-only
    config = pipeline.config_from_namespace(namespace)
    assert (config.canvas, config.display_things) == ("white", ("dog",))
    with pytest.raises(ConfigError, match="canvas"):
        pipeline.config_from_namespace({"canvas": "purple"})


def test_start_run_writes_the_resolved_config_and_reuses_a_given_folder(tmp_path):
    config = Config(run_name="t", output_dir=str(tmp_path), canvas="grey")
    run = pipeline.start_run(config)
    assert run.parent == tmp_path and run.name.startswith("t-")
    assert yaml.safe_load((run / "config.yaml").read_text())["canvas"] == "grey"
    assert pipeline.start_run(config, run) == run  # re-running the cell: same folder


def test_video_sources(tmp_path):
    demo = _video(tmp_path / "data" / "video" / "demo.mp4")
    assert pipeline.video_sources(Config(dataset_dir=str(tmp_path / "data"))) == [demo]
    clips = tmp_path / "clips"
    b, a = _video(clips / "b.mp4"), _video(clips / "a.mp4")
    (clips / "notes.txt").write_text("not a video")
    assert pipeline.video_sources(Config(video_input=str(clips))) == [a, b]
    with pytest.raises(VideoError, match="no such file"):
        pipeline.video_sources(Config(video_input=str(tmp_path / "missing.mp4")))


def test_preview_html_embeds_small_videos_only(tmp_path):
    clip = _video(tmp_path / "cut.mp4")
    assert pipeline.preview_html(clip).startswith("<video")
    big = pipeline.preview_html(clip, max_mb=clip.stat().st_size / 2e6)
    assert big.startswith("<p>") and str(clip) in big and "<video" not in big
    (tmp_path / "frames").mkdir()
    assert "PNG sequence" in pipeline.preview_html(tmp_path / "frames")


def test_summary_lists_the_figures_and_writes_them(tmp_path):
    text = pipeline.summary(tmp_path, time.time() - 90, mean_iou=0.87, drive=None)
    assert f"run folder : {tmp_path}" in text and "1.5 min" in text and "mean_iou   : 0.87" in text
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["mean_iou"] == 0.87 and saved["wall_time_s"] >= 90
