"""The detectron2 engine's engine-independent parts: config bridge, resume choice, results.

None of these tests imports detectron2; they run everywhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from thingmask.config import Config, ConfigError
from thingmask.datasets import PreparedDataset
from thingmask.engines import detectron2_engine as d2e
from thingmask.engines.checkpoints import save_checkpoint
from thingmask.engines.detectron2_engine import install
from thingmask.engines.detectron2_engine.bridge import solver_steps
from thingmask.engines.detectron2_engine.resume import model_section


def _dataset(tmp_path: Path, names=("cat", "bird", "leaf")) -> PreparedDataset:
    return PreparedDataset(
        name="toy",
        root=tmp_path,
        train_json=tmp_path / "train.json",
        val_json=tmp_path / "val.json",
        image_root=tmp_path / "images",
        class_names=tuple(names),
    )


def test_overrides_for_scratch_training_follow_the_config(tmp_path):
    config = Config(
        iterations=300,
        batch_size=2,
        learning_rate=0.005,
        image_size=160,
        max_image_size=200,
        checkpoint_period=50,
        num_workers=1,
        seed=7,
        score_threshold=0.3,
    )
    ov = d2e.cfg_overrides(config, _dataset(tmp_path))
    assert ov["MODEL.ROI_HEADS.NUM_CLASSES"] == 3
    assert ov["DATASETS.TRAIN"] == ["toy_train"] and ov["DATASETS.TEST"] == ["toy_val"]
    assert ov["SOLVER.MAX_ITER"] == 300
    assert ov["SOLVER.IMS_PER_BATCH"] == 2
    assert ov["SOLVER.BASE_LR"] == 0.005
    assert ov["SOLVER.CHECKPOINT_PERIOD"] == 50
    assert ov["SOLVER.STEPS"] == [210, 270]
    assert 1 <= ov["SOLVER.WARMUP_ITERS"] <= 300
    assert ov["INPUT.MIN_SIZE_TRAIN"] == [160] and ov["INPUT.MAX_SIZE_TRAIN"] == 200
    assert ov["INPUT.MIN_SIZE_TEST"] == 160 and ov["INPUT.MAX_SIZE_TEST"] == 200
    assert ov["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] == 0.3
    assert ov["DATALOADER.NUM_WORKERS"] == 1
    assert ov["SEED"] == 7
    assert ov["INPUT.RANDOM_FLIP"] == "none"  # flips come from config.augmentations only
    # From scratch: GroupNorm everywhere, nothing frozen, no weights.
    assert ov["MODEL.RESNETS.NORM"] == ov["MODEL.FPN.NORM"] == "GN"
    assert ov["MODEL.ROI_BOX_HEAD.NORM"] == ov["MODEL.ROI_MASK_HEAD.NORM"] == "GN"
    assert ov["MODEL.BACKBONE.FREEZE_AT"] == 0
    assert ov["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert "MODEL.WEIGHTS" not in ov and "OUTPUT_DIR" not in ov and "MODEL.DEVICE" not in ov
    # Stored in model_meta.json: plain JSON, upper-case dotted keys.
    assert json.loads(json.dumps(ov)) == ov
    assert all((k == k.upper() and "." in k) or k == "SEED" for k in ov)


@pytest.mark.parametrize(
    ("backbone", "name", "depth", "fpn_channels"),
    [
        ("resnet50_fpn", None, 50, None),
        ("resnet18_fpn", None, 18, None),
        ("tiny_fpn", "build_tiny_fpn_backbone", None, 64),
    ],
)
def test_backbone_selects_the_network(tmp_path, backbone, name, depth, fpn_channels):
    ov = d2e.cfg_overrides(Config(backbone=backbone), _dataset(tmp_path))
    assert ov.get("MODEL.BACKBONE.NAME") == name  # None: the zoo's ResNet-FPN builder
    assert ov.get("MODEL.RESNETS.DEPTH") == depth
    if depth == 18:
        assert ov["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 64  # detectron2 requires it for R18
    assert ov.get("MODEL.FPN.OUT_CHANNELS") == fpn_channels


def test_pretrained_keeps_the_zoo_architecture(tmp_path):
    ov = d2e.cfg_overrides(Config(pretrained=True), _dataset(tmp_path, ["dog"]))
    assert ov["MODEL.ROI_HEADS.NUM_CLASSES"] == 1
    assert not any(k.startswith(("MODEL.RESNETS", "MODEL.FPN")) for k in ov)


def test_zero_training_uses_coco_classes():
    ov = d2e.cfg_overrides(Config(zero_training=True, score_threshold=0.7), None)
    assert ov["MODEL.ROI_HEADS.NUM_CLASSES"] == 80
    assert ov["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] == 0.7
    assert not any(k.startswith(("DATASETS", "SOLVER")) for k in ov)


@pytest.mark.parametrize(
    ("changes", "with_dataset", "match"),
    [
        ({"backbone": "mobilenet_v3_fpn"}, True, "backbone: got 'mobilenet_v3_fpn'"),
        (
            {"d2_base_config": "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"},
            True,
            "LazyConfig .py files are not supported",
        ),
        (
            {
                "zero_training": True,
                "d2_base_config": "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
            },
            False,
            "zero_training needs a COCO",
        ),
    ],
)
def test_overrides_reject_what_detectron2_cannot_do(tmp_path, changes, with_dataset, match):
    with pytest.raises(ConfigError, match=match):
        d2e.cfg_overrides(Config(**changes), _dataset(tmp_path) if with_dataset else None)


@pytest.mark.parametrize(
    ("iterations", "steps"), [(600, [420, 540]), (10, [7, 9]), (3, [2]), (1, [])]
)
def test_solver_steps_lie_inside_the_schedule(iterations, steps):
    assert solver_steps(iterations) == steps


@pytest.mark.parametrize(
    ("augmentations", "match"),
    [
        (["blur"], "unknown augmentation 'blur'.*Valid augmentations: flip_horizontal"),
        ([{"name": "brightness", "gain": 2}], "brightness has no parameter"),
        ("flip_horizontal", "expected a list"),
        ([{"name": "flip_vertical", "prob": 1.5}], "expected 0..1"),
    ],
)
def test_augmentation_names_are_checked_with_the_config(augmentations, match):
    with pytest.raises(ConfigError, match=match):
        Config(engine="detectron2", augmentations=augmentations)


def test_apply_overrides_sets_nested_keys_and_keeps_tuples():
    cfg = {
        "SOLVER": {"STEPS": (1, 2), "BASE_LR": 0.02},
        "MODEL": {"ANCHOR_GENERATOR": {"SIZES": ((32,), (64,))}},
    }
    d2e.apply_overrides(
        cfg,
        {
            "SOLVER.STEPS": [5, 9],
            "SOLVER.BASE_LR": 0.001,
            "MODEL.ANCHOR_GENERATOR.SIZES": [[16], [32]],
        },
    )
    assert cfg["SOLVER"] == {"STEPS": (5, 9), "BASE_LR": 0.001}
    assert cfg["MODEL"]["ANCHOR_GENERATOR"]["SIZES"] == ((16,), (32,))
    with pytest.raises(KeyError, match=r"SOLVER\.BASE_RL"):
        d2e.apply_overrides(cfg, {"SOLVER.BASE_RL": 0.1})


@pytest.mark.parametrize(
    ("installed", "engine", "expected"),
    [
        (False, "detectron2", "torchvision"),
        (True, "detectron2", "detectron2"),
        (False, "torchvision", "torchvision"),
    ],
)
def test_resolve_engine_falls_back_to_torchvision(monkeypatch, caplog, installed, engine, expected):
    monkeypatch.setattr(install, "available", lambda: installed)
    with caplog.at_level(logging.WARNING):
        assert d2e.resolve_engine(Config(engine=engine)) == expected
        assert d2e.resolve_engine(engine) == expected
    assert ("not installed" in caplog.text) == (expected != engine)


# --- resume: which checkpoint a run continues from --------------------------------------------


def _ckpt(path: Path, iteration: int) -> Path:
    return save_checkpoint({"model": {"w": iteration}, "iteration": iteration}, path)


def test_resume_skips_a_truncated_checkpoint_with_a_warning(tmp_path, caplog):
    run = tmp_path / "outputs" / "demo-20260101-000000"
    run.mkdir(parents=True)
    _ckpt(run / "model_0000009.pth", 9)
    good = (run / "model_0000009.pth").read_bytes()
    (run / "model_0000019.pth").write_bytes(good[: len(good) // 2])  # cut-off copy
    config = Config(output_dir=str(tmp_path / "outputs"), run_name="demo")
    with caplog.at_level(logging.WARNING):
        chosen = d2e.prepare_resume(config, run)
    assert chosen == run / "model_0000009.pth"
    assert (run / "last_checkpoint").read_text() == "model_0000009.pth"
    assert "model_0000019.pth is not usable" in caplog.text


def test_resume_copies_the_newest_checkpoint_of_an_earlier_run(tmp_path):
    out = tmp_path / "outputs"
    old, older, other = out / "demo-20260101-000000", out / "demo-20251231-000000", out / "x-1"
    for folder, it in ((old, 29), (older, 39), (other, 99)):
        folder.mkdir(parents=True)
        _ckpt(folder / f"model_{it:07d}.pth", it)
    _ckpt(old / "model_final.pth", 49)  # iteration read from inside the file
    new = out / "demo-20260102-000000"
    new.mkdir()
    config = Config(output_dir=str(out), run_name="demo")
    assert d2e.prepare_resume(config, new) == new / "model_final.pth"
    assert (new / "last_checkpoint").read_text() == "model_final.pth"
    assert (old / "model_final.pth").is_file()  # copied, not moved


def test_resume_off_or_nothing_to_resume_starts_fresh(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last_checkpoint").write_text("model_0000009.pth")
    _ckpt(run / "model_0000009.pth", 9)
    assert d2e.prepare_resume(Config(resume=False, output_dir=str(tmp_path)), run) is None
    assert not (run / "last_checkpoint").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert d2e.prepare_resume(Config(output_dir=str(tmp_path / "none")), empty) is None


def test_resume_from_an_explicit_file(tmp_path):
    drive = tmp_path / "drive"
    drive.mkdir()
    src = _ckpt(drive / "model_0000099.pth", 99)
    run = tmp_path / "run"
    run.mkdir()
    assert (
        d2e.prepare_resume(Config(resume=False), run, resume_from=src) == run / "model_0000099.pth"
    )


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("weights.pkl", b"\x80\x04N.", ValueError, r"\.pkl pickles"),
        ("missing.pth", None, FileNotFoundError, "does not exist"),
        ("broken.pth", b"not a zip", ValueError, "no usable checkpoint"),
    ],
)
def test_resume_from_rejects_bad_files(tmp_path, name, content, error, match):
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(error, match=match):
        d2e.prepare_resume(Config(), tmp_path / "run", resume_from=src)


def test_resume_prefers_the_run_folders_own_checkpoint(tmp_path):
    out = tmp_path / "outputs"
    earlier, run = out / "demo-20260101-000000", out / "demo-20260102-000000"
    earlier.mkdir(parents=True)
    run.mkdir()
    _ckpt(earlier / "model_0000099.pth", 99)
    _ckpt(run / "model_0000009.pth", 9)
    assert (
        d2e.prepare_resume(Config(output_dir=str(out), run_name="demo"), run)
        == run / "model_0000009.pth"
    )


def test_resume_skips_runs_with_other_model_settings(tmp_path, caplog):
    out = tmp_path / "outputs"
    earlier, run = out / "demo-20260101-000000", out / "demo-20260102-000000"
    earlier.mkdir(parents=True)
    _ckpt(earlier / "model_0000099.pth", 99)
    (earlier / d2e.D2_CONFIG_FILE).write_text("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 5\n")
    config = Config(output_dir=str(out), run_name="demo")
    now = model_section("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 3\n  DEVICE: cpu\n")
    with caplog.at_level(logging.WARNING):
        assert d2e.prepare_resume(config, run, model=now) is None
    assert "different model settings" in caplog.text
    same = model_section("MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 5\n  WEIGHTS: x.pth\n")
    assert d2e.prepare_resume(config, run, model=same) == run / "model_0000099.pth"
