"""Threads that fit the machine: how many threads each part of a run may use, so that together
they never ask for more cores than there are.

Why: torch's intra-op pool is OpenMP. Each operation splits its work over all the pool's
threads and waits for the slowest; when another thread (the video decoder, the encoder, another
process) takes one of the cores, every operation waits a whole scheduler time slice for the
thread that lost its core. Measured (issue 20): training the demo model on 2 cores went from
0.9 to 8.7 s per step under a competing load with torch's default 2 threads, and back with one.
Left alone, torch, OpenCV, the H.264 decoder and libx264 each start one thread per core.

:func:`plan_threads` is the pure decision, (cores, device, stage) → a :class:`ThreadPlan`:

========  ========================================================================================
stage     plan (``c`` = the cores to use)
========  ========================================================================================
train     the model gets every core not taken by data-loader workers: ``torch = opencv = c -
          workers`` (at least 1; augmentation runs between steps, never beside them).
video     CPU: decode, cut-out (OpenCV) and encode get one thread each; at CPU inference rates
          they need well under one core together (they wait on their queues most of the
          time). With 4 or more cores they share one and inference gets ``c - 1`` torch
          threads; on 2-3 cores a core kept for them would idle most of its time, so inference
          gets all ``c`` (measured on 2 shared cores, 720p, beside other jobs: 2.84 fps with 2
          torch threads, 1.84 with 1). GPU: torch 1 thread (the model runs on the device;
          more CPU threads only spin beside the codecs), the other ``c - 1`` cores go to the
          codecs and the cut-out: a quarter each to decode and OpenCV, the rest to the encoder.
images    one image at a time, nothing beside the model: ``torch = opencv = c``.
========  ========================================================================================

``cores``: the ``threads`` setting as a number, or with ``auto`` the cores this process may run
on (CPU affinity, capped by ``OMP_NUM_THREADS`` when set). For training, ``auto`` also leaves
out the cores other processes keep busy, measured from ``/proc/stat`` (:class:`LoadWatch`;
Linux, elsewhere all cores count as free), and looks again every few seconds to shrink or grow
torch's pool (:class:`ThreadGovernor`): a training step is thousands of small operations, each
a barrier for the pool, and beside a busy process 2 threads on 2 cores took 4.1 s per step
where ``auto`` took 0.55 (``scripts/bench_threads.py``). The video stage's inference runs in a
thread of its own and is a few large operations per frame (full-resolution normalisation and
mask pasting); it kept gaining from every core beside other work, so it is not shrunk.

Thread counts change speed, not what is found; floating-point sums can differ in the last
bits between pool sizes (a CSV score 0.2301 against 0.2302), so runs meant to match
figure for figure use the same fixed ``threads``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "STAGES",
    "LoadWatch",
    "ThreadGovernor",
    "ThreadPlan",
    "apply_threads",
    "machine_cores",
    "parse_threads",
    "plan_threads",
]

log = logging.getLogger(__name__)

STAGES = ("train", "video", "images")
_RECHECK_S = 5.0  # how often a governor looks at the machine's load again


@dataclass(frozen=True)
class ThreadPlan:
    """Threads per part of a run (each >= 1).

    Attributes:
        torch: torch intra-op threads (the model: training steps, inference).
        opencv: ``cv2.setNumThreads``: compositing, blur canvas, edge refinement, augmentation.
        decode: the video decoder's threads (PyAV ``codec_context.thread_count``).
        encode: the video encoder's threads (PyAV ``codec_context.thread_count``).
    """

    torch: int
    opencv: int
    decode: int
    encode: int


def plan_threads(cores: int, device: str, stage: str, workers: int = 0) -> ThreadPlan:
    """The threads of each part of ``stage`` on ``cores`` cores (see the module's table).

    Args:
        cores: cores this run may use (>= 1; fractions of a core are the caller's to round).
        device: the torch device type the model runs on (``cpu``, ``cuda``, ``mps``).
        stage: one of :data:`STAGES`.
        workers: data-loader worker processes beside training (each uses one core).

    Pure: no side effects; :func:`apply_threads` applies a plan.
    """
    if stage not in STAGES:
        raise ValueError(f"plan_threads: stage {stage!r} is not one of {list(STAGES)}")
    c = max(1, int(cores))
    if stage == "train":
        model = max(1, c - max(0, int(workers)))
        return ThreadPlan(torch=model, opencv=model, decode=1, encode=1)
    if stage == "images":
        return ThreadPlan(torch=c, opencv=c, decode=1, encode=1)
    if device == "cpu":
        return ThreadPlan(torch=c if c <= 3 else c - 1, opencv=1, decode=1, encode=1)
    rest = max(1, c - 1)
    decode = max(1, rest // 4)
    opencv = max(1, rest // 4)
    return ThreadPlan(torch=1, opencv=opencv, decode=decode, encode=max(1, rest - decode - opencv))


def parse_threads(value: object) -> int | None:
    """The ``threads`` setting: ``"auto"`` → None, a positive integer → itself.

    Raises ValueError naming the setting otherwise.
    """
    if value == "auto":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(
        f"threads: got {value!r}; expected 'auto' (fit the machine) or an integer >= 1 "
        "(the cores thingmask may use)"
    )


def machine_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS tells it, capped by
    ``OMP_NUM_THREADS`` when that is set (someone already chose a thread budget)."""
    cores = max(1, os.cpu_count() or 1)
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        with contextlib.suppress(OSError):
            cores = max(1, len(affinity(0)))
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        cores = min(cores, int(env))
    return cores


def _proc_stat_busy() -> float | None:
    """Seconds all cores spent busy since boot (``/proc/stat``), None where unreadable."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / float(os.sysconf("SC_CLK_TCK"))


class LoadWatch:
    """How many cores other processes kept busy since the last look.

    ``others()`` compares the machine's busy time (``/proc/stat``) with this process's own
    CPU time over the interval since the previous call. The readers are injectable for tests.
    """

    def __init__(
        self,
        busy: Callable[[], float | None] = _proc_stat_busy,
        own: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._busy, self._own, self._clock = busy, own, clock
        self._last = self._sample()

    def _sample(self) -> tuple[float | None, float, float]:
        return self._busy(), self._own(), self._clock()

    def others(self) -> float | None:
        """Cores other processes used on average since the last call (None: unknown)."""
        now = self._sample()
        (busy0, own0, t0), (busy1, own1, t1) = self._last, now
        self._last = now
        if busy0 is None or busy1 is None or t1 - t0 <= 0:
            return None
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def free_cores(cores: int, others: float | None) -> int:
    """Of ``cores``, the whole cores other processes leave free (at least 1). A core counts
    as taken when others use more than a quarter of it."""
    if others is None:
        return max(1, cores)
    return max(1, min(cores, math.floor(cores - others + 0.75)))


def apply_threads(plan: ThreadPlan) -> None:
    """Set torch's intra-op pool and OpenCV's threads for the calling thread onwards.

    torch's OpenMP pool size is per thread: a thread started later takes the value set last
    here at its first operation; a running thread must call this itself.
    """
    import cv2
    import torch

    if torch.get_num_threads() != plan.torch:
        torch.set_num_threads(plan.torch)
    cv2.setNumThreads(plan.opencv)


class ThreadGovernor:
    """The plan of one stage of a run, kept fitted to the machine while it runs.

    Args:
        threads: the ``threads`` setting (``"auto"`` or an integer).
        device: the torch device type of the model.
        stage: one of :data:`STAGES`.
        workers: data-loader workers beside training.
        processes: processes of this run sharing the machine (distributed training ranks).
        watch: a :class:`LoadWatch` (tests inject one); only used with ``auto``.
        first_look_s: with ``auto``, how long to watch the machine before the first plan
            (this process is idle then, so all it sees is the others' load).

    :attr:`plan` is the plan now. :meth:`apply` sets it in the calling thread (``with``: applied,
    then :meth:`restore` d); :meth:`check`
    (call it often, from the thread that runs the model: it looks at most every few seconds)
    re-plans with ``auto`` and applies a changed torch pool size.
    """

    def __init__(
        self,
        threads: int | str,
        device: str,
        stage: str,
        workers: int = 0,
        processes: int = 1,
        watch: LoadWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_look_s: float = 0.2,
    ) -> None:
        self.fixed = parse_threads(threads)
        self.device, self.stage, self.workers = device, stage, workers
        self.cores = max(1, (self.fixed or machine_cores()) // max(1, processes))
        self._clock = clock
        # only training shrinks for other processes' load (see the module docstring)
        self._watch = None if self.fixed or stage != "train" else (watch or LoadWatch())
        others = None
        if self._watch is not None and first_look_s > 0:
            time.sleep(first_look_s)
            others = self._watch.others()
        self._next = clock() + _RECHECK_S
        self.plan = plan_threads(self._usable(others), device, stage, workers)
        self._before: tuple[int, int] | None = None

    def _usable(self, others: float | None) -> int:
        return self.cores if self.fixed else free_cores(self.cores, others)

    def apply(self) -> ThreadPlan:
        """Set :attr:`plan` in the calling thread (remembering the sizes before, for
        :meth:`restore`); returns it."""
        import cv2
        import torch

        if self._before is None:
            self._before = (torch.get_num_threads(), cv2.getNumThreads())
        apply_threads(self.plan)
        return self.plan

    def restore(self) -> None:
        """Put back torch's and OpenCV's thread counts from before :meth:`apply`."""
        import cv2
        import torch

        if self._before is not None:
            torch.set_num_threads(self._before[0])
            cv2.setNumThreads(self._before[1])
            self._before = None

    def __enter__(self) -> ThreadPlan:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def check(self) -> bool:
        """With ``auto``, at most every few seconds: re-plan from the load of the last
        interval and apply a changed torch pool size. True when the plan changed."""
        if self._watch is None or self._clock() < self._next:
            return False
        self._next = self._clock() + _RECHECK_S
        others = self._watch.others()
        plan = plan_threads(self._usable(others), self.device, self.stage, self.workers)
        if plan == self.plan:
            return False
        log.info(
            "threads: %s torch thread(s) for %s (other processes keep %.1f of %d cores busy)",
            plan.torch,
            self.stage,
            others or 0.0,
            self.cores,
        )
        self.plan = plan
        apply_threads(plan)
        return True
