"""Input records in batches, taken from Faust's fetcher below its per-message stream path.

Faust hands every consumed record to its agents one at a time: ``Consumer._drain_messages``
awaits ``wait_first(callback(message), suspend_flow.wait())`` per record (four tasks each), the
conductor decodes it into an ``Event`` and queues it on each subscribing channel, and the
stream takes it out again, message by message. That path costs more per record than the whole
engine (benchmarks/README.md, "the batch tap": the worker 2.60x faster through the tap). The
worker needs none of it: it decodes records itself and acks them once their effects are
durable.

:class:`BatchTap` replaces the drain loop of the app's consumer (one instance attribute,
installed before the fetcher starts) with :func:`drain_batches`: the same loop over
``Consumer.getmany`` (Faust's round robin over partitions, its generation checks, read offsets,
offset gaps and ``broker_commit_every``), but the records of the tapped topics go into a
bounded :class:`RecordBuffer` a whole fetch at a time; records of other topics still take
Faust's path. Faust keeps running the app: the group, rebalances (flow suspended, fetcher
restarted, seek to committed offsets), offset commits of acked messages (:meth:`BatchTap.ack`
is ``Consumer.ack``), timers and the web server.

Examples
--------
>>> import asyncio
>>> async def demo() -> list[int]:
...     buffer = RecordBuffer(capacity=10)
...     await buffer.put([1, 2, 3])
...     await buffer.put([4])
...     return await buffer.take(limit=3) + [-1] + await buffer.take(limit=3)
>>> asyncio.run(demo())
[1, 2, 3, -1, 4]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Collection
from typing import Any, Generic, TypeVar

from segmentflow.streams.faust_patches import CONSUMER_FETCHING

log = logging.getLogger("segmentflow.worker")
T = TypeVar("T")


class RecordBuffer(Generic[T]):
    """A bounded FIFO of records filled a batch at a time and emptied up to a limit.

    ``put`` waits while ``capacity`` records are buffered (the fetch loop then stops
    fetching: back-pressure); a single batch larger than the capacity is still taken whole.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batches: deque[list[T]] = deque()
        self._count = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return self._count

    async def put(self, records: list[T]) -> None:
        """Append ``records`` once there is room."""
        while self._count >= self.capacity:
            self._writable.clear()
            await self._writable.wait()
        self._batches.append(records)
        self._count += len(records)
        self._readable.set()

    async def take(self, limit: int, within: float = 0.0) -> list[T]:
        """Wait for records; return the oldest, at most ``limit`` of them, after waiting up
        to ``within`` seconds for ``limit`` to be buffered."""
        while not self._batches:
            self._readable.clear()
            await self._readable.wait()
        if within > 0 and self._count < limit:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    while self._count < limit:
                        self._readable.clear()
                        await self._readable.wait()
        taken: list[T] = []
        while self._batches and len(taken) < limit:
            batch = self._batches.popleft()
            room = limit - len(taken)
            if len(batch) > room:
                self._batches.appendleft(batch[room:])
                batch = batch[:room]
            taken += batch
        self._count -= len(taken)
        if self._count < self.capacity:
            self._writable.set()
        return taken

    def clear(self) -> int:
        """Drop every buffered record (a rebalance: they are read again); how many."""
        dropped = self._count
        self._batches.clear()
        self._count = 0
        self._writable.set()
        return dropped


class BatchTap:
    """Takes the records of ``topics`` from the app's consumer in whole fetches.

    Parameters
    ----------
    topics
        The topics whose records go to :meth:`take` instead of Faust's agents.
    capacity
        Records buffered before fetching waits (as ``stream_buffer_maxsize`` bounds a stream).
    """

    def __init__(self, topics: Collection[str], capacity: int = 20_000) -> None:
        self.topics = frozenset(topics)
        self.buffer: RecordBuffer[Any] = RecordBuffer(capacity)
        self._consumer: Any = None

    def install(self, consumer: Any) -> None:
        """Replace ``consumer``'s drain loop (before its fetcher starts; idempotent)."""
        self._consumer = consumer

        async def drain(fetcher: Any) -> None:
            await drain_batches(consumer, fetcher, self)

        consumer._drain_messages = drain

    async def take(self, limit: int, within: float = 0.0) -> list[Any]:
        """The next consumed records (Faust ``Message`` objects), at most ``limit``, after
        waiting up to ``within`` seconds for that many."""
        return await self.buffer.take(limit, within)

    async def ack(self, message: Any) -> bool:
        """Acknowledge one record: its offset may commit (Faust commits acked offsets)."""
        return bool(self._consumer.ack(message))

    def clear(self) -> int:
        """Drop the buffered records (partitions revoked: they are fetched again)."""
        return self.buffer.clear()

    async def put(self, consumer: Any, records: list[Any]) -> None:
        """Hand one fetch's records over, unless a rebalance suspends the flow meanwhile
        (then they are dropped unacked, as Faust drops a message it could not deliver)."""
        if len(self.buffer) < self.buffer.capacity:
            await self.buffer.put(records)  # room: no tasks, no wait
            return
        await consumer.wait_first(self.buffer.put(records), consumer.suspend_flow.wait())


async def drain_batches(consumer: Any, fetcher: Any, tap: BatchTap) -> None:
    """Faust's ``Consumer._drain_messages`` with the tapped topics' records handed over a
    fetch at a time (the bookkeeping per record is Faust's: read offsets, gaps, commits)."""
    callback = consumer.callback
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    set_flag = consumer.diag.set_flag
    unset_flag = consumer.diag.unset_flag
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    tapped = tap.topics
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            records = getmany(timeout=1.0)
            await consumer.sleep(0)
            if consumer.should_stop:
                continue
            batch: list[Any] = []
            async for tp, message in records:
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is not None and offset < r_offset:
                    continue  # read already (Faust drops it too)
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if message.topic in tapped:
                    batch.append(message)
                else:  # not ours: Faust's path, after what came before it
                    if batch:
                        await tap.put(consumer, batch)
                        batch = []
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                set_read_offset(tp, offset)
            if batch:
                await tap.put(consumer, batch)
            unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            log.info("broker stopped the consumer; shutting down")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            return
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
