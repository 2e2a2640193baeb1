"""When CPython's cyclic collector runs in a process whose heap is mostly long-lived.

A replay's or a worker's states, indexes and models live long, and each automatic full
collection walks all of them again: 20-30% of a CDNOW-sized replay, and 23% of the engine's
time in a worker on CDNOW-like data (12 full collections of about 0.14 s per 22k events;
``benchmarks/README.md``, "Results (2026-12-04, evening)"). A :class:`CollectorSchedule`
turns the automatic collector off and collects on its own schedule instead: after a number
of events or seconds, then freezes what survived (``gc.freeze``), so later collections walk
only what is new. Freezing keeps objects from the cycle collector, not from reference
counting: a frozen state that is dropped is freed at once; only garbage *cycles* among frozen
objects wait, until the next thaw (every ``thaw_every``-th collection is a full one).

:data:`PROCESS` is the worker's schedule (the process's collector is one per process too):
``streams.worker.faust_worker`` starts it and the worker counts its events into it.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any


class CollectorSchedule:
    """Collect garbage cycles every ``every_events`` events or ``every_seconds`` seconds.

    Parameters
    ----------
    every_events
        Events between two collections (at least; see ``grow``).
    every_seconds
        Seconds between two collections, whatever the events (an idle worker's timers make
        garbage too); ``math.inf`` for none.
    grow
        With ``grow > 0``, the next collection waits for ``grow`` times the events seen so
        far, if that is more than ``every_events`` (a replay: about as many collections as
        quarters of its growth).
    thaw_every
        Every this many collections, frozen objects are thawed first (a full collection);
        0 for never (until :meth:`stop`).
    clock, collector
        Monotonic seconds and the ``gc`` module (fakes in tests).

    Examples
    --------
    >>> schedule = CollectorSchedule(every_events=1000, every_seconds=math.inf)
    >>> with schedule.running():
    ...     schedule.seen(999)
    ...     schedule.collections, schedule.due()
    ...     schedule.seen(1)
    ...     schedule.collections, schedule.due()
    (0, False)
    (1, False)
    >>> gc.isenabled()  # handed back as it was
    True
    """

    def __init__(
        self,
        every_events: int = 20_000,
        every_seconds: float = 60.0,
        grow: float = 0.0,
        thaw_every: int = 25,
        clock: Callable[[], float] = time.monotonic,
        collector: ModuleType | Any = gc,
    ) -> None:
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.grow = grow
        self.thaw_every = thaw_every
        self.clock = clock
        self.collector = collector
        #: collections run while started, and how many of them thawed first
        self.collections = 0
        self.thaws = 0
        self._active = False
        self._froze = False
        self._events = 0
        self._due_events = every_events
        self._due_time = math.inf
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether the schedule, not the automatic collector, runs collections now."""
        return self._active

    def start(self) -> bool:
        """Turn the automatic collector off and take over; ``False`` (and nothing changed)
        when the process disabled the collector or froze objects itself, or it already runs."""
        gc_ = self.collector
        if self._active or not gc_.isenabled() or gc_.get_freeze_count():
            return False
        gc_.disable()
        self._active = True
        self._due_time = self.clock() + self.every_seconds
        return True

    def stop(self) -> None:
        """Hand the frozen objects back and turn the automatic collector on again."""
        if not self._active:
            return
        if self._froze:
            self.collector.unfreeze()
            self._froze = False
        self.collector.enable()
        self._active = False

    @contextmanager
    def running(self) -> Iterator[CollectorSchedule]:
        """:meth:`start` on entry, :meth:`stop` on exit (if it started)."""
        started = self.start()
        try:
            yield self
        finally:
            if started:
                self.stop()

    def due(self) -> bool:
        """Whether a collection is due now (always ``False`` while not started)."""
        return self._active and (self._events >= self._due_events or self.clock() >= self._due_time)

    def seen(self, events: int) -> None:
        """Count ``events`` more; collect when due (safe from any thread)."""
        self._events += events
        if self.due():
            self.collect()

    def collect(self) -> None:
        """Collect now, then freeze what survived (every ``thaw_every``-th time: thaw first)."""
        with self._lock:
            if not self._active:
                return
            gc_ = self.collector
            self.collections += 1
            if self._froze and self.thaw_every and self.collections % self.thaw_every == 0:
                gc_.unfreeze()
                self.thaws += 1
            gc_.collect()
            gc_.freeze()
            self._froze = True
            self._due_events = self._events + max(self.every_events, int(self._events * self.grow))
            self._due_time = self.clock() + self.every_seconds


#: the worker process's schedule (started by ``streams.worker.faust_worker``): a collection
#: every 20,000 events or minute, a full one every 25th
PROCESS = CollectorSchedule()
