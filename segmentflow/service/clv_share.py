"""The clv refit shared by several workers (issue 16): one fit per refit moment, adopted by all.

At each refit moment ``M`` (``k * refit_every_days`` of event time; a worker reaches it when its
clock passes it, having applied its events before ``M`` and none after) a worker:

1. marks its shards ready for ``M`` (``mark_ready``);
2. waits until a record for ``M`` is published, or until every shard is ready (or
   ``refit_wait_seconds`` passed: a dead or idle worker holds nobody back longer) and it takes the
   refit lock: then it reads the whole stored population, computes the record
   (:meth:`Clv.fit_for`: a refit, or the parameters kept when no order was committed since the
   previous record) and publishes it (the first record of a moment wins);
3. adopts the record (every worker the same parameters and ``high_value`` threshold) and, when
   it changed them, re-values the customers of its own shards that it moves (from their stored
   rows: value given, likely_lost instant).

A lock holder that dies leaves the lock to expire (``lock_seconds``): then another waiting
worker fits. When all workers reach ``M`` within that limit the record is the one ``replay``
computes at ``M``; otherwise it is fitted to what was committed at that point (a few orders more
or less of the latest period; every worker still uses the same record). A restarted worker
adopts the latest record (:meth:`SharedClvRefit.attach`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from segmentflow.segmenters.clv import Clv, ClvFit
from segmentflow.state.base import StateStore
from segmentflow.state.clv_population import ClvPopulationStore, PopulationRows


class SharedClvRefit:
    """The processor's population share for ``clv`` (``Processor.shares``).

    Parameters
    ----------
    dim
        The engine's ``clv`` dimension, or a callable giving the current one (a config reload
        builds a new engine: the share moves to its ``clv`` at the next call, carrying over the
        parameters in force and the summaries changed since the last commit).
    population
        The shared population store.
    store
        The state store (owned shards; the legacy shard of a row without a home).
    shards
        The number of shards (input partitions) the barrier waits for.
    wait_seconds, lock_seconds, poll_seconds
        Barrier limit (default: the dimension's ``refit_wait_seconds``), lock expiry and poll
        period (wall seconds).
    clock, sleep
        Wall clock and sleep (fakes in tests).
    """

    def __init__(
        self,
        dim: Clv | Callable[[], Clv],
        population: ClvPopulationStore,
        store: StateStore,
        shards: int,
        wait_seconds: float | None = None,
        lock_seconds: float = 120.0,
        poll_seconds: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._dim_of: Callable[[], Clv] = (lambda: dim) if isinstance(dim, Clv) else dim
        self._attached: Clv | None = None
        self.population = population
        self.store = store
        self.shards = shards
        self.wait_seconds = wait_seconds
        self.lock_seconds = lock_seconds
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.sleep = sleep
        #: refit records this worker computed and published (``/metrics``-style counter)
        self.fitted = 0
        self._calls = 0

    def attach(self) -> ClvFit | None:
        """Start sharing: commits write rows, the in-process index stays empty, and the latest
        stored record (if any) is adopted (a restart resumes with the stored parameters)."""
        dim = self._attached = self._dim_of()
        self._share(dim)
        latest = self.population.latest_fit()
        if latest is not None:
            dim.adopt(latest)
        return latest

    def _share(self, dim: Clv) -> None:
        dim.local_index = False
        dim.population.clear()
        dim.given.clear()
        self.population.attach(dim)

    @property
    def dim(self) -> Clv:
        """The engine's current ``clv`` (re-attached after a config reload)."""
        current = self._dim_of()
        old = self._attached
        if current is not old:
            self._attached = current
            self._share(current)
            if old is not None:
                current.adopt(old.current_fit(0, old.fitted_version))
                if old.changed and current.changed is not None:
                    current.changed |= old.changed
        return current

    @dim.setter
    def dim(self, value: Clv) -> None:
        """Share ``value`` from now on (a reload: :func:`segmentflow.service.reload.switch`
        then calls :meth:`attach`, which adopts the latest stored record)."""
        self._dim_of = lambda: value
        self._attached = None

    def population_version(self) -> object:
        """Never the same twice: every refit moment goes through the barrier (a worker that
        stepped over one would hold the others back and miss the record)."""
        self._calls += 1
        self.dim  # noqa: B018 - attaches a reloaded engine's clv at the next tick
        return self._calls

    def _owned(self) -> list[int]:
        owned = self.store.owned_partitions
        return list(range(self.shards)) if owned is None else sorted(owned)

    def record(self, at: int) -> tuple[ClvFit, PopulationRows | None]:
        """The record for ``at`` (waiting, or fitting it under the lock) and the rows read if
        this worker fitted it."""
        self.population.mark_ready(at, self._owned())
        dim = self.dim
        limit = dim.cfg.refit_wait_seconds if self.wait_seconds is None else self.wait_seconds
        started = self.clock()
        while True:
            fit = self.population.fit_at(at)
            if fit is not None:
                return fit, None
            waited = self.clock() - started >= limit
            if waited or self.population.all_ready(at, self.shards):
                token = self.population.try_lock(at, self.lock_seconds)
                if token is not None:
                    try:
                        fit = self.population.fit_at(at)
                        if fit is not None:
                            return fit, None
                        rows = self.population.read()
                        fit = dim.fit_for(rows.summary(), rows.version, at)
                        stored = self.population.publish(fit)
                        self.fitted += stored == fit
                        return stored, rows
                    finally:
                        self.population.unlock(token)
            self.sleep(self.poll_seconds)

    def prepare_sweep(self, at: int) -> None:
        """Adopt the record for ``at``; when it changed the parameters, set the owned customers
        it moves (:meth:`Clv.set_moved`)."""
        fit, rows = self.record(at)
        refits, before = self.dim.refits, self.dim.adopt(fit)
        if fit.refits == refits:
            self.dim.set_moved([])
            return
        if rows is None:
            rows = self.population.read()
        mine = np.flatnonzero(self._mine(rows))
        part = rows.rows[mine]
        summary = PopulationRows(rows.version, [], part).summary()
        mask = self.dim.moved_mask(before, summary, part["value"], at)
        ids = rows.ids
        moved = sorted(ids[i].decode("utf-8", "replace") for i in mine[mask].tolist())
        self.dim.set_moved([(cid, None) for cid in moved])  # in id order, as in-process

    def _mine(self, rows: PopulationRows) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Which rows belong to the owned shards (by stored home; legacy shard without one)."""
        owned = self.store.owned_partitions
        if owned is None:
            return np.ones(len(rows.rows), dtype=bool)
        homes = rows.rows["home"].astype(np.int64)
        for i in np.flatnonzero(homes < 0).tolist():
            homes[i] = self.store.shard_of(rows.ids[i].decode("utf-8", "replace"))
        return np.isin(homes, sorted(owned))
