"""The engine seam without detectron2: protocols, get_engine, devices, to_detections, the
torchvision predictor's three forms and the Trainer's override points."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thingmask.config import Config  # noqa: E402
from thingmask.detections import Detections  # noqa: E402
from thingmask.engines import (  # noqa: E402
    Engine,
    InstanceTensors,
    Predictor,
    TrainResult,
    get_engine,
    resolve_device,
    to_detections,
)
from thingmask.engines import torchvision_engine as tv  # noqa: E402
from thingmask.engines.detectron2_engine import engine as d2_engine  # noqa: E402
from thingmask.engines.detectron2_engine import install  # noqa: E402
from thingmask.engines.tiny import TINY_STRIDES, TINY_WIDTHS, TinyBody  # noqa: E402
from thingmask.engines.torchvision_engine.data import train_loader  # noqa: E402
from thingmask.engines.torchvision_engine.trainer import Trainer  # noqa: E402
from thingmask.errors import ConfigError  # noqa: E402

# --- to_detections: the one host conversion ---------------------------------------------------


def _instances(probs: list[list[list[float]]], classes: list[int]) -> InstanceTensors:
    n = len(classes)
    return InstanceTensors(
        boxes=torch.arange(4 * n, dtype=torch.float32).reshape(n, 4),
        scores=torch.linspace(0.9, 0.5, n) if n else torch.zeros(0),
        class_index=torch.tensor(classes, dtype=torch.int64),
        mask_probs=torch.tensor(probs, dtype=torch.float32).reshape(n, 2, 3),
    )


@pytest.mark.parametrize(
    ("threshold", "expected_pixels"),
    [
        (0.5, [[False, False, True], [True, True, False]]),
        (0.3, [[False, True, True], [True, True, True]]),
    ],
)
def test_to_detections_thresholds_masks_and_maps_class_names(threshold, expected_pixels):
    inst = _instances([[[0.1, 0.4, 0.9], [0.6, 0.51, 0.5]]], [1])
    dets = to_detections(inst, ("cat", "bird"), threshold)
    assert isinstance(dets, Detections) and dets.image_size == (2, 3)
    assert dets.masks.tolist() == [expected_pixels]
    assert list(dets.class_names) == ["bird"] and dets.probs is None
    assert dets.boxes.tolist() == [[0.0, 1.0, 2.0, 3.0]] and dets.boxes.dtype == np.float32


def test_to_detections_soft_masks_are_rounded_probabilities():
    inst = _instances([[[0.0, 0.5, 1.0], [0.2, 0.7, 0.999]]], [0])
    dets = to_detections(inst, ("cat",), 0.5, soft_masks=True)
    assert dets.probs is not None and dets.probs.dtype == np.uint8
    assert dets.probs.tolist() == [[[0, 128, 255], [51, 178, 255]]]


@pytest.mark.parametrize("soft", [False, True])
def test_to_detections_keeps_the_image_size_when_nothing_was_found(soft):
    empty = InstanceTensors(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 5, 7)
    )
    dets = to_detections(empty, ("cat",), soft_masks=soft)
    assert len(dets) == 0 and dets.image_size == (5, 7)
    assert (dets.probs is not None) == soft


# --- engines, chosen in one place -------------------------------------------------------------


def test_get_engine_gives_typed_engines_and_names_the_valid_ones():
    engine = get_engine("torchvision")
    assert isinstance(engine, Engine) and engine.name == "torchvision"
    assert isinstance(d2_engine.ENGINE, Engine) and d2_engine.ENGINE.name == "detectron2"
    with pytest.raises(ConfigError, match="expected one of torchvision, detectron2"):
        get_engine("yolo")


def test_missing_detectron2_is_an_import_error_with_the_fix(monkeypatch):
    monkeypatch.setattr(install, "available", lambda: False)
    with pytest.raises(ImportError, match=r"not installed.*engine='torchvision'"):
        get_engine("detectron2")


@pytest.mark.parametrize("engine", [tv.ENGINE, d2_engine.ENGINE])
def test_load_predictor_without_a_run_folder_needs_zero_training(engine, tmp_path):
    config = Config(output_dir=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match=r"no run folder given.*require_latest_run"):
        engine.load_predictor(config, None)


@pytest.mark.parametrize(
    ("name", "engine", "cuda", "mps", "expected"),
    [
        ("auto", "torchvision", False, True, "mps"),
        ("auto", "detectron2", False, True, "cpu"),  # detectron2 never picks mps
        ("auto", "detectron2", True, True, "cuda"),
        ("cpu", "detectron2", False, False, "cpu"),
        ("mps", "detectron2", False, True, "device: got 'mps'; detectron2 runs on cpu or cuda"),
        ("mps", "torchvision", False, False, "device: got 'mps' but Apple MPS"),
        ("cuda", "torchvision", False, False, "device: got 'cuda' but no CUDA GPU"),
    ],
)
def test_one_device_rule_for_both_engines(monkeypatch, name, engine, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    if expected.startswith("device:"):
        with pytest.raises(ConfigError, match=expected):
            resolve_device(name, engine)
    else:
        assert resolve_device(name, engine) == torch.device(expected)


def test_tiny_body_gives_the_documented_pyramid():
    feats = TinyBody()(torch.zeros(1, 3, 64, 96))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for f, width, stride in zip(feats.values(), TINY_WIDTHS, TINY_STRIDES, strict=True):
        assert tuple(f.shape) == (1, width, 64 // stride, 96 // stride)


def test_torchvision_tiny_fpn_is_the_shared_body():
    model = tv.build_model("tiny_fpn", 2, 64, 64)
    assert isinstance(model.backbone.body, TinyBody)


# --- the torchvision predictor ------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(tiny_trained_run):
    config, run_dir = tiny_trained_run
    return tv.load_predictor(config, run_dir)


def _images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (64, 64), (48, 80)][:n]
    return [rng.integers(0, 255, (*s, 3), dtype=np.uint8) for s in sizes]


def test_predictor_is_a_predictor(predictor):
    assert isinstance(predictor, Predictor)
    assert predictor.device == torch.device("cpu") and predictor.soft_masks is False


def test_predict_tensors_keeps_instances_on_the_device(predictor):
    images = _images()
    out = predictor.predict_tensors([torch.from_numpy(im) for im in images])
    assert len(out) == len(images)
    for inst, image in zip(out, images, strict=True):
        n, (h, w) = len(inst), image.shape[:2]
        assert n > 0  # score_threshold 0.0 in the tiny config: the model always finds something
        assert inst.boxes.shape == (n, 4) and inst.boxes.dtype == torch.float32
        assert inst.scores.shape == (n,) and inst.scores.dtype == torch.float32
        assert inst.class_index.dtype == torch.int64
        assert inst.mask_probs.shape == (n, h, w) and inst.mask_probs.dtype == torch.float32
        for t in (inst.boxes, inst.scores, inst.class_index, inst.mask_probs):
            assert t.device == predictor.device
        assert float(inst.mask_probs.min()) >= 0 and float(inst.mask_probs.max()) <= 1
        assert (inst.class_index >= 0).all() and (inst.class_index < 3).all()
        assert (inst.scores >= predictor.score_threshold).all()
    assert predictor.predict_tensors([]) == []


def test_predict_batch_is_the_host_form_of_predict_tensors(predictor):
    images = _images()
    batch = predictor.predict_batch(images)
    tensors = predictor.predict_tensors([torch.from_numpy(im) for im in images])
    for dets, inst in zip(batch, tensors, strict=True):
        expected = to_detections(inst, predictor.class_names, predictor.mask_threshold)
        np.testing.assert_array_equal(dets.masks, expected.masks)
        np.testing.assert_array_equal(dets.boxes, expected.boxes)
        np.testing.assert_array_equal(dets.scores, expected.scores)
        np.testing.assert_array_equal(dets.class_names, expected.class_names)


def test_predict_batch_matches_one_image_at_a_time(predictor):
    # Same-size images: the batch is not padded differently from a single image. A batched
    # convolution may round differently in the last bit, so scores and boxes get a tolerance.
    images = _images(2)
    for dets, image in zip(predictor.predict_batch(images), images, strict=True):
        single = predictor(image)
        assert list(dets.class_names) == list(single.class_names)
        np.testing.assert_allclose(dets.scores, single.scores, atol=1e-5)
        np.testing.assert_allclose(dets.boxes, single.boxes, atol=1e-3)
        assert (dets.masks != single.masks).mean() < 1e-3


def test_predictor_takes_views_and_rejects_what_is_not_a_bgr_image(predictor):
    image = _images(1)[0]
    view = image[..., ::-1].copy()[..., ::-1]  # same pixels, negative strides
    assert view.strides[2] < 0
    np.testing.assert_array_equal(predictor(view).masks, predictor(image).masks)
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict_tensors([torch.zeros(8, 8, 3)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor.predict_tensors([torch.zeros(3, 8, 8, dtype=torch.uint8)])


def test_soft_masks_fill_probs_consistent_with_masks(tiny_trained_run):
    config, run_dir = tiny_trained_run
    soft = tv.load_predictor(config, run_dir, soft_masks=True)
    image = _images(1)[0]
    dets = soft(image)
    assert soft.soft_masks and dets.probs is not None and dets.probs.shape == dets.masks.shape
    threshold = round(soft.mask_threshold * 255)
    assert (dets.probs[dets.masks] >= threshold - 1).all()
    assert (dets.probs[~dets.masks] <= threshold + 1).all()
    hard = tv.load_predictor(config, run_dir)(image)
    np.testing.assert_array_equal(hard.masks, dets.masks)


# --- training: result keys, evaluation layout, a Trainer subclass -----------------------------


def test_train_writes_its_result_to_metrics_json(tiny_trained_run):
    import json

    _, run_dir = tiny_trained_run
    result = TrainResult.from_dict(json.loads((run_dir / "metrics.json").read_text()))
    assert result.engine == "torchvision" and result.model == run_dir / "model_final.pth"
    assert result.run_dir == run_dir and (result.start_iteration, result.iterations) == (0, 4)
    assert [h["iteration"] for h in result.loss_history] == [1, 2, 3, 4]
    assert {"backbone", "device", "amp", "mask_threshold"} <= set(result.details)


class CountingTrainer(Trainer):
    """The notebook's shape: its own loader (no augmentations) and step, counted."""

    loaders: ClassVar[list[int]] = []
    steps: ClassVar[list[int]] = []

    def build_train_loader(self):
        type(self).loaders.append(self.start_iteration)
        return train_loader(self.config, self.dataset, [], start_iteration=self.start_iteration)

    def run_step(self, images, targets):
        type(self).steps.append(len(images))
        return super().run_step(images, targets)


def test_a_trainer_subclass_is_the_one_that_trains(tiny_config, tiny_dataset):
    config = tiny_config.replace(iterations=2, run_name="sub")
    result = tv.train(config, tiny_dataset, config.new_run_dir(), trainer=CountingTrainer)
    assert CountingTrainer.loaders == [0] and CountingTrainer.steps == [2, 2]
    assert isinstance(result, TrainResult) and result.iterations == 2
    with pytest.raises(TypeError, match="subclass of"):
        tv.train(config, tiny_dataset, config.new_run_dir(), trainer=dict)  # type: ignore[arg-type]
