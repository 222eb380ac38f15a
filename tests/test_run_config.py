"""A run is enough: ``--run RUN`` takes the run's own settings, from any working directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_config
from labeling_helpers import make_video

from thingmask.cli import main
from thingmask.config import run_config
from thingmask.datasets.coco import PreparedDataset, load_prepared
from thingmask.errors import ConfigError

RENAME = {"cat": "fox", "bird": "owl", "leaf": "fern"}


def _renamed(src: PreparedDataset, dst: Path) -> PreparedDataset:
    shutil.copytree(src.root, dst)
    for split in ("train", "val"):
        path = dst / f"{split}.json"
        data = json.loads(path.read_text())
        for cat in data["categories"]:
            cat["name"] = RENAME[cat["name"]]
        path.write_text(json.dumps(data))
    return load_prepared(dst)


@pytest.fixture(scope="module")
def fox_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: PreparedDataset) -> Path:
    """A tiny torchvision run trained on fox/owl/fern, with relative paths, in its own cwd."""
    from thingmask import pipeline

    home = tmp_path_factory.mktemp("trained_here")
    _renamed(tiny_dataset, home / "data" / "foxes")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(home)
        config = make_tiny_config(Path("outputs"), load_prepared("data/foxes")).replace(
            dataset_dir="data/foxes", display_things=["fox", "owl"], score_threshold=0.0
        )
        dataset = load_prepared(config.dataset_dir)
        run_dir = pipeline.start_run(config)
        pipeline.train(config, dataset, run_dir)
    return home / run_dir


def test_a_run_folder_is_enough_from_another_cwd(
    fox_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    saved = yaml.safe_load((fox_run / "config.yaml").read_text())
    assert saved["dataset_dir"] == "data/foxes" and saved["display_things"] == ["fox", "owl"]
    monkeypatch.chdir(tmp_path)  # no config here, no data/, no outputs/
    config = run_config(fox_run)
    assert config.display_things == ("fox", "owl") and config.backbone == "tiny_fpn"
    assert Path(config.dataset_dir) == fox_run.parent.parent / "data" / "foxes"
    image = next((fox_run.parent.parent / "data" / "foxes" / "images").glob("val_*.jpg"))
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(image, frames / "a.jpg")
    video = make_video(tmp_path / "clip.mp4", n=4, size=(64, 64))

    assert main(["predict", str(frames / "a.jpg"), "--run", str(fox_run), "--output", "pred"]) == 0
    assert main(["evaluate", "--run", str(fox_run)]) == 0
    assert '"segm"' in capsys.readouterr().out
    assert main(["prelabel", str(frames), "--run", str(fox_run), "-o", "ann"]) == 0
    labels = {s["label"] for s in json.loads(Path("ann/a.json").read_text())["shapes"]}
    assert labels and labels <= {"fox", "owl"}  # the run's display things, not cat/bird
    # KEY=VALUE on top of the run's settings
    argv = ["prelabel", str(frames), "--run", str(fox_run), "-o", "ann2"]
    assert main([*argv, "--set", "display_things=[owl]"]) == 0
    labels = {s["label"] for s in json.loads(Path("ann2/a.json").read_text())["shapes"]}
    assert labels <= {"owl"}
    # a video: its frames are picked first (as `frames`), then pre-labelled, here for CVAT
    argv = ["prelabel", str(video), "--run", str(fox_run), "-o", "vid", "--n", "2"]
    assert main([*argv, "--format", "coco"]) == 0
    coco = json.loads(Path("vid/prelabels_coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["fox", "owl", "fern"]
    assert len(coco["images"]) == 2 and len(list(Path("vid/clip").glob("clip_*.jpg"))) == 2
    assert main(["video", str(video), "--run", str(fox_run), "-o", "cut", "--no-csv"]) == 0
    assert main(["suggest", str(video), "--run", str(fox_run), "-o", "sugg", "--n", "2"]) == 0
    assert (tmp_path / "sugg" / "suggestions.csv").is_file()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()


def test_run_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such run folder"):
        run_config(tmp_path / "missing")
    (tmp_path / "run").mkdir()
    assert run_config(tmp_path / "run").display_things == ("cat", "bird")  # an old run: defaults
