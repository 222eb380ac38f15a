"""Stages in their own threads, joined by bounded queues: the skeleton of the video pipeline.

::

    source ──► stage 1 ──► ... ──► stage k ──► the caller's ``for`` loop
    (thread)   (thread)            (thread)    (the caller's thread: the encoder)

Each stage is a function from an iterator of items to an iterator of items (it may batch them or
hold some back) and runs in a thread of its own; the links are ``queue.Queue(maxsize)``, so at
most ``queue_size`` items wait between two stages and memory stays flat whatever the length of
the video. One thread per stage and FIFO links keep the order. The first failure anywhere stops
every stage and reaches the caller as :class:`StageError` naming the stage; the caller names the
failures of its own loop with :func:`named_stage`.

Threads, not processes: decoding (FFmpeg), inference (torch), compositing (OpenCV) and encoding
(libx264) all release the GIL while they work, and frames need no pickling between threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from thingmask.errors import StageError, named_stage

__all__ = ["Stage", "StageError", "Stream", "StreamStats", "named_stage"]

log = logging.getLogger(__name__)

Stage = tuple[str, Callable[[Iterator[Any]], Iterable[Any]]]  # (name, transform)

_END = object()  # end of the items, passed down every link
_POLL_S = 0.05  # how often a blocked thread looks whether the pipeline was stopped
_JOIN_WARN_S = 10.0  # a stage still busy this long after a stop is named in the log


class _StoppedError(Exception):
    """Raised inside a worker thread when the pipeline was stopped (by a failure elsewhere)."""


@dataclass
class StreamStats:
    """Counters of one run, for tests and benchmarks.

    ``max_in_flight`` is the most items the source had made that the caller had not yet taken,
    at any moment: what bounds memory. ``max_queued`` is the peak length of each link, named by
    the stage that fills it.
    """

    produced: int = 0
    consumed: int = 0
    max_in_flight: int = 0
    max_queued: dict[str, int] = field(default_factory=dict)


class Stream:
    """Run ``source`` and ``stages`` in threads; iterate the object for the last stage's items.

    Args:
        source: iterable of items (e.g. decoded frames), iterated in a thread named
            ``source_name``.
        stages: ``(name, transform)`` pairs; ``transform(iterator) -> iterable``.
        queue_size: the most items waiting in each link (>= 1).
        source_name: the source's stage name in errors.

    Use as a context manager: leaving the block (normally, by ``break`` or by an exception)
    stops and joins every thread. Iterating raises :class:`StageError` when a stage failed.
    """

    def __init__(
        self,
        source: Iterable[Any],
        stages: Sequence[Stage],
        *,
        queue_size: int = 4,
        source_name: str = "decode",
    ) -> None:
        if int(queue_size) < 1:
            raise ValueError(f"queue_size: got {queue_size!r}; expected an integer >= 1")
        self.stats = StreamStats()
        self._source = source
        self._names = [source_name, *(name for name, _ in stages)]
        self._transforms = [fn for _, fn in stages]
        self._queues: list[queue.Queue[Any]] = [
            queue.Queue(maxsize=int(queue_size)) for _ in self._names
        ]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._error: StageError | None = None
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- the caller's side ---------------------------------------------------------------------
    def __enter__(self) -> Stream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        bodies: list[Callable[[], None]] = [self._run_source]
        bodies += [self._stage_body(i) for i in range(1, len(self._names))]
        for name, body in zip(self._names, bodies, strict=True):
            thread = threading.Thread(
                target=self._guard, args=(name, body), name=f"thingmask-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def __iter__(self) -> Iterator[Any]:
        self.start()
        last = self._queues[-1]
        while True:
            try:
                item = last.get(timeout=_POLL_S)
            except queue.Empty:
                self._raise_if_failed()
                continue
            if item is _END:
                self._raise_if_failed()
                return
            with self._lock:
                self.stats.consumed += 1
            yield item

    def close(self) -> None:
        """Stop every stage and wait for the threads (each finishes the item it holds)."""
        self._stop.set()
        waited = time.monotonic()
        for thread in self._threads:
            while thread.is_alive():
                thread.join(timeout=1.0)
                if thread.is_alive() and time.monotonic() - waited > _JOIN_WARN_S:
                    log.warning("waiting for %s to finish its current item", thread.name)
                    waited = time.monotonic()

    @property
    def error(self) -> StageError | None:
        """The first failure, once one happened."""
        return self._error

    # -- worker threads ------------------------------------------------------------------------
    def _guard(self, name: str, body: Callable[[], None]) -> None:
        try:
            body()
        except _StoppedError:
            pass
        except BaseException as exc:
            self._fail(exc if isinstance(exc, StageError) else StageError(name, exc))

    def _fail(self, error: StageError) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
                log.debug("pipeline stopped: %s", error)
        self._stop.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise _StoppedError("the pipeline was stopped")

    def _run_source(self) -> None:
        for item in self._source:
            with self._lock:
                self.stats.produced += 1
                in_flight = self.stats.produced - self.stats.consumed
                self.stats.max_in_flight = max(self.stats.max_in_flight, in_flight)
            self._put(0, item)
        self._put(0, _END)

    def _stage_body(self, i: int) -> Callable[[], None]:
        def body() -> None:
            for item in self._transforms[i - 1](self._take(i - 1)):
                self._put(i, item)
            self._put(i, _END)

        return body

    def _take(self, i: int) -> Iterator[Any]:
        q = self._queues[i]
        while True:
            if self._stop.is_set():
                raise _StoppedError
            try:
                item = q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item

    def _put(self, i: int, item: Any) -> None:
        q = self._queues[i]
        while True:
            if self._stop.is_set():
                raise _StoppedError
            try:
                q.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            name = self._names[i]
            size = q.qsize()
            with self._lock:
                self.stats.max_queued[name] = max(self.stats.max_queued.get(name, 0), size)
            return
