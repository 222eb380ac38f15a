"""The torchvision engine's training loop, as a class whose steps a notebook cell can override.

:class:`Trainer` reads top to bottom like torchvision's reference loop: build the model, the
optimizer and its schedule, resume, then for each batch ``run_step`` → hooks → checkpoint. Each
``build_*`` method is an override point, as in detectron2's ``DefaultTrainer``::

    class MyTrainer(Trainer):
        def build_train_loader(self):
            augs = parse_augmentations(self.config.augmentations)  # names -> specs
            return train_loader(self.config, self.dataset, augs,
                                start_iteration=self.start_iteration, device=self.device)

    get_engine("torchvision").train(config, dataset, run_dir, trainer=MyTrainer)

A run folder written by :meth:`Trainer.train`::

    checkpoints/model_0000200.pth   model + optimizer + scheduler + iteration + loss history
                                    (+ the gradient scaler's state when training with amp)
    model_final.pth                 model weights only
    model_meta.json                 engine, class names, backbone, sizes (read by load_predictor)
    metrics.json, loss_curve.png    the returned dict (loss history, wall time) and its plot
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from thingmask.augment import parse_augmentations
from thingmask.config import Config
from thingmask.datasets.coco import PreparedDataset
from thingmask.engines.base import TrainHook
from thingmask.engines.checkpoints import (
    checkpoint_iteration,
    is_valid_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from thingmask.engines.device import resolve_device
from thingmask.engines.distributed import (
    init_from_env,
    is_main,
    mean_scalars,
    unwrap,
    world_size,
    wrap_ddp,
)
from thingmask.engines.results import TrainResult
from thingmask.engines.torchvision_engine.calibrate import calibrate_mask_threshold
from thingmask.engines.torchvision_engine.data import Target, TrainSamples, train_loader
from thingmask.engines.torchvision_engine.model import build_model
from thingmask.evaluation.plots import save_loss_curve
from thingmask.io_utils import atomic_write_json
from thingmask.runs import find_run_checkpoint
from thingmask.threads import ThreadGovernor

__all__ = ["ENGINE_NAME", "Trainer", "resume_checkpoint"]

log = logging.getLogger(__name__)

ENGINE_NAME = "torchvision"
_GRAD_CLIP = 10.0
# Settings a checkpoint must share with the run to be resumed (else its weights do not fit).
_RESUME_KEYS = ("class_names", "backbone", "norm", "mask_size", "optimizer")


def _lr_factor(iterations: int) -> Callable[[int], float]:
    warmup = max(1, min(100, iterations // 10))

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to 5 %
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = min(1.0, (step - warmup) / max(1, iterations - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def resume_checkpoint(config: Config, resume_from: str | Path | None) -> Path | None:
    """The checkpoint a run continues from: ``resume_from`` (must exist), else — with
    ``config.resume`` — the newest valid one of this run name
    (``<output_dir>/<run_name>-YYYYmmdd-HHMMSS/checkpoints``, :mod:`thingmask.runs`)."""
    if resume_from is not None:
        path = Path(resume_from)
        if not path.is_file():
            raise FileNotFoundError(
                f"resume_from: {path} does not exist. Pass a checkpoint file "
                "(run folder/checkpoints/model_NNNNNNN.pth) or None."
            )
        return path
    if not config.resume:
        return None
    return find_run_checkpoint(config.output_dir, config.run_name, is_valid_checkpoint)


class Trainer:
    """Trains a torchvision Mask R-CNN on ``dataset`` into ``run_dir``.

    ``__init__`` seeds torch, builds the model (:meth:`build_model`), the optimizer
    (:meth:`build_optimizer`) and its schedule (:meth:`build_scheduler`), then restores a
    checkpoint (:meth:`resume`: ``resume_from`` or, with ``config.resume``, the newest of the
    same run name). :meth:`train` builds the loader (:meth:`build_train_loader`) and runs
    :meth:`run_step` per batch until ``config.iterations`` steps are done.

    Mixed precision (``config.amp``) applies on CUDA only: ``run_step`` then runs the forward
    pass under float16 autocast and scales the loss with a ``GradScaler``
    (:meth:`build_grad_scaler`), as torchvision's detection reference does with ``--amp``. On
    CPU and MPS the setting is ignored and the step is the plain float32 one.

    Attributes:
        config, dataset, run_dir, hooks: as given.
        device: ``torch.device`` from ``config.device``.
        class_names: the dataset's classes (label ``i + 1`` = ``class_names[i]``).
        model, optimizer, scheduler: built in ``__init__``.
        amp: True when the forward pass runs under float16 autocast (``config.amp`` on CUDA).
        scaler: ``torch.amp.GradScaler``; disabled (a pass-through) without amp.
        start_iteration: steps done before this run (from the resumed checkpoint, else 0).
        iteration: steps done so far.
        history: one ``{"iteration", "lr", "loss", "loss_*"}`` dict per step (resumed included).
    """

    def __init__(
        self,
        config: Config,
        dataset: PreparedDataset,
        run_dir: str | Path,
        hooks: Sequence[TrainHook] = (),
        resume_from: str | Path | None = None,
    ) -> None:
        self.config, self.dataset, self.run_dir = config, dataset, Path(run_dir)
        init_from_env()  # started by torchrun: join its process group (else nothing to do)
        self.hooks = tuple(hooks) if is_main() else ()  # side jobs (Drive copies): rank 0 only
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and world_size() > 1:  # the GPU of this process
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.class_names = tuple(dataset.class_names)
        self.amp = bool(config.amp) and self.device.type == "cuda"
        if config.amp and not self.amp:
            log.info("amp applies to CUDA only: training in float32 on %s", self.device)
        torch.manual_seed(config.seed)
        self.model = self.build_model().to(self.device)
        self.optimizer = self.build_optimizer(self.model)
        self.scheduler = self.build_scheduler(self.optimizer)
        self.scaler = self.build_grad_scaler()
        self.meta = self.model_meta()
        self.start_iteration = 0
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.resume(resume_from)

    # -- override points -------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Mask R-CNN for ``config.backbone`` and the dataset's classes (see ``build_model``)."""
        c = self.config
        return build_model(
            c.backbone,
            len(self.class_names),
            c.image_size,
            c.max_image_size,
            pretrained=c.pretrained,
        )

    def build_train_loader(self) -> Iterable[tuple[list[torch.Tensor], list[Target]]]:
        """Batches ``(images, targets)`` with ``config.augmentations`` (see ``train_loader``).
        The notebook's ``MyTrainer`` cell shows this very body (a test keeps the two the same)."""
        augs = parse_augmentations(self.config.augmentations)  # names -> specs (images + masks)
        # start_iteration: a resumed run sees the batches an unbroken one would have seen
        return train_loader(
            self.config, self.dataset, augs, self.start_iteration, device=self.device
        )

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD (momentum 0.9) or, with ``config.optimizer = "adamw"``, AdamW; weight decay 1e-4."""
        params = [p for p in model.parameters() if p.requires_grad]
        lr = self.config.learning_rate
        if self.config.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Linear warm-up (10 % of the steps, at most 100), then cosine decay to 5 %."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(self.config.iterations))

    def build_grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for float16 gradients: enabled only with :attr:`amp`. A disabled scaler
        passes the loss and the optimizer step through unchanged (the float32 step exactly)."""
        return torch.amp.GradScaler("cuda", enabled=self.amp)

    def run_step(
        self, images: Sequence[torch.Tensor], targets: Sequence[Target]
    ) -> dict[str, float]:
        """One optimizer step on a batch; returns the scalar losses (``"loss"`` = their sum).

        ``images``: ``(3, H, W)`` float RGB in [0, 1]; ``targets``: torchvision's dicts. With
        :attr:`amp` the forward pass runs under float16 autocast (torchvision's RoI ops and
        losses cast themselves back to float32) and the loss is scaled by :attr:`scaler`.
        """
        # Asynchronous from pinned memory (the loader pins on CUDA); a no-op copy on CPU.
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16)
            if self.amp
            else contextlib.nullcontext()
        )
        with autocast:
            loss_dict: dict[str, torch.Tensor] = self.model(images, targets)
        loss = cast(torch.Tensor, sum(loss_dict.values()))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at iteration {self.iteration} (loss {float(loss)}). Lower "
                f"learning_rate (now {self.config.learning_rate}) or resume from an earlier "
                "checkpoint" + (" (or set amp=False: float16 may overflow)." if self.amp else ".")
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # Clip the true gradients: unscale first (a no-op without amp).
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, _GRAD_CLIP)
        self.scaler.step(self.optimizer)  # with amp: skipped when a gradient overflowed
        self.scaler.update()
        self.scheduler.step()
        scalars = {k: float(v.detach()) for k, v in loss_dict.items()}
        scalars["loss"] = float(loss.detach())
        return scalars

    # -- the loop ---------------------------------------------------------------------------------
    def model_meta(self) -> dict[str, Any]:
        """What ``model_meta.json`` records (all ``load_predictor`` needs to rebuild the model)."""
        c = self.config
        return {
            "engine": ENGINE_NAME,
            "class_names": list(self.class_names),
            "backbone": c.backbone,
            "norm": getattr(self.model, "thingmask_norm", "group_norm"),
            "mask_size": getattr(self.model, "thingmask_mask_size", 28),
            "optimizer": c.optimizer,
            "image_size": c.image_size,
            "max_image_size": c.max_image_size,
            "pretrained": c.pretrained,
            "iterations": c.iterations,
            "weights": "model_final.pth",
        }

    def resume(self, resume_from: str | Path | None) -> None:
        """Restore model, optimizer, schedule, RNG, iteration and loss history from a checkpoint.

        A ``resume_from`` that does not match this run (classes, backbone, ...) is an error;
        a checkpoint found by ``config.resume`` that does not match is skipped with a warning.
        """
        path = resume_checkpoint(self.config, resume_from)
        if path is None:
            return
        state = load_checkpoint(path)
        old = state.get("meta", {})
        differ = {k: (old.get(k), self.meta[k]) for k in _RESUME_KEYS if old.get(k) != self.meta[k]}
        if differ and resume_from is not None:
            raise ValueError(
                f"resume_from: {path} does not match this run: "
                + "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in differ.items())
                + ". Start a new run (resume=False) or pick a matching checkpoint."
            )
        if differ:
            log.warning(
                "not resuming from %s: it differs from this run (%s); training from scratch",
                path,
                differ,
            )
            return
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if "torch_rng" in state:  # RPN/RoI sampling draws from it: same draws as unbroken
            torch.set_rng_state(state["torch_rng"])
        # The loss scale reached so far (a float32 checkpoint resumed with amp starts afresh;
        # an amp checkpoint resumed without amp leaves it unused).
        if "grad_scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])
        self.start_iteration = int(state.get("iteration", checkpoint_iteration(path)))
        self.iteration = self.start_iteration
        self.history = list(state.get("history", []))
        log.info("resuming from %s at iteration %d", path, self.start_iteration)

    def save_checkpoint(self) -> Path:
        """``run_dir/checkpoints/model_<iteration>.pth`` with everything :meth:`resume` needs
        (``"grad_scaler"`` only while the scaler is enabled)."""
        state: dict[str, Any] = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "meta": self.meta,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
        }
        if self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        return save_checkpoint(
            state, self.run_dir / "checkpoints" / f"model_{self.iteration:07d}.pth"
        )

    def train(self) -> TrainResult:
        """Train to ``config.iterations`` steps; returns (and writes to ``metrics.json``, as
        :meth:`TrainResult.to_dict`) the result with ``details``: ``backbone``, ``device``,
        ``amp`` (mixed precision used), ``train_images``, ``batch_size``, ``mask_threshold``
        and ``mask_threshold_val_iou``."""
        from tqdm.auto import tqdm

        c = self.config
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        loader = self.build_train_loader()
        samples = getattr(loader, "dataset", None)
        n_images = len(samples.data) if isinstance(samples, TrainSamples) else None
        log.info(
            "training %s Mask R-CNN (%s) on %s images, classes %s, device %s%s, iterations %d..%d",
            ENGINE_NAME,
            c.backbone,
            n_images,
            list(self.class_names),
            self.device,
            " (amp)" if self.amp else "",
            self.start_iteration,
            c.iterations,
        )
        # torch's threads fitted to the free cores, looked at again during training (a
        # competing job on 2 cores made 2 threads 10x slower per step than 1)
        threads = ThreadGovernor(
            c.threads, self.device.type, "train", workers=c.num_workers, processes=world_size()
        )
        threads.apply()
        t0 = time.perf_counter()
        self.model.train()
        # Several processes: DDP averages the gradients in backward (run_step is unchanged)
        self.model = wrap_ddp(self.model, self.device)
        done = self.start_iteration >= c.iterations or not is_main()
        bar = tqdm(total=c.iterations, initial=self.start_iteration, desc="train", disable=done)
        for images, targets in loader:
            if self.iteration >= c.iterations:  # a loader that does not know where we resumed
                break
            self.iteration += 1
            threads.check()
            scalars = mean_scalars(self.run_step(images, targets), self.device)  # whole step
            lr = float(self.optimizer.param_groups[0]["lr"])
            self.history.append({"iteration": self.iteration, "lr": lr, **scalars})
            bar.update(1)
            bar.set_postfix(loss=f"{scalars['loss']:.3f}")
            if is_main() and (self.iteration % 20 == 0 or self.iteration == c.iterations):
                log.info(
                    "iter %d/%d loss %.4f (%s)",
                    self.iteration,
                    c.iterations,
                    scalars["loss"],
                    ", ".join(f"{k} {v:.3f}" for k, v in scalars.items() if k != "loss"),
                )
            for hook in self.hooks:
                hook.after_step(self.iteration, scalars)
            last = self.iteration == c.iterations
            if is_main() and (self.iteration % c.checkpoint_period == 0 or last):
                path = self.save_checkpoint()
                for hook in self.hooks:
                    hook.after_checkpoint(path, self.iteration)
        bar.close()
        threads.restore()
        self.model = unwrap(self.model)
        wall = time.perf_counter() - t0
        if not is_main():  # rank 0 writes the run folder
            return self._result(wall, {})
        return self._finish(wall, n_images)

    def _result(self, wall: float, details: dict[str, Any]) -> TrainResult:
        steps = max(1, self.iteration - self.start_iteration)
        return TrainResult(
            engine=ENGINE_NAME,
            run_dir=self.run_dir,
            model=self.run_dir / "model_final.pth",
            start_iteration=self.start_iteration,
            iterations=self.iteration,
            final_loss=self.history[-1]["loss"] if self.history else None,
            wall_time_s=round(wall, 2),
            seconds_per_iteration=round(wall / steps, 4),
            loss_history=tuple(self.history),
            details=details,
        )

    def _finish(self, wall: float, n_images: int | None) -> TrainResult:
        """Calibrate, write the final model, meta, metrics and loss curve; call after_train."""
        c = self.config
        threshold, calibration = calibrate_mask_threshold(
            self.model, self.dataset, self.device, c.score_threshold
        )
        self.meta["mask_threshold"] = threshold
        final = self.run_dir / "model_final.pth"
        save_checkpoint(
            {"model": self.model.state_dict(), "iteration": self.iteration, "meta": self.meta},
            final,
        )
        atomic_write_json(self.run_dir / "model_meta.json", self.meta)
        details = {
            "backbone": c.backbone,
            "device": str(self.device),
            "amp": self.amp,
            "train_images": n_images,
            "batch_size": c.batch_size,
            "mask_threshold": threshold,
            "mask_threshold_val_iou": calibration,
        }
        metrics = self._result(wall, details)
        atomic_write_json(self.run_dir / "metrics.json", metrics.to_dict())
        if self.history:
            save_loss_curve(self.history, self.run_dir / "loss_curve.png")
        for hook in self.hooks:
            hook.after_train(self.run_dir)
        log.info(
            "trained %d iterations in %.1f s; model in %s",
            self.iteration - self.start_iteration,
            wall,
            self.run_dir,
        )
        return metrics
