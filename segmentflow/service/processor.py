"""Batch processing over a state store: one engine for the worker, ``replay`` and backtests.

A batch is decoded (rejections become dead letters), grouped by customer, the touched states are
loaded in one store call, the engine applies each customer's events in order, and states, due
moments and population deltas are committed in one store call. Only then may the caller publish
the changes and commit offsets.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from segmentflow.config import SegmentConfig
from segmentflow.engine.engine import Engine
from segmentflow.engine.identity import (
    MERGED,
    MERGED_INTO,
    absorb,
    has_merged,
    is_merged_away,
    leave,
    merge,
    merge_sources,
)
from segmentflow.engine.state import CustomerState, event_id_hash
from segmentflow.schemas.changes import Change
from segmentflow.schemas.deadletter import dead_letter
from segmentflow.schemas.decode import Event, Limits, Rejection, decode_message
from segmentflow.schemas.events import FORGET
from segmentflow.schemas.reasons import Reason
from segmentflow.segmenters.dimension import PopulationWork
from segmentflow.state.base import StateQuarantined, StateStore

SWEPT = "rfm_swept"
#: states and changes a batch session may hold before a sweep or a refit writes them; below
#: it, sweeps are written with the batch (one transaction, each customer written once)
HELD_AT_MOST = 20_000
#: ``extra`` key of a survivor whose merging event went to another worker as a merge request:
#: ``{"id": event id, "ts": its time, "to": the partition it went to, "n": events forwarded
#: behind it}``; the survivor's events at or after ``ts`` wait behind it (notes/identity.md)
MERGE_PENDING = "merge_pending"
#: forwards behind a pending merge before the mark is dropped (its merging event lost on the
#: other side, e.g. dead-lettered): the events then apply as a late merge (notes/identity.md)
PENDING_FORWARDS = 64


class _Schedule(NamedTuple):
    """The population schedule a batch session started from or last wrote."""

    next_sweep: int | None
    next_refit: dict[str, int | None]


class PopulationShare(Protocol):
    """A population dimension's refit shared with other workers (``Processor.shares``)."""

    def population_version(self) -> object:
        """Unchanged since the last refit: the next one is stepped over."""

    def prepare_sweep(self, at: int) -> None:
        """The refit at ``at`` (the dimension's :meth:`PopulationWork.moved` then gives the
        owned customers it moves)."""


def refit_meta(kind: str) -> str:
    """The store meta key holding the last refit moment of population dimension ``kind``."""
    return f"{kind}_swept"


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed Kafka message."""

    topic: str
    kind: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Item:
    """A decoded event to apply, with its source position when it came from Kafka."""

    topic: str
    event: Event
    partition: int = -1
    offset: int = -1
    #: the consumed record it was decoded from (forwards re-produce it; dead letters quote it)
    record: InputRecord | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, record: InputRecord, event: Event) -> Item:
        return cls(record.topic, event, record.partition, record.offset, record)

    @property
    def source(self) -> str | None:
        """``topic:partition`` for idempotency, or ``None`` without a Kafka position."""
        return None if self.partition < 0 else f"{self.topic}:{self.partition}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter to publish: the original key and the §4 JSON value."""

    key: bytes | None
    value: dict[str, Any]


@dataclass(slots=True)
class BatchResult:
    """What one batch produced."""

    changes: list[Change] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    #: event timestamp of each input record (``None`` for a rejected one), in input order
    timestamps: list[int | None] = field(default_factory=list)


class Counters:
    """Running counts: per topic received/applied/deadlettered/duplicates/forwarded/late, per
    reason and per dimension. The identity ``received = applied + deadlettered + duplicates +
    forwarded`` holds per topic once the held events are released (a forwarded record is
    received again, on its customer's home partition).
    """

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.deadlettered: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.late: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        #: profiles merged away into another (identity, CONTRACT §3), per topic of the merging
        #: event, counted by the worker that commits the alias
        self.merged: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.changes: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """All counters as plain dicts."""
        return {
            name: dict(getattr(self, name))
            for name in (
                "received",
                "applied",
                "deadlettered",
                "duplicates",
                "forwarded",
                "late",
                "reasons",
            )
        } | {"changes": dict(self.changes)}


#: tombstone fields in ``CustomerState.extra``: input positions (source -> offset) a forget
#: erased (a redelivery of anything up to them is skipped), and the forget's request id
ERASED = "erased"
FORGOTTEN = "forgotten"


def tombstone(
    customer_id: str,
    state: CustomerState | None,
    final: Sequence[Change],
    request_id: str | None,
    erased: dict[str, int],
) -> CustomerState:
    """What an erased customer leaves (README "forget"): the per-dimension sequence numbers
    (so a later profile's change ids continue after the final ``null``), its home partition,
    the input positions erased and the forget's request id; no event, time, trait or total."""
    seqs = dict(state.seqs) if state is not None else {}
    for change in final:
        seqs[change.dimension] = change.sequence
    tomb = CustomerState(customer_id, seqs=seqs, extra={ERASED: erased, FORGOTTEN: request_id})
    tomb.home = state.home if state is not None else None
    return tomb


