"""Batch processing over a state store: one engine for the worker, ``replay`` and backtests.

A batch is decoded (rejections become dead letters), grouped by customer, the touched states are
loaded in one store call, the engine applies each customer's events in order, and states, due
moments and population deltas are committed in one store call. Only then may the caller publish
the changes and commit offsets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from segmentflow.config import SegmentConfig
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.deadletter import dead_letter
from segmentflow.schemas.decode import Event, Limits, Rejection, decode_message
from segmentflow.schemas.reasons import Reason
from segmentflow.state.base import StateStore

SWEPT = "rfm_swept"


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

    @classmethod
    def of(cls, record: InputRecord, event: Event) -> Item:
        return cls(record.topic, event, record.partition, record.offset)

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
    """Running counts: per topic received/applied/deadlettered/duplicates/late, per reason and
    per dimension. The identity ``received = applied + deadlettered + duplicates`` holds per topic.
    """

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.deadlettered: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.late: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.changes: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        """All counters as plain dicts."""
        return {
            name: dict(getattr(self, name))
            for name in ("received", "applied", "deadlettered", "duplicates", "late", "reasons")
        } | {"changes": dict(self.changes)}


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
    """

    def __init__(self, config: SegmentConfig, store: StateStore, check_key: bool = True) -> None:
        self.config = config
        self.engine = Engine(config)
        self.store = store
        self.counters = Counters()
        self._check_key = check_key
        self._limits = Limits(config.max_event_bytes, config.max_traits, config.max_trait_length)
        self._sweep_us = config.rfm_sweep_us
        swept = store.get_meta(SWEPT)
        #: the next RFM population sweep (every ``rfm.sweep_every`` of event time)
        self.next_sweep: int | None = None if swept is None else swept + self._sweep_us
        #: (rank index version, owned shards) at the last sweep: a sweep with both unchanged
        #: gives nothing (scores depend on the metrics only; R on last-order times, not on t)
        self._swept: tuple[int, frozenset[int] | None] | None = None

    def decode(self, record: InputRecord) -> Event | Rejection:
        """Decode one record (no state touched)."""
        return decode_message(record.value, record.key, record.kind, self._limits, self._check_key)

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
        result = BatchResult()
        valid: list[tuple[InputRecord, Event]] = []
        received_at = now or datetime.now(UTC)
        for record in records:
            self.counters.received[record.topic] += 1
            decoded = self.decode(record)
            if isinstance(decoded, Rejection):
                self._reject(record, decoded, received_at, result)
                result.timestamps.append(None)
            else:
                valid.append((record, decoded))
                result.timestamps.append(decoded.ts)
        return valid, result

    def apply(self, items: Sequence[Item]) -> list[Change]:
        """Apply decoded events in the given order (the aligner's timestamp order).

        Before an event at ``ts``, every customer's time-driven change due at or before ``ts``
        fires (as in ``replay``): the batch is cut at each due moment, the part before it is
        committed, the clock advanced, and the rest continues. States are loaded and committed
        once per part (one store call each way). A redelivered message (offset at or below the
        customer's highest applied offset of that partition) or a repeated event_id changes
        nothing. Counters move only once a commit succeeded, so a failed commit can be retried.
        """
        changes: list[Change] = []
        pending = list(items)
        while pending:
            done, part = self._apply_part(pending)
            changes.extend(part)
            if done < len(pending):
                changes.extend(self.advance(pending[done].event.ts))
            pending = pending[done:]
        return changes

    def _next_due(self) -> int | None:
        due = self.store.next_due()
        if self.next_sweep is not None and (due is None or self.next_sweep < due):
            return self.next_sweep
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
        states = self.store.load_many({item.event.customer_id: None for item in items[:end]})
        touched: dict[str, CustomerState] = {}
        changes: list[Change] = []
        counts: list[tuple[Counter[str], str]] = []
        done = 0
        for item in items:
            event = item.event
            if due is not None and due <= event.ts:
                break
            done += 1
            cid = event.customer_id
            state = states.get(cid)
            if state is None:
                state = states[cid] = self.engine.new_state(cid)
            touched[cid] = state
            source = item.source
            if source is not None and state.offsets.get(source, -1) >= item.offset:
                counts.append((self.counters.duplicates, item.topic))
                continue
            outcome = self.engine.apply(state, event)
            if source is not None:
                state.offsets[source] = item.offset
            if state.next_due is not None and (due is None or state.next_due < due):
                due = state.next_due
            if self.next_sweep is None and self.config.rfm.enabled and len(self.engine.ranks):
                self.next_sweep = (event.ts // self._sweep_us + 1) * self._sweep_us
                due = self.next_sweep if due is None else min(due, self.next_sweep)
            if outcome.status == "duplicate":
                counts.append((self.counters.duplicates, item.topic))
                continue
            counts.append((self.counters.applied, item.topic))
            if outcome.late:
                counts.append((self.counters.late, item.topic))
            changes.extend(outcome.changes)
        if touched:
            self._commit(touched, changes)
        for counter, topic in counts:
            counter[topic] += 1
        return done, changes

    def advance(self, watermark: int, limit: int = 5000) -> list[Change]:
        """Fire every time-driven change due at or before ``watermark`` — each customer's
        (lifecycle thresholds, midnight rule evaluations) and the population's RFM sweeps, in
        time order — commit, and return them sorted by time (each customer's order kept)."""
        changes: list[Change] = []
        while self.next_sweep is not None and self.next_sweep <= watermark:
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
        changes.extend(self._advance_customers(watermark, limit))
        changes.sort(key=lambda c: c.at)
        return changes

    def next_work(self) -> int | None:
        """The next moment at which :meth:`advance` has something to fire: the earliest
        customer due, or the next RFM sweep unless it would move nobody (then ``advance`` only
        steps the sweep schedule, however far it goes)."""
        due = self.store.next_due()
        if self.next_sweep is None or self._sweep_unchanged():
            return due
        return self.next_sweep if due is None else min(due, self.next_sweep)

    def _owned(self) -> frozenset[int] | None:
        shards = getattr(self.store, "owned_shards", None)
        return None if shards is None else frozenset(shards)

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
        # taken before the sweep: updates read from the rank log while loading come after it
        self._swept = (self.engine.ranks.version, self._owned())
        moved = self.engine.ranks.sweep(self.store.owns)
        if not moved:
            return []
        states = self.store.load_many(cid for cid, _ in moved)
        changes: list[Change] = []
        for cid, scores in moved:
            state = states.get(cid)
            if state is not None and state.last_order is not None:
                changes.extend(self.engine.sweep_change(state, at, scores))
        self._commit(states, changes)
        return changes

    def forget(self, customer_id: str, at: int | None = None) -> list[Change]:
        """Delete a customer's state; return a final change to ``null`` per dimension, stamped
        ``at`` (default: the customer's clock)."""
        state = self.store.delete(customer_id)
        self.engine.ranks.update(customer_id, None)
        if state is None:
            return []
        when = at if at is not None else (state.clock or 0)
        reason = {"rule": "customer data deleted"}
        changes = [
            Change(customer_id, dim, value, None, state.seqs.get(dim, 0) + 1, when, None, reason)
            for dim, value in sorted(state.values.items())
            if not (dim.startswith("rule:") and value == "out")
        ]
        self.store.commit({}, changes)
        self._count(changes)
        return changes

    def _commit(self, states: dict[str, CustomerState], changes: list[Change]) -> None:
        self.store.commit(states, changes)
        self._count(changes)

    def _count(self, changes: list[Change]) -> None:
        for change in changes:
            self.counters.changes[_dimension_group(change.dimension)] += 1

    def quarantine(self, record: InputRecord, error: Exception) -> DeadLetter:
        """A dead letter for a record whose event made the engine fail (counted)."""
        result = BatchResult()
        detail = f"{error.__class__.__name__}: {error}"[:500]
        rejection = Rejection(Reason.PROCESSING_ERROR, detail)
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
