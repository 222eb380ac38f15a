"""The InputError tree: every error for bad user input is an InputError (a ValueError), so the
CLI ends it with one line and exit 2 and a notebook user can catch one type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thingmask.cli import main
from thingmask.colab.verified_copy import DriveError, copy_verified
from thingmask.datasets import DatasetError, load_prepared
from thingmask.datasets.synthetic import save_video_gt
from thingmask.errors import ConfigError, InputError
from thingmask.video import VideoError, open_video


@pytest.mark.parametrize("error", [ConfigError, DatasetError, VideoError, DriveError])
def test_every_user_input_error_is_an_input_error(error: type[Exception]) -> None:
    assert issubclass(error, InputError) and issubclass(error, ValueError)


def test_raised_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_prepared(tmp_path / "no-dataset")  # DatasetError
    with pytest.raises(InputError, match="video file not found"):
        open_video(tmp_path / "missing.mp4")  # VideoError
    src = tmp_path / "model.pth"
    src.write_bytes(b"weights")
    blocker = tmp_path / "drive"
    blocker.write_text("a file where the Drive folder should be")
    with pytest.raises(InputError, match="could not write"):  # DriveError
        copy_verified(src, blocker / "run" / "model.pth", retries=0, backoff=0)


def test_cli_ends_a_video_error_with_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    one_cat = (np.ones((1, 8, 8), bool), ["cat"], np.zeros(1, np.int64))
    gt = save_video_gt(tmp_path / "gt.npz", [one_cat], 8, 8)
    missing = tmp_path / "missing.mp4"
    code = main(["evaluate-video", str(missing), str(gt)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("thingmask evaluate-video: error: ") and str(missing) in err
    assert "unexpected" not in err and "Traceback" not in err


def test_cli_predict_names_the_picture_it_cannot_read(tmp_path: Path, capsys, tiny_trained_run):
    config, run_dir = tiny_trained_run
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    argv = ["predict", str(notes), "--output", str(tmp_path / "out"), "--run", str(run_dir)]
    argv += ["--set", f"display_things=[{','.join(config.display_things)}]"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: predict: {notes} is missing or not a readable picture" in err
    assert not (tmp_path / "out" / "notes_pred.png").exists()
