"""torch.distributed for the trainers: who am I, DDP wrapping, sharded batches, process start.

Engine-neutral helpers; the torchvision :class:`Trainer` uses them for DDP (detectron2's own
``DefaultTrainer`` does the same with ``detectron2.utils.comm``). With one process every helper
is a no-op, so single-device training runs the very same code.

Conventions (the same as detectron2's):
    * ``config.batch_size`` is the batch of one optimizer step over ALL processes; each of the
      N processes takes ``batch_size / N`` images of it (so the same config trains the same
      way on 1 or N GPUs, and the learning rate stays);
    * rank 0 alone writes files (checkpoints, final model, metrics, plots) and runs hooks;
    * backend ``nccl`` on CUDA, ``gloo`` on CPU; one process per GPU, process ``i`` on
      ``cuda:i`` of its machine.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "barrier",
    "init_from_env",
    "is_main",
    "mean_scalars",
    "rank",
    "shard_batch_size",
    "spawn",
    "unwrap",
    "world_size",
    "wrap_ddp",
]

log = logging.getLogger(__name__)

TIMEOUT = timedelta(minutes=30)


def world_size() -> int:
    """Processes in the training job (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank, 0..world_size-1 (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that writes files and runs hooks (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op with one)."""
    if world_size() > 1:
        dist.barrier()


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); True when distributed.

    Already initialised (by :func:`spawn` or the caller): nothing to do. One process: False.
    """
    if world_size() > 1:
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend_for(device), init_method="env://", timeout=TIMEOUT)
    log.info("torch.distributed: rank %d of %d (%s)", rank(), world_size(), backend_for(device))
    return True


def shard_batch_size(batch_size: int, processes: int | None = None) -> int:
    """One process's share of a step's ``batch_size`` images (``batch_size / processes``;
    default: the processes of this job)."""
    n = world_size() if processes is None else processes
    if batch_size % n:
        raise ValueError(
            f"batch_size={batch_size} is the batch of one step over all {n} processes and "
            f"must divide evenly among them; set batch_size to a multiple of {n}"
        )
    return batch_size // n


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when there are several processes, else itself.

    Keep the unwrapped module for ``state_dict`` (checkpoints stay loadable by one process).
    """
    if world_size() == 1:
        return model
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return nn.parallel.DistributedDataParallel(model, device_ids=[index])


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_scalars(scalars: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each scalar over all processes (losses of the whole step, for logs)."""
    if world_size() == 1:
        return dict(scalars)
    keys = sorted(scalars)
    values = torch.tensor([float(scalars[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= world_size()
    return dict(zip(keys, values.tolist(), strict=True))


# ------------------------------------------------------------------------------------------------
# Starting the processes (the torchvision engine's counterpart of detectron2's ``launch``)
# ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    fn: Callable[..., Any],
    num_processes: int,
    *,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: tuple[Any, ...] = (),
    use_cuda: bool | None = None,
) -> None:
    """Run ``fn(*args)`` in ``num_processes`` new processes on this machine, all in one process
    group of ``num_processes x num_machines``; returns when all have finished.

    ``dist_url``: ``tcp://HEAD:PORT`` reachable from every machine (the same on all), or
    ``"auto"`` (one machine: a free local port). A failing process raises here
    (``torch.multiprocessing.ProcessRaisedException`` with its traceback). ``use_cuda``:
    one GPU per process and ``nccl`` (default: when CUDA is available), else CPU and ``gloo``.
    """
    use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if num_processes < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ValueError(
            f"num_processes={num_processes}, num_machines={num_machines}, machine_rank="
            f"{machine_rank}: expected at least 1 process and machine, 0 <= machine_rank < "
            "num_machines"
        )
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("dist_url='auto' works on one machine; pass tcp://HEAD_IP:PORT")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    if use_cuda and num_processes > torch.cuda.device_count():
        raise ValueError(
            f"{num_processes} processes but {torch.cuda.device_count()} GPUs on this machine; "
            "start one process per GPU"
        )
    torch.multiprocessing.start_processes(
        _worker,
        nprocs=num_processes,
        args=(fn, num_processes, num_machines, machine_rank, dist_url, args, use_cuda),
        start_method="spawn",  # CUDA cannot be used in forked children
    )


def _worker(
    local_rank: int,
    fn: Callable[..., Any],
    num_processes: int,
    num_machines: int,
    machine_rank: int,
    dist_url: str,
    args: tuple[Any, ...],
    use_cuda: bool,
) -> None:
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # N CPU processes share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))
    dist.init_process_group(
        backend_for(device),
        init_method=dist_url,
        world_size=num_processes * num_machines,
        rank=machine_rank * num_processes + local_rank,
        timeout=TIMEOUT,
    )
    os.environ["LOCAL_RANK"] = str(local_rank)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()
