"""Shared fixtures: a tiny synthetic dataset (generated once per session) and a fast config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset

TINY_SIZE = 64  # pixels; small enough that a Mask R-CNN step takes a fraction of a second


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    """6 train + 3 val synthetic 64 px images (cat, bird, leaf in both splits), made once.

    Treat it as read-only: copy it (``shutil.copytree``) before changing anything.
    """
    from thingmask.datasets.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny_synthetic") / "data"
    return generate_dataset(root, n_train=6, n_val=3, image_size=TINY_SIZE, seed=0)


def make_tiny_config(output_dir: Path, dataset: PreparedDataset) -> Config:
    """The settings of :func:`tiny_config` with outputs in ``output_dir`` (for wider scopes)."""
    return Config(
        run_name="tiny",
        output_dir=str(output_dir),
        device="cpu",
        seed=0,
        dataset_dir=str(dataset.root),
        generate_synthetic=False,
        synthetic_train_images=6,
        synthetic_val_images=3,
        synthetic_image_size=TINY_SIZE,
        synthetic_video_frames=6,
        backbone="tiny_fpn",
        iterations=4,
        batch_size=2,
        learning_rate=0.01,
        image_size=TINY_SIZE,
        max_image_size=TINY_SIZE,
        checkpoint_period=2,
        resume=False,
        augmentations=["flip_horizontal", "brightness"],
        score_threshold=0.0,
        display_things=["cat", "bird"],
    )


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_dataset: PreparedDataset) -> Config:
    """A Config that trains tiny_fpn for 4 iterations of 2 images on CPU, outputs in tmp_path."""
    return make_tiny_config(tmp_path / "outputs", tiny_dataset)


@pytest.fixture(scope="session")
def tiny_trained_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: PreparedDataset
) -> tuple[Config, Path]:
    """``(config, run_dir)``: the torchvision engine trained with the tiny_config settings, once.

    The run folder holds checkpoints at 2 and 4, model_final.pth, model_meta.json, metrics.json
    and loss_curve.png. Treat it as read-only (copy it before changing anything).
    """
    from thingmask.engines.torchvision_engine import train

    config = make_tiny_config(tmp_path_factory.mktemp("tiny_run") / "outputs", tiny_dataset)
    run_dir = config.new_run_dir()
    train(config, tiny_dataset, run_dir)
    return config, run_dir


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's counts (issue 18), when it ran."""
    suite = sys.modules.get("test_fault_suite")
    counts = getattr(suite, "COUNTS", None)
    if counts:
        terminalreporter.write_line(
            f"fault suite: {counts['cases']} cases, {counts['invariants']} invariant checks, "
            "all held"
        )
