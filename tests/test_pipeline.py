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


PARAMETERS_CELL = """# --- run ---
run_name = "demo"                      # run folder
iteratons = 5                          # misspelt
display_things = ["cat"]
thingmask_source = "git+https://example.invalid/x@main"
"""


def test_a_parameters_cell_name_that_is_no_setting_is_an_error_with_a_hint():
    """``iteratons = 5`` in the global-variables cell must not be silently ignored."""
    namespace = {"In": ["", PARAMETERS_CELL, "import numpy as np"], "iteratons": 5}
    namespace |= {"run_name": "demo", "display_things": ["cat"], "np": np}
    with pytest.raises(ConfigError, match=r"'iteratons' \(did you mean 'iterations'\?\)"):
        pipeline.config_from_namespace(namespace)


def test_papermills_injected_cell_counts_as_a_parameters_cell():
    injected = '# Parameters\ncanvs = "white"\n'
    namespace = {"In": ["", injected], "canvs": "white"}
    with pytest.raises(ConfigError, match=r"'canvs' \(did you mean 'canvas'\?\)"):
        pipeline.config_from_namespace(namespace)


def test_other_cells_globals_are_not_settings_but_close_names_are_warned(caplog):
    cells = ["", 'run_name = "x"', "loop_frames = 300\nframes = list(range(3))", "x = f(1)"]
    namespace = {"In": cells, "run_name": "x", "loop_frames": 300, "frames": [0, 1, 2]}
    namespace["iteration"] = 3  # set by a code cell, close to the setting `iterations`
    with caplog.at_level("WARNING", logger="thingmask.pipeline"):
        config = pipeline.config_from_namespace(namespace)
    assert config.run_name == "x" and config.iterations == Config().iterations
    assert "'iteration' is not a setting; did you mean 'iterations'?" in caplog.text
    assert "loop_frames" not in caplog.text and "'frames'" not in caplog.text


def test_parameter_cell_names_reads_only_literal_assignment_cells():
    cells = ["", PARAMETERS_CELL, "a = 1\nb = f(a)", "import os", "c = [1, 2]", "bad syntax ("]
    assert pipeline.parameter_cell_names({"In": cells}) == {
        "run_name",
        "iteratons",
        "display_things",
        "thingmask_source",
        "c",
    }
    assert pipeline.parameter_cell_names({}) == set()


def test_detectron2_missing_falls_back_to_torchvision(monkeypatch):
    from thingmask.engines.detectron2_engine import install

    monkeypatch.setattr(install, "available", lambda: False)
    assert pipeline.config_from_namespace({"engine": "detectron2"}).engine == "torchvision"


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


class _Oracle:
    """Returns the generator's own per-animal masks for each frame, in decoding order."""

    class_names = ("cat", "bird", "leaf")

    def __init__(self, gt, drop_after: int | None = None) -> None:
        self.frames, self.drop_after, self.calls = list(gt), drop_after, 0

    def __call__(self, image):
        return self.predict_batch([image])[0]

    def predict_batch(self, images):
        from thingmask.detections import Detections

        out = []
        for image in images:
            masks, names, _ids = self.frames[self.calls]
            if self.drop_after is not None and self.calls >= self.drop_after:
                masks, names = masks[:0], names[:0]
            boxes = np.zeros((len(masks), 4), np.float32)
            for k, m in enumerate(masks):
                ys, xs = np.nonzero(m)
                boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            out.append(Detections(masks, boxes, np.asarray(names, object), np.ones(len(masks))))
            assert image.shape[:2] == masks.shape[1:]
            self.calls += 1
        return out


@pytest.mark.parametrize(("drop_after", "perfect"), [(None, True), (4, False)])
def test_cut_video_scores_the_demo_video_against_its_ground_truth(tmp_path, drop_after, perfect):
    from thingmask.datasets.synthetic import generate_video, load_video_gt

    data = tmp_path / "data"
    video = generate_video(data, n_frames=8, size=64, seed=1)
    gt = load_video_gt(video.parent / "demo_gt.npz")
    config = Config(dataset_dir=str(data), tracking=True, inference_batch=3, export_csv=False)
    run = tmp_path / "run"
    result = pipeline.cut_video(config, _Oracle(gt, drop_after), run)
    report = json.loads((run / "demo_cutout_eval.json").read_text())
    assert result.frames == 8 and (run / "demo_cutout_eval_J.png").is_file()
    assert result.videos == (run / "demo_cutout.mp4",) and result.videos[0].is_file()
    scores = result.scores
    assert scores is not None
    assert scores.j == round(report["J"], 4) and scores.mean_iou == report["fg_J"]
    assert result.figures() == {
        "mean_iou": scores.mean_iou,
        "J": scores.j,
        "F": scores.f,
        "id_switches": scores.id_switches,
    }
    assert f"mean_iou {scores.mean_iou:.4g}" in str(result) and "8 frames" in str(result)
    if perfect:  # the truth itself: every figure at its best
        assert (scores.j, scores.f, scores.fg_j, scores.mean_iou) == (1, 1, 1, 1)
        assert scores.id_switches == 0 and scores.vanished == 0
    else:  # the animals vanish from frame 4 on: half the frames lost
        assert scores.mean_iou == pytest.approx(0.5) and scores.vanished > 0
        assert scores.min_iou == 0.0


def test_preview_never_writes_into_the_dataset_folder(tiny_dataset, tmp_path):
    before = sorted(p.relative_to(tiny_dataset.root) for p in Path(tiny_dataset.root).rglob("*"))
    config = Config(output_dir=str(tmp_path / "out"), dataset_dir=str(tiny_dataset.root))
    preview = pipeline.preview_dataset(config, tiny_dataset)
    assert preview.samples_png.is_file() and Path(tmp_path / "out") in preview.samples_png.parents
    after = sorted(p.relative_to(tiny_dataset.root) for p in Path(tiny_dataset.root).rglob("*"))
    assert after == before
