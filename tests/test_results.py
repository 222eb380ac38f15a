"""What train, evaluate and cut_video return: frozen dataclasses with the documented fields,
readable as text, JSON round trips; one Engine implementation for both engines."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from thingmask.engines import Engine, EvalResult, TrainResult
from thingmask.engines.base import checked_trainer
from thingmask.engines.facade import EngineFacade
from thingmask.pipeline import CutResult, DemoScores

TRAIN = TrainResult(
    engine="torchvision",
    run_dir=Path("outputs/demo-1"),
    model=Path("outputs/demo-1/model_final.pth"),
    start_iteration=2,
    iterations=6,
    final_loss=0.4321,
    wall_time_s=12.5,
    seconds_per_iteration=3.125,
    loss_history=({"iteration": 5.0, "loss": 0.5}, {"iteration": 6.0, "loss": 0.4321}),
    details={"device": "cpu", "amp": False},
)
METRICS = {
    "num_images": 3,
    "num_detections": 17,
    "bbox": {"AP": 51.25, "AP50": 90.0, "APl": math.nan, "AP-cat": 60.0, "AP-tabby dog": 42.5},
    "segm": {"AP": 48.0, "AP50": 88.0, "APl": math.nan, "AP-cat": 55.0, "AP-tabby dog": 41.0},
}


def test_result_fields_are_the_documented_ones_and_frozen() -> None:
    assert [f.name for f in dataclasses.fields(TrainResult)] == [
        "engine",
        "run_dir",
        "model",
        "start_iteration",
        "iterations",
        "final_loss",
        "wall_time_s",
        "seconds_per_iteration",
        "loss_history",
        "details",
    ]
    assert [f.name for f in dataclasses.fields(EvalResult)] == [
        "bbox",
        "segm",
        "num_images",
        "num_detections",
        "checkpoint",
    ]
    assert [f.name for f in dataclasses.fields(CutResult)] == ["videos", "frames", "scores"]
    for result in (TRAIN, EvalResult.from_metrics(METRICS, "model_final.pth"), CutResult(())):
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.checkpoint = "other"  # type: ignore[misc,union-attr]


def test_train_result_round_trips_through_json_and_reads_as_text() -> None:
    data = json.loads(json.dumps(TRAIN.to_dict()))
    assert data["model"] == "outputs/demo-1/model_final.pth" and data["amp"] is False
    assert TrainResult.from_dict(data) == TRAIN
    text = str(TRAIN)
    assert "torchvision: 6 iterations (4 in this call, resumed at 2)" in text
    assert "final loss  : 0.4321" in text and "device      : cpu" in text
    assert "loss_history" not in repr(TRAIN)  # the long list stays out of the notebook's repr


def test_eval_result_keeps_the_eval_json_layout_and_prints_a_table() -> None:
    result = EvalResult.from_metrics(METRICS, "model_final.pth")
    assert result.box_ap == 51.25 and result.mask_ap == 48.0
    assert result.to_dict() == {**METRICS, "checkpoint": "model_final.pth"}
    lines = str(result).splitlines()
    assert lines[0] == "validation AP (%) of model_final.pth: 3 images, 17 detections"
    assert lines[1].split() == ["AP", "AP50", "APl", "cat", "tabby", "dog"]
    assert lines[2].split() == ["box", "51.2", "90.0", "n/a", "60.0", "42.5"]
    assert lines[3].split() == ["mask", "48.0", "88.0", "n/a", "55.0", "41.0"]


def test_cut_result_without_scores_has_no_figures() -> None:
    batch = CutResult(videos=(Path("a_cutout.mp4"), Path("b_cutout.mp4")))
    assert batch.figures() == {} and str(batch) == "2 video(s), a_cutout.mp4, b_cutout.mp4"
    scores = DemoScores(0.9, 0.8, 0.95, 0.85, 1, 0, 0.95, 0.5)
    one = CutResult(videos=(Path("demo_cutout.mp4"),), frames=8, scores=scores)
    assert one.figures() == {"mean_iou": 0.95, "J": 0.9, "F": 0.8, "id_switches": 1}
    assert str(one).splitlines() == [
        "1 video(s), 8 frames: demo_cutout.mp4",
        "j 0.9, f 0.8, fg_j 0.95, fg_f 0.85, id_switches 1, vanished 0, mean_iou 0.95, min_iou 0.5",
    ]


def test_both_engines_are_the_one_facade() -> None:
    from thingmask.engines.detectron2_engine import engine as d2_engine
    from thingmask.engines.torchvision_engine import engine as tv_engine

    for module in (tv_engine, d2_engine):
        assert type(module.ENGINE) is EngineFacade and isinstance(module.ENGINE, Engine)
        assert module.evaluate == module.ENGINE.evaluate
    assert (tv_engine.ENGINE.name, d2_engine.ENGINE.name) == ("torchvision", "detectron2")


def test_checked_trainer_names_the_base_class() -> None:
    class Base:
        def train(self) -> None: ...

    class Mine(Base): ...

    assert checked_trainer(None, Base, Mine) is Mine
    assert checked_trainer(Mine, Base, Base) is Mine
    with pytest.raises(
        TypeError, match=r"trainer: got <class 'dict'>; expected a subclass of .*Base"
    ):
        checked_trainer(dict, Base, Base)  # type: ignore[arg-type]
