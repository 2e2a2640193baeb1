"""The worker's runtime: batches in, engine, state committed, changes and dead letters out.

Faust-specific code lives in :mod:`segmentflow.streams.agents`; this class only needs a
``send(topic, key, value)`` coroutine, an ``ack(token)`` coroutine and the consumer's offsets,
so it reads as the sequence the guarantees depend on:

1. the batch is decoded; bad messages become dead letters (sent, then acked);
2. valid events wait in an event-time :class:`Aligner` until the watermark reaches them, so a
   customer's events from three topics are applied in timestamp order, as ``replay`` does;
3. released events are applied; state, due index, populations and the change events (the
   outbox) are committed to Redis in one transaction; due time-driven changes likewise;
4. the outbox is published and the broker acknowledges every change; then it is trimmed;
5. only then are the released messages acked (so their offsets may commit).

A crash anywhere leaves either nothing (redelivery re-applies) or a committed state whose changes
wait in the outbox (published on restart; redelivered messages are skipped by offset). Redis or
broker outages are retried with exponential backoff; ``/health`` reports them meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson
import redis

from segmentflow.config import Settings
from segmentflow.engine.align import Aligner
from segmentflow.engine.clock import Watermark
from segmentflow.engine.processor import DeadLetter, InputRecord, Item, Processor
from segmentflow.schemas.changes import Change
from segmentflow.schemas.timefmt import format_us
from segmentflow.state.redis_store import RedisStore
from segmentflow.streams.persona_sync import PersonaSync

log = logging.getLogger("segmentflow.worker")
Send = Callable[[str, bytes | None, bytes], Awaitable[object]]
Ack = Callable[[Any], Awaitable[object]]
T = TypeVar("T")
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


@dataclass
class WorkerStatus:
    """What ``/health`` and ``/metrics`` report."""

    ready: bool = False
    batches: int = 0
    last_batch_seconds: float = 0.0
    broker_ok: bool = True
    redis_ok: bool = True
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
    """

    max_backoff = 5.0

    def __init__(self, settings: Settings, processor: Processor, send: Send, ack: Ack) -> None:
        self.settings = settings
        self.processor = processor
        self.config = processor.config
        self.send = send
        self.ack = ack
        self.aligner: Aligner[tuple[Item, Any, InputRecord]] = Aligner()
        self.watermark = self._new_watermark()
        self.status = WorkerStatus()
        #: monotonic time events started waiting for the clock (``None`` when none wait)
        self.held_since: float | None = None
        self.lock = asyncio.Lock()
        self.kind_of = {topic: kind for kind, topic in settings.input_topics.items()}
        self.changes_sent = 0
        self.deadletters_sent = 0
        self._outbox_checked = False
        #: input partitions owned since the last assignment (``None`` before the first; empty
        #: during a rebalance)
        self.owned: set[tuple[str, int]] | None = None
        #: whether a consumed message belongs to the current assignment (set by the agents)
        self.is_current: Callable[[Any], bool] = lambda token: True
        self.redis_failures = 0
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.persona: PersonaSync | None = None
        if processor.engine.persona is not None and isinstance(processor.store, RedisStore):
            self.persona = PersonaSync(processor.engine, processor.store)

    # -- the hot path ---------------------------------------------------------------------

    async def handle_batch(self, records: Sequence[InputRecord], tokens: Sequence[Any]) -> None:
        """Take in one consumed batch (``tokens[i]`` is acked once ``records[i]``'s effects are
        durable); apply whatever the watermark releases."""
        started = time.perf_counter()
        async with self.lock:
            pairs = enumerate(zip(records, tokens, strict=True))
            mine = [i for i, (record, token) in pairs if self._mine(record, token)]
            if len(mine) < len(records):
                # fetched before a rebalance: every partition is read again from its committed
                # offset after it (by its new owner), so applying these here would race that
                records, tokens = [records[i] for i in mine], [tokens[i] for i in mine]
            await self._flush_outbox()
            valid, result = await asyncio.to_thread(self.processor.decode_all, records)
            rejected = []
            for record, token, ts in zip(records, tokens, result.timestamps, strict=True):
                tp = (record.topic, record.partition)
                self.watermark.observe(tp, record.offset, ts)
                if ts is None:
                    rejected.append(token)
            by_record = dict(zip(map(id, records), tokens, strict=True))
            for record, event in valid:
                tp = (record.topic, record.partition)
                held = (Item.of(record, event), by_record[id(record)], record)
                self.aligner.add(event.ts, held, tp)
            if self.held_since is None and len(self.aligner):
                self.held_since = time.monotonic()
            await self._publish_deadletters(result.deadletters)
            await self._ack(rejected)
            await self._release()
        self.status.batches += 1
        self.status.last_batch_seconds = time.perf_counter() - started

    async def tick(
        self, ends: dict[Hashable, int] | None = None, guesses: dict[Hashable, int] | None = None
    ) -> None:
        """Periodic: refresh end offsets (``ends`` exact fetch high-water marks, ``guesses``
        ListOffsets answers), advance the clock, apply and publish what it releases."""
        async with self.lock:
            for exact, marks in ((False, guesses), (True, ends)):
                for tp, end in (marks or {}).items():
                    if self.owns(tp):  # ends asked for before a rebalance must not add partitions
                        self.watermark.set_end(tp, end, exact=exact)
            await self._flush_outbox()
            await self._release()
            if self.persona is not None:
                try:
                    await self.persona.tick()
                except redis.RedisError as exc:  # retried on the next tick
                    self._failed("redis", exc)

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
        time-driven changes, publish the outbox, then ack."""
        now = self.current_watermark()
        released = list(self.aligner.release(now))
        if not len(self.aligner):
            self.held_since = None
        items = [item for item, _, _ in released]
        redis_failures = self.redis_failures
        try:
            changes = await self._retry("redis", partial(self.processor.apply, items))
        except Exception:  # an engine bug must not lose the batch: isolate the culprit(s)
            log.exception("batch failed; applying its events one by one")
            changes = await self._apply_one_by_one(released)
        if now is not None:
            changes += await self._retry("redis", partial(self.processor.advance, now))
        if self.redis_failures != redis_failures:
            # a commit may have landed although Redis's reply was lost: the retry then applied
            # nothing (offsets) and returned no changes, which sat unpublished in the outbox and
            # were trimmed by the next publish. The outbox is the truth: publish all of it.
            self._outbox_checked = False
            await self._flush_outbox()
        else:
            await self._publish_changes(changes)
        await self._ack([token for _, token, _ in released])

    async def _apply_one_by_one(
        self, released: Sequence[tuple[Item, Any, InputRecord]]
    ) -> list[Change]:
        changes: list[Change] = []
        letters: list[DeadLetter] = []
        for item, _, record in released:
            try:
                changes += await self._retry("redis", partial(self.processor.apply, [item]))
            except Exception as exc:
                log.error("event quarantined: %s", exc.__class__.__name__)
                letters.append(self.processor.quarantine(record, exc))
        await self._publish_deadletters(letters)
        return changes

    # -- publishing -----------------------------------------------------------------------

    async def _publish_changes(self, changes: Sequence[Change]) -> None:
        """Publish changes just committed (the outbox holds exactly them), then trim it."""
        if not changes:
            return
        keys = [c.customer_id.encode("utf-8") for c in changes]
        values = [c.to_json() for c in changes]  # encoded once: the outbox holds the same
        topic = self.settings.topic_segment_changes
        await self._retry_async("broker", partial(self._send_all, topic, keys, values))
        shard_of = self.processor.store.shard_of
        counts = Counter(shard_of(c.customer_id) for c in changes)
        await self._retry("redis", lambda: self.processor.store.outbox_done(counts))
        self.changes_sent += len(changes)

    async def _flush_outbox(self) -> None:
        """After start or a rebalance: publish every change of the owned shards that a previous
        run committed but did not confirm published, then trim it."""
        if self._outbox_checked:
            return
        pending = await self._retry("redis", self.processor.store.outbox_pending)
        topic = self.settings.topic_segment_changes
        for shard, rows in pending:
            keys = [orjson.loads(row)["subject"].encode("utf-8") for row in rows]
            await self._retry_async("broker", partial(self._send_all, topic, keys, rows))
            done = {shard: len(rows)}
            await self._retry("redis", partial(self.processor.store.outbox_done, done))
            self.changes_sent += len(rows)
        self._outbox_checked = True

    async def _send_all(
        self, topic: str, keys: Sequence[bytes | None], values: Sequence[bytes]
    ) -> list[object]:
        """Send messages concurrently; return once the broker has acknowledged them all."""
        return list(
            await asyncio.gather(
                *(self.send(topic, key, value) for key, value in zip(keys, values, strict=True))
            )
        )

    async def _publish_deadletters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        topic = self.settings.topic_segmentflow_deadletter
        keys = [letter.key for letter in letters]
        values = [orjson.dumps(letter.value) for letter in letters]
        await self._retry_async("broker", partial(self._send_all, topic, keys, values))
        self.deadletters_sent += len(letters)

    async def _ack(self, tokens: Sequence[Any]) -> None:
        for token in tokens:
            if token is not None:
                await self.ack(token)

    # -- resilience -----------------------------------------------------------------------

    async def _retry(self, what: str, call: Callable[[], T]) -> T:
        """Run a synchronous Redis call, retrying connection errors with backoff."""

        async def attempt() -> T:
            # off the event loop (engine work and Redis round trips of a whole batch or a
            # long advance): /health, /metrics and Faust's heartbeats keep answering; the
            # worker lock keeps these calls one at a time, in order (notes/perf-handoff.md)
            return await asyncio.to_thread(call)

        return await self._retry_async(what, attempt, REDIS_ERRORS)

    async def _retry_async(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        errors: tuple[type[Exception], ...] = (Exception,),  # aiokafka raises many types
    ) -> T:
        """Await an operation, retrying ``errors`` with exponential backoff (capped)."""
        delay = 0.1
        while True:
            try:
                value = await call()
            except errors as exc:
                self._failed(what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            self._recovered(what)
            return value

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.retries += 1
        self.redis_failures += what == "redis"
        self.status.last_error = f"{what}: {exc.__class__.__name__}: {exc}"
        if what == "redis":
            self.status.redis_ok = False
        else:
            self.status.broker_ok = False
        log.warning("%s unavailable (%s); retrying", what, exc)

    def _recovered(self, what: str) -> None:
        if what == "redis":
            self.status.redis_ok = True
        else:
            self.status.broker_ok = True

    # -- partitions -----------------------------------------------------------------------

    def owns(self, tp: Hashable) -> bool:
        """Whether ``tp`` (``(topic, partition)``) is an input partition of this worker now."""
        return self.owned is None or tp in self.owned

    def _mine(self, record: InputRecord, token: Any) -> bool:
        return self.owns((record.topic, record.partition)) and self.is_current(token)

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
        store = self.processor.store
        if hasattr(store, "owned_shards"):
            store.owned_shards = set()
        self.status.ready = False

    def assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Track the input partitions this worker owns; fire due changes only for them."""
        inputs = [tp for tp in partitions if tp[0] in self.kind_of]
        self.watermark.assign(inputs)
        store = self.processor.store
        if hasattr(store, "owned_shards"):
            store.owned_shards = {p for _, p in inputs}
        owned = self.owned = set(inputs)
        held = list(self.aligner.drain())  # messages of revoked partitions are redelivered
        self.aligner = Aligner()  # re-added in release order, each gets back its key
        for entry in held:
            item = entry[0]
            if (item.topic, item.partition) in owned:
                self.aligner.add(item.event.ts, entry, (item.topic, item.partition))
        self._outbox_checked = False  # publish what a previous owner left pending
        if self.persona is not None:
            website = self.settings.topic_website_events
            self.persona.trainer = (website, 0) in owned
        self.status.ready = bool(inputs) or not partitions
