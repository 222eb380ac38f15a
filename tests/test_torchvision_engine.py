"""torchvision engine: training writes a complete run folder, resumes exactly, predicts names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thingmask.config import ConfigError  # noqa: E402
from thingmask.datasets.coco import load_prepared  # noqa: E402
from thingmask.detections import Detections  # noqa: E402
from thingmask.engines import COCO_CLASSES, Engine, TrainHook, get_engine  # noqa: E402
from thingmask.engines import torchvision_engine as tv  # noqa: E402
from thingmask.engines.checkpoints import load_checkpoint  # noqa: E402
from thingmask.engines.device import resolve_device  # noqa: E402
from thingmask.engines.torchvision_engine.data import CocoInstances, TrainSamples  # noqa: E402
from thingmask.engines.torchvision_engine.predictor import coco_label_names  # noqa: E402


class RecordingHook(TrainHook):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.checkpoints: list[tuple[Path, int]] = []
        self.finished: list[Path] = []

    def after_step(self, iteration, losses):
        assert np.isfinite(losses["loss"])
        self.steps.append(iteration)

    def after_checkpoint(self, checkpoint_path, iteration):
        assert checkpoint_path.is_file()  # complete, under its final name
        self.checkpoints.append((checkpoint_path, iteration))

    def after_train(self, run_dir):
        self.finished.append(run_dir)


@pytest.fixture
def trained_run(tiny_trained_run):
    return tiny_trained_run  # (config, run_dir) from conftest, trained once per session


def test_get_engine_returns_this_engine():
    engine = get_engine("torchvision")
    assert engine is tv.ENGINE and engine.name == "torchvision"
    assert isinstance(engine, Engine)
    assert engine.train is tv.train and engine.load_predictor is tv.load_predictor


def test_training_writes_a_complete_run_folder(trained_run):
    _, run_dir = trained_run
    for name in (
        "model_final.pth",
        "model_meta.json",
        "metrics.json",
        "loss_curve.png",
        "checkpoints/model_0000002.pth",
        "checkpoints/model_0000004.pth",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.part*"))  # every write completed and renamed
    meta = json.loads((run_dir / "model_meta.json").read_text())
    assert meta["engine"] == "torchvision" and meta["class_names"] == ["cat", "bird", "leaf"]
    assert meta["backbone"] == "tiny_fpn" and meta["image_size"] == 64
    assert meta["norm"] == "group_norm" and meta["mask_size"] in (28, 56)
    assert meta["mask_threshold"] in tv.MASK_THRESHOLDS  # calibrated on the validation split
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert [h["iteration"] for h in saved["loss_history"]] == [1, 2, 3, 4]
    assert saved["wall_time_s"] > 0 and saved["iterations"] == 4
    assert set(saved["mask_threshold_val_iou"]) == {str(t) for t in tv.MASK_THRESHOLDS}
    state = load_checkpoint(run_dir / "checkpoints" / "model_0000002.pth")
    assert state["iteration"] == 2 and {"model", "optimizer", "scheduler"} <= set(state)


def test_predictor_returns_detections_with_class_names(trained_run):
    config, run_dir = trained_run
    predictor = tv.load_predictor(config, run_dir)
    assert predictor.class_names == ("cat", "bird", "leaf")
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    dets = predictor(image)
    assert isinstance(dets, Detections) and dets.image_size == (64, 80)
    assert dets.masks.dtype == bool and set(dets.class_names) <= {"cat", "bird", "leaf"}
    assert (dets.scores >= config.score_threshold).all()
    batch = predictor.predict_batch([image, image[:48]])
    assert [d.image_size for d in batch] == [(64, 80), (48, 80)]
    # run_dir=None is not "the newest run" (callers decide that with thingmask.runs)
    with pytest.raises(ValueError, match=r"no run folder given.*zero_training"):
        tv.load_predictor(config, None)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((8, 8), np.uint8), ValueError, r"\(H, W, 3\) BGR"),
        (np.zeros((8, 8, 3), np.float32), TypeError, "uint8"),
    ],
)
def test_predictor_rejects_bad_images(trained_run, image, error, match):
    config, run_dir = trained_run
    with pytest.raises(error, match=match):
        tv.load_predictor(config, run_dir)(image)


def test_evaluate_writes_ap_json_and_plot(trained_run, tiny_dataset):
    config, run_dir = trained_run
    metrics = tv.evaluate(config, tiny_dataset, run_dir)
    for ap in (metrics.bbox, metrics.segm):
        assert {"AP", "AP50", "AP75", "AP-cat", "AP-bird", "AP-leaf"} <= set(ap)
        assert 0.0 <= ap["AP"] <= 100.0
    assert metrics.num_images == 3 and metrics.checkpoint == "model_final.pth"
    saved = json.loads((run_dir / "eval.json").read_text())  # (NaN != NaN: compare keys)
    assert saved.keys() == metrics.to_dict().keys() and saved["segm"]["AP"] == metrics.mask_ap
    assert (run_dir / "eval_ap.png").stat().st_size > 0


def _weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "model_final.pth")["model"]


class CrashAfterFirstCheckpoint(TrainHook):
    def after_checkpoint(self, checkpoint_path, iteration):
        raise KeyboardInterrupt  # the runtime dies right after the checkpoint is written


def test_resume_continues_exactly_where_it_stopped(tiny_config, tiny_dataset, trained_run):
    config = tiny_config.replace(run_name="crashy")
    with pytest.raises(KeyboardInterrupt):
        tv.train(config, tiny_dataset, config.new_run_dir(), hooks=[CrashAfterFirstCheckpoint()])
    second = config.new_run_dir()
    hook = RecordingHook()
    metrics = tv.train(config.replace(resume=True), tiny_dataset, second, hooks=[hook])

    assert metrics.start_iteration == 2 and metrics.iterations == 4
    assert [h["iteration"] for h in metrics.loss_history] == [1, 2, 3, 4]
    assert hook.steps == [3, 4] and [i for _, i in hook.checkpoints] == [4]
    assert hook.finished == [second]
    state = load_checkpoint(second / "checkpoints" / "model_0000004.pth")
    assert state["scheduler"]["last_epoch"] == 4  # the schedule went on from step 2
    # iteration counter, optimizer momentum, schedule, data order and sampling RNG all restored:
    # 2 + 2 resumed steps give the same weights as 4 unbroken ones (same settings)
    a, b = _weights(trained_run[1]), _weights(second)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_truncated_checkpoint_is_skipped(tiny_config, tiny_dataset, trained_run):
    run = Path(tiny_config.output_dir) / "tiny-20000101-000000"
    shutil.copytree(trained_run[1], run)
    newest = run / "checkpoints" / "model_0000004.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a cut-off sync
    cfg = tiny_config.replace(iterations=3, resume=True)
    metrics = tv.train(cfg, tiny_dataset, cfg.new_run_dir())
    assert metrics.start_iteration == 2 and metrics.iterations == 3


def test_resume_from_a_checkpoint_of_other_classes_is_an_error(
    tiny_config, tiny_dataset, trained_run, tmp_path
):
    one_class = _single_class_copy(tiny_dataset, tmp_path / "one", "bird")
    with pytest.raises(ValueError, match=r"resume_from.*class_names was"):
        tv.train(
            tiny_config,
            one_class,
            tiny_config.new_run_dir(),
            resume_from=trained_run[1] / "checkpoints" / "model_0000002.pth",
        )


def _single_class_copy(dataset, dest: Path, keep_name: str):
    shutil.copytree(dataset.root, dest)
    for split in ("train.json", "val.json"):
        data = json.loads((dest / split).read_text())
        old = {c["id"]: c["name"] for c in data["categories"]}
        data["categories"] = [{"id": 1, "name": keep_name}]
        data["annotations"] = [
            dict(a, category_id=1)
            for a in data["annotations"]
            if old[a["category_id"]] == keep_name
        ]
        (dest / split).write_text(json.dumps(data))
    return load_prepared(dest)


def test_one_class_dataset_trains_without_code_change(tiny_config, tiny_dataset, tmp_path):
    dataset = _single_class_copy(tiny_dataset, tmp_path / "birds", "bird")
    config = tiny_config.replace(iterations=2, display_things=["bird"])
    run = config.new_run_dir()
    tv.train(config, dataset, run)
    assert json.loads((run / "model_meta.json").read_text())["class_names"] == ["bird"]
    predictor = tv.load_predictor(config, run)
    assert predictor.class_names == ("bird",)
    dets = predictor(np.zeros((64, 64, 3), np.uint8))
    assert set(dets.class_names) <= {"bird"}


def test_unknown_augmentation_is_a_clear_error(tiny_dataset):
    data = CocoInstances(tiny_dataset.train_json, tiny_dataset.image_root, tiny_dataset.class_names)
    with pytest.raises(ConfigError, match=r"unknown augmentation 'flip_sideways'.*flip_horizontal"):
        TrainSamples(data, ["flip_sideways"], seed=0, total=4)


def test_training_samples_are_deterministic_and_consistent(tiny_dataset):
    data = CocoInstances(tiny_dataset.train_json, tiny_dataset.image_root, tiny_dataset.class_names)
    samples = TrainSamples(
        data, ["flip_horizontal", {"name": "crop", "fraction": 0.6}], seed=0, total=12
    )
    later = TrainSamples(
        data, ["flip_horizontal", {"name": "crop", "fraction": 0.6}], seed=0, total=12, start=5
    )
    for p in range(12):
        image, target = samples[p]
        assert image.dtype == torch.float32 and image.shape[0] == 3
        n = len(target["labels"])
        assert target["masks"].shape == (n, *image.shape[1:]) and target["boxes"].shape == (n, 4)
        assert ((target["labels"] >= 1) & (target["labels"] <= 3)).all()
        assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
        if p >= 5:
            torch.testing.assert_close(later[p - 5][0], image)


def test_coco_label_names_skip_the_gaps():
    names = coco_label_names()
    assert len(names) == 91 and names[0] == "" and names[1] == "person" and names[12] == ""
    assert [n for n in names if n] == list(COCO_CLASSES)


def test_zero_training_offline_says_what_to_do(monkeypatch, tiny_config):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"zero_training.*internet.*train"):
        tv.load_predictor(tiny_config.replace(zero_training=True), None)


def test_pretrained_offline_warns_and_trains_from_scratch(monkeypatch, caplog):
    from torchvision.models._api import WeightsEnum

    monkeypatch.setattr(
        WeightsEnum,
        "get_state_dict",
        lambda self, *a, **k: (_ for _ in ()).throw(OSError("offline")),
    )
    model = tv.build_model("resnet18_fpn", 2, 64, 64, pretrained=True)
    assert model.thingmask_norm == "group_norm"
    assert "from scratch" in caplog.text


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_unavailable_device_is_a_clear_error(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f"device: got '{name}'"):
        resolve_device(name)
    assert str(resolve_device("auto")) == "cpu"


@pytest.mark.parametrize(
    ("backbone", "mask_size"),
    [("resnet18_fpn", None), ("mobilenet_v3_fpn", None), ("resnet50_fpn", None), ("tiny_fpn", 56)],
)
def test_other_architectures_train_and_predict(backbone, mask_size):
    model = tv.build_model(backbone, 2, 64, 64, mask_size=mask_size)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:50] = 1
    target = {
        "boxes": torch.tensor([[12.0, 10.0, 50.0, 40.0]]),
        "labels": torch.tensor([1]),
        "masks": masks,
    }
    losses = model.train()([torch.rand(3, 64, 64)], [target])
    assert all(torch.isfinite(v) for v in losses.values()) and "loss_mask" in losses
    with torch.inference_mode():
        out = model.eval()([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}
    assert model.thingmask_mask_size == (mask_size or 28)
