"""The worker's runtime: batches in, engine, state committed, changes and dead letters out.

Faust-specific code lives in :mod:`segmentflow.streams.agents`; this class only needs a
``send(topic, key, value)`` coroutine, an ``ack(token)`` coroutine and the consumer's offsets,
and receives its stores as interfaces (wired by :mod:`segmentflow.bootstrap`), so it reads as
the sequence the guarantees depend on. Each consumed record travels with its ack token
(:class:`Delivery`) from the batch to its ack:

1. the batch is decoded; bad messages become dead letters (sent, then acked);
2. valid events wait in an event-time :class:`Aligner` until the watermark reaches them, so a
   customer's events from three topics are applied in timestamp order, as ``replay`` does;
3. released events are applied; state, due index, populations and the change events (the
   outbox) are committed to Redis in one transaction; due time-driven changes likewise;
4. the outbox is published and the broker acknowledges every change; then it is trimmed (one
   routine, :meth:`SegmentWorker._publish`, after every commit and after start or a rebalance);
5. only then are the released messages acked (so their offsets may commit).

A crash anywhere leaves either nothing (redelivery re-applies) or a committed state whose changes
wait in the outbox (published on restart; redelivered messages are skipped by offset). Redis or
broker outages are retried with exponential backoff; ``/health`` reports them meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, TypeVar

import orjson
import redis

from segmentflow.config import SegmentConfig, Settings
from segmentflow.engine.align import Aligner
from segmentflow.engine.clock import Watermark
from segmentflow.schemas.changes import Change
from segmentflow.schemas.events import FORGET
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.config_walk import ConfigWalk
from segmentflow.service.heap import PROCESS, CollectorSchedule
from segmentflow.service.processor import DeadLetter, InputRecord, Item, Processor
from segmentflow.service.reload import engine_for, refusal, switch
from segmentflow.state.base import StateQuarantined
from segmentflow.state.client import RedisClient
from segmentflow.state.personas import PersonaModelStore
from segmentflow.state.ranks import RankSync
from segmentflow.streams import incarnations
from segmentflow.streams.persona_sync import PersonaSync
from segmentflow.streams.redis_health import REDIS_ERRORS as _REDIS_ERRORS
from segmentflow.streams.redis_health import MemoryWatch, OutOfMemoryError
from segmentflow.triggers.backoff import Backoff, retry_async

log = logging.getLogger("segmentflow.worker")
#: events applied, published and acked together when the clock releases many at once
RELEASE_CHUNK = 4000
Send = Callable[[str, bytes | None, bytes], Awaitable[object]]
#: produce many messages to one topic, in order, and wait until the broker has them all
SendMany = Callable[[str, Sequence[bytes | None], Sequence[bytes]], Awaitable[object]]
#: produce to one partition: (topic, partition, key, value)
SendTo = Callable[[str, int, bytes | None, bytes], Awaitable[object]]
Ack = Callable[[Any], Awaitable[object]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A consumed record and the token that acknowledges it (acked once its effects are
    durable)."""

    record: InputRecord
    token: Any


def deliveries(records: Sequence[InputRecord], tokens: Sequence[Any]) -> list[Delivery]:
    """Pair records with their tokens (``tokens[i]`` acks ``records[i]``).

    Examples
    --------
    >>> rec = InputRecord("website-events", "website", 0, 7, b"c-1", b"{}")
    >>> [d.token for d in deliveries([rec], ["t7"])]
    ['t7']
    """
    return [Delivery(r, t) for r, t in zip(records, tokens, strict=True)]


class Held(NamedTuple):
    """A decoded event waiting for the clock, with the token that acks its record."""

    item: Item
    token: Any


#: every Redis error is an outage (retried with backoff, /health 503, nothing acked or
#: dead-lettered): connection loss, OOM under ``noeviction``, READONLY, MISCONF, LOADING, ...;
#: only ``redis.DataError`` (a value the client cannot send) is about the event (issue 12);
#: a Redis Cluster's errors too (``redis_health.REDIS_ERRORS``: CLUSTERDOWN, a slot not covered)
REDIS_ERRORS = _REDIS_ERRORS
_PIPELINE_COMMAND = re.compile(r"Command # \d+ \(.*\) of pipeline caused error: ", re.DOTALL)
#: event time one slice of a long clock advance covers; the loop answers between slices
ADVANCE_SLICE_US = 86_400_000_000
#: seconds a rebalance waits for the work under way to stop (it stops at its next Redis or
#: broker call; only a single call running longer than this outlives the revocation)
REVOKE_WAIT_SECONDS = 30.0