def is_tombstone(state: CustomerState | None) -> bool:
    """Whether ``state`` is what a forget left (no profile since)."""
    return state is not None and FORGOTTEN in state.extra and state.clock is None


def _erased(state: CustomerState, item: Item) -> bool:
    """Whether ``item`` was read before a forget of its customer that erased it."""
    erased: dict[str, int] | None = state.extra.get(ERASED)
    if not erased or item.source is None:
        return False
    return erased.get(item.source, -1) >= item.offset


def _dimension_group(dimension: str) -> str:
    return "rule" if dimension.startswith("rule:") else dimension


class Processor:
    """Decode, apply and commit batches of input records; fire due time-driven changes.

    Parameters
    ----------
    config
        The segmentation config.
    store
        Where per-customer state lives.
    check_key
        Whether the Kafka key must equal ``customer_id`` (off for ``replay`` files).
    wall_clock
        The process's wall clock in epoch µs, for the ``max_future_skew`` check of consumed
        records (a fake one in tests).
    """

    def __init__(
        self,
        config: SegmentConfig,
        store: StateStore,
        check_key: bool = True,
        wall_clock: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.config = config
        self.engine = Engine(config)
        self.store = store
        self.counters = Counters()
        self._check_key = check_key
        self._limits = Limits.of(config)
        self.wall_clock = wall_clock
        self._sweep_us = config.rfm_sweep_us
        swept = store.get_meta(SWEPT)
        #: the next RFM population sweep (every ``rfm.sweep_every`` of event time)
        self.next_sweep: int | None = None if swept is None else swept + self._sweep_us
        #: incarnation per input ``topic:partition`` (bumped by the worker when the broker's
        #: cluster id changes or the partition's end is below the highest offset applied)
        self.epochs: dict[str, int] = {}
        #: highest offset applied per ``topic:partition`` since start (the worker persists it)
        self.applied_high: dict[str, int] = {}
        self.forwards: list[tuple[Item, int]] = []
        #: (rank index version, owned shards) at the last sweep: a sweep with both unchanged
        #: gives nothing (scores depend on the metrics only; R on last-order times, not on t)
        self._swept: tuple[int, frozenset[int] | None] | None = None
        #: the other population-wide dimensions with a schedule of their own (the ``clv``
        #: refit): (kind, dimension, period µs), in registry order; RFM keeps the fields above
        self._refits: list[tuple[str, PopulationWork, int]] = [
            (dim.kind, dim, dim.sweep_every_us)
            for dim in self.engine.registry
            if isinstance(dim, PopulationWork) and dim.kind != "rfm" and dim.sweep_every_us
        ]
        #: kind -> the next refit moment (``None``: not scheduled until the population has one)
        self.next_refit: dict[str, int | None] = {}
        for kind, _, period in self._refits:
            done = store.get_meta(refit_meta(kind))
            self.next_refit[kind] = None if done is None else done + period
        #: kind -> (population version, owned shards) at its last refit
        self._refitted: dict[str, tuple[object, frozenset[int] | None]] = {}
        #: kind -> the population shared with other workers (the bootstrap wires the ``clv``
        #: one for a worker: :class:`segmentflow.service.clv_share.SharedClvRefit`)
        self.shares: dict[str, PopulationShare] = {}
        #: inside a store batch session (:meth:`_session`): counts wait for the flush
        self._in_session = False
        self._uncounted: list[tuple[Counter[str], str]] = []
        #: the schedule as of the session's last flush (restored when the session fails)
        self._flushed = self._schedule()

    def reconfigure(self, config: SegmentConfig, engine: Engine) -> None:
        """Run ``engine`` (built for ``config``; :func:`segmentflow.service.reload.engine_for`
        carries over what the running one holds) from now on: a SIGHUP reload (CONTRACT §6).
        Schedules whose period is unchanged go on; a changed one restarts from the store.
        The store is read before anything changes (a Redis error leaves the old config)."""
        refits: list[tuple[str, PopulationWork, int]] = [
            (dim.kind, dim, dim.sweep_every_us)
            for dim in engine.registry
            if isinstance(dim, PopulationWork) and dim.kind != "rfm" and dim.sweep_every_us
        ]
        periods = {kind: period for kind, _, period in self._refits}
        next_refit: dict[str, int | None] = {}
        for kind, _, period in refits:
            if periods.get(kind) == period:
                next_refit[kind] = self.next_refit.get(kind)
            else:
                done = self.store.get_meta(refit_meta(kind))
                next_refit[kind] = None if done is None else done + period
        next_sweep = self.next_sweep
        if config.rfm_sweep_us != self._sweep_us:
            swept = self.store.get_meta(SWEPT)
            next_sweep = None if swept is None else swept + config.rfm_sweep_us
        self.config, self.engine = config, engine
        self._limits = Limits.of(config)
        self._sweep_us, self.next_sweep = config.rfm_sweep_us, next_sweep
        self._swept = None  # the next sweep runs (the rank index is the same object)
        self._refits, self.next_refit, self._refitted = refits, next_refit, {}

    def decode(self, record: InputRecord, now_us: int | None = None) -> Event | Rejection:
        """Decode one record (no state touched); control records (``forget``) are accepted.
        ``now_us``: the wall clock for the future-skew check (default: read it now)."""
        return decode_message(
            record.value,
            record.key,
            record.kind,
            self._limits,
            self._check_key,
            self.wall_clock() if now_us is None else now_us,
            control=True,
        )

    def process(self, records: Sequence[InputRecord], now: datetime | None = None) -> BatchResult:
        """Decode and apply a batch of records and commit the resulting state; return changes
        and dead letters (to be published by the caller, in order)."""
        valid, result = self.decode_all(records, now)
        result.changes = self.apply([Item.of(record, event) for record, event in valid])
        return result

    def decode_all(
        self, records: Sequence[InputRecord], now: datetime | None = None
    ) -> tuple[list[tuple[InputRecord, Event]], BatchResult]:
        """Decode records: valid events, and a result holding the dead letters and every
        record's timestamp (``None`` for a rejected one)."""
        decoded, letters = self.decode_each(records, now)
        result = BatchResult(deadletters=letters)
        result.timestamps = [None if event is None else event.ts for event in decoded]
        valid = [(r, e) for r, e in zip(records, decoded, strict=True) if e is not None]
        return valid, result

    def decode_each(
        self, records: Sequence[InputRecord], now: datetime | None = None
    ) -> tuple[list[Event | None], list[DeadLetter]]:
        """Decode records: one entry per record, in order (``None`` for a rejected one, whose
        dead letter is in the second list)."""
        result = BatchResult()
        decoded: list[Event | None] = []
        received_at = now or datetime.now(UTC)
        wall = self.wall_clock()
        for record in records:
            self.counters.received[record.topic] += 1
            event = self.decode(record, wall)
            if isinstance(event, Rejection):
                self._reject(record, event, received_at, result)
                decoded.append(None)
            else:
                decoded.append(event)
        return decoded, result.deadletters

    def apply(self, items: Sequence[Item]) -> list[Change]:
        """Apply decoded events in the given order (the aligner's timestamp order).

        Before an event at ``ts``, every customer's time-driven change due at or before ``ts``
        fires (as in ``replay``): the batch is cut at each due moment, the part before it is
        committed, the clock advanced, and the rest continues. States are loaded and committed
        once per part (one store call each way). A redelivered message (offset at or below the
        customer's highest applied offset of that partition) or a repeated event_id changes
        nothing. Counters move only once a commit succeeded, so a failed commit can be retried.
        """
        with self._session() as held:
            return self._apply(items, held)

    def _apply(self, items: Sequence[Item], held: bool) -> list[Change]:
        changes: list[Change] = []
        pending = list(items)
        # forget records cut the batch; found once (a scan per part made replay quadratic)
        cuts = [i for i, it in enumerate(pending) if it.event.type == FORGET]
        cuts.append(len(pending))
        if held and cuts[0]:  # the customers and home claims up to the first forget: one
            first = pending[: cuts[0]]  # round trip each for the whole batch, not one per part
            states, resolved = self.store.load_resolved(self._part_ids(first))
            self._claim_homes(first, states, resolved)
        pos = cut = 0
        while pos < len(pending):
            if pending[pos].event.type == FORGET:  # control record: erase, in order
                changes.extend(self.erase(pending[pos]) or [])
                pos += 1
                continue
            while cuts[cut] < pos:
                cut += 1
            part_items = pending[pos : cuts[cut]]
            done, part = self._apply_part(part_items)
            changes.extend(part)
            if done < len(part_items):
                changes.extend(self.advance(pending[pos + done].event.ts))
            pos += done
        return changes

    @contextmanager
    def _session(self) -> Iterator[bool]:
        """A store batch session around the outermost apply/advance (where the store has them:
        :mod:`segmentflow.state.redis_batch`): states loaded once per batch, commits written
        together at flushes (the end, each population sweep, meta writes, merges, forgets),
        due moments answered without round trips. Counters move at the flushes."""
        if self._in_session or not self.store.begin_batch(self._counted):
            yield self._in_session
            return
        self._in_session = ok = True
        self._flushed = self._schedule()
        try:
            yield True
        except BaseException:
            ok = False
            raise
        finally:
            self._in_session = False
            try:
                self.store.end_batch(ok)
            except BaseException:
                ok = False
                raise
            finally:
                self._uncounted.clear()
                if not ok:  # sweeps held and lost: the schedule goes back to what is stored
                    self._restore_schedule()

    def _counted(self) -> None:
        """The session flushed: what it wrote is counted (and its schedule is stored)."""
        for counter, key in self._uncounted:
            counter[key] += 1
        self._uncounted.clear()
        self._flushed = self._schedule()

    def _schedule(self) -> _Schedule:
        return _Schedule(self.next_sweep, dict(self.next_refit))

    def _restore_schedule(self) -> None:
        """Go back to the schedule of the last flush; the next sweep and refits run whatever
        the population (the rank index was restored to what is stored)."""
        flushed = self._flushed
        self.next_sweep, self.next_refit = flushed.next_sweep, dict(flushed.next_refit)
        self._swept = None
        self._refitted = {}

    def _tally(self, counts: list[tuple[Counter[str], str]]) -> None:
        if self._in_session:
            self._uncounted.extend(counts)
        else:
            for counter, key in counts:
                counter[key] += 1

    def _next_due(self) -> int | None:
        due = self.store.next_due()
        if self.next_sweep is not None and (due is None or self.next_sweep < due):
            due = self.next_sweep
        for moment in self.next_refit.values():
            if moment is not None and (due is None or moment < due):
                due = moment
        return due

    def _apply_part(self, items: list[Item]) -> tuple[int, list[Change]]:
        """Apply the longest prefix of ``items`` that no due moment interrupts; commit it."""
        due = self._next_due()
        # due moments only move earlier while the part is applied, so the part ends at or before
        # the first event at or after ``due``: load the customers of that prefix only (loading
        # the whole remainder for every part made a batch cut N times cost O(N x batch) loads)
        end = len(items)
        if due is not None:
            end = next((i for i, item in enumerate(items) if due <= item.event.ts), end)
        # identity (CONTRACT §3): events of a merged-away id count for the id it resolves to
        states, resolved = self.store.load_resolved(self._part_ids(items[:end]))
        is_bad = self.store.is_quarantined
        quarantined = [
            cid
            for i in items[:end]
            if is_bad(cid := resolved.get(i.event.customer_id, i.event.customer_id))
        ]
        if quarantined:  # the caller applies the events one by one: theirs are dead-lettered
            raise StateQuarantined(quarantined)
        homes = self._claim_homes(items[:end], states, resolved)
        aliases: dict[str, str] = {}
        handovers: dict[tuple[str, str, str], bytes | None] = {}
        touched: dict[str, CustomerState] = {}
        changes: list[Change] = []
        counts: list[tuple[Counter[str], str]] = []
        forwards: list[tuple[Item, int]] = []
        highs: dict[str, int] = {}
        done = 0
        for item in items:
            event = item.event
            if due is not None and due <= event.ts:
                break
            done += 1
            cid = resolved.get(event.customer_id, event.customer_id)
            state = states.get(cid)
            source = item.source
            if source is not None:
                highs[source] = max(highs.get(source, -1), item.offset)
            home = homes.get(cid) if state is None else state.home
            if source is not None and home is not None and home != item.partition:
                # another partitioner put it here: its home partition's owner applies it
                if merge_sources(event):  # or a merge request: hand over the ids homed here
                    before = len(aliases)
                    changes.extend(
                        self._hand_over(item, cid, states, resolved, touched, aliases, handovers)
                    )
                    counts += [(self.counters.merged, item.topic)] * (len(aliases) - before)
                forwards.append((item, home))
                counts.append((self.counters.forwarded, item.topic))
                continue
            pending = None if state is None or source is None else state.extra.get(MERGE_PENDING)
            if pending is not None and pending["id"] == event.event_id:
                pass  # the merging event itself: below (asked again, or back and applied)
            elif pending is not None and event.ts < pending["ts"]:
                pending = None  # older than the merging event: applied before it, as in replay
            elif pending is not None:
                assert state is not None
                touched[cid] = state
                if pending["n"] < PENDING_FORWARDS:  # behind the merging event, in order
                    pending["n"] += 1
                    forwards.append((item, pending["to"]))
                    counts.append((self.counters.forwarded, item.topic))
                    continue
                del state.extra[MERGE_PENDING]  # its merging event was lost: a late merge
                pending = None
            ask = self._remote_source(item, cid, states, resolved) if source else None
            if ask is not None:  # a merged id another worker owns: ask it (notes/identity.md)
                if state is None:
                    state = states[cid] = self.engine.new_state(cid)
                    state.home = home
                touched[cid] = state  # the mark commits before the request is forwarded
                mark = state.extra.get(MERGE_PENDING)
                if mark is None or mark["id"] != event.event_id:
                    mark = {"id": event.event_id, "ts": event.ts, "to": ask, "n": 0}
                state.extra[MERGE_PENDING] = {**mark, "to": ask}
                forwards.append((item, ask))
                counts.append((self.counters.forwarded, item.topic))
                continue
            if state is None:
                state = states[cid] = self.engine.new_state(cid)
                state.home = home
            touched[cid] = state
            if pending is not None:  # the merging event is back: applied, or a duplicate
                del state.extra[MERGE_PENDING]
            if source is not None:
                if state.home is None:
                    state.home = item.partition
                if self._redelivered(state, item) or _erased(state, item):
                    counts.append((self.counters.duplicates, item.topic))
                    continue
            if merge_sources(event):  # merged before the event (CONTRACT §2 anonymous_id)
                before = len(aliases)
                changes.extend(
                    self._merge(state, event, states, resolved, touched, aliases, handovers)
                )
                counts += [(self.counters.merged, item.topic)] * (len(aliases) - before)
            outcome = self.engine.apply(state, event)
            if source is not None:
                self._mark_offset(state, source, item.offset)
            if state.next_due is not None and (due is None or state.next_due < due):
                due = state.next_due
            if self.next_sweep is None and self.config.rfm.enabled and len(self.engine.ranks):
                self.next_sweep = (event.ts // self._sweep_us + 1) * self._sweep_us
                due = self.next_sweep if due is None else min(due, self.next_sweep)
            for kind, population, period in self._refits:
                if self.next_refit[kind] is None and population.population_size():
                    moment = self.next_refit[kind] = (event.ts // period + 1) * period
                    due = moment if due is None else min(due, moment)
            if outcome.status == "duplicate":
                counts.append((self.counters.duplicates, item.topic))
                continue
            counts.append((self.counters.applied, item.topic))
            if outcome.late:
                counts.append((self.counters.late, item.topic))
            changes.extend(outcome.changes)
        if touched:
            self._commit(touched, changes, aliases, handovers)
        self._tally(counts)
        self.forwards.extend(forwards)
        for source, offset in highs.items():
            self.applied_high[source] = max(self.applied_high.get(source, -1), offset)
        return done, changes

    # -- offsets as a hint, homes -------------------------------------------------------------

    def _claim_homes(
        self,
        items: Sequence[Item],
        states: dict[str, CustomerState],
        resolved: dict[str, str] | None = None,
    ) -> dict[str, int]:
        """Home partitions of the customers without state: the partition of their first event
        here, unless another worker claimed them first (one store round trip; two when one was
        claimed before)."""
        wanted: dict[str, int] = {}
        resolved = resolved or {}
        for item in items:
            cid = resolved.get(item.event.customer_id, item.event.customer_id)
            if item.partition >= 0 and cid not in states and cid not in wanted:
                wanted[cid] = item.partition
        return self.store.claim_homes(wanted) if wanted else {}

    def _offset_key(self, source: str) -> str:
        epoch = self.epochs.get(source, 0)
        return source if epoch == 0 else f"{source}@{epoch}"

    def _redelivered(self, state: CustomerState, item: Item) -> bool:
        """Offsets are a hint, never a verdict: a record at or below the customer's highest
        applied offset of the same topic-partition incarnation is a redelivery only when it is
        too old for the exact event_id set (older than ``dedup_horizon``) to decide."""
        assert item.source is not None
        mark = state.offsets.get(self._offset_key(item.source))
        return (
            mark is not None
            and item.offset <= mark
            and self.engine.beyond_horizon(state, item.event.ts)
        )

    def _mark_offset(self, state: CustomerState, source: str, offset: int) -> None:
        key = self._offset_key(source)
        offsets = state.offsets
        if key not in offsets:  # a new incarnation: the older ones' marks mean nothing now
            for old in [k for k in offsets if k == source or k.startswith(source + "@")]:
                del offsets[old]
        offsets[key] = max(offsets.get(key, -1), offset)

    def take_forwards(self) -> list[tuple[Item, int]]:
        """The records to forward to their customer's home partition (item, partition), taken
        once their batch part committed; the caller sends them before acking the originals."""
        forwards, self.forwards = self.forwards, []
        return forwards

    def advance(self, watermark: int, limit: int = 5000) -> list[Change]:
        """Fire every time-driven change due at or before ``watermark`` — each customer's
        (lifecycle thresholds, midnight rule evaluations) and the population's RFM sweeps, in
        time order — commit, and return them sorted by time (each customer's order kept)."""
        with self._session():
            return self._advance(watermark, limit)

    def _advance(self, watermark: int, limit: int) -> list[Change]:
        changes: list[Change] = []
        while True:
            refit = self._next_refit(watermark)
            if refit is not None:
                changes.extend(self._refit_step(*refit, watermark, limit))
                continue
            if self.next_sweep is None or self.next_sweep > watermark:
                break
            moment = self.next_sweep
            changes.extend(self._advance_customers(moment - 1, limit))
            if not self._sweep_unchanged():
                changes.extend(self.sweep_rfm(moment))  # before the customers' dues at `moment`
            self.next_sweep = moment + self._sweep_us
            if self._sweep_unchanged():
                # no metric moved since the last sweep: the sweeps up to the next customer due
                # (or the watermark) give nothing, so a gap of years costs one step, not one per day
                due = self.store.next_due()
                horizon = watermark if due is None else min(watermark, due)
                if horizon >= self.next_sweep:
                    moment = self.next_sweep + (horizon - self.next_sweep) // self._sweep_us * (
                        self._sweep_us
                    )
                    self.next_sweep = moment + self._sweep_us
            self.store.set_meta(SWEPT, moment)
            self.store.flush_batch(HELD_AT_MOST)  # a long advance is written in pieces
        changes.extend(self._advance_customers(watermark, limit))
        changes.sort(key=lambda c: c.at)
        return changes

    def _next_refit(self, watermark: int) -> tuple[str, PopulationWork, int, int] | None:
        """The earliest refit (kind, dimension, period, moment) at or before ``watermark``
        that comes before the next RFM sweep (RFM first at the same moment), or ``None``."""
        best: tuple[str, PopulationWork, int, int] | None = None
        for kind, population, period in self._refits:
            moment = self.next_refit[kind]
            if moment is not None and moment <= watermark and (best is None or moment < best[3]):
                best = (kind, population, period, moment)
        if best is not None and self.next_sweep is not None and self.next_sweep <= best[3]:
            return None
        return best

    def _refit_step(
        self,
        kind: str,
        population: PopulationWork,
        period: int,
        moment: int,
        watermark: int,
        limit: int,
    ) -> list[Change]:
        """One scheduled refit at ``moment`` (after the customers' dues before it), then the
        next moment; refits that would see an unchanged population are stepped over at once."""
        changes = self._advance_customers(moment - 1, limit)
        if not self._refit_unchanged(kind, population):
            changes.extend(self.sweep_population(kind, population, moment))
        following = moment + period
        if self._refit_unchanged(kind, population) and watermark >= following:
            moment = following + (watermark - following) // period * period
            following = moment + period
        self.next_refit[kind] = following
        self.store.set_meta(refit_meta(kind), moment)
        self.store.flush_batch(HELD_AT_MOST)
        return changes

    def _refit_unchanged(self, kind: str, population: PopulationWork) -> bool:
        version = self._population_version(kind, population)
        return self._refitted.get(kind) == (version, self._owned())

    def _population_version(self, kind: str, population: PopulationWork) -> object:
        share = self.shares.get(kind)
        return population.population_version() if share is None else share.population_version()

    def sweep_population(self, kind: str, population: PopulationWork, at: int) -> list[Change]:
        """Refit population dimension ``kind`` at ``at`` (:meth:`PopulationWork.prepare_sweep`)
        and apply it to the customers it moved (loaded, changed and committed together)."""
        self._refitted[kind] = (self._population_version(kind, population), self._owned())
        share = self.shares.get(kind)
        if share is None:
            population.prepare_sweep(at)
        else:  # the shared refit, filtered to the owned shards by the stored homes
            self.store.flush_batch()  # it reads the stored population
            share.prepare_sweep(at)
        moved = population.moved(self.store.owns if share is None else None)
        if not moved:
            return []
        states = self.store.load_many(cid for cid, _ in moved)
        changes: list[Change] = []
        for cid, payload in moved:
            state = states.get(cid)
            if state is not None and not is_tombstone(state):
                changes.extend(self.engine.sweep_apply(population, state, at, payload))
        self._commit(states, changes)
        self.store.flush_batch(HELD_AT_MOST)
        return changes

    def next_work(self) -> int | None:
        """The next moment at which :meth:`advance` has something to fire: the earliest
        customer due, or the next RFM sweep (or other population refit) unless it would move
        nobody (then ``advance`` only steps the schedule, however far it goes)."""
        due = self.store.next_due()
        for kind, population, _ in self._refits:
            moment = self.next_refit[kind]
            if moment is not None and not self._refit_unchanged(kind, population):
                due = moment if due is None else min(due, moment)
        if self.next_sweep is None or self._sweep_unchanged():
            return due
        return self.next_sweep if due is None else min(due, self.next_sweep)

    def _owned(self) -> frozenset[int] | None:
        return self.store.owned_partitions

    def _sweep_unchanged(self) -> bool:
        """Whether neither the population's metrics nor the owned shards changed since the
        last sweep (so another sweep now would move nobody)."""
        return self._swept == (self.engine.ranks.version, self._owned())

    def _advance_customers(self, watermark: int, limit: int) -> list[Change]:
        changes: list[Change] = []
        while True:
            ids = self.store.due(watermark, limit)
            if not ids:
                break
            states = self.store.load_many(ids)
            is_bad = self.store.is_quarantined
            gone = [cid for cid in ids if cid not in states and not is_bad(cid)]
            if gone:  # a due entry without a state: it would be due here forever
                self.store.drop_due(gone)
            batch: list[Change] = []
            for state in states.values():
                batch.extend(self.engine.advance(state, watermark))
            self._commit(states, batch)
            changes.extend(batch)
            if len(ids) < limit:
                break
        return changes

    def sweep_rfm(self, at: int) -> list[Change]:
        """Re-score the population at ``at`` (vectorised); only customers whose scores moved
        are loaded, and an ``rfm`` change is emitted where their segment changed."""
        if not self.config.rfm.enabled:
            return []
        rfm = self.engine.by_kind("rfm")  # the population sweep scheduled here is RFM's
        assert isinstance(rfm, PopulationWork)
        # taken before the sweep: updates read from the rank log while loading come after it
        self._swept = (self.engine.ranks.version, self._owned())
        moved = rfm.moved(self.store.owns)
        if not moved:
            return []
        states = self.store.load_many(cid for cid, _ in moved)
        changes: list[Change] = []
        for cid, scores in moved:
            state = states.get(cid)
            if state is not None and state.last_order is not None:
                changes.extend(self.engine.sweep_apply(rfm, state, at, scores))
        self._commit(states, changes)
        self.store.flush_batch(HELD_AT_MOST)
        return changes

    def forget(
        self,
        customer_id: str,
        at: int | None = None,
        request_id: str | None = None,
        erased: dict[str, int] | None = None,
    ) -> list[Change]:
        """Erase a customer (CONTRACT §5): its state becomes a tombstone (:func:`tombstone`),
        its due entry, RFM metrics and populations go, in one commit with a final change to
        ``null`` per dimension, stamped ``at`` (default: the customer's clock), which is
        returned. ``erased``: input positions (source -> offset) erased with it."""
        states = self.store.load_many([customer_id])
        if self.store.is_quarantined(customer_id):
            raise StateQuarantined([customer_id])
        state = states.get(customer_id)
        changes: list[Change] = []
        if state is not None:
            when = at if at is not None else (state.clock or 0)
            reason = {"rule": "customer data deleted"}
            seqs = state.seqs
            changes = [
                Change(customer_id, dim, value, None, seqs.get(dim, 0) + 1, when, None, reason)
                for dim, value in sorted(state.values.items())
                if not (dim.startswith("rule:") and value == "out")
            ]
        tomb = tombstone(customer_id, state, changes, request_id, erased or {})
        self.store.erase(customer_id, tomb, changes)
        for population in self.engine.populations:  # RFM's rank index, ...
            population.forget(customer_id)
        self._count(changes)
        if state is not None and state.extra.get(MERGED):
            self._unlink_merged(customer_id, state.extra[MERGED])
        return changes

    def _unlink_merged(self, customer_id: str, merged_ids: Sequence[str]) -> None:
        """After a forget: the tombstones of the ids merged into the customer keep their
        sequence numbers (a change id is never reused) but no longer name it."""
        states = self.store.load_many(merged_ids)
        unlinked = {
            gone: CustomerState(gone, seqs=dict(s.seqs), home=s.home)
            for gone, s in states.items()
            if is_merged_away(s) and s.extra.get(MERGED_INTO) == customer_id
        }
        if unlinked:
            self.store.commit(unlinked, [])

    def erase(self, item: Item, held: Sequence[Item] = ()) -> list[Change] | None:
        """Apply a ``forget`` command read from Kafka, with the customer's events read before
        it and not yet applied (``held``: erased unapplied). A redelivered command changes
        nothing; the tombstone records the erased input positions so that a redelivery of
        anything read before the command is skipped too. ``None``: the customer's home is
        another partition, so the command is forwarded there (:meth:`take_forwards`) and
        nothing is erased here."""
        cid = item.event.customer_id
        states = self.store.load_many([cid])
        state = states.get(cid)
        source = item.source
        if source is not None and state is not None and state.home not in (None, item.partition):
            assert state.home is not None
            self.forwards.append((item, state.home))
            self.counters.forwarded[item.topic] += 1
            return None
        done = state.extra.get(ERASED, {}) if state is not None else {}
        if source is not None and done.get(source, -1) >= item.offset:
            self.counters.duplicates[item.topic] += 1
            for other in held:
                self.counters.duplicates[other.topic] += 1
            return []
        erased = dict(done)
        for one in (item, *held):
            if one.source is not None:
                erased[one.source] = max(erased.get(one.source, -1), one.offset)
        changes = self.forget(cid, None, item.event.event_id, erased)
        self.counters.applied[item.topic] += 1
        for other in held:  # applied, in effect, and erased with the rest
            self.counters.applied[other.topic] += 1
        return changes

    def _commit(
        self,
        states: dict[str, CustomerState],
        changes: list[Change],
        aliases: dict[str, str] | None = None,
        handovers: dict[tuple[str, str, str], bytes | None] | None = None,
    ) -> None:
        if aliases or handovers:
            self.store.commit(states, changes, aliases, handovers)
        else:
            self.store.commit(states, changes)
        self._count(changes)

    # -- identity merges (CONTRACT §3 "Identity", engine/identity.py) -------------------------

    @staticmethod
    def _part_ids(items: Sequence[Item]) -> dict[str, None]:
        """The customers and merge sources of ``items``, in order (loaded with their aliases:
        :meth:`StateStore.load_resolved`)."""
        ids: dict[str, None] = {}
        for item in items:
            ids[item.event.customer_id] = None
            for source in merge_sources(item.event):
                ids[source] = None
        return ids

    def _merge(
        self,
        state: CustomerState,
        event: Event,
        states: dict[str, CustomerState],
        resolved: dict[str, str],
        touched: dict[str, CustomerState],
        aliases: dict[str, str],
        handovers: dict[tuple[str, str, str], bytes | None],
    ) -> list[Change]:
        """Merge the profiles ``event`` names (:func:`merge_sources`) into ``state`` before the
        event is applied: once (a repeated event, an id already resolving to the survivor or
        already merged into it changes nothing); a source without state only gets its alias;
        the states other workers handed over for this merge are absorbed and taken."""
        if self.engine.seen(state, event_id_hash(event.event_id)):
            return []
        survivor = state.customer_id
        changes: list[Change] = []
        if any(resolved.get(n, n) == survivor for n in merge_sources(event)):
            # handed over to the event's customer (which may have been merged on since)
            for to in dict.fromkeys((survivor, event.customer_id)):
                for gone, exported in sorted(self.store.handovers(to, event.event_id).items()):
                    handovers[(to, event.event_id, gone)] = None
                    if gone != survivor and not has_merged(state, gone):
                        changes.extend(
                            absorb(self.engine, state, exported, event.ts, event.event_id)
                        )
        for source in merge_sources(event):
            gone = resolved.get(source, source)
            if gone == survivor or has_merged(state, gone):
                continue
            if self.store.is_quarantined(gone):
                raise StateQuarantined([gone])
            merged = states.get(gone)
            if merged is not None:
                found, tomb = merge(self.engine, state, merged, event.ts, event.event_id)
                states[gone] = touched[gone] = tomb
                changes.extend(found)
            aliases[gone] = survivor
            for key, value in list(resolved.items()):
                if value == gone:
                    resolved[key] = survivor
            resolved[gone] = survivor
        return changes

    def _remote_source(
        self,
        item: Item,
        survivor: str,
        states: dict[str, CustomerState],
        resolved: dict[str, str],
    ) -> int | None:
        """The home partition of a profile the event of ``item`` merges that another worker
        owns (its owner hands it over, :meth:`_hand_over`), or ``None`` when every one is
        local. On a store whose commit is atomic only per home partition (Redis Cluster), a
        profile homed on another partition is handed over the same way, by this worker."""
        for source in merge_sources(item.event):
            gone = resolved.get(source, source)
            merged = states.get(gone)
            if gone == survivor or merged is None or merged.clock is None:
                continue
            if merged.home is None:
                continue
            if not self.store.owns(gone):
                return merged.home
            if not self.store.atomic_commits and merged.home != item.partition:
                return merged.home
        return None

    def _hand_over(
        self,
        item: Item,
        survivor: str,
        states: dict[str, CustomerState],
        resolved: dict[str, str],
        touched: dict[str, CustomerState],
        aliases: dict[str, str],
        handovers: dict[tuple[str, str, str], bytes | None],
    ) -> list[Change]:
        """A merging event read on a partition that is not its customer's home: the profiles it
        merges that are homed here leave (final ``null`` changes, tombstone, alias) and their
        states are handed over to the survivor's owner, in this part's commit; the event is
        then forwarded to the survivor's home, whose owner absorbs them (notes/identity.md)."""
        event = item.event
        changes: list[Change] = []
        for source in merge_sources(event):
            gone = resolved.get(source, source)
            merged = states.get(gone)
            if gone == survivor or merged is None or merged.home != item.partition:
                continue
            if is_merged_away(merged) or not self.store.owns(gone):
                continue
            if self.store.is_quarantined(gone):
                raise StateQuarantined([gone])
            found, tomb, exported = leave(self.engine, merged, survivor, event.ts, event.event_id)
            changes.extend(found)
            states[gone] = touched[gone] = tomb
            aliases[gone] = survivor
            if exported is not None:
                handovers[(survivor, event.event_id, gone)] = exported.encode()
                for population in self.engine.populations:
                    population.forget(gone)
            for key, value in list(resolved.items()):
                if value == gone:
                    resolved[key] = survivor
            resolved[gone] = survivor
        return changes

    def _count(self, changes: list[Change]) -> None:
        counter = self.counters.changes
        groups = [_dimension_group(change.dimension) for change in changes]
        if self._in_session:
            self._tally([(counter, group) for group in groups])
        else:
            counter.update(groups)  # as ``_tally``: one per change, in one C loop

    def quarantine(self, record: InputRecord, error: Exception) -> DeadLetter:
        """A dead letter for a record whose event made the engine fail (counted)."""
        result = BatchResult()
        detail = f"{error.__class__.__name__}: {error}"[:500]
        corrupt = isinstance(error, StateQuarantined)
        rejection = Rejection(Reason.CORRUPT_STATE if corrupt else Reason.PROCESSING_ERROR, detail)
        self._reject(record, rejection, datetime.now(UTC), result)
        return result.deadletters[0]

    def _reject(
        self, record: InputRecord, rejection: Rejection, at: datetime, result: BatchResult
    ) -> None:
        self.counters.deadlettered[record.topic] += 1
        self.counters.reasons[str(rejection.reason)] += 1
        value = dead_letter(
            rejection,
            record.value,
            record.topic,
            record.partition,
            record.offset,
            self.config.max_event_bytes,
            at,
        )
        result.deadletters.append(DeadLetter(record.key, value))
