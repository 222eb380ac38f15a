"""Training with several processes: torchvision DDP on gloo (CPU), the launcher, the CLI flag."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.distributed.launch import train_distributed
from thingmask.engines import TrainResult
from thingmask.engines.distributed import rank, shard_batch_size, world_size
from thingmask.engines.torchvision_engine.data import train_loader
from thingmask.engines.torchvision_engine.trainer import Trainer


class HashingTrainer(Trainer):
    """The package's Trainer that also records, per process, a hash of its final weights and
    the number of images of each step it trained on (a module-level class: the spawned
    processes import it by name)."""

    def run_step(self, images: Any, targets: Any) -> dict[str, float]:
        self.images_seen = [*getattr(self, "images_seen", []), len(images)]
        return super().run_step(images, targets)

    def train(self) -> TrainResult:
        result = super().train()
        digest = hashlib.sha256()
        for value in self.model.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        record = {"world": world_size(), "sha": digest.hexdigest(), "images": self.images_seen}
        (self.run_dir / f"rank{rank()}.json").write_text(json.dumps(record))
        return result


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tiny_config: Config, tiny_dataset: PreparedDataset) -> None:
    config = tiny_config.replace(iterations=2, checkpoint_period=2, batch_size=2)
    run_dir = config.new_run_dir()
    metrics = train_distributed(config, tiny_dataset, run_dir, num_gpus=2, trainer=HashingTrainer)
    assert metrics is not None and metrics.iterations == 2 and len(metrics.loss_history) == 2
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["images"] for r in ranks] == [[1, 1], [1, 1]]  # each took half of every step
    assert ranks[0]["sha"] == ranks[1]["sha"]  # DDP kept the two models identical
    # rank 0 alone wrote the run folder, as a one-process run does; no temporary files
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["model_0000002.pth"]
    assert (run_dir / "model_final.pth").is_file() and (run_dir / "model_meta.json").is_file()
    assert not [p for p in run_dir.rglob("*") if "tmp" in p.name or ".part" in p.name]
    from thingmask.pipeline import load_predictor

    predictor = load_predictor(config, run_dir)
    assert predictor(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()).image_size == (64, 64)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_process_takes_its_share_of_every_step(
    tiny_config: Config, tiny_dataset: PreparedDataset, world: int
) -> None:
    """The N per-process loaders together yield exactly the batches of the one-process loader."""
    config = tiny_config.replace(batch_size=4, iterations=3)
    whole = list(train_loader(config, tiny_dataset, config.augmentations))
    shards = [
        list(train_loader(config, tiny_dataset, config.augmentations, num_replicas=world, rank=r))
        for r in range(world)
    ]
    assert all(len(s) == len(whole) == 3 for s in shards)
    for step, (images, targets) in enumerate(whole):
        assert all(len(shards[r][step][0]) == 4 // world for r in range(world))
        for j, (image, target) in enumerate(zip(images, targets, strict=True)):
            # sample j of the step is in process j % world, at place j // world
            own_images, own_targets = shards[j % world][step]
            assert torch.equal(own_images[j // world], image)
            assert torch.equal(own_targets[j // world]["masks"], target["masks"])


def test_batch_must_split_evenly(tiny_config: Config, tiny_dataset: PreparedDataset) -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        train_distributed(tiny_config.replace(batch_size=3), tiny_dataset, "unused", num_gpus=2)
    assert shard_batch_size(4) == 4  # one process: the whole batch


@pytest.mark.detectron2
def test_detectron2_several_processes_need_cuda(
    tiny_config: Config, tiny_dataset: PreparedDataset
) -> None:
    pytest.importorskip("detectron2")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the CPU refusal does not apply")
    config = tiny_config.replace(engine="detectron2")
    with pytest.raises(ValueError, match="CUDA GPUs only"):
        train_distributed(config, tiny_dataset, "unused", num_gpus=2)


def test_cli_num_gpus_that_cannot_share_the_batch(tiny_config: Config, tmp_path, capsys) -> None:
    from thingmask.cli import main

    settings = tiny_config.replace(batch_size=3).save_yaml(tmp_path / "config.yaml")
    assert main(["train", "--config", str(settings), "--num-gpus", "2"]) == 2
    assert "set batch_size to a multiple of 2" in capsys.readouterr().err
    assert not Path(tiny_config.output_dir).exists()  # nothing was started


TORCHRUN_SCRIPT = """
import logging
import sys
from thingmask.config import load_config
from thingmask.datasets import load_prepared
from thingmask.engines import get_engine

logging.basicConfig(level=logging.INFO)
config = load_config(sys.argv[1])
dataset = load_prepared(config.dataset_dir)
get_engine("torchvision").train(config, dataset, sys.argv[2])
"""


@pytest.mark.slow
def test_torchrun_starts_ddp_from_the_environment(tiny_config: Config, tmp_path) -> None:
    """A user's script under ``torchrun --nproc_per_node 2`` trains with DDP (env:// group)."""
    import subprocess
    import sys

    config = tiny_config.replace(iterations=2, checkpoint_period=2, batch_size=2)
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += [str(script), str(config.save_yaml(tmp_path / "c.yaml")), str(run_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 of 2 (gloo)" in done.stderr  # the second process joined the group
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iterations"] == 2 and len(metrics["loss_history"]) == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["model_0000002.pth"]
