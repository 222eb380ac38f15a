"""The detectron2 engine against a real detectron2 build (skipped where it is not installed).

Trains a CPU-sized model for a few iterations on a tiny generated dataset; checks checkpoints,
resume (also past a truncated checkpoint), evaluation, the predictor and MyTrainer's mapper.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.error
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("detectron2")

from thingmask.config import Config
from thingmask.detections import Detections, keep
from thingmask.engines import TrainHook
from thingmask.engines import detectron2_engine as d2e
from thingmask.engines.checkpoints import is_valid_checkpoint
from thingmask.engines.detectron2_engine.catalog import register_dataset
from thingmask.engines.detectron2_engine.cfg import build_cfg
from thingmask.engines.detectron2_engine.checkpointer import SafeCheckpointer, zoo_cache_path
from thingmask.engines.detectron2_engine.trainer import MyTrainer, SafeTrainer, train_mapper

pytestmark = pytest.mark.detectron2


class InterruptedRunError(Exception):
    """Stands in for a runtime cut off mid-training."""


class Recorder(TrainHook):
    def __init__(self, stop_after_checkpoint: int | None = None) -> None:
        self.steps: list[int] = []
        self.losses: list[dict[str, float]] = []
        self.checkpoints: list[tuple[str, int, bool]] = []
        self.trained: list[Path] = []
        self.stop = stop_after_checkpoint

    def after_step(self, iteration, losses):
        self.steps.append(iteration)
        self.losses.append(losses)

    def after_checkpoint(self, checkpoint_path, iteration):
        # Called only once the file is complete under its final name.
        self.checkpoints.append(
            (checkpoint_path.name, iteration, is_valid_checkpoint(checkpoint_path))
        )
        if iteration == self.stop:
            raise InterruptedRunError

    def after_train(self, run_dir):
        self.trained.append(run_dir)


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return tiny_dataset  # conftest: 6 train + 3 val 64 px synthetic images (read-only)


@pytest.fixture(scope="module")
def config(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    return Config(
        engine="detectron2",
        dataset_dir=str(dataset.root),
        output_dir=str(out),
        run_name="t",
        device="cpu",
        backbone="tiny_fpn",
        iterations=6,
        batch_size=2,
        checkpoint_period=2,
        learning_rate=0.002,
        image_size=64,
        max_image_size=64,
        score_threshold=0.0,
        display_things=["cat", "bird"],
        augmentations=["flip_horizontal", "brightness"],
    )


@pytest.fixture(scope="module")
def trained(config, dataset):
    run_dir = Path(config.output_dir) / "t-20260101-000000"
    recorder = Recorder()
    result = d2e.train(config, dataset, run_dir, hooks=[recorder])
    return run_dir, recorder, result


def test_registration_can_run_twice_and_follows_class_changes(dataset):
    from dataclasses import replace

    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = (f"{dataset.name}_train", f"{dataset.name}_val")
    assert register_dataset(dataset) == names
    assert register_dataset(dataset) == names  # no "already registered"
    assert MetadataCatalog.get(names[0]).thing_classes == list(dataset.class_names)
    assert len(DatasetCatalog.get(f"{dataset.name}_val")) == 3
    renamed = replace(dataset, class_names=("a", "b", "c"))
    register_dataset(renamed)
    assert MetadataCatalog.get(f"{dataset.name}_train").thing_classes == ["a", "b", "c"]
    register_dataset(dataset)


def test_build_cfg_bridges_the_config(config, dataset, tmp_path):
    register_dataset(dataset)
    cfg = build_cfg(config, dataset, tmp_path)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert cfg.MODEL.BACKBONE.NAME == "build_tiny_fpn_backbone" and cfg.MODEL.FPN.NORM == "GN"
    assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.DEVICE == "cpu"
    assert str(tmp_path) == cfg.OUTPUT_DIR
    assert cfg.SOLVER.MAX_ITER == 6 and cfg.SOLVER.IMS_PER_BATCH == 2
    assert cfg.INPUT.MIN_SIZE_TRAIN == (64,) and cfg.SOLVER.STEPS == (4, 5)
    assert json.loads(cfg.THINGMASK.AUGMENTATIONS)[1]["name"] == "brightness"


def test_mytrainer_mapper_uses_the_config_augmentations(config, dataset, tmp_path, monkeypatch):
    from detectron2.data import transforms as T  # noqa: N812

    from thingmask.engines.detectron2_engine import trainer as trainer_module

    # the loader is replaced by the mapper it is built with (what this test looks at)
    monkeypatch.setattr(trainer_module, "build_detection_train_loader", lambda cfg, mapper: mapper)

    register_dataset(dataset)
    custom = config.replace(
        augmentations=[
            {"name": "flip_vertical", "prob": 1.0},
            {"name": "crop", "fraction": 0.5},
            "rotation",
        ]
    )
    mapper = MyTrainer.build_train_loader(build_cfg(custom, dataset, tmp_path))
    augs = mapper.augmentations.augs
    assert [type(a) for a in augs] == [
        T.ResizeShortestEdge,
        T.RandomFlip,
        T.RandomCrop,
        T.RandomRotation,
    ]
    assert augs[1].vertical and not augs[1].horizontal and augs[1].prob == 1.0
    assert augs[2].crop_type == "relative" and tuple(augs[2].crop_size) == (0.5, 0.5)
    assert mapper.recompute_boxes and mapper.instance_mask_format == "bitmask"
    # The mapper really runs on a dataset dict: the flipped, cropped image keeps its masks.
    from detectron2.data import DatasetCatalog

    out = mapper(DatasetCatalog.get(f"{dataset.name}_train")[0])
    assert out["image"].shape[1:] == out["instances"].gt_masks.tensor.shape[1:]


@pytest.mark.parametrize(("device", "amp", "enabled"), [("cpu", True, False), ("cuda", True, True)])
def test_build_cfg_enables_amp_for_its_cuda_device(
    config, dataset, tmp_path, monkeypatch, device, amp, enabled
):
    from thingmask.engines.detectron2_engine import cfg as cfg_module

    register_dataset(dataset)
    monkeypatch.setattr(cfg_module, "_device", lambda _config: device)  # a CUDA decision, no GPU
    cfg = build_cfg(config.replace(amp=amp), dataset, tmp_path)
    assert device == cfg.MODEL.DEVICE and cfg.SOLVER.AMP.ENABLED is enabled


def test_amp_trainer_resumes_a_float32_checkpoint(config, dataset, tmp_path):
    import torch
    from detectron2.engine import AMPTrainer

    register_dataset(dataset)
    cfg = build_cfg(config, dataset, tmp_path)
    cfg.SOLVER.AMP.ENABLED = True  # as build_cfg sets it on CUDA; building it needs no GPU
    runner = SafeTrainer(cfg)
    assert isinstance(runner._trainer, AMPTrainer)
    runner._trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=8.0)  # enabled on CPU
    state = runner.state_dict()
    inner = state["_trainer"]
    plain = {k: v for k, v in inner.items() if k != "grad_scaler"}  # as a float32 run saves it
    runner.load_state_dict({**state, "_trainer": plain})  # detectron2's own: KeyError
    assert runner._trainer.grad_scaler.get_scale() == 8.0  # a fresh scaler goes on
    scaled = {**inner, "grad_scaler": {**inner["grad_scaler"], "scale": 2.0}}
    runner.load_state_dict({**state, "_trainer": scaled})  # an AMP checkpoint: restored
    assert runner._trainer.grad_scaler.get_scale() == 2.0


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_setting_reaches_mytrainer(config, dataset, tmp_path, optimizer):
    import torch

    register_dataset(dataset)
    cfg = build_cfg(config.replace(optimizer=optimizer), dataset, tmp_path)
    opt = MyTrainer.build_optimizer(cfg, MyTrainer.build_model(cfg))
    assert isinstance(opt, {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optimizer])
    assert opt.param_groups[0]["lr"] == config.learning_rate


@pytest.mark.slow
def test_training_writes_checkpoints_and_calls_hooks(trained):
    run_dir, recorder, result = trained
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "model_0000001.pth",
        "model_0000003.pth",
        "model_final.pth",
        "last_checkpoint",
        "d2_config.yaml",
        "model_meta.json",
    } <= names
    assert not [n for n in names if ".part" in n]
    meta = json.loads((run_dir / "model_meta.json").read_text())
    assert meta["engine"] == "detectron2" and meta["class_names"] == ["cat", "bird", "leaf"]
    assert meta["overrides"]["MODEL.BACKBONE.NAME"] == "build_tiny_fpn_backbone"
    assert recorder.steps == [1, 2, 3, 4, 5, 6]
    assert all(
        "total_loss" in losses and np.isfinite(losses["total_loss"]) for losses in recorder.losses
    )
    assert recorder.checkpoints == [
        ("model_0000001.pth", 2, True),
        ("model_0000003.pth", 4, True),
        ("model_final.pth", 6, True),
    ]
    assert recorder.trained == [run_dir]
    assert result.start_iteration == 0 and result.iterations == 6
    assert result.final_loss is not None and np.isfinite(result.final_loss)


@pytest.mark.slow
def test_interrupted_training_resumes_with_optimizer_and_schedule(config, dataset):
    config = config.replace(run_name="cut")  # no earlier "cut-*" runs to resume from
    run_dir = Path(config.output_dir) / "cut-20260102-000000"
    with pytest.raises(InterruptedRunError):
        d2e.train(config, dataset, run_dir, hooks=[Recorder(stop_after_checkpoint=4)])
    assert (run_dir / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (run_dir / "model_final.pth").exists()

    # What resume_or_load restores: iteration, optimizer momentum, LR schedule position.
    trainer = MyTrainer(build_cfg(config, dataset, run_dir))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4
    assert trainer.optimizer.state_dict()["state"]  # momentum buffers came back
    assert trainer.scheduler.last_epoch == 4

    recorder = Recorder()
    result = d2e.train(config, dataset, run_dir, hooks=[recorder])
    assert result.start_iteration == 4
    assert recorder.steps == [5, 6]
    assert (run_dir / "model_final.pth").is_file()


@pytest.mark.slow
def test_truncated_last_checkpoint_falls_back_to_the_previous_one(config, dataset, trained, caplog):
    src, _, _ = trained
    run_dir = Path(config.output_dir) / "t-20260103-000000"
    run_dir.mkdir()
    shutil.copy(src / "model_0000001.pth", run_dir)
    data = (src / "model_0000003.pth").read_bytes()
    (run_dir / "model_0000003.pth").write_bytes(data[: len(data) // 3])  # cut-off Drive copy
    (run_dir / "last_checkpoint").write_text("model_0000003.pth")
    recorder = Recorder()
    with caplog.at_level(logging.WARNING):
        result = d2e.train(config.replace(run_name="other"), dataset, run_dir, hooks=[recorder])
    assert "model_0000003.pth is not usable" in caplog.text
    assert result.start_iteration == 2
    assert recorder.steps == [3, 4, 5, 6]


@pytest.mark.slow
def test_resume_from_an_earlier_run_folder(config, dataset, trained):
    src, _, _ = trained
    run_dir = Path(config.output_dir) / "t-20260104-000000"
    more = config.replace(iterations=8)
    recorder = Recorder()
    result = d2e.train(more, dataset, run_dir, hooks=[recorder])
    # The newest valid checkpoint among t-* folders is a model_final at iteration 5 (6 steps).
    assert result.start_iteration == 6
    assert recorder.steps == [7, 8]
    assert (src / "model_final.pth").is_file()


@pytest.mark.slow
def test_evaluate_reports_box_and_mask_ap(config, dataset, trained):
    run_dir, _, _ = trained
    metrics = d2e.evaluate(config, dataset, run_dir)
    for ap in (metrics.bbox, metrics.segm):
        assert 0.0 <= ap["AP"] <= 100.0
        assert {"AP50", "AP75", "AP-cat", "AP-bird", "AP-leaf"} <= set(ap)
    assert metrics.num_images == 3 and metrics.num_detections > 0
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved.keys() == metrics.to_dict().keys() and saved["segm"]["AP"] == metrics.mask_ap
    assert (run_dir / "eval_ap.png").stat().st_size > 0


@pytest.mark.slow
def test_predictor_returns_detections_the_pipeline_accepts(config, dataset, trained, tmp_path):
    import cv2

    from thingmask.cutout.composite import Canvas, get_masked_image
    from thingmask.video import write_video

    run_dir, _, _ = trained
    predictor = d2e.load_predictor(config, run_dir)
    assert predictor.class_names == ("cat", "bird", "leaf")
    image = cv2.imread(str(sorted(dataset.image_root.glob("val_*"))[0]), cv2.IMREAD_COLOR)
    dets = predictor(image)
    assert isinstance(dets, Detections)
    assert dets.masks.shape[1:] == image.shape[:2] and dets.masks.dtype == bool
    assert dets.boxes.dtype == np.float32 and dets.boxes.shape == (len(dets), 4)
    assert set(dets.class_names) <= {"cat", "bird", "leaf"}
    assert np.all(dets.scores >= 0.0)
    kept = keep(dets, ["cat", "bird"])
    frame = get_masked_image(image, kept, Canvas("black"))
    assert frame.shape == image.shape
    video = write_video(tmp_path / "cut.mp4", [frame, get_masked_image(image, dets, Canvas())], 12)
    assert video.stat().st_size > 0
    with pytest.raises(TypeError, match="uint8"):
        predictor(image.astype(np.float32))
    strict = d2e.load_predictor(config.replace(score_threshold=1.0), run_dir)
    assert len(strict(image)) == 0  # score_threshold reaches the model


def test_checkpointer_refuses_pickles_that_are_not_from_the_model_zoo(tmp_path):
    import torch

    evil = tmp_path / "weights.pkl"
    evil.write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match="pickles"):
        SafeCheckpointer(torch.nn.Linear(2, 2)).load(str(evil))


def test_zero_training_offline_says_what_to_do(monkeypatch, tmp_path):
    import iopath.common.file_io as file_io

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(file_io, "download", offline)
    config = Config(engine="detectron2", zero_training=True, device="cpu")
    with pytest.raises(RuntimeError, match="go online once") as err:
        d2e.load_predictor(config, None)
    assert "model_final_f10217.pkl" in str(err.value) and str(tmp_path / "cache") in str(err.value)


@pytest.mark.slow
def test_zero_training_uses_zoo_weights_copied_into_the_cache(monkeypatch, tmp_path):
    import pickle

    import iopath.common.file_io as file_io
    from detectron2 import model_zoo

    from thingmask.engines import COCO_CLASSES

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(file_io, "download", offline)
    url = model_zoo.get_checkpoint_url(d2e.DEFAULT_BASE_CONFIG)
    cached = zoo_cache_path(url)
    cached.parent.mkdir(parents=True)
    # Stand-in for the official file (same format: a pickled dict; no real weights needed here).
    cached.write_bytes(pickle.dumps({"model": {}, "__author__": "test"}))
    config = Config(
        engine="detectron2", zero_training=True, device="cpu", image_size=128, max_image_size=128
    )
    predictor = d2e.load_predictor(config, None)
    assert predictor.class_names == COCO_CLASSES
    dets = predictor(np.zeros((96, 128, 3), np.uint8))
    assert isinstance(dets, Detections) and dets.masks.shape[1:] == (96, 128)


# --- the engine seam: same meaning as the torchvision engine ---------------------------------


def test_get_engine_gives_the_detectron2_engine():
    from thingmask.engines import Engine, get_engine

    engine = get_engine("detectron2")
    assert engine is d2e.ENGINE and isinstance(engine, Engine) and engine.name == "detectron2"


@pytest.mark.slow
def test_train_returns_the_shared_result(trained):
    from thingmask.engines import TrainResult

    run_dir, _, result = trained
    assert isinstance(result, TrainResult)
    assert result.engine == "detectron2" and result.run_dir == run_dir
    assert result.model == run_dir / "model_final.pth"
    assert result.loss_history and all("loss" in h for h in result.loss_history)


def test_tiny_fpn_is_the_body_the_torchvision_engine_uses(config, dataset, tmp_path):
    from detectron2.modeling import build_model

    from thingmask.engines.tiny import TinyBody
    from thingmask.engines.torchvision_engine import build_model as tv_build_model

    register_dataset(dataset)
    model = build_model(build_cfg(config, dataset, tmp_path))
    body = model.backbone.bottom_up.body
    assert isinstance(body, TinyBody)
    tv_body = tv_build_model("tiny_fpn", 3, 64, 64).backbone.body
    assert {k: v.shape for k, v in body.state_dict().items()} == {
        k: v.shape for k, v in tv_body.state_dict().items()
    }


@pytest.fixture(scope="module")
def predictor(config, trained):
    return d2e.load_predictor(config, trained[0])


def _val_images(dataset) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(dataset.image_root.glob("val_*"))]


@pytest.mark.slow
def test_batched_predictor_matches_detectron2s_default_predictor(predictor, dataset):
    from detectron2.engine import DefaultPredictor

    from thingmask.engines import Predictor

    assert isinstance(predictor, Predictor)
    cfg = predictor.cfg.clone()
    cfg.MODEL.WEIGHTS = ""
    reference = DefaultPredictor(cfg)
    reference.model.load_state_dict(predictor.model.state_dict())
    images = _val_images(dataset)
    for dets, image in zip(predictor.predict_batch(images), images, strict=True):
        ref = reference(image)["instances"]
        assert len(dets) == len(ref) > 0
        np.testing.assert_allclose(dets.scores, ref.scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(dets.boxes, ref.pred_boxes.tensor.numpy(), atol=1e-3)
        assert [predictor.class_names.index(n) for n in dets.class_names] == (
            ref.pred_classes.tolist()
        )
        # DefaultPredictor keeps probability >= 0.5, to_detections > 0.5: equal but for ties
        assert (dets.masks != ref.pred_masks.numpy()).mean() < 1e-3


@pytest.mark.parametrize("size", [48, 96, 800])
def test_resize_on_the_device_matches_default_predictors_pil_resize(predictor, size):
    import torch
    from detectron2.data import transforms as T  # noqa: N812

    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    predictor.min_size, predictor.max_size = size, 2 * size
    try:
        item = predictor._model_input(torch.from_numpy(image))
    finally:
        predictor.min_size, predictor.max_size = 64, 64
    pil = T.ResizeShortestEdge([size, size], 2 * size).get_transform(image).apply_image(image)
    ours = item["image"].permute(1, 2, 0).numpy()
    assert ours.shape == pil.shape and (item["height"], item["width"]) == (64, 80)
    assert np.abs(ours - pil.astype(np.float32)).max() <= 1.0  # PIL's fixed-point rounding


@pytest.mark.slow
def test_predict_tensors_shapes_and_devices(predictor, dataset):
    import torch

    images = [*_val_images(dataset)[:2], _val_images(dataset)[0][:48]]
    out = predictor.predict_tensors([torch.from_numpy(im) for im in images])
    for inst, image in zip(out, images, strict=True):
        n, (h, w) = len(inst), image.shape[:2]
        assert inst.boxes.shape == (n, 4) and inst.scores.shape == (n,)
        assert inst.class_index.dtype == torch.int64 and inst.mask_probs.shape == (n, h, w)
        assert all(
            t.device == predictor.device
            for t in (inst.boxes, inst.scores, inst.class_index, inst.mask_probs)
        )
        assert float(inst.mask_probs.min()) >= 0.0 and float(inst.mask_probs.max()) <= 1.0
    # the host form is the shared conversion of the device form, and batches match singles
    from thingmask.engines import to_detections

    for dets, inst, image in zip(predictor.predict_batch(images), out, images, strict=True):
        expected = to_detections(inst, predictor.class_names, predictor.mask_threshold)
        np.testing.assert_array_equal(dets.masks, expected.masks)
        single = predictor(image)
        np.testing.assert_allclose(dets.scores, single.scores, atol=1e-5)


@pytest.mark.slow
def test_soft_masks_fill_probs(config, trained, dataset):
    soft = d2e.load_predictor(config, trained[0], soft_masks=True)
    image = _val_images(dataset)[0]
    dets = soft(image)
    assert dets.probs is not None and dets.probs.shape == dets.masks.shape
    assert (dets.probs[dets.masks] >= 127).all() and (dets.probs[~dets.masks] <= 128).all()


class NotebookTrainer(SafeTrainer):
    """The notebook cell's shape: build_train_loader from its own augmentations."""

    loaders: ClassVar[list[tuple[str, ...]]] = []

    @classmethod
    def build_train_loader(cls, cfg):
        from detectron2.data import build_detection_train_loader
        from detectron2.data import transforms as T  # noqa: N812

        mapper = train_mapper(cfg, [T.RandomFlip(prob=1.0, horizontal=False, vertical=True)])
        cls.loaders.append(tuple(type(a).__name__ for a in mapper.augmentations.augs))
        return build_detection_train_loader(cfg, mapper=mapper)


@pytest.mark.slow
def test_a_safetrainer_subclass_is_the_one_that_trains(config, dataset):
    config = config.replace(run_name="nb", iterations=2)
    run_dir = Path(config.output_dir) / "nb-20260105-000000"
    result = d2e.train(config, dataset, run_dir, trainer=NotebookTrainer)
    assert NotebookTrainer.loaders == [("ResizeShortestEdge", "RandomFlip")]
    assert result.iterations == 2 and (run_dir / "model_final.pth").is_file()
    with pytest.raises(TypeError, match="subclass of"):
        d2e.train(config, dataset, run_dir, trainer=dict)
