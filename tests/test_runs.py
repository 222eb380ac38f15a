"""thingmask.runs: one rule for "which folders are this run's" and "its newest valid checkpoint",
used by local resume of both engines, Drive resume, the CLI and the notebook (issue 18, case 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from thingmask.colab.drive_checkpoints import find_resume_checkpoint
from thingmask.config import Config
from thingmask.engines.checkpoints import is_valid_checkpoint
from thingmask.engines.detectron2_engine.resume import prepare_resume
from thingmask.engines.torchvision_engine.trainer import resume_checkpoint
from thingmask.runs import (
    MODEL_META,
    find_latest_run,
    find_run_checkpoint,
    is_run_folder,
    run_folders,
)


def _ckpt(path: Path, iteration: int, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "iteration": iteration}, path)
    t = 1_700_000_000 - age_s
    os.utime(path, (t, t))
    return path


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """``demo`` has an older run at step 300; ``demo-long`` (another run!) is at step 900 and
    newer; ``demo2`` is yet another name."""
    root = tmp_path / "outputs"
    _ckpt(root / "demo-20250101-120000" / "checkpoints" / "model_0000300.pth", 300, 100)
    _ckpt(root / "demo-20250101-120000" / "model_0000300.pth", 300, 100)  # detectron2's place
    (root / "demo-20250101-120000" / MODEL_META).write_text("{}")
    for name in ("demo-long-20250102-080000", "demo2-20250103-080000"):
        _ckpt(root / name / "checkpoints" / "model_0000900.pth", 900)
        _ckpt(root / name / "model_0000900.pth", 900)
        (root / name / MODEL_META).write_text("{}")
    return root


def test_run_folder_names_match_exactly() -> None:
    assert is_run_folder("demo-20250101-120000", "demo")
    assert is_run_folder("demo-20250101-120000-2", "demo")  # two runs in one second
    assert not is_run_folder("demo-long-20250101-120000", "demo")
    assert not is_run_folder("demo2-20250101-120000", "demo")
    assert not is_run_folder("demo-2025", "demo")
    assert is_run_folder("demo-long-20250101-120000")  # any run, with no name given


def test_demo_never_resumes_from_demo_long(outputs: Path, tmp_path: Path) -> None:
    own = outputs / "demo-20250101-120000"
    assert run_folders(outputs, "demo") == [own]
    expected = own / "checkpoints" / "model_0000300.pth"
    assert find_run_checkpoint(outputs, "demo", is_valid_checkpoint) == expected
    # torchvision engine, local resume
    config = Config(output_dir=str(outputs), run_name="demo", resume=True)
    assert resume_checkpoint(config, None) == expected
    # Drive resume (and the notebook's local side of it)
    assert find_resume_checkpoint(outputs, "demo") == expected
    # detectron2 resume: a new run folder of "demo" continues from demo's step 300, not 900
    new_run = outputs / "demo-20250104-090000"
    new_run.mkdir()
    picked = prepare_resume(config, new_run)
    assert picked == new_run / "model_0000300.pth"
    assert (new_run / "last_checkpoint").read_text().strip() == "model_0000300.pth"
    # the CLI / notebook / video job's "newest trained run of demo"
    assert find_latest_run(outputs, "demo") == own
    assert find_latest_run(outputs) in {
        outputs / "demo-long-20250102-080000",
        outputs / "demo2-20250103-080000",
    }


def test_a_truncated_checkpoint_is_skipped_for_the_previous_one(outputs: Path) -> None:
    folder = outputs / "demo-20250101-120000" / "checkpoints"
    (folder / "model_0000400.pth").write_bytes(b"PK\x03\x04 cut short by a disconnect")
    assert find_run_checkpoint(outputs, "demo", is_valid_checkpoint) == folder / "model_0000300.pth"


def test_no_run_of_that_name_means_start_afresh(outputs: Path) -> None:
    assert find_run_checkpoint(outputs, "demo-lon", is_valid_checkpoint) is None
    assert find_run_checkpoint(outputs / "missing", "demo", is_valid_checkpoint) is None
