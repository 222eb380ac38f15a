"""Training on several GPUs (one process each) and machines, both engines, from one config.

    thingmask train --config my.yaml --num-gpus 4          # 4 GPUs of this machine

:func:`train_distributed` starts one process per GPU and trains the configured engine in each:

* ``detectron2``: ``detectron2.engine.launch``; its ``DefaultTrainer`` (our ``SafeTrainer``)
  wraps the model in DDP, shards the loader and checkpoints on the main process.
* ``torchvision``: :func:`thingmask.engines.distributed.spawn`; the engine's ``Trainer`` sees
  torch.distributed and trains with DDP (DistributedSampler-style sharding of each step's
  batch, rank-0 checkpoints and files, ``nccl`` on CUDA, ``gloo`` on CPU).

The same settings mean the same training on 1 or N GPUs: ``batch_size`` is the batch of one step
over all processes (detectron2's ``IMS_PER_BATCH``), split evenly; ``learning_rate`` and
``iterations`` stay. Rank 0 writes the run folder exactly as a one-GPU run does.

On a machine without CUDA the torchvision engine runs N CPU processes on ``gloo`` (for tests
and trying it out; it is not faster than one process there).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines import EngineTrainer, TrainHook, TrainResult, get_engine, resolve_device
from thingmask.engines.distributed import is_main, spawn

__all__ = ["check_processes", "train_distributed"]

log = logging.getLogger(__name__)


def train_distributed(
    config: Config,
    dataset: PreparedDataset,
    run_dir: str | Path,
    *,
    num_gpus: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    hooks: Sequence[TrainHook] = (),
    resume_from: str | Path | None = None,
    trainer: type[EngineTrainer] | None = None,
) -> TrainResult | None:
    """Train ``config.engine`` with ``num_gpus`` processes on each of ``num_machines`` machines.

    Args:
        config, dataset, run_dir, hooks, resume_from, trainer: as for the engine's ``train``
            (``trainer`` must be importable by name: a class defined in a module, not in a
            notebook cell; ``hooks`` run in rank 0 only).
        num_gpus: processes on this machine (one per GPU; CPU processes without CUDA).
        num_machines, machine_rank, dist_url: several machines: run the same call on each with
            its ``machine_rank`` and the same ``dist_url="tcp://HEAD_IP:PORT"``; every machine
            sees the dataset and ``run_dir`` under the same paths.

    Returns:
        The engine's :class:`~thingmask.engines.TrainResult` from the first process (None on
        the other machines).
    """
    world = check_processes(config, num_gpus, num_machines)
    engine = get_engine(config.engine)  # a missing detectron2 fails here, in this process
    if world == 1:
        return engine.train(
            config, dataset, run_dir, hooks=hooks, resume_from=resume_from, trainer=trainer
        )
    device = resolve_device(config.device, config.engine)
    if device.type == "mps":
        raise ValueError("training on several processes needs CUDA GPUs or CPU; set device=cpu")
    if config.engine == "detectron2" and device.type != "cuda":
        raise ValueError(
            "detectron2 trains on several processes with CUDA GPUs only (one per process); "
            "on CPU use num_gpus=1, or engine=torchvision to try several processes"
        )
    log.info("training %s on %d processes x %d machines", config.engine, num_gpus, num_machines)
    # the first process leaves the engine's result here (processes return nothing)
    folder = Path(tempfile.mkdtemp(prefix="thingmask-train-"))
    result = folder / "result.json"
    # config pickles as its plain settings and is validated again in each process
    args = (config, dataset, str(run_dir), tuple(hooks), resume_from, trainer, str(result))
    try:
        if config.engine == "detectron2":
            from detectron2.engine import launch

            launch(_train_one, num_gpus, num_machines, machine_rank, dist_url, args=args)
        else:
            spawn(
                _train_one,
                num_gpus,
                num_machines=num_machines,
                machine_rank=machine_rank,
                dist_url=dist_url,
                args=args,
                use_cuda=device.type == "cuda",
            )
        if not result.is_file():
            return None
        return TrainResult.from_dict(json.loads(result.read_text(encoding="utf-8")))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_processes(config: Config, num_gpus: int, num_machines: int = 1) -> int:
    """The number of processes, after checking they can share ``batch_size`` (ValueError)."""
    world = num_gpus * num_machines
    if num_gpus < 1 or num_machines < 1:
        raise ValueError(f"num_gpus={num_gpus}, num_machines={num_machines}: expected >= 1")
    if config.batch_size % world:
        raise ValueError(
            f"batch_size={config.batch_size} is split over {world} processes; set batch_size to "
            f"a multiple of {world} (it is the batch of one step over all GPUs)"
        )
    return world


def _train_one(
    config: Config,
    dataset: PreparedDataset,
    run_dir: str,
    hooks: tuple[TrainHook, ...],
    resume_from: str | Path | None,
    trainer: type[EngineTrainer] | None,
    result_path: str,
) -> None:
    """One process of the job (torch.distributed is initialised by the launcher)."""
    result = get_engine(config.engine).train(
        config,
        dataset,
        run_dir,
        hooks=hooks if is_main() else (),
        resume_from=resume_from,
        trainer=trainer,
    )
    if is_main():
        Path(result_path).write_text(json.dumps(result.to_dict(), default=str), encoding="utf-8")
