"""The clv population store interface: every customer's order summary, the refit records and the
refit barrier, shared by all workers (issue 16).

Each customer with an order has a row ``(first_day, last_day, x, repeat_spend, value, home)``
(:data:`ROW`, 23 bytes packed), written with its state (same commit) and reconstructible from
it (:func:`row_of`). The population version grows with every committed order and forget, so a
refit moment without a new order keeps the parameters (as ``replay``). Refit records
(:class:`~segmentflow.segmenters.clv.ClvFit`) are keyed by their moment; the first one
published for a moment is the one every worker adopts. Backends: :class:`MemoryClvPopulation`
(tests, one process) and :class:`~segmentflow.state.redis_clv.RedisClvPopulation` (the worker,
driven by the Redis state store). The protocol over it: :mod:`segmentflow.service.clv_share`.
"""

from __future__ import annotations

import itertools
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segmentflow.engine.state import CustomerState
from segmentflow.segmenters.clv import CODE, Clv, ClvFit, ClvSlice

#: a stored population row (little-endian, packed)
ROW = np.dtype(
    [
        ("first_day", "<i4"),
        ("last_day", "<i4"),
        ("x", "<i4"),
        ("repeat_spend", "<f8"),
        ("value", "u1"),
        ("home", "<i2"),
    ]
)
_PACK = struct.Struct("<iiidBh")
assert _PACK.size == ROW.itemsize == 23


def row_of(state: CustomerState, kind: str = "clv") -> bytes | None:
    """A customer's packed row (``None`` without an order).

    Examples
    --------
    >>> s = CustomerState("c")
    >>> s.slices["clv"] = ClvSlice(10, 24, 2, 5.0, 30.5)
    >>> s.values["clv"], s.home = "steady", 3
    >>> decode_rows([row_of(s) or b""]).tolist()
    [(10, 24, 2, 30.5, 4, 3)]
    """
    held = state.slices.get(kind)
    if held is None:
        return None
    if isinstance(held, ClvSlice):
        first, last, x, spend = held.first_day, held.last_day, held.x, held.repeat_spend
    else:  # a raw slice [version, first_day, last_day, x, first_spend, repeat_spend]
        first, last, x, spend = held[1], held[2], held[3], held[5]
    code = CODE.get(state.values.get(kind) or "", 0)
    home = -1 if state.home is None else state.home
    return _PACK.pack(first, last, x, spend, code, home)


def decode_rows(values: Iterable[bytes]) -> np.ndarray[Any, np.dtype[np.void]]:
    """Packed rows as one structured array (a value of another length is skipped)."""
    held = list(values)
    joined = b"".join(held)
    if len(joined) != len(held) * ROW.itemsize:  # some row is damaged: keep the readable ones
        joined = b"".join(v for v in held if len(v) == ROW.itemsize)
    return np.frombuffer(joined, dtype=ROW)


