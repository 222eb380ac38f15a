"""CLI: subcommands exist, bad input ends in one clear line (exit 2), never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from thingmask.cli import build_parser, main


def test_subcommands_mirror_the_notebook_sections():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) >= {
        "demo",
        "generate",
        "prepare",
        "train",
        "evaluate",
        "predict",
        "video",
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--config", "{tmp}/missing.yaml"], "missing.yaml does not exist"),
        (["train", "iterations=abc"], "iterations: got 'abc'; expected an integer"),
        (["train", "canvas=pink"], "canvas: got 'pink'"),
        (["train", "iteration=5"], "did you mean 'iterations'"),
        (
            ["train", "generate_synthetic=false", "dataset_dir={tmp}/nothing"],
            "dataset_dir {tmp}/nothing does not exist",
        ),
        (
            ["train", "generate_synthetic=false", "dataset_dir={tmp}/empty"],
            "train.json: no annotations",
        ),
        (
            ["evaluate", "--run", "{tmp}", "generate_synthetic=false", "dataset_dir={tmp}/empty"],
            "no trained model here",
        ),
        (
            ["predict", "{tmp}/nope.png", "--output", "{tmp}/o", "--run", "{tmp}"],
            "no trained model here",
        ),
        (
            ["video", "{tmp}/missing.mp4", "--output", "{tmp}/o", "--run", "{tmp}"],
            "no trained model here",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, capsys, caplog, argv, expected):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    for split in ("train", "val"):
        (empty / f"{split}.json").write_text(json.dumps(coco))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main([*argv, f"output_dir={tmp_path}/out"] if argv[0] in ("train",) else argv)
    err = capsys.readouterr().err + caplog.text  # plugins report through logging
    assert code != 0
    assert expected.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err


def test_console_script_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "thingmask.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "demo" in out and "prepare" in out and "video" in out
