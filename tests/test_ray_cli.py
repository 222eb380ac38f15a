"""The Ray batch's parts that need no Ray: the install hint and the actor plan."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from thingmask.cli import main
from thingmask.distributed.ray_batch import RAY_INSTALL_HINT, ActorPlan, plan_actors


def test_ray_flag_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when missing
    assert main(["video", str(tmp_path), "--output", str(tmp_path / "out"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thingmask video: error: ") and "Traceback" not in err
    assert "pip install 'thingmask[ray]'" in err and RAY_INSTALL_HINT in err


def test_ray_flag_swallowing_src_is_explained(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray")
    assert main(["video", "--ray", str(tmp_path)]) == 2
    assert "put SRC before --ray" in capsys.readouterr().err


CPU4 = {"CPU": 4.0}
GPU2 = {"CPU": 16.0, "GPU": 2.0}


@pytest.mark.parametrize(
    ("resources", "videos", "kwargs", "plan"),
    [
        (CPU4, 10, {}, ActorPlan(4, 1.0, 0.0)),  # CPU only: one worker per CPU
        (CPU4, 3, {}, ActorPlan(3, 1.0, 0.0)),  # never more workers than videos
        (CPU4, 10, {"cpus_per_actor": 2}, ActorPlan(2, 2.0, 0.0)),
        (GPU2, 10, {}, ActorPlan(2, 1.0, 1.0)),  # one worker per GPU
        (GPU2, 10, {"gpus_per_actor": 0.5}, ActorPlan(4, 1.0, 0.5)),  # two share a GPU
        (GPU2, 10, {"gpus_per_actor": 0.5, "actors": 3}, ActorPlan(3, 1.0, 0.5)),
        (GPU2, 10, {"device": "cpu"}, ActorPlan(10, 1.0, 0.0)),  # device=cpu: CPU workers
        (GPU2, 10, {"gpus_per_actor": 0}, ActorPlan(10, 1.0, 0.0)),
        ({"CPU": 2.0, "GPU": 4.0}, 10, {}, ActorPlan(4, 0.5, 1.0)),  # GPUs not capped by CPUs
    ],
)
def test_plan_actors(resources, videos: int, kwargs, plan: ActorPlan) -> None:
    assert plan_actors(resources, videos, **kwargs) == plan


@pytest.mark.parametrize(
    ("resources", "kwargs", "message"),
    [
        (CPU4, {"gpus_per_actor": 1}, "has no GPUs"),
        (GPU2, {"gpus_per_actor": 0.5, "actors": 5}, "at most 4"),
        (CPU4, {"actors": 0}, "at least 1"),
        (CPU4, {"cpus_per_actor": 8}, "cannot hold one actor"),
        (CPU4, {"cpus_per_actor": 0}, "expected a number > 0"),
        (GPU2, {"gpus_per_actor": 1.5}, "a fraction of one GPU"),
    ],
)
def test_plan_actors_rejects_what_cannot_fit(resources, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_actors(resources, 10, **kwargs)
