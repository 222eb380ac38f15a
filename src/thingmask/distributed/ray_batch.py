"""The video batch on a Ray cluster: many videos spread over worker processes and machines.

:func:`process_many_ray` does what :func:`thingmask.jobs.job.process_many` does (same outputs,
same ``summary.csv``), with the videos shared out over Ray actors. Each actor loads the model
once and calls :func:`~thingmask.jobs.job.run_job` for one video at a time, so every output is
written exactly as in the sequential run: in the job's own stage, renamed into place when
complete, with the metadata JSON (the "done" marker) last. The driver holds the output folder's
lock (:func:`thingmask.ownership.folder_lock`) for the whole batch; the workers never take it.

Exactly once:
    * the driver hands each video to one actor at a time, never to two;
    * a worker that dies mid-video (killed, out of memory, machine lost) leaves only its hidden
      stage folder (``.thingmask-stage-…``, removed after the batch); the driver gives the
      video to another actor, which starts it again from the beginning (``retries`` times at
      most, then it is reported ``failed``);
    * a driver that is stopped and started again skips every video whose done-marker is valid
      and redoes the unfinished ones.

Resources: one predictor per actor. With GPUs in the cluster each actor takes
``gpus_per_actor`` of one (0.5 puts two actors on each GPU); without GPUs the actors run on
CPU with ``cpus_per_actor`` threads each. All paths (videos, run folder, outputs) must be the
same on every machine of the cluster (a shared file system).

Ray is an optional extra (``pip install 'thingmask[ray]'``); this module imports without it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

from thingmask.config import Config
from thingmask.engines import Predictor, read_model_meta
from thingmask.jobs.batch import VIDEO_EXTENSIONS, clean_output_folders, plan_batch, write_summary
from thingmask.jobs.job import run_job
from thingmask.jobs.outputs import VideoResult
from thingmask.ownership import folder_lock
from thingmask.pipeline import load_predictor

__all__ = ["RAY_INSTALL_HINT", "ActorPlan", "import_ray", "plan_actors", "process_many_ray"]

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = (
    "the Ray batch needs the optional package Ray. Install it with "
    "pip install 'thingmask[ray]'  (or: pip install 'ray>=2.40,<3'), then run again"
)

Loader = Callable[[Config, "Path | None"], Predictor]


def import_ray() -> ModuleType:
    """The ``ray`` module, or ImportError saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ImportError(RAY_INSTALL_HINT) from None


