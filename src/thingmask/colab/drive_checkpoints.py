"""Checkpoints on Drive: verified copies during training, and resuming from them later.

Colab ends idle or long sessions and takes the runtime's disk with it. With
``drive_checkpoint_period > 0`` :class:`DriveCheckpointHook` copies checkpoints (verified, see
:mod:`thingmask.colab.verified_copy`) into the run's Drive folder while training runs; on a fresh
runtime
:func:`find_resume_checkpoint` finds the newest *valid* one (a copy cut short by a disconnect is
skipped) and :func:`fetch_checkpoint` brings it back to local disk to resume from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from thingmask.colab.drive import claim_destination
from thingmask.colab.verified_copy import DriveError, copy_verified
from thingmask.engines import TrainHook
from thingmask.engines.checkpoints import (
    checkpoint_iteration,
    find_latest_checkpoint,
    is_valid_checkpoint,
)
from thingmask.runs import find_run_checkpoint

__all__ = ["DriveCheckpointHook", "fetch_checkpoint", "find_resume_checkpoint"]

log = logging.getLogger(__name__)


class DriveCheckpointHook(TrainHook):
    """Copy training checkpoints to ``<drive_root>/<run folder name>/checkpoints/`` (verified).

    A copy is made at the first checkpoint at or after each multiple of ``period`` steps (so with
    ``checkpoint_period=200`` and ``period=500``: at 600, 1000, 1600, …) and once more after
    training for the newest checkpoint. Only the newest ``keep_last`` copies stay on Drive.

    A failed copy does not stop training (the local run goes on and can still be saved later):
    it is logged, kept in :attr:`failures` and passed to ``on_failure`` — the notebook's
    :class:`~thingmask.colab.RunLog`, which then refuses to release the runtime.
    """

    def __init__(
        self,
        drive_root: str | Path,
        run_dir: str | Path,
        period: int,
        *,
        keep_last: int = 2,
        start_iteration: int = 0,
        retries: int = 3,
        backoff: float = 2.0,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        if period < 0 or keep_last < 0:
            raise ValueError(
                f"DriveCheckpointHook: period and keep_last must be >= 0, got "
                f"{period} and {keep_last} (drive_checkpoint_period in the config)"
            )
        self.drive_root, self.run_dir = Path(drive_root), Path(run_dir)
        self.period, self.keep_last = period, keep_last
        self.retries, self.backoff = retries, backoff
        self.on_failure = on_failure
        self.last_copied = start_iteration
        self.copied: list[Path] = []
        self.failures: list[str] = []
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        """``<drive run folder>/checkpoints`` (the run folder is claimed on first use)."""
        if self._folder is None:
            run_folder = claim_destination(
                self.drive_root, self.run_dir, retries=self.retries, backoff=self.backoff
            )
            self._folder = run_folder / "checkpoints"
        return self._folder

    def after_checkpoint(self, checkpoint_path: Path, iteration: int) -> None:
        if self.period <= 0 or iteration // self.period <= self.last_copied // self.period:
            return
        self._copy(Path(checkpoint_path), iteration)

    def after_train(self, run_dir: Path) -> None:
        if self.period <= 0:
            return
        latest = find_latest_checkpoint([Path(run_dir) / "checkpoints"], validate=False)
        if latest is not None and checkpoint_iteration(latest) > self.last_copied:
            self._copy(latest, checkpoint_iteration(latest))

    def _copy(self, path: Path, iteration: int) -> None:
        try:
            dst = self.folder / path.name
            copy_verified(path, dst, retries=self.retries, backoff=self.backoff)
        except (DriveError, OSError) as exc:
            message = f"checkpoint copy to Drive at step {iteration}: {exc}"
            log.error("%s (training continues; the runtime will not be released)", message)
            self.failures.append(message)
            if self.on_failure is not None:
                self.on_failure(message)
            return
        self.last_copied = iteration
        self.copied.append(dst)
        log.info("checkpoint of step %d copied to %s", iteration, dst)
        self._prune(keep=dst)

    def _prune(self, keep: Path) -> None:
        if self.keep_last <= 0:
            return
        old = sorted(
            (p for p in self.folder.glob("*.pth") if ".part" not in p.name and p != keep),
            key=checkpoint_iteration,
            reverse=True,
        )
        for path in old[self.keep_last - 1 :]:
            try:
                path.unlink()
            except OSError as exc:  # a leftover costs Drive space, not correctness
                log.warning("could not remove old checkpoint %s: %s", path, exc)


def find_resume_checkpoint(drive_root: str | Path, run_name: str) -> Path | None:
    """The newest valid checkpoint in ``<drive_root>/<run_name>-<YYYYmmdd-HHMMSS>*/checkpoints/``.

    Only folders of exactly this run name match (``demo`` does not pick up ``demo-long-…``);
    truncated or unreadable checkpoints (a sync cut short) are skipped with a warning. Works on
    any folder, e.g. the local ``output_dir``.
    """
    return find_run_checkpoint(drive_root, run_name, is_valid_checkpoint)


def fetch_checkpoint(
    path: str | Path, local_dir: str | Path, *, retries: int = 3, backoff: float = 2.0
) -> Path:
    """Copy a (Drive) checkpoint into ``local_dir`` (verified), so training resumes from local
    disk; raises :class:`DriveError` when the copy does not load."""
    path = Path(path)
    local = Path(local_dir) / path.name
    copy_verified(path, local, retries=retries, backoff=backoff)
    if not is_valid_checkpoint(local):
        raise DriveError(
            f"checkpoint {path} copied to {local} does not load (truncated on "
            "Drive?). Delete it from Drive or set resume=False to start over."
        )
    log.info("fetched checkpoint %s → %s", path, local)
    return local
