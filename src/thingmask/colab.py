"""Google Colab glue: environment check, Drive mount, save to Drive, resume, runtime release.

Every ``google.colab`` import lives in this module, inside functions. Outside Colab (a laptop,
CI, papermill) each Colab step is a no-op with a log line, so one notebook runs everywhere.
The copying, verification and resume logic itself is engine- and Colab-neutral:
:mod:`thingmask.drive`.

Run-all-and-walk-away, and what guards it:

* A failing cell raises, which stops *Run all*: the last cell (runtime release) never runs.
* :class:`RunLog` (``SESSION``) records saves and failures that do not stop the run (a checkpoint
  copy that failed during training); :func:`finish_run` refuses to release the runtime if any.
* :func:`finish_run` releases the runtime only when ``terminate_runtime`` is set, in Colab, after
  at least one verified save that still re-verifies, after ``drive.flush_and_unmount()`` pushed
  Drive's upload queue (the VM and that queue die with the runtime), and once browser downloads
  started through :func:`download` are finished.
* Colab transfers a ``files.download`` only while **no cell runs** (googlecolab/colabtools#3155),
  so waiting in the last cell would starve the download it waits for. With a download in flight
  the release is handed to a background thread that waits, after the cell has returned, for the
  download's channel to close plus a grace period.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thingmask.config import Config, ConfigError
from thingmask.drive import (
    STORAGE_URL,
    DriveCheckpointHook,
    DriveError,
    SaveResult,
    fetch_checkpoint,
    find_resume_checkpoint,
    save_run,
    verify_saved,
)
from thingmask.engines import TrainHook
from thingmask.engines.checkpoints import checkpoint_iteration

__all__ = [
    "DEFAULT_MOUNT",
    "SESSION",
    "Download",
    "DriveError",
    "Env",
    "RunLog",
    "describe_environment",
    "download",
    "drive_dir",
    "ensure_drive",
    "environment",
    "finish",
    "finish_run",
    "flush_drive",
    "in_colab",
    "mount_drive",
    "pending_downloads",
    "save_run_to_drive",
    "training_hooks",
    "uses_drive",
    "wait_for_release",
]

log = logging.getLogger(__name__)

DEFAULT_MOUNT = Path("/content/drive")
FAQ_URL = "https://research.google.com/colaboratory/faq.html#drive-timeout"
GPU_HINT = (
    "To use a free GPU: Runtime → Change runtime type → T4 GPU → Save, then "
    "Runtime → Run all (the runtime restarts; files in /content are lost)."
)
DELETE_HINT = "Runtime → Disconnect and delete runtime"

# Indirections the tests patch: no real waiting.
_sleep = time.sleep


def in_colab() -> bool:
    """True inside a Colab kernel (it imports ``google.colab`` before any user code)."""
    return "google.colab" in sys.modules


# --- environment -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Env:
    """Where the notebook runs. ``device`` is what torch should use (``"cuda"``, ``"mps"``,
    ``"cpu"``); ``torch``/``cuda`` are version strings (``None`` when absent)."""

    in_colab: bool
    gpu: bool
    gpu_name: str | None
    device: str
    python: str
    torch: str | None
    cuda: str | None = None
    mps: bool = False


def environment(requested: str = "auto") -> Env:
    """Probe the machine; ``requested`` is the config's ``device`` (auto | cpu | cuda | mps).

    ``device`` is the requested one when available, else the best available (the mismatch is
    reported by :func:`describe_environment`).
    """
    try:
        import torch
    except ImportError:
        return Env(in_colab(), False, None, "cpu", platform.python_version(), None)
    gpu = bool(torch.cuda.is_available())
    gpu_name = torch.cuda.get_device_name(0) if gpu else None
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend is not None and mps_backend.is_available())
    available = {"cuda": gpu, "mps": mps, "cpu": True}
    if requested != "auto" and available.get(requested, False):
        device = requested
    else:
        device = "cuda" if gpu else "mps" if mps else "cpu"
    return Env(
        in_colab(),
        gpu,
        gpu_name,
        device,
        platform.python_version(),
        torch.__version__,
        torch.version.cuda,
        mps,
    )


def describe_environment(config: Config | None = None, env: Env | None = None) -> str:
    """A few lines for the notebook's first cells: where we run, GPU or not, what to change."""
    env = env or environment(config.device if config else "auto")
    lines = [
        f"Python {env.python} · torch {env.torch or 'not installed'}"
        + (f" (CUDA {env.cuda})" if env.cuda else "")
    ]
    if env.in_colab:
        lines.append("Running in Google Colab.")
    else:
        lines.append(
            "Running outside Colab (local / CI): Drive mount and runtime release are "
            "skipped; everything else runs the same."
        )
    if env.gpu:
        lines.append(f"GPU: {env.gpu_name} → device '{env.device}'.")
    else:
        lines.append(
            f"No CUDA GPU → device '{env.device}' (training is slower; the tiny demo "
            "settings still finish in minutes)."
        )
        if env.in_colab:
            lines.append(GPU_HINT)
    if config is not None:
        if config.device not in ("auto", env.device):
            lines.append(
                f"device={config.device!r} is not available here; using "
                f"'{env.device}'. Set device = \"auto\" to silence this."
            )
        if config.engine == "detectron2" and not env.gpu:
            lines.append(
                "engine='detectron2' without a GPU is very slow; "
                + (GPU_HINT if env.in_colab else "use engine='torchvision' on CPU.")
            )
        if env.in_colab and config.terminate_runtime and not config.save_to_drive:
            lines.append(
                "terminate_runtime=True but save_to_drive=False: the runtime will be "
                "kept, since releasing it would delete the only copy of the results."
            )
    return "\n".join(lines)


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

    ``hooks`` holds a :class:`~thingmask.drive.DriveCheckpointHook` when
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