# ------------------------------------------------------------------------------------------------
# Planning (pure: what to ask the cluster for)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorPlan:
    """How many actors and what each one reserves (Ray resource units)."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_actor > 0


def plan_actors(
    resources: Mapping[str, float],
    videos: int,
    *,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float = 1.0,
    device: str = "auto",
) -> ActorPlan:
    """Decide the actors from the cluster's resources (``ray.cluster_resources()``).

    Defaults: on a cluster with GPUs (and ``device`` not ``cpu``/``mps``), one actor per GPU
    (``gpus_per_actor=1``); without GPUs, one actor per ``cpus_per_actor`` CPUs. ``actors`` is
    capped at the number of videos. Raises ValueError when the request does not fit.
    """
    if videos < 1:
        raise ValueError("no videos to process")
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor={cpus_per_actor}: expected a number > 0, e.g. 1")
    cluster_gpus = float(resources.get("GPU", 0.0))
    cluster_cpus = float(resources.get("CPU", 0.0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if cluster_gpus > 0 and device not in ("cpu", "mps") else 0.0
    if gpus_per_actor < 0 or (gpus_per_actor > 1 and gpus_per_actor != int(gpus_per_actor)):
        raise ValueError(
            f"gpus_per_actor={gpus_per_actor}: expected 0 (CPU), a fraction of one GPU such as "
            "0.5 (two actors share a GPU) or a whole number"
        )
    if gpus_per_actor > 0:
        if cluster_gpus <= 0:
            raise ValueError(
                f"gpus_per_actor={gpus_per_actor} but the Ray cluster has no GPUs. Use "
                "gpus_per_actor=0 (CPU actors) or join a GPU machine (ray start --address ...)"
            )
        fit = math.floor(cluster_gpus / gpus_per_actor + 1e-9)
        # A GPU actor needs little CPU: feeding frames; don't let CPUs cap the GPU count.
        cpus_per_actor = min(cpus_per_actor, cluster_cpus / max(fit, 1)) if cluster_cpus else 0
    else:
        fit = math.floor(cluster_cpus / cpus_per_actor + 1e-9)
    if fit < 1:
        raise ValueError(
            f"the Ray cluster ({cluster_cpus:g} CPUs, {cluster_gpus:g} GPUs) cannot hold one "
            f"actor of {cpus_per_actor:g} CPUs and {gpus_per_actor:g} GPUs; lower "
            "cpus_per_actor / gpus_per_actor or add machines"
        )
    if actors is None:
        actors = fit
    elif actors < 1:
        raise ValueError(f"actors={actors}: expected at least 1")
    elif actors > fit:
        raise ValueError(
            f"actors={actors} do not fit in the Ray cluster ({cluster_cpus:g} CPUs, "
            f"{cluster_gpus:g} GPUs) at {cpus_per_actor:g} CPUs and {gpus_per_actor:g} GPUs "
            f"each; at most {fit}. Lower actors or join more machines"
        )
    return ActorPlan(min(actors, videos), float(cpus_per_actor), float(gpus_per_actor))


# ------------------------------------------------------------------------------------------------
# The worker (an actor: one process, one model)
# ------------------------------------------------------------------------------------------------
class VideoWorker:
    """One model, many videos. Used as a Ray actor (``ray.remote(VideoWorker)``) with
    ``max_concurrency=2`` so :meth:`progress` answers while :meth:`process` runs."""

    def __init__(self, config: Config, run_dir: str | None, loader: Loader, threads: int) -> None:
        # config arrives pickled as its plain settings and validated again (Config.__reduce__)
        if threads > 0:  # a CPU actor: as many torch threads as CPUs it reserved
            import torch

            torch.set_num_threads(threads)
            if config.threads == "auto":  # the video job plans its threads within these CPUs
                config = config.replace(threads=threads)
        self.config = config
        self.predictor = loader(config, Path(run_dir) if run_dir else None)
        self.frames = 0

    def ready(self) -> dict[str, Any]:
        """Where this worker runs (host, pid, device): the driver waits for it before work."""
        device = getattr(self.predictor, "device", "")
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(device)}

    def progress(self) -> int:
        """Frames this worker has finished since it started."""
        return self.frames

    def process(self, src: str, dst: str, force: bool, overwrite: bool = False) -> dict[str, Any]:
        """``run_job`` for one video (the driver holds the folder's lock); a failure comes
        back as a ``failed`` result (like ``process_many``): only a dead worker raises."""

        def count(_index: int, _frame: Any, _kept: Any) -> None:
            self.frames += 1

        try:
            result = run_job(
                Path(src),
                Path(dst),
                self.predictor,
                self.config,
                on_frame=count,
                force=force,
                overwrite=overwrite,
                progress=False,
            )
        except Exception as exc:  # one bad file must not stop the batch
            log.error("%s: failed: %s", src, exc)
            result = VideoResult(
                source=src, output=dst, status="failed", error=f"{type(exc).__name__}: {exc}"
            )
        return result.to_dict()


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    actor: Any  # None after its worker died, until work needs a new one
    job: int | None = None  # index of the video it is working on
    ref: Any = None  # ObjectRef of that call
    frames: int = 0  # frames its current worker reported
    frames_before: int = 0  # frames of the workers it had before (died)


def _connect(ray: ModuleType, address: str | None) -> None:
    if ray.is_initialized():  # a notebook that called ray.init() itself: use that session
        return
    if address:
        log.info("connecting to the Ray cluster at %s", address)
    else:
        log.info("Ray: joining the cluster started on this machine, or starting a local one")
    ray.init(address=address or None, log_to_driver=True, logging_level=logging.WARNING)


def process_many_ray(
    src: str | Path,
    out_dir: str | Path,
    config: Config,
    run_dir: str | Path | None,
    *,
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float = 1.0,
    retries: int = 2,
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    loader: Loader = load_predictor,
) -> list[VideoResult]:
    """``process_many`` on Ray: every video of a file / folder / glob, one output each in
    ``out_dir``, spread over Ray actors (one model each). Same outputs, same ``summary.csv``.

    Args:
        src, out_dir: as for :func:`thingmask.jobs.job.process_many` (paths every worker sees).
        config: the settings (the same for every video).
        run_dir: trained run folder; None with ``zero_training`` (COCO model).
        address: Ray cluster (``"auto"``, ``"10.0.0.5:6379"``, ``"ray://host:10001"``); None
            joins a cluster started on this machine or starts a local one. Ignored when Ray is
            already initialised in this process (e.g. by a notebook cell).
        actors: number of workers (default: all that fit, at most one per video).
        gpus_per_actor: GPU share of each worker; 0.5 puts two workers on one GPU, 0 runs on
            CPU. Default: 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs each worker reserves (and torch threads on CPU workers).
        retries: how often a video is given to another worker after its worker died.
        force: redo videos already finished.
        overwrite: replace files at output names that thingmask did not write.
        progress: one tqdm bar over all workers (videos done, frames/s).
        loader: ``loader(config, run_dir) -> Predictor``, run once in each worker (default:
            :func:`thingmask.pipeline.load_predictor`, the notebook's and CLI's).

    Returns:
        One :class:`VideoResult` per video, in the order of ``find_videos``.
    """
    ray = import_ray()
    if retries < 0:
        raise ValueError(f"retries={retries}: expected 0 or more")
    out_dir = Path(out_dir)
    if out_dir.suffix.lower() in VIDEO_EXTENSIONS:
        raise ValueError(
            f"{out_dir}: the Ray batch writes one cut-out per video into a folder; "
            "pass a folder such as outputs/cut"
        )
    if run_dir is not None and loader is load_predictor and not config.zero_training:
        # the usual mistakes fail here, before any worker starts or any folder is made
        meta = read_model_meta(run_dir)
        config.check_classes(meta.get("class_names", config.display_things))
    jobs = plan_batch(src, out_dir, config, overwrite=overwrite)  # the sequential batch's checks
    with folder_lock(out_dir):  # held by this driver (never the workers) until the summary
        clean_output_folders(jobs)
        videos, outputs = [v for v, _ in jobs], [d for _, d in jobs]
        _connect(ray, address)
        plan = plan_actors(
            ray.cluster_resources(),
            len(videos),
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            cpus_per_actor=cpus_per_actor,
            device=config.device,
        )
        if not plan.on_gpu and config.device == "cuda":
            config = config.replace(device="cpu")  # CPU actors see no GPU; outputs do not change
        actor_cls = ray.remote(VideoWorker).options(
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor,
            max_concurrency=2,  # progress() answers while process() runs
            max_restarts=0,  # the driver replaces a dead worker itself (and requeues its video)
        )
        threads = 0 if plan.on_gpu else max(1, int(plan.cpus_per_actor))
        run = None if run_dir is None else str(run_dir)

        def start_worker() -> Any:
            return actor_cls.remote(config, run, loader, threads)

        slots = [_Slot(start_worker()) for _ in range(plan.actors)]
        _wait_ready(ray, slots)
        log.info(
            "Ray batch: %d videos on %d workers (%g CPUs, %g GPUs each)",
            len(videos),
            plan.actors,
            plan.cpus_per_actor,
            plan.gpus_per_actor,
        )
        try:
            results = _drive(
                ray,
                slots,
                videos,
                outputs,
                start_worker,
                retries=retries,
                force=force,
                overwrite=overwrite,
                bar=progress,
            )
        finally:
            for slot in slots:  # free the GPUs/CPUs now, not when the session ends
                if slot.actor is not None:
                    ray.kill(slot.actor)
        clean_output_folders(jobs)  # stages of workers that died (every worker is gone now)
        write_summary(out_dir, results, overwrite=overwrite)
    return results


def _wait_ready(ray: ModuleType, slots: list[_Slot]) -> None:
    """Block until every worker has loaded its model; a worker that cannot is an error here
    (bad run folder, display things not in the model), before any video is touched."""
    try:
        hosts = ray.get([slot.actor.ready.remote() for slot in slots])
    except ray.exceptions.RayActorError as exc:
        for slot in slots:
            ray.kill(slot.actor)
        raise RuntimeError(f"a Ray worker could not load the model: {_cause(exc)}") from None
    for h in hosts:
        log.info("Ray worker pid %s on %s (%s)", h["pid"], h["host"], h["device"] or "cpu")


def _cause(exc: BaseException) -> str:
    """The useful last line of a Ray error (the worker's own exception when there is one)."""
    text = str(exc).strip().splitlines()
    errors = [line for line in text if "Error:" in line and not line.startswith(" ")]
    return errors[-1] if errors else (text[-1] if text else type(exc).__name__)


def _drive(
    ray: ModuleType,
    slots: list[_Slot],
    videos: list[Path],
    outputs: list[Path],
    start_worker: Callable[[], Any],
    *,
    retries: int,
    force: bool,
    overwrite: bool,
    bar: bool,
) -> list[VideoResult]:
    """Hand out videos one at a time, collect results, replace dead workers."""
    pending = deque(range(len(videos)))
    attempts = [0] * len(videos)
    results: list[VideoResult | None] = [None] * len(videos)
    t0 = time.perf_counter()
    with tqdm(
        total=len(videos), unit="video", desc="videos (Ray)", disable=not bar or len(videos) < 2
    ) as pbar:
        while pending or any(s.job is not None for s in slots):
            for slot in slots:
                if slot.job is None and pending:
                    if slot.actor is None:
                        slot.actor = start_worker()
                    job = pending.popleft()
                    attempts[job] += 1
                    slot.job = job
                    slot.ref = slot.actor.process.remote(
                        str(videos[job]), str(outputs[job]), force, overwrite
                    )
            busy = [s for s in slots if s.job is not None]
            ready, _ = ray.wait([s.ref for s in busy], num_returns=1, timeout=0.5)
            for slot in busy:
                if slot.ref not in ready or slot.job is None:
                    continue
                job, ref = slot.job, slot.ref
                slot.job, slot.ref = None, None
                try:
                    results[job] = VideoResult(**ray.get(ref))
                except ray.exceptions.RayActorError as exc:
                    log.warning(
                        "%s: its Ray worker died (%s); %s",
                        videos[job],
                        _cause(exc),
                        "another worker starts it again" if attempts[job] <= retries else "failed",
                    )
                    _drop_worker(ray, slot)
                    if attempts[job] <= retries:
                        pending.appendleft(job)
                        continue
                    results[job] = VideoResult(
                        source=str(videos[job]),
                        output=str(outputs[job]),
                        status="failed",
                        error=f"WorkerDied: its Ray worker died {attempts[job]} times "
                        f"({_cause(exc)}); run again to redo it",
                    )
                pbar.update(1)
            frames = _poll_frames(ray, slots)
            wall = time.perf_counter() - t0
            pbar.set_postfix(frames=frames, fps=f"{frames / wall:.1f}" if wall else "0")
    return [r for r in results if r is not None]


def _drop_worker(ray: ModuleType, slot: _Slot) -> None:
    """Forget a dead worker (a new one is started when there is work for it). Killed first:
    one only "unavailable" (network) might still be writing, and two workers must never write
    the same temporary file."""
    ray.kill(slot.actor)
    slot.actor = None
    slot.frames_before += slot.frames
    slot.frames = 0


def _poll_frames(ray: ModuleType, slots: list[_Slot]) -> int:
    """Frames finished by all workers so far (each asked without holding up the batch)."""
    refs = {s.actor.progress.remote(): s for s in slots if s.actor is not None}
    if not refs:
        return sum(s.frames_before for s in slots)
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.2)
    for ref in ready:
        # a dying worker answers with an error: the driver notices through its process() call
        with contextlib.suppress(ray.exceptions.RayError):
            refs[ref].frames = int(ray.get(ref))
    return sum(s.frames + s.frames_before for s in slots)
