"""Google Colab glue: Drive mount, save to Drive, resume from Drive, runtime release.

Every ``google.colab`` import of the package lives in this module, inside functions. Outside
Colab (a laptop, CI, papermill) each Colab step is a no-op with a log line, so one notebook runs
everywhere. Where the notebook runs (Colab, GPU): :mod:`thingmask.colab.environment`. The copying,
verification and resume logic itself is engine- and Colab-neutral: :mod:`thingmask.colab.drive` and
:mod:`thingmask.colab.drive_checkpoints`.

Run-all-and-walk-away, and what guards it:

* A failing cell raises, which stops *Run all*: the last cell (runtime release) never runs.
* :class:`RunLog` (``SESSION``) records saves and failures that do not stop the run (a checkpoint
  copy that failed during training); :func:`finish_run` refuses to release the runtime if any.
* :func:`finish_run` releases the runtime only when ``terminate_runtime`` is set, in Colab, after
  at least one verified save that still re-verifies, and after ``drive.flush_and_unmount()``
  pushed Drive's upload queue (the VM and that queue die with the runtime).
* Results leave the runtime through Drive, never through browser downloads: Colab transfers a
  ``files.download`` only while no cell runs (googlecolab/colabtools#3155), so a download started
  in a run-all would still be in flight when the last cell releases the runtime.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thingmask.colab.drive import SaveResult, save_run, verify_saved
from thingmask.colab.drive_checkpoints import (
    DriveCheckpointHook,
    fetch_checkpoint,
    find_resume_checkpoint,
)
from thingmask.colab.environment import in_colab
from thingmask.colab.verified_copy import STORAGE_URL, DriveError
from thingmask.config import Config, ConfigError
from thingmask.engines import TrainHook
from thingmask.engines.checkpoints import checkpoint_iteration

__all__ = [
    "DEFAULT_MOUNT",
    "SESSION",
    "RunLog",
    "drive_dir",
    "ensure_drive",
    "finish",
    "finish_run",
    "flush_drive",
    "mount_drive",
    "save_run_to_drive",
    "training_hooks",
    "uses_drive",
]

log = logging.getLogger(__name__)

DEFAULT_MOUNT = Path("/content/drive")
FAQ_URL = "https://research.google.com/colaboratory/faq.html#drive-timeout"
DELETE_HINT = "Runtime → Disconnect and delete runtime"


# --- Drive -----------------------------------------------------------------------------------
def mount_drive(
    mount_point: str | Path = DEFAULT_MOUNT, timeout: float = 120.0, force_remount: bool = False
) -> Path | None:
    """Mount Google Drive at ``mount_point`` (Colab asks for permission the first time).

    Returns the mount point, or ``None`` outside Colab. Raises :class:`DriveError` with the
    Colab FAQ hint when mounting fails (typically a timeout on a Drive root with many files).
    """
    if not in_colab():
        log.info("not in Colab: Drive mount skipped")
        return None
    from google.colab import drive as gdrive

    mount_point = Path(mount_point)
    try:
        gdrive.mount(str(mount_point), force_remount=force_remount, timeout_ms=int(timeout * 1000))
    except Exception as exc:
        raise DriveError(
            f"Drive mount failed: {exc} — see {FAQ_URL} ; try "
            "google.colab.drive.flush_and_unmount() and re-run, or reduce the number of files "
            "in the Drive root (My Drive)"
        ) from exc
    if not (mount_point / "MyDrive").is_dir():
        raise DriveError(
            f"Drive mounted at {mount_point} but {mount_point / 'MyDrive'} is "
            f"missing — see {FAQ_URL} ; re-run with force_remount=True"
        )
    return mount_point


def drive_dir(config: Config, mount_point: str | Path = DEFAULT_MOUNT) -> Path:
    """The configured Drive folder: ``<mount_point>/<drive_folder>``.

    An absolute ``drive_folder`` is used as is (any mounted or local folder, e.g. in CI).
    """
    folder = Path(config.drive_folder)
    if ".." in folder.parts or not config.drive_folder.strip():
        raise ConfigError(
            f"drive_folder: got {config.drive_folder!r}; expected a folder inside "
            "your Drive such as \"MyDrive/thingmask\" (no '..'). Fix drive_folder in "
            "the global-variables cell or the config YAML."
        )
    if folder.is_absolute():
        return folder
    if folder.parts[0] == "My Drive":  # Colab mounts it without the space
        folder = Path("MyDrive", *folder.parts[1:])
    return Path(mount_point) / folder


def uses_drive(config: Config) -> bool:
    """Whether the config asks for Drive at all (final save or checkpoint copies)."""
    return config.save_to_drive or config.drive_checkpoint_period > 0


def ensure_drive(config: Config, mount_point: str | Path = DEFAULT_MOUNT) -> Path | None:
    """The Drive folder ready to write, or ``None`` when Drive is not used/available.

    Call it early (section 2): in Colab the mount asks for permission once, and that prompt
    must not wait for hours of training while nobody is watching.
    """
    if not uses_drive(config):
        return None
    if Path(config.drive_folder).is_absolute():
        return drive_dir(config, mount_point)
    if mount_drive(mount_point) is None:
        log.info(
            "save_to_drive / drive_checkpoint_period ignored: not in Colab (set an "
            "absolute drive_folder to save to a local folder instead)"
        )
        return None
    return drive_dir(config, mount_point)


def flush_drive(timeout: float = 3600.0) -> bool:
    """Push every pending Drive upload, then unmount (Colab's only flush). ``False`` outside
    Colab. Raises what Colab raises when the push fails or times out."""
    if not in_colab():
        log.info("not in Colab: no Drive to flush")
        return False
    from google.colab import drive as gdrive

    gdrive.flush_and_unmount(timeout_ms=int(timeout * 1000))
    return True


# --- session state ---------------------------------------------------------------------------
@dataclass
class RunLog:
    """What happened in this notebook session: verified saves and failures that did not stop
    run-all. ``SESSION`` is the notebook's one instance."""

    started: float = field(default_factory=time.time)
    saves: list[SaveResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    outcome: str = ""

    def record_save(self, result: SaveResult) -> None:
        if result not in self.saves:
            self.saves.append(result)

    def record_failure(self, message: str) -> None:
        log.error("recorded failure: %s", message)
        self.failures.append(message)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record an exception of the block as a failure, then re-raise it (run-all stops)."""
        try:
            yield
        except Exception as exc:
            self.record_failure(f"{name}: {exc}")
            raise

    def summary(
        self, run_dir: str | Path | None = None, metrics: dict[str, Any] | None = None
    ) -> str:
        """Where things are, key figures, wall time, failures, and the runtime decision."""
        wall = time.time() - self.started
        lines = []
        if run_dir is not None:
            lines.append(f"run folder : {run_dir}")
        lines += [f"saved to   : {s}" for s in self.saves] or ["saved to   : (not saved to Drive)"]
        lines += [f"{k:<11}: {v}" for k, v in (metrics or {}).items()]
        lines.append(f"wall time  : {wall / 60:.1f} min ({wall:.0f} s)")
        lines += [f"FAILED     : {f}" for f in self.failures] or ["failures   : none"]
        if self.outcome:
            lines.append(f"runtime    : {self.outcome}")
        return "\n".join(lines)

    def finish(self, config: Config, **kwargs: Any) -> str:
        """:func:`finish_run` with this log's saves and failures."""
        self.outcome = finish_run(config, self.saves, self.failures, **kwargs)
        return self.outcome


SESSION = RunLog()


def save_run_to_drive(
    config: Config,
    run_dir: str | Path,
    *,
    run_log: RunLog | None = None,
    mount_point: str | Path = DEFAULT_MOUNT,
    **save_kwargs: Any,
) -> SaveResult | None:
    """Section 8: the verified, timestamped save of ``run_dir`` to Drive, or ``None`` (skipped:
    ``save_to_drive=False`` or not in Colab). A failure is recorded, then raised."""
    run_log = run_log or SESSION
    if not config.save_to_drive:
        log.info("save_to_drive=False: run folder kept at %s only", run_dir)
        return None
    with run_log.step("save to Drive"):
        root = ensure_drive(config, mount_point)
        if root is None:
            return None
        result = save_run(run_dir, root, **save_kwargs)
    run_log.record_save(result)
    return result


def training_hooks(
    config: Config,
    run_dir: str | Path,
    *,
    run_log: RunLog | None = None,
    mount_point: str | Path = DEFAULT_MOUNT,
) -> tuple[list[TrainHook], Path | None]:
    """Section 4: ``(hooks, resume_from)`` for ``pipeline.train``.

    ``hooks`` holds a :class:`~thingmask.colab.drive_checkpoints.DriveCheckpointHook` when
    ``drive_checkpoint_period > 0`` and Drive is available. ``resume_from`` (with
    ``resume=True``) is the newest valid checkpoint of ``run_name`` — on Drive (copied into
    ``run_dir/checkpoints`` first) or in the local ``output_dir``, whichever is further along —
    so a fresh runtime running the same notebook continues instead of starting over.
    """
    run_log = run_log or SESSION
    run_dir = Path(run_dir)
    root = ensure_drive(config, mount_point)
    resume_from = None
    if config.resume:
        local = find_resume_checkpoint(config.output_dir, config.run_name)
        remote = find_resume_checkpoint(root, config.run_name) if root is not None else None
        if remote is not None and (
            local is None or checkpoint_iteration(remote) > checkpoint_iteration(local)
        ):
            with run_log.step("fetch checkpoint from Drive"):
                resume_from = fetch_checkpoint(remote, run_dir / "checkpoints")
        else:
            resume_from = local
        if resume_from is not None:
            log.info("resuming from %s (step %d)", resume_from, checkpoint_iteration(resume_from))
    hooks: list[TrainHook] = []
    if root is not None and config.drive_checkpoint_period > 0:
        start = checkpoint_iteration(resume_from) if resume_from is not None else 0
        hooks.append(
            DriveCheckpointHook(
                root,
                run_dir,
                config.drive_checkpoint_period,
                start_iteration=max(start, 0),
                on_failure=run_log.record_failure,
            )
        )
    return hooks, resume_from


# --- releasing the runtime -------------------------------------------------------------------


def _left_up(reason: str) -> str:
    message = f"Runtime left running: {reason}."
    log.info(message)
    return message


def _release_now() -> str:
    from google.colab import runtime

    log.warning("releasing the Colab runtime now (results saved and verified)")
    try:
        runtime.unassign()
    except Exception as exc:
        return _left_up(f"could not release it ({exc}); delete it by hand: {DELETE_HINT}")
    return "Runtime released."


def finish_run(
    config: Config,
    saves: Iterable[SaveResult | None],
    failures: Sequence[str],
    *,
    reverify: bool = True,
) -> str:
    """The last cell: release the Colab runtime if, and only if, that loses nothing.

    Releases (``google.colab.runtime.unassign()``) only when ``config.terminate_runtime`` is set,
    in Colab, with no recorded failure, at least one save, every save verified (and, with
    ``reverify``, still matching its ``saved.json``), and after Drive's upload queue was flushed.
    Returns what was done and why.
    """
    if not config.terminate_runtime:
        return _left_up(
            "terminate_runtime is False (set it to True in section 1 to release the "
            "runtime after a verified save)"
        )
    if not in_colab():
        return _left_up("not running in Colab, so there is no runtime to release")
    reasons = []
    if failures:
        reasons.append(f"{len(failures)} failure(s) recorded: " + "; ".join(failures))
    done = [s for s in saves if s is not None]
    if not done:
        reasons.append(
            "nothing was saved to Drive, and releasing the runtime would delete the "
            "only copy of the results (set save_to_drive=True)"
        )
    for save in done:
        if not save.verified:
            reasons.append(f"{save.destination} is not verified")
        elif reverify:
            reasons += verify_saved(save.destination)
    if reasons:
        return _left_up("; ".join(reasons))
    try:
        flush_drive()
    except Exception as exc:
        return _left_up(
            f"Drive flush failed ({exc}), so uploads may be incomplete — check the "
            f"folder in Drive and free space at {STORAGE_URL}"
        )
    return _release_now()


def finish(
    config: Config, saved: SaveResult | None = None, *, run_log: RunLog | None = None, **kwargs: Any
) -> str:
    """Section 9 (last cell): :func:`finish_run` with the session's saves and failures."""
    run_log = run_log or SESSION
    if saved is not None:
        run_log.record_save(saved)
    return run_log.finish(config, **kwargs)
