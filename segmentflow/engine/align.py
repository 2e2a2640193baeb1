"""Event-time alignment of several partitions (pure).

Kafka orders messages only within a partition, and one customer's events cross three topics.
Events wait here until the watermark reaches their timestamp and leave in timestamp order, so a
backlog read partition by partition is applied in the same order as ``replay`` applies it.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Aligner(Generic[Item]):
    """A min-heap of items by (timestamp, arrival order).

    Items of one partition never overtake each other: an item's key is the largest timestamp
    seen so far on its partition, so a partition whose timestamps step back a little still
    leaves in offset order (which keeps "highest applied offset" a valid idempotency key).

    Examples
    --------
    >>> a: Aligner[str] = Aligner()
    >>> a.add(30, "c"); a.add(10, "a"); a.add(20, "b")
    >>> list(a.release(20)), len(a)
    (['a', 'b'], 1)
    >>> a.add(50, "d", partition="p"); a.add(40, "e", partition="p")  # e stays behind d
    >>> list(a.release(45)), list(a.release(50))
    (['c'], ['d', 'e'])
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Item]] = []
        self._seq = 0
        self._partition_time: dict[Hashable, int] = {}

    def add(self, timestamp: int, item: Item, partition: Hashable | None = None) -> None:
        """Hold ``item`` until the watermark reaches ``timestamp`` (or a later timestamp seen
        before on the same ``partition``)."""
        if partition is not None:
            key = max(timestamp, self._partition_time.get(partition, timestamp))
            self._partition_time[partition] = key
            timestamp = key
        heapq.heappush(self._heap, (timestamp, self._seq, item))
        self._seq += 1

    def release(self, watermark: int | None) -> Iterator[Item]:
        """Items with timestamp <= ``watermark``, oldest first (nothing for ``None``)."""
        if watermark is None:
            return
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            yield heapq.heappop(heap)[2]

    def drain(self) -> Iterator[Item]:
        """Every held item, oldest first (e.g. before giving partitions away)."""
        while self._heap:
            yield heapq.heappop(self._heap)[2]

    def held(self) -> Iterator[Item]:
        """Every held item, in no particular order (nothing removed)."""
        return (entry[2] for entry in self._heap)

    def oldest(self) -> int | None:
        """Timestamp of the oldest held item."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