# --- browser downloads -----------------------------------------------------------------------
@dataclass
class Download:
    """A browser download started with :func:`download`. ``comm_ids`` are the kernel comm
    targets Colab registered for it; Colab unregisters a target once the browser has received
    every byte, which is how completion is seen. Empty when that could not be observed."""

    path: Path
    size: int
    started: float
    comm_ids: tuple[str, ...] = ()

    def done(self, targets: set[str] | None) -> bool | None:
        """True/False when observable, ``None`` when unknown."""
        if not self.comm_ids or targets is None:
            return None
        return not any(c in targets for c in self.comm_ids)

    def fallback_wait(self) -> float:
        # Unobservable transfer: assume >= 1 MB/s once the kernel is idle, plus slack.
        return 10.0 + self.size / 1e6


_DOWNLOADS: list[Download] = []


def _comm_targets() -> set[str] | None:
    try:
        from IPython import get_ipython

        return set(get_ipython().kernel.comm_manager.targets)
    except Exception:  # no IPython kernel, or an unexpected kernel: completion unknown
        return None


def download(path: str | Path) -> Download | None:
    """Offer ``path`` as a browser download (Colab), tracked so the runtime is not released
    while it transfers. Outside Colab: a log line, ``None``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"download: {path} does not exist")
    if not in_colab():
        log.info(
            "not in Colab: browser download of %s skipped (the file is at %s)",
            path.name,
            path.resolve(),
        )
        return None
    from google.colab import files

    before = _comm_targets()
    files.download(str(path))
    after = _comm_targets()
    new = tuple(sorted(after - before)) if before is not None and after is not None else ()
    record = Download(path, path.stat().st_size, time.monotonic(), new)
    _DOWNLOADS.append(record)
    log.info(
        "browser download of %s started (%.1f MB); it transfers while no cell runs",
        path.name,
        record.size / 1e6,
    )
    return record


# Release thread state; "waited" counts seconds waited after the last cell returned (the only
# time a download transfers), which is what an unobservable download's estimate is measured in.
_RELEASE: dict[str, Any] = {"thread": None, "outcome": None, "waited": 0.0}


def pending_downloads() -> list[Download]:
    """Downloads not known to be finished. One whose completion cannot be observed counts as
    pending until the release thread has waited its estimate."""
    targets = _comm_targets()
    out = []
    for item in _DOWNLOADS:
        state = item.done(targets)
        if state is True or (state is None and _RELEASE["waited"] >= item.fallback_wait()):
            continue
        out.append(item)
    return out


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


def _release_after_downloads(
    pending: Callable[[], Sequence[Download]], grace_s: float, max_wait_s: float, poll_s: float
) -> str:
    _RELEASE["waited"] = 0.0
    while still := list(pending()):
        if _RELEASE["waited"] >= max_wait_s:
            return _left_up(
                f"browser download(s) {[d.path.name for d in still]} still running "
                f"after {max_wait_s / 60:.0f} min; delete the runtime by hand when "
                f"they finish: {DELETE_HINT}"
            )
        _sleep(poll_s)
        _RELEASE["waited"] += poll_s
    _sleep(grace_s)  # the browser still assembles and saves the file after the last byte
    return _release_now()


def finish_run(
    config: Config,
    saves: Iterable[SaveResult | None],
    failures: Sequence[str],
    *,
    downloads_in_flight: Callable[[], Sequence[Download]] = pending_downloads,
    grace_s: float = 15.0,
    max_wait_s: float = 1800.0,
    poll_s: float = 2.0,
    background: bool = True,
    reverify: bool = True,
) -> str:
    """The last cell: release the Colab runtime if, and only if, that loses nothing.

    Releases (``google.colab.runtime.unassign()``) only when ``config.terminate_runtime`` is set,
    in Colab, with no recorded failure, at least one save, every save verified (and, with
    ``reverify``, still matching its ``saved.json``), after Drive's upload queue was flushed,
    and with no browser download in flight. A download in flight (with ``background``) moves
    the release to a thread that waits for it, since Colab transfers downloads only once the
    cell has returned; ``grace_s`` follows the last download. Returns what was done and why.
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
        problems = (
            [f"{save.destination} is not verified"]
            if not save.verified
            else verify_saved(save.destination)
            if reverify
            else []
        )
        reasons += problems
    if reasons:
        return _left_up("; ".join(reasons))
    _RELEASE["waited"] = 0.0  # the kernel has been busy until now: nothing has transferred
    in_flight = bool(list(downloads_in_flight()))
    if in_flight and not background:
        return _left_up(
            "a browser download is in flight, and Colab transfers it only while no "
            "cell runs; run this cell again when it has finished, or delete the "
            f"runtime by hand: {DELETE_HINT}"
        )
    try:
        flush_drive()
    except Exception as exc:
        return _left_up(
            f"Drive flush failed ({exc}), so uploads may be incomplete — check the "
            f"folder in Drive and free space at {STORAGE_URL}"
        )
    if in_flight:

        def release_later() -> None:
            _RELEASE["outcome"] = _release_after_downloads(
                downloads_in_flight, grace_s, max_wait_s, poll_s
            )

        thread = threading.Thread(
            target=release_later, name="thingmask-release-runtime", daemon=True
        )
        _RELEASE.update(thread=thread, outcome=None, waited=0.0)
        thread.start()
        return (
            f"Runtime will be released once the browser download(s) finish (waiting up to "
            f"{max_wait_s / 60:.0f} min, then {grace_s:.0f} s grace)."
        )
    if _DOWNLOADS:
        _sleep(grace_s)  # finished downloads: let the browser write the last file
    return _release_now()


def wait_for_release(timeout: float | None = None) -> str | None:
    """Wait for a background release started by :func:`finish_run`; its outcome (``None`` if
    none was started or it is still waiting)."""
    thread = _RELEASE["thread"]
    if thread is not None:
        thread.join(timeout)
    return _RELEASE["outcome"]


def finish(
    config: Config, saved: SaveResult | None = None, *, run_log: RunLog | None = None, **kwargs: Any
) -> str:
    """Section 9 (last cell): :func:`finish_run` with the session's saves and failures."""
    run_log = run_log or SESSION
    if saved is not None:
        run_log.record_save(saved)
    return run_log.finish(config, **kwargs)
