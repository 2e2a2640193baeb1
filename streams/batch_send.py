"""Many messages of one topic sent as whole record batches, not one ``send`` each.

aiokafka's ``send`` costs about 40 µs of the event loop per message (a future, a metadata
lookup and the partitioner each time); on CDNOW-like data a worker publishes about five
changes per event, so that was a third of its event loop (``benchmarks/README.md``, "Results
(2026-12-04, evening)"). :func:`send_batches` picks each message's partition with the
producer's own partitioner (keys land where ``send`` would put them), appends the messages in
order to one record batch per partition at a time (``AIOKafkaProducer.create_batch``), submits
the batches round-robin over the partitions, closed (a closed batch does not linger for more
messages; a partition holds one queued batch at a time, so the others fill the same produce
requests meanwhile) and waits for every acknowledgement.
Order per partition is the order given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any


def partition_batches(
    new_batch: Any,
    partition_of: Any,
    keys: Sequence[bytes | None],
    values: Sequence[bytes],
    headers: Sequence[tuple[str, bytes]],
) -> dict[int, list[Any]]:
    """Per partition, its messages appended in order to as many batches as they fill.

    Examples
    --------
    >>> from aiokafka.producer.message_accumulator import BatchBuilder
    >>> batches = partition_batches(
    ...     lambda: BatchBuilder(100, 0), len, [b"a", b"bb", b"a"], [b"x" * 60] * 3, []
    ... )
    >>> {partition: [b.record_count() for b in found] for partition, found in batches.items()}
    {1: [1, 1], 2: [1]}
    """
    out: dict[int, list[Any]] = {}
    for key, value in zip(keys, values, strict=True):
        partition = partition_of(key)
        batches = out.get(partition)
        if batches is None:
            batches = out[partition] = [new_batch()]
        if batches[-1].append(timestamp=None, key=key, value=value, headers=headers) is None:
            batch = new_batch()  # full: an empty batch takes any message (as send's would)
            batch.append(timestamp=None, key=key, value=value, headers=headers)
            batches.append(batch)
    return out


async def send_batches(
    producer: Any,
    topic: str,
    keys: Sequence[bytes | None],
    values: Sequence[bytes],
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> list[Any]:
    """Send ``values`` (keyed by ``keys``) to ``topic`` through ``producer`` (an
    ``AIOKafkaProducer``); the batches' delivery results once the broker acknowledged all."""
    if not values:
        return []
    everything = sorted(await producer.partitions_for(topic))
    available = list(producer.client.cluster.available_partitions_for_topic(topic) or everything)
    partitioner = producer._partitioner

    def partition_of(key: bytes | None) -> int:
        return int(partitioner(key, everything, available))

    batches = partition_batches(producer.create_batch, partition_of, keys, values, headers or [])
    pending = []
    for round_ in zip_longest(*batches.values()):
        for partition, batch in zip(batches, round_, strict=True):
            if batch is not None:
                batch.close()  # complete: sent without lingering for more messages
                pending.append(await producer.send_batch(batch, topic, partition=partition))
    return list(await asyncio.gather(*pending))
