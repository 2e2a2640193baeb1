"""A batch session of :class:`~segmentflow.state.redis_store.RedisStore` (issue 13).

A worker's batch is cut at every due moment (a lifecycle threshold, a midnight, a sweep), and
each part used to cost five to seven Redis round trips (next due, load, home claims, commit, the
advance's due query, load and commit): a backlog of many customers with few events each ran
~6x slower over Redis than in memory. While a session is open (:meth:`Processor.apply` and
:meth:`Processor.advance` open one), the store

- keeps every state it loaded or committed (a part's customers are loaded once per batch);
- holds commits and merges them, in order, into one ``MULTI`` at the next flush (the end of the
  batch, a population sweep, a meta write, a merge, a ``forget``): states are written as they
  are at the flush, changes and population deltas in commit order;
- answers ``next_due``/``due`` from a window of each owned shard's due set (read once, then
  overlaid with the due moments of the states held), without a round trip per part;
- reads the RFM rank log inside the flush transaction, after its own entries: the index never
  reads back a customer's metrics older than what it holds.

Only the owner of a shard writes its due set and its customers' states (homes), so nothing
else changes what the session caches while it is open; it is dropped at its end (views and
tools may write between batches) and on any error (a retry reloads from Redis). Loads without
the rank sync (views, from the event loop while a batch runs in the worker thread) bypass it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sortedcontainers import SortedList

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change

if TYPE_CHECKING:
    from segmentflow.state.redis_store import RedisStore

#: due entries read per shard at first (doubled when the held states hide all of them)
WINDOW = 32
#: due customers not yet loaded that ride along when a load goes to Redis anyway
PREFETCH = 64
_INF = float("inf")


@dataclass(slots=True)
class _Window:
    """A prefix of one shard's due set as stored (score, customer id), read in this session."""

    entries: list[tuple[int, str]]
    #: every stored entry scored at or below this is in ``entries``
    covered: float
    #: entries before it are hidden by held states (held ones only grow until a flush)
    start: int = 0