@dataclass(frozen=True, slots=True)
class PopulationRows:
    """The whole stored population: version (read before the rows), ids and their rows."""

    version: int
    ids: list[bytes]
    rows: np.ndarray[Any, np.dtype[np.void]]

    def summary(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """``(first_day, last_day, x, repeat_spend)`` as float columns (:meth:`Clv.fit_for`)."""
        r = self.rows
        return np.column_stack([r["first_day"], r["last_day"], r["x"], r["repeat_spend"]]).astype(
            np.float64
        )

    @property
    def corrupt(self) -> int:
        """Rows that could not be read (left out)."""
        return len(self.ids) - len(self.rows)


class ClvPopulationStore(ABC):
    """The clv population of all workers and the records of its refits."""

    @abstractmethod
    def attach(self, dim: Clv) -> None:
        """Start writing rows (and counting ``dim``'s orders into the version) at commits."""

    @abstractmethod
    def read(self) -> PopulationRows:
        """Every stored row (for a refit; the version is read first)."""

    @abstractmethod
    def fit_at(self, at: int) -> ClvFit | None:
        """The record published for refit moment ``at``, if any."""

    @abstractmethod
    def latest_fit(self) -> ClvFit | None:
        """The record of the latest refit moment (a restarted worker adopts it)."""

    @abstractmethod
    def publish(self, fit: ClvFit) -> ClvFit:
        """Store ``fit`` unless a record for its moment exists; return the stored one."""

    @abstractmethod
    def mark_ready(self, at: int, shards: Iterable[int]) -> None:
        """Record that ``shards`` applied everything before refit moment ``at``."""

    @abstractmethod
    def all_ready(self, at: int, shards: int) -> bool:
        """Whether every shard ``0..shards-1`` is ready for ``at``."""

    @abstractmethod
    def try_lock(self, at: int, seconds: float) -> str | None:
        """Take the refit lock for ``seconds`` (a token), or ``None`` when another holds it."""

    @abstractmethod
    def unlock(self, token: str) -> None:
        """Release the lock if ``token`` still holds it."""


class MemoryClvPopulation(ClvPopulationStore):
    """The population in this process (unit tests, tools); :meth:`commit` plays the state
    store's part. ``clock``: seconds, for the lock's expiry (a fake one in tests).

    Examples
    --------
    >>> pop = MemoryClvPopulation()
    >>> pop.publish(ClvFit(7, 0, 0, {}, 40.0, 0)) == pop.publish(ClvFit(7, 1, 1, {}, 9.0, 5))
    True
    >>> pop.try_lock(7, 60) is not None, pop.try_lock(7, 60)
    (True, None)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.dim: Clv | None = None
        self.rows: dict[str, bytes] = {}
        self.version = 0
        self.fits: dict[int, ClvFit] = {}
        self.ready: dict[int, int] = {}
        self._lock: tuple[str, float] | None = None
        self._tokens = itertools.count(1)

    def attach(self, dim: Clv) -> None:
        self.dim = dim
        dim.changed = set() if dim.changed is None else dim.changed

    def commit(self, states: Mapping[str, CustomerState]) -> None:
        """What the state store's commit does for the population: rows and version."""
        if self.dim is None:
            return
        for cid, state in states.items():
            row = row_of(state, self.dim.kind)
            if row is not None:
                self.rows[cid] = row
        for cid in (changed := take_changed(self.dim, states)):
            if row_of(states[cid], self.dim.kind) is None:
                self.rows.pop(cid, None)
        self.version += len(changed)

    def forget(self, customer_id: str) -> None:
        """Drop a customer's row (a forget)."""
        self.rows.pop(customer_id, None)
        self.version += 1

    def read(self) -> PopulationRows:
        ids = list(self.rows)
        return PopulationRows(
            self.version, [c.encode() for c in ids], decode_rows(self.rows[c] for c in ids)
        )

    def fit_at(self, at: int) -> ClvFit | None:
        return self.fits.get(at)

    def latest_fit(self) -> ClvFit | None:
        return self.fits[max(self.fits)] if self.fits else None

    def publish(self, fit: ClvFit) -> ClvFit:
        return self.fits.setdefault(fit.at, fit)

    def mark_ready(self, at: int, shards: Iterable[int]) -> None:
        for shard in shards:
            self.ready[shard] = at

    def all_ready(self, at: int, shards: int) -> bool:
        return all(self.ready.get(s, -1) >= at for s in range(shards))

    def try_lock(self, at: int, seconds: float) -> str | None:
        now = self.clock()
        if self._lock is not None and self._lock[1] > now:
            return None
        token = f"{at}:{next(self._tokens)}"
        self._lock = (token, now + seconds)
        return token

    def unlock(self, token: str) -> None:
        if self._lock is not None and self._lock[0] == token:
            self._lock = None


def take_changed(dim: Clv, states: Iterable[str]) -> set[str]:
    """The committed customers whose order summary changed since their last commit (taken out
    of ``dim.changed``): each adds one to the population version; those whose state has no
    summary now (merged away, forgotten) lose their row."""
    changed = dim.changed
    if not changed:
        return set()
    done = changed.intersection(states)
    changed.difference_update(done)
    return done