class Rebalanced(BaseException):
    """The partitions were revoked while this work was under way: it stops at its next Redis or
    broker call, as a crash would stop it there (what it committed stays, its changes wait in
    the outbox, its unacked messages are read again after the rebalance). A ``BaseException``,
    like ``CancelledError``: no ``except Exception`` on the way mistakes it for a bad event."""


@dataclass
class WorkerStatus:
    """What ``/health`` and ``/metrics`` report."""

    ready: bool = False
    batches: int = 0
    last_batch_seconds: float = 0.0
    broker_ok: bool = True
    redis_ok: bool = True
    #: the current Redis outage is an out-of-memory refusal (``maxmemory`` under noeviction)
    redis_oom: bool = False
    last_error: str | None = None
    retries: int = 0
    #: the error of the failing fetch/decode of input records (``None`` once a fetch works)
    fetch_error: str | None = None
    #: failed fetches so far, per error class
    fetch_errors: Counter[str] = field(default_factory=Counter)


class SegmentWorker:
    """Moves data between Kafka and the engine; holds the clock.

    Parameters
    ----------
    settings
        Environment settings (topics, namespace).
    processor
        The engine over the Redis store (with its outbox on).
    send
        Coroutine function that produces one message and waits until the broker has it.
    ack
        Coroutine function acknowledging one consumed message (its offset may then commit).
    send_to
        Coroutine function producing a forwarded record to one partition.
    send_many
        Coroutine function producing many messages to one topic (``None``: ``send`` each,
        concurrently); a sweep's thousands of changes go out without a task each.
    cluster_id
        Reads the broker's cluster id (blocking; run in a thread); ``None``: not checked.
    ranks
        The RFM rank sync of the store, if any (its unreadable-metrics count is exported).
    personas
        The persona model store: with personas on, samples and models go through it.
    redis
        The Redis client, sampled for memory figures (``None``: not sampled).
    heap
        The process's collector schedule (``heap.PROCESS``; counts only once started, by
        ``streams.worker.faust_worker``): applied events are counted into it, and a collection
        due is run off the event loop.
    """

    max_backoff = 5.0

    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        send: Send,
        ack: Ack,
        send_to: SendTo | None = None,
        cluster_id: Callable[[], str | None] | None = None,
        ranks: RankSync | None = None,
        personas: PersonaModelStore | None = None,
        redis: RedisClient | None = None,
        send_many: SendMany | None = None,
        heap: CollectorSchedule = PROCESS,
    ) -> None:
        if not processor.store.has_outbox:
            raise ValueError(
                "the worker publishes changes from its store's outbox: build the store with "
                "outbox=True (segmentflow.bootstrap.worker_parts does)"
            )
        self.settings = settings
        #: produces a forwarded record to its customer's home partition
        self.send_to = send_to
        #: reads the broker's cluster id (blocking; run in a thread); ``None``: not checked
        self.cluster_id = cluster_id
        #: incarnation record per owned input ``topic:partition`` (``None``: to be checked)
        self._incarnations: dict[str, dict[str, Any]] | None = None
        self._highs_saved: dict[str, int] = {}
        self.processor = processor
        self.config = processor.config
        self.send = send
        self.send_many = send_many
        self.heap = heap
        self.ack = ack
        self.aligner: Aligner[Held] = Aligner()
        self.watermark = self._new_watermark()
        self.status = WorkerStatus()
        #: monotonic time events started waiting for the clock (``None`` when none wait)
        self.held_since: float | None = None
        self.lock = asyncio.Lock()
        #: bumped when a rebalance revokes the partitions; work that started under an older
        #: one stops at its next call (:class:`Rebalanced`)
        self.generation = 0
        #: the generation the work holding :attr:`lock` started under
        self._entered = 0
        self.kind_of = {topic: kind for kind, topic in settings.input_topics.items()}
        self.changes_sent = 0
        self.deadletters_sent = 0
        #: whether the outbox may hold unpublished changes (after a commit, a failure, a start
        #: or a rebalance): then :meth:`_publish` reads it
        self._outbox_dirty = True
        #: input partitions owned since the last assignment (``None`` before the first; empty
        #: during a rebalance)
        self.owned: set[tuple[str, int]] | None = None
        #: whether a consumed message belongs to the current assignment (set by the agents)
        self.is_current: Callable[[Any], bool] = lambda token: True
        self.redis_failures = 0
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        #: Redis memory figures for /metrics (sampled from the tick)
        self.memory = MemoryWatch()
        self.redis = redis
        self.ranks = ranks
        self.persona: PersonaSync | None = None
        #: re-evaluates stored customers after a config change (CONTRACT §6)
        self.config_walk = ConfigWalk(processor)
        #: batches waiting for the lock (the walk then keeps to its short budget)
        self.batches_waiting = 0
        if processor.engine.persona is not None and personas is not None:
            self.persona = PersonaSync(processor.engine, personas)

    # -- the hot path ---------------------------------------------------------------------

    async def handle_batch(self, batch: Sequence[Delivery]) -> None:
        """Take in one consumed batch (each record is acked once its effects are durable);
        apply whatever the watermark releases."""
        started = time.perf_counter()
        self.batches_waiting += 1
        async with self._turn(waiting=True):
            # fetched before a rebalance: every partition is read again from its committed
            # offset after it (by its new owner), so applying these here would race that
            mine = [d for d in batch if self._mine(d)]
            await self._publish()
            records = [d.record for d in mine]
            decoded, letters = await asyncio.to_thread(self.processor.decode_each, records)
            rejected = []
            forgets: list[tuple[Held, list[Held]]] = []
            for delivery, event in zip(mine, decoded, strict=True):
                record = delivery.record
                tp = (record.topic, record.partition)
                if event is None:
                    self.watermark.observe(tp, record.offset, None)
                    rejected.append(delivery.token)
                    continue
                held = Held(Item.of(record, event), delivery.token)
                if event.type == FORGET:
                    # a forget command does not move event time (its timestamp is the wall
                    # clock); it erases what was read before it, held events included
                    self.watermark.observe(tp, record.offset, None)
                    forgets.append((held, self._take_held(event.customer_id)))
                else:
                    self.watermark.observe(tp, record.offset, event.ts)
                    self.aligner.add(event.ts, held, tp)
            if self.held_since is None and len(self.aligner):
                self.held_since = time.monotonic()
            await self._publish_deadletters(letters)
            await self._ack(rejected)
            await self._forget(forgets)
            await self._release()
        self.status.batches += 1
        self.status.last_batch_seconds = time.perf_counter() - started

    async def refresh_ends(self, ends: dict[Hashable, int]) -> None:
        """Between ticks: take the partitions' exact end offsets (fetch high-water marks) and
        apply what the watermark releases, so a live event waits for the next batch or this
        refresh (:data:`~segmentflow.streams.agents.REFRESH_SECONDS`), not for a whole tick.
        Skipped while a batch or tick holds the lock: it releases at its end itself (and the
        refresh timer keeps its schedule)."""
        if self.lock.locked():
            return
        async with self._turn():
            self._set_ends(ends, exact=True)
            await self._release()

    def _set_ends(self, ends: dict[Hashable, int], exact: bool) -> None:
        """Pass end offsets to the watermark, for owned partitions only (ends asked for
        before a rebalance must not add partitions)."""
        for tp, end in ends.items():
            if self.owns(tp):
                self.watermark.set_end(tp, end, exact=exact)

    async def tick(
        self, ends: dict[Hashable, int] | None = None, guesses: dict[Hashable, int] | None = None
    ) -> None:
        """Periodic: refresh end offsets (``ends`` exact fetch high-water marks, ``guesses``
        ListOffsets answers), advance the clock, apply and publish what it releases."""
        if self.redis is not None and self.memory.due():  # also while a batch stalls (lock held)
            try:  # off the loop: a cluster node that does not answer takes a socket timeout
                await asyncio.to_thread(self.memory.poll, self.redis)
            except REDIS_ERRORS as exc:  # the next Redis call reports the outage
                log.debug("Redis memory not sampled: %s", exc)
        if self.heap.due():  # an idle worker's garbage (no batch to collect it after)
            await asyncio.to_thread(self.heap.collect)
        async with self._turn():
            self._set_ends(guesses or {}, exact=False)
            self._set_ends(ends or {}, exact=True)
            await self._track_incarnations(ends or {})
            await self._publish()
            await self._release()
            await self._reevaluate()
            if self.persona is not None:
                try:
                    await self.persona.tick()
                except REDIS_ERRORS as exc:  # retried on the next tick
                    self.report_failure("redis", exc)

    def ops_snapshot(self) -> dict[str, Any]:
        """The periodic JSON published on ``segmentflow-metrics`` (§1): counts, clock, lag,
        segment populations."""
        mark = self.current_watermark()
        return {
            "worker_id": self.worker_id,
            "time": format_us(int(time.time() * 1_000_000)),
            "watermark": None if mark is None else format_us(mark),
            "counters": self.processor.counters.snapshot(),
            "lag": {f"{tp[0]}/{tp[1]}": n for tp, n in self.watermark.lag().items()},  # type: ignore[index]
            "held_events": len(self.aligner),
            "populations": self.processor.store.populations(),
            "healthy": self.status.ready and self.status.broker_ok and self.status.redis_ok,
        }

    async def publish_ops_snapshot(self) -> None:
        """Send one ops snapshot (key = worker id)."""
        value = orjson.dumps(self.ops_snapshot())
        topic = self.settings.topic_segmentflow_metrics
        await self.send(topic, self.worker_id.encode("utf-8"), value)

    async def reload(self, config: SegmentConfig) -> str | None:
        """Switch to ``config`` between batches (SIGHUP, CONTRACT §6): a new engine carrying
        the population state (:func:`~segmentflow.service.reload.engine_for`), then a new
        :class:`ConfigWalk` re-evaluates the stored customers for what changed (from the next
        tick). ``None``, or why ``config`` cannot be applied in place (the old one stays)."""
        why = refusal(config, self.ranks is not None, self.persona is not None)
        if why is not None:
            return why
        async with self.lock:
            # not partition work: a rebalance meanwhile does not stop it
            self._entered = self.generation
            old = self.processor.engine
            engine = engine_for(config, old)
            switching = partial(switch, self.processor, config, engine)
            while True:
                try:
                    # the running config's fingerprints for shards without any (a reload
                    # before the first tick), so the new walk diffs against it
                    await self._retry("redis", self.config_walk.ensure_planned)
                    await self._retry("redis", switching)
                    break
                except Rebalanced:
                    self._entered = self.generation
            self.config = config
            self.watermark.allowed_lateness = config.allowed_lateness_us
            if self.persona is not None:
                self.persona.engine = engine
                if old.persona is None:  # personas were off: load the stored model
                    self.persona.version = 0
            self.config_walk = ConfigWalk(self.processor, progress=self.config_walk.progress)
        return None

    @contextlib.asynccontextmanager
    async def _turn(self, waiting: bool = False) -> AsyncIterator[None]:
        """Hold :attr:`lock` for one piece of work (a batch, a tick, a reload), noting the
        generation it starts under; a rebalance during it stops it (:class:`Rebalanced`: its
        unacked messages are read again after the rebalance). ``waiting``: counted in
        :attr:`batches_waiting` until the lock is taken."""
        generation = self.generation  # queued before a rebalance: stopped by it too
        try:
            async with self.lock:
                if waiting:
                    self.batches_waiting -= 1
                    waiting = False
                self._entered = generation
                yield
        except Rebalanced:
            log.info("partitions revoked during a batch or tick: it stopped; read again later")
        finally:
            if waiting:
                self.batches_waiting -= 1

    def _fence(self) -> None:
        """Raise :class:`Rebalanced` when a rebalance came after the current work started."""
        if self.generation != self._entered:
            raise Rebalanced()

    def _new_watermark(self) -> Watermark:
        return Watermark(self.config.allowed_lateness_us, self.settings.idle_timeout)

    def clock_held(self) -> tuple[int, float]:
        """Events waiting for the clock, and for how many seconds the clock has not moved
        while they wait (0 when none wait)."""
        held = len(self.aligner)
        if not held or self.held_since is None or self.config.clock == "wall":
            return held, 0.0
        waiting = time.monotonic() - max(self.held_since, self.watermark.moved_at)
        return held, max(0.0, waiting)

    def current_watermark(self) -> int | None:
        """Event-time watermark, or the wall clock in ``clock: wall`` mode."""
        if self.config.clock == "wall":
            return int(time.time() * 1_000_000)
        return self.watermark.value()

    async def _release(self) -> None:
        """Apply the held events the watermark has passed (in timestamp order), fire due
        time-driven changes, publish the outbox, then ack: in chunks of
        :data:`RELEASE_CHUNK` events, so a backlog released at once (a catch-up, a clock
        held by an idle partition) publishes and acks as it goes instead of holding every
        change until the end; the due work up to the watermark runs after the last chunk."""
        if not await self._check_incarnations():
            return  # offsets could mislead: nothing is applied until the broker answers
        now = self.current_watermark()
        released = list(self.aligner.release(now))
        if not len(self.aligner):
            self.held_since = None
        for start in range(0, max(len(released), 1), RELEASE_CHUNK):
            chunk = released[start : start + RELEASE_CHUNK]
            await self._release_chunk(
                chunk, now if start + RELEASE_CHUNK >= len(released) else None
            )

    async def _release_chunk(self, released: list[Held], now: int | None) -> None:
        """Apply released events, then (with ``now``) fire what is due up to it; forward,
        publish, ack."""
        items = [held.item for held in released]
        redis_failures = self.redis_failures

        def apply() -> list[Change]:
            self.processor.forwards = []  # a retried part decides its forwards again
            # the owned shards' config fingerprints recorded before their first event under
            # this config (a few meta reads per assignment): a reload right after finds what
            # it changes, not an unrecorded shard it would take to follow it already
            self.config_walk.ensure_planned()
            changes = self.processor.apply(items)
            self.heap.seen(len(items))  # a collection due runs here, off the loop
            return changes

        # after a failed batch, parts of it before the failure may be committed: their changes
        # are in the outbox although the one-by-one retry skips those events, and a commit may
        # have landed although Redis's reply was lost: the outbox is the truth, published below
        try:
            changes = await self._retry("redis", apply)
        except StateQuarantined as exc:  # one by one: that customer's events are dead letters
            log.warning("%s", exc)
            changes = await self._apply_one_by_one(released)
            self._outbox_dirty = True
        except Exception:  # an engine bug must not lose the batch: isolate the culprit(s)
            log.exception("batch failed; applying its events one by one")
            changes = await self._apply_one_by_one(released)
            self._outbox_dirty = True
        if now is not None:
            changes += await self._advance(now)
        await self._forward(released)
        self._committed(bool(changes), redis_failures)
        await self._publish()
        await self._ack([held.token for held in released])

    async def _advance(self, now: int) -> list[Change]:
        """Fire what is due up to ``now`` in slices of :data:`ADVANCE_SLICE_US` of event time
        from the next due moment, yielding to the event loop between slices: a jump of years
        in event time costs its changes, and ``/health`` and heartbeats keep answering."""
        changes: list[Change] = []
        while True:
            due = await self._retry("redis", self.processor.next_work)
            if due is None or due > now or due > now - ADVANCE_SLICE_US:
                break
            changes += await self._retry(
                "redis", partial(self.processor.advance, due + ADVANCE_SLICE_US)
            )
            await asyncio.sleep(0)
        changes += await self._retry("redis", partial(self.processor.advance, now))
        return changes

    async def _reevaluate(self, budget_seconds: float = 0.25, idle_seconds: float = 5.0) -> None:
        """Pages of the config re-evaluation walk (CONTRACT §6, :class:`ConfigWalk`) for about
        ``budget_seconds`` of this tick, or ``idle_seconds`` while no event waits (none held for
        the clock, no batch waiting for the lock; checked after every page, so a batch waits
        one page at most), stamped with the watermark (before one is known, e.g. an idle input
        after a restart: each customer's clock); not before partitions are assigned (the walk
        covers the owned shards only). Each page runs in a thread: ``/health`` answers."""
        if not self.owned:
            return
        now = self.current_watermark() or 0
        clock = self.config_walk.clock
        started = clock()
        redis_failures = self.redis_failures
        while not await self._retry("redis", lambda: self.config_walk.done):
            changes = await self._retry("redis", partial(self.config_walk.step, now))
            self._committed(bool(changes), redis_failures)
            await self._publish()
            idle = not self.batches_waiting and not len(self.aligner)
            if clock() - started > (idle_seconds if idle else budget_seconds):
                break
            await asyncio.sleep(0)

    def _take_held(self, customer_id: str) -> list[Held]:
        """Remove and return the held events of ``customer_id`` (a forget erases them)."""
        if not any(held.item.event.customer_id == customer_id for held in self.aligner.held()):
            return []
        taken: list[Held] = []
        kept = list(self.aligner.drain())
        self.aligner = Aligner()
        for held in kept:
            if held.item.event.customer_id == customer_id:
                taken.append(held)
            else:
                self._hold(held)
        return taken

    def _hold(self, held: Held) -> None:
        """Hold an event (again) until the watermark passes it."""
        item = held.item
        self.aligner.add(item.event.ts, held, (item.topic, item.partition))

    def _committed(self, changes: bool, redis_failures: int) -> None:
        """Note that commits may have appended to the outbox: they returned changes, or Redis
        failed meanwhile (a commit whose reply was lost may have landed)."""
        if changes or self.redis_failures != redis_failures:
            self._outbox_dirty = True

    async def _forget(self, forgets: Sequence[tuple[Held, list[Held]]]) -> None:
        """Apply forget commands (CONTRACT §5) in read order, each with the held events of its
        customer (erased unapplied); publish the final changes; then ack them all."""
        for (item, token), held in forgets:
            erased = [entry.item for entry in held]
            redis_failures = self.redis_failures

            def erase(item: Item = item, erased: list[Item] = erased) -> list[Change] | None:
                self.processor.forwards = []  # a retry decides its forward again
                return self.processor.erase(item, erased)

            try:
                changes = await self._retry("redis", erase)
            except Exception as exc:  # e.g. a state that cannot be decoded: quarantined
                log.error("forget quarantined: %s", exc.__class__.__name__)
                await self._publish_deadletters([self.processor.quarantine(_record(item), exc)])
                for entry in held:  # not erased: they wait as before
                    self._hold(entry)
                await self._ack([token])
                continue
            if changes is None:  # the customer's home is another partition: forwarded there
                await self._forward([Held(item, token)])
                for entry in held:  # forwarded too when released (same home)
                    self._hold(entry)
                await self._ack([token])
                continue
            self._committed(bool(changes), redis_failures)
            await self._publish()
            await self._ack([token, *(entry.token for entry in held)])

    async def _apply_one_by_one(self, released: Sequence[Held]) -> list[Change]:
        changes: list[Change] = []
        letters: list[DeadLetter] = []
        self.processor.forwards = []
        for held in released:
            try:
                changes += await self._retry("redis", partial(self.processor.apply, [held.item]))
            except Exception as exc:
                log.error("event quarantined: %s", exc.__class__.__name__)
                letters.append(self.processor.quarantine(_record(held.item), exc))
        await self._publish_deadletters(letters)
        return changes

    # -- publishing -----------------------------------------------------------------------

    async def _publish(self) -> None:
        """Publish every change the outbox holds for the owned shards (committed with the state
        that caused them, in commit order per shard; after start or a rebalance, also what a
        previous owner left), wait until the broker has them all, then trim them. The one
        publish path: nothing is sent that is not in the outbox."""
        if not self._outbox_dirty:
            return
        store = self.processor.store
        pending = await self._retry("redis", store.outbox_pending)
        rows = [row for _, shard_rows in pending for row in shard_rows]
        if rows:
            keys = [orjson.loads(row)["subject"].encode("utf-8") for row in rows]
            topic = self.settings.topic_segment_changes
            await self._retry_async("broker", partial(self._send_all, topic, keys, rows))
            done = {shard: len(shard_rows) for shard, shard_rows in pending}
            await self._retry("redis", partial(store.outbox_done, done))
            self.changes_sent += len(rows)
        self._outbox_dirty = False

    async def _send_all(
        self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes]
    ) -> object:
        """Send messages; return once the broker has acknowledged them all."""
        if self.send_many is not None:
            return await self.send_many(topic, keys, values)
        return await asyncio.gather(
            *(self.send(topic, key, value) for key, value in zip(keys, values, strict=True))
        )

    async def _publish_deadletters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        topic = self.settings.topic_segmentflow_deadletter
        keys = [letter.key for letter in letters]
        values = [orjson.dumps(letter.value) for letter in letters]
        await self._retry_async("broker", partial(self._send_all, topic, keys, values))
        self.deadletters_sent += len(letters)

    async def _forward(self, released: Sequence[Held]) -> None:
        """Re-produce the records whose customer's home is another partition (same topic, key
        and value) to that partition, before their originals are acked: exact event_id dedup
        makes a repeated forward harmless (see README "Ownership")."""
        forwards = self.processor.take_forwards()
        if not forwards:
            return
        if self.send_to is None:
            raise RuntimeError("records to forward but no send_to was given to the worker")
        send_to = self.send_to
        sends = [(item.topic, home, _record(item)) for item, home in forwards]

        async def send_all() -> None:
            await asyncio.gather(
                *(send_to(topic, home, rec.key, rec.value or b"") for topic, home, rec in sends)
            )

        await self._retry_async("broker", send_all)

    async def _check_incarnations(self) -> bool:
        """Once per assignment: the incarnation of each owned input partition (a new one when
        the broker's cluster id differs from the stored one); sets the processor's epochs.
        ``False`` (retried on the next batch or tick) while the broker or Redis cannot say."""
        if self._incarnations is not None:
            return True
        store = self.processor.store
        sources = [f"{t}:{p}" for t, p in sorted(self.owned or ())]
        try:
            cluster = None
            if self.cluster_id is not None:
                cluster = await asyncio.wait_for(asyncio.to_thread(self.cluster_id), 15)
            stored = store.partition_records(sources)
            records = incarnations.reconcile(stored, sources, cluster)
            store.save_partition_records({k: v for k, v in records.items() if stored.get(k) != v})
        except Exception as exc:  # any broker/Redis failure: wait and retry
            self.report_failure("redis" if isinstance(exc, REDIS_ERRORS) else "broker", exc)
            return False
        self._incarnations = records
        self._highs_saved = {k: int(v.get("high", -1)) for k, v in records.items()}
        for source, record in records.items():
            self.processor.epochs[source] = int(record.get("epoch", 0))
        return True

    async def _track_incarnations(self, ends: dict[Hashable, int]) -> None:
        """Each tick: a partition whose end (exact high-water mark of a fetch) is at or below
        the highest offset applied was recreated: a new incarnation. Persist the highest
        applied offsets (the owner's)."""
        records = self._incarnations
        store = self.processor.store
        if records is None:
            return
        changed: dict[str, dict[str, Any]] = {}
        for tp, end in ends.items():
            source = f"{tp[0]}:{tp[1]}"  # type: ignore[index]
            record = records.get(source)
            if record is None or not self.owns(tp):
                continue
            high = max(int(record.get("high", -1)), self.processor.applied_high.get(source, -1))
            bumped = incarnations.truncated({**record, "high": high}, end)
            if bumped is not None:
                records[source] = changed[source] = bumped
                self.processor.epochs[source] = int(bumped["epoch"])
                self.processor.applied_high.pop(source, None)
        for source, high in self.processor.applied_high.items():
            record = records.get(source)
            if record is None or source in changed or high <= self._highs_saved.get(source, -1):
                continue
            record["high"] = high
            changed[source] = record
        if changed:
            try:
                store.save_partition_records(changed)
            except REDIS_ERRORS as exc:  # saved on a later tick
                self.report_failure("redis", exc)
                return
            for source, record in changed.items():
                self._highs_saved[source] = int(record["high"])

    async def _ack(self, tokens: Sequence[Any]) -> None:
        for token in tokens:
            if token is not None:
                await self.ack(token)

    # -- resilience -----------------------------------------------------------------------

    async def _retry(self, what: str, call: Callable[[], T]) -> T:
        """Run a synchronous Redis call, retrying Redis errors (:data:`REDIS_ERRORS`) with
        backoff; other errors (the event's) propagate."""

        async def attempt() -> T:  # fenced by _retry_async
            try:
                # off the event loop (engine work and Redis round trips of a whole batch or a
                # long advance): /health, /metrics and Faust's heartbeats keep answering; the
                # worker lock keeps these calls one at a time, in order (notes/perf-handoff.md)
                return await asyncio.to_thread(call)
            except redis.DataError as exc:  # a value the client cannot send: not an outage
                raise ValueError(f"redis refused a value: {exc}") from exc

        return await self._retry_async(what, attempt, REDIS_ERRORS)

    async def _retry_async(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        errors: tuple[type[Exception], ...] = (Exception,),  # aiokafka raises many types
    ) -> T:
        """Await an operation, retrying ``errors`` with exponential backoff (capped); every
        attempt first checks that no rebalance came meanwhile (:meth:`_fence`)."""
        backoff = Backoff(base=0.1, cap=self.max_backoff, jitter=0.0)

        async def attempt() -> T:
            self._fence()
            return await call()

        value = await retry_async(
            attempt,
            backoff,
            retry_on=errors,
            on_failure=lambda _n, exc, _d: self.report_failure(what, exc),
        )
        self.report_recovery(what)
        return value

    # -- health -----------------------------------------------------------------------------

    def report_failure(self, what: str, exc: BaseException) -> None:
        """Record that ``what`` (``"redis"`` or ``"broker"``) failed with ``exc``: unhealthy
        (``/health`` 503) until :meth:`report_recovery`, counted in ``segmentflow_retries``."""
        self.status.retries += 1
        self.redis_failures += what == "redis"
        # redis-py quotes the failing command, keys and values included: never in /health
        text = _PIPELINE_COMMAND.sub("", str(exc))[:300]
        self.status.last_error = f"{what}: {exc.__class__.__name__}: {text}"
        if what == "redis":
            self.status.redis_ok = False
            self.status.redis_oom = isinstance(exc, OutOfMemoryError)
            if self.status.redis_oom:
                self.memory.expire()  # the next tick or scrape samples the limit it hit
        else:
            self.status.broker_ok = False
        log.warning("%s unavailable (%s); retrying", what, exc)

    def report_recovery(self, what: str) -> None:
        """Record that ``what`` (``"redis"`` or ``"broker"``) answers again."""
        if what == "redis":
            self.status.redis_ok = True
            self.status.redis_oom = False
        else:
            self.status.broker_ok = True

    # -- partitions -----------------------------------------------------------------------

    def owns(self, tp: Hashable) -> bool:
        """Whether ``tp`` (``(topic, partition)``) is an input partition of this worker now."""
        return self.owned is None or tp in self.owned

    def _mine(self, delivery: Delivery) -> bool:
        record = delivery.record
        return self.owns((record.topic, record.partition)) and self.is_current(delivery.token)

    async def revoked(self, wait: float = REVOKE_WAIT_SECONDS) -> None:
        """A rebalance starts: stop the work under way (at its next Redis or broker call), wait
        for it (up to ``wait`` seconds), then :meth:`revoke`. Without the wait, a batch running
        in its thread across the rebalance would carry on under the new assignment: fire the
        due changes of partitions just taken over, up to its old clock, before their events
        were applied, and trim outbox rows the new owner publishes."""
        self.generation += 1
        try:
            await asyncio.wait_for(self.lock.acquire(), wait)
        except TimeoutError:
            log.warning("work under way did not stop within %.0f s; revoking anyway", wait)
            self.revoke()
            return
        try:
            self.revoke()
        finally:
            self.lock.release()

    async def assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        """A rebalance ends: :meth:`assign`, between two pieces of work."""
        async with self.lock:
            self.assign(partitions)

    def revoke(self) -> None:
        """A rebalance starts: apply and fire nothing until the next assignment. After it, every
        partition is read again from its committed offset, so the held messages are dropped
        unacked and the clock starts over, as in a new process: its old value, taken over other
        partitions, would release the events of partitions taken over from another worker
        without ordering them across topics. (Nothing fires twice: fired changes are state.)"""
        self.owned = set()
        self.aligner = Aligner()
        self.watermark = self._new_watermark()
        self.held_since = None
        self.processor.store.revoke_partitions()
        self.status.ready = False

    def assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Track the input partitions this worker owns; fire due changes only for them."""
        inputs = [tp for tp in partitions if tp[0] in self.kind_of]
        self.watermark.assign(inputs)
        self.processor.store.assign_partitions({p for _, p in inputs})
        owned = self.owned = set(inputs)
        held = list(self.aligner.drain())  # messages of revoked partitions are redelivered
        self.aligner = Aligner()  # re-added in release order, each gets back its key
        for entry in held:
            if (entry.item.topic, entry.item.partition) in owned:
                self._hold(entry)
        self._outbox_dirty = True  # publish what a previous owner left pending
        self._incarnations = None  # checked again (and the epochs set) before applying
        if self.persona is not None:
            website = self.settings.topic_website_events
            self.persona.trainer = (website, 0) in owned
        self.status.ready = bool(inputs) or not partitions


def _record(item: Item) -> InputRecord:
    """The consumed record ``item`` was decoded from (every item the worker holds has one)."""
    if item.record is None:
        raise RuntimeError(f"item {item.topic}/{item.partition}@{item.offset} has no record")
    return item.record
