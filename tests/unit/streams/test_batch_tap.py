"""streams/batch_tap.py: the record buffer between Faust's fetcher and the worker, and the
drain loop's bookkeeping (read offsets, gaps, commits, other topics) against a fake consumer.
The real consumer is exercised by every worker integration test."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from segmentflow.streams.batch_tap import BatchTap, RecordBuffer, drain_batches


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_take_returns_the_oldest_records_up_to_the_limit_splitting_a_fetch() -> None:
    async def scenario() -> list[list[int]]:
        buffer: RecordBuffer[int] = RecordBuffer(capacity=100)
        await buffer.put([1, 2, 3, 4, 5])
        await buffer.put([6])
        taken = [await buffer.take(2), await buffer.take(10)]
        assert len(buffer) == 0
        return taken

    assert asyncio.run(scenario()) == [[1, 2], [3, 4, 5, 6]]


def test_a_full_buffer_holds_the_fetcher_until_records_are_taken() -> None:
    async def scenario() -> None:
        buffer: RecordBuffer[int] = RecordBuffer(capacity=3)
        await buffer.put([1, 2, 3])
        blocked = asyncio.ensure_future(buffer.put([4]))
        await _settle()
        assert not blocked.done()
        assert await buffer.take(1) == [1]
        await _settle()
        assert blocked.done()
        assert await buffer.take(10) == [2, 3, 4]

    asyncio.run(scenario())


def test_take_waits_for_records_and_clear_drops_them_and_frees_the_fetcher() -> None:
    async def scenario() -> None:
        buffer: RecordBuffer[int] = RecordBuffer(capacity=2)
        waiting = asyncio.ensure_future(buffer.take(5))
        await _settle()
        assert not waiting.done()
        await buffer.put([7])
        assert await waiting == [7]
        await buffer.put([1, 2])
        blocked = asyncio.ensure_future(buffer.put([3]))
        await _settle()
        assert buffer.clear() == 2
        await _settle()
        assert blocked.done()
        assert await buffer.take(5) == [3]

    asyncio.run(scenario())


@dataclass
class Message:
    topic: str
    offset: int
    tp: tuple[str, int] = ("", 0)


@dataclass
class FakeStopped:
    stopped: bool = False

    def is_set(self) -> bool:
        return self.stopped


class FakeFetcher:
    def __init__(self) -> None:
        self._stopped = FakeStopped()


class FakeDiag:
    def set_flag(self, flag: str) -> None:
        pass

    def unset_flag(self, flag: str) -> None:
        pass


@dataclass
class FakeConsumer:
    """What drain_batches touches of a Faust consumer: fetches are served once each, then
    the consumer stops."""

    fetches: list[list[Message]]
    commit_every: int | None = None
    acked: int = 0
    delivered: list[Message] = field(default_factory=list)
    gaps: list[tuple[tuple[str, int], int, int]] = field(default_factory=list)
    commits: int = 0

    def __post_init__(self) -> None:
        self._stopped = FakeStopped()
        self._read_offset: defaultdict[tuple[str, int], int | None] = defaultdict(lambda: None)
        self._commit_every = self.commit_every
        self._n_acked = self.acked
        self.diag = FakeDiag()
        self.should_stop = False
        self.suspend_flow = asyncio.Event()
        self.consumer_stopped_errors: tuple[type[BaseException], ...] = ()
        self.app = self
        self.topics = self
        self.transport = self

    def acks_enabled_for(self, topic: str) -> bool:
        return True

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[tuple[str, int], Message]]:
        if not self.fetches:
            self._stopped.stopped = True
            return
        for message in self.fetches.pop(0):
            yield message.tp, message

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _add_gap(self, tp: tuple[str, int], offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))

    async def commit(self) -> None:
        self.commits += 1

    async def callback(self, message: Message) -> None:
        self.delivered.append(message)

    async def wait_first(self, *coros: Any) -> None:
        for other in coros[1:]:
            other.close()
        await coros[0]


def _messages(topic: str, offsets: list[int], partition: int = 0) -> list[Message]:
    return [Message(topic, o, (topic, partition)) for o in offsets]


def _drain(consumer: FakeConsumer, topics: list[str]) -> list[list[Message]]:
    tap = BatchTap(topics)

    async def scenario() -> list[list[Message]]:
        await drain_batches(consumer, FakeFetcher(), tap)
        taken = []
        while len(tap.buffer):
            taken.append(await tap.take(1000))
        return taken

    return asyncio.run(scenario())


def test_a_fetch_of_tapped_records_is_handed_over_whole_with_read_offsets_kept() -> None:
    fetch = _messages("web", [0, 1, 2]) + _messages("mail", [5, 6], partition=1)
    consumer = FakeConsumer([fetch])
    (batch,) = _drain(consumer, ["web", "mail"])
    assert [(m.topic, m.offset) for m in batch] == [(m.topic, m.offset) for m in fetch]
    assert consumer._read_offset[("web", 0)] == 2
    assert consumer._read_offset[("mail", 1)] == 6
    assert consumer.delivered == []


def test_records_read_already_are_skipped_and_offset_gaps_recorded() -> None:
    consumer = FakeConsumer([_messages("web", [3, 4]), _messages("web", [2, 5, 9])])
    batches = _drain(consumer, ["web"])
    assert [m.offset for b in batches for m in b] == [3, 4, 5, 9]  # 2: read already
    assert consumer.gaps == [(("web", 0), 6, 9)]  # e.g. transaction markers or compaction


def test_other_topics_take_faust_s_path_in_order() -> None:
    fetch = _messages("web", [0, 1]) + _messages("other", [0]) + _messages("web", [2])
    consumer = FakeConsumer([fetch])
    batches = _drain(consumer, ["web"])
    assert [[m.offset for m in b] for b in batches] == [[0, 1, 2]]  # joined when taken
    assert [(m.topic, m.offset) for m in consumer.delivered] == [("other", 0)]
    assert consumer._read_offset[("other", 0)] == 0


@pytest.mark.parametrize(("acked", "commits"), [(9, 0), (10, 1)])
def test_broker_commit_every_is_honoured(acked: int, commits: int) -> None:
    consumer = FakeConsumer([_messages("web", [0])], commit_every=10, acked=acked)
    _drain(consumer, ["web"])
    assert consumer.commits == commits


def test_take_waits_up_to_within_for_a_full_batch() -> None:
    async def scenario() -> None:
        buffer: RecordBuffer[int] = RecordBuffer(capacity=100)
        await buffer.put([1])
        filling = asyncio.ensure_future(buffer.take(3, within=3600.0))
        await _settle()
        assert not filling.done()  # one record, three wanted: it waits
        await buffer.put([2])
        await _settle()
        assert not filling.done()
        await buffer.put([3, 4])
        assert await filling == [1, 2, 3]
        assert await buffer.take(3, within=0.01) == [4]  # fewer: taken once within passes

    asyncio.run(scenario())