@dataclass(slots=True)
class RedisBatch:
    """The open session of one store (see the module docstring)."""

    store: RedisStore
    #: called after each successful flush (the processor counts what became durable)
    on_flush: Callable[[], None] | None = None
    #: loaded or committed states (``None``: nothing stored)
    states: dict[str, CustomerState | None] = field(default_factory=dict)
    #: ids known not to be merged away
    unaliased: set[str] = field(default_factory=set)
    claims: dict[str, int] = field(default_factory=dict)
    pending: dict[str, CustomerState] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    meta: dict[str, int] = field(default_factory=dict)
    #: customer -> (shard, due) of the states held since the last flush
    held: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    held_due: SortedList = field(default_factory=SortedList)  # (due, customer, shard)
    windows: dict[int, _Window] = field(default_factory=dict)
    #: states of owned customers kept from earlier sessions (the store's, see ``end_batch``)
    warm: dict[str, CustomerState] | None = None

    # -- reads --------------------------------------------------------------------------------

    def _warm_up(self, ids: Iterable[str]) -> None:
        """Take the states of ``ids`` kept from earlier sessions (only this worker writes an
        owned customer's state and aliases, so they are what Redis holds)."""
        warm = self.warm
        if not warm:
            return
        for cid in ids:
            if cid not in self.states:
                state = warm.get(cid)
                if state is not None:
                    self.states[cid] = state
                    self.unaliased.add(cid)

    def load(self, ids: Sequence[str]) -> dict[str, CustomerState]:
        """The states of ``ids`` (in order), loading only the ones not cached."""
        self._warm_up(ids)
        missing = [cid for cid in dict.fromkeys(ids) if cid not in self.states]
        if missing:
            self._fetch(missing, [])
        return self._cached(ids)

    def load_resolved(
        self, ids: Sequence[str]
    ) -> tuple[dict[str, CustomerState], dict[str, str]] | None:
        """As :meth:`RedisStore.load_resolved` when none of ``ids`` is merged away; ``None``
        (nothing cached) when some is: the caller flushes and resolves in Redis."""
        ids = list(dict.fromkeys(ids))
        self._warm_up(ids)
        missing = [cid for cid in ids if cid not in self.states]
        unknown = [cid for cid in ids if cid not in self.unaliased]
        if (missing or unknown) and self._fetch(missing, unknown):
            return None
        return self._cached(ids), {}

    def _cached(self, ids: Iterable[str]) -> dict[str, CustomerState]:
        out: dict[str, CustomerState] = {}
        for cid in ids:
            state = self.states.get(cid)
            if state is not None:
                out[cid] = state
        return out

    def _fetch(self, ids: list[str], alias_ids: list[str]) -> bool:
        """Load ``ids`` (plus due customers not loaded yet) and look up the aliases of
        ``alias_ids`` in one round trip (with the rank log); whether some alias exists."""
        store = self.store
        extra = self._prefetch(set(ids)) if ids else []
        wanted = ids + extra
        asked = list(dict.fromkeys(wanted + alias_ids))
        values, into = store.read(asked, aliases=bool(alias_ids), syncing=True)
        if any(cid in into for cid in alias_ids):
            return True
        if wanted:
            found = store._decode_many({cid: values[cid] for cid in wanted if cid in values})
            for cid in wanted:  # quarantines clear the windows
                if not store.is_quarantined(cid):
                    self.states[cid] = found.get(cid)
        self.unaliased.update(alias_ids)
        return False

    def _prefetch(self, asked: set[str]) -> list[str]:
        """Customers next in the due windows and not loaded yet (they are loaded when due)."""
        out: list[str] = []
        for window in self.windows.values():
            for _, cid in window.entries[window.start : window.start + PREFETCH]:
                if cid not in self.states and cid not in asked and cid not in self.held:
                    out.append(cid)
                    if len(out) >= PREFETCH:
                        return out
        return out

    def claim_homes(self, wanted: Mapping[str, int]) -> dict[str, int]:
        """Home claims, each asked once per session."""
        ask = {cid: p for cid, p in wanted.items() if cid not in self.claims}
        if ask:
            self.claims.update(self.store._claim_homes(ask))
        return {cid: self.claims[cid] for cid in wanted}

    # -- the due index --------------------------------------------------------------------------

    def _windows(self, shards: Sequence[int], size: int = WINDOW) -> None:
        """Read the due windows of ``shards`` (one round trip)."""
        store = self.store
        pipe = store.client.pipeline(transaction=False)
        for shard in shards:
            pipe.zrange(store.keys.due(shard), 0, size - 1, withscores=True)
        for shard, rows in zip(shards, pipe.execute(), strict=True):
            entries = [(int(score), member.decode()) for member, score in rows]
            covered = _INF if len(entries) < size else entries[-1][0] - 1
            self.windows[shard] = _Window(entries, covered)

    def _first(self, shard: int) -> int | None:
        """The earliest stored due moment of ``shard`` not hidden by a held state."""
        while True:
            window = self.windows[shard]
            entries, i = window.entries, window.start
            while i < len(entries) and entries[i][1] in self.held:
                i += 1
            window.start = i
            if i < len(entries):
                return entries[i][0]
            if window.covered == _INF:
                return None
            self._windows([shard], 2 * len(entries) + len(self.held))

    def next_due(self) -> int | None:
        shards = self.store._shards()
        absent = [shard for shard in shards if shard not in self.windows]
        if absent:
            self._windows(absent)
        best: int | None = None
        for shard in shards:
            first = self._first(shard)
            if first is not None and (best is None or first < best):
                best = first
        owned = self.store.owned_partitions
        for due, _, shard in self.held_due:
            if owned is None or shard in owned:
                if best is None or due < best:
                    best = due
                break
        return best

    def due(self, upto: int, limit: int) -> list[str]:
        store = self.store
        shards = store._shards()
        absent = [shard for shard in shards if shard not in self.windows]
        if absent:
            self._windows(absent)
        found: list[tuple[float, str]] = []
        short = []
        for shard in shards:
            window = self.windows[shard]
            if window.covered < upto:
                short.append(shard)
                continue
            taken = 0
            for score, cid in window.entries[window.start :]:
                if score > upto or taken >= limit:
                    break
                if cid not in self.held:
                    found.append((float(score), cid))
                    taken += 1
        if short:  # past the windows: ask Redis (held customers skipped: their entry is stale)
            pipe = store.client.pipeline(transaction=False)
            for shard in short:
                pipe.zrangebyscore(
                    store.keys.due(shard),
                    "-inf",
                    upto,
                    start=0,
                    num=limit + len(self.held),
                    withscores=True,
                )
            for rows in pipe.execute():
                found.extend(
                    (score, cid)
                    for member, score in rows
                    if (cid := member.decode()) not in self.held
                )
        owned = store.owned_partitions
        for due, cid, shard in self.held_due.irange(maximum=(upto, "\U0010ffff", 1 << 30)):
            if owned is None or shard in owned:
                found.append((float(due), cid))
        found.sort()
        return [cid for _, cid in found[:limit]]

    # -- writes ---------------------------------------------------------------------------------

    def hold(self, states: Mapping[str, CustomerState], changes: Sequence[Change]) -> None:
        """Hold a commit until the next flush."""
        held, held_due = self.held, self.held_due
        for cid, state in states.items():
            self.states[cid] = state
            self.pending[cid] = state
            shard = self.store._home_of(state)
            old = held.get(cid)
            if old is not None and old[1] is not None:
                held_due.remove((old[1], cid, old[0]))
            held[cid] = (shard, state.next_due)
            if state.next_due is not None:
                held_due.add((state.next_due, cid, shard))
        self.changes.extend(changes)

    def committed(self, states: Mapping[str, CustomerState]) -> None:
        """Note states committed past the session (a merge's commit, after a flush)."""
        self.states.update(states)
        self.unaliased.clear()  # aliases were written
        self.windows.clear()

    def restore_ranks(self) -> None:
        """After a failed session: the rank index entries of every customer it loaded go back
        to what is stored (its held metrics and sweep scores were not written), so a retry
        scores against the index the stored states agree with; if Redis cannot tell, the
        whole index is reloaded at the next read."""
        sync, ranks = self.store.ranks, self.store.ranks.ranks
        ids = list(self.states)
        if ranks is None or not ids:
            return
        try:
            stored = sync.stored({cid: self.store.shard_of(cid) for cid in ids})
        except Exception:
            sync._read_at = float("-inf")  # attach again (from the hash) before the next read
            raise
        for cid in ids:
            packed = stored.get(cid)
            if packed is None:
                ranks.update(cid, None)
            else:
                sync._update(ranks, cid.encode(), packed)

    @property
    def size(self) -> int:
        """States and changes held for the next flush."""
        return len(self.pending) + len(self.changes)

    def flush(self) -> None:
        """Write what is held (one ``MULTI`` per home partition; on one Redis one for all),
        then read the rank log (in the same ``MULTI`` on one Redis)."""
        store = self.store
        if self.pending or self.changes or self.meta:
            replies = store.write(
                self.pending, self.changes, meta=self.meta, after=store.ranks.queue_read
            )
            if replies:
                store.ranks.apply_read(replies)
            self.pending, self.changes, self.meta = {}, [], {}
            self.held, self.held_due = {}, SortedList()
            self.windows.clear()
        if self.on_flush is not None:
            self.on_flush()
