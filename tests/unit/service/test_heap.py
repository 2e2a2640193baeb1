"""segmentflow/service/heap.py: the collector schedule, with a fake ``gc`` and a fake clock."""

from __future__ import annotations

import math

import pytest

from segmentflow.service.heap import CollectorSchedule


class FakeGc:
    """What ``gc`` offers the schedule, recording the calls."""

    def __init__(self, enabled: bool = True, frozen: int = 0) -> None:
        self.enabled, self.frozen = enabled, frozen
        self.calls: list[str] = []

    def isenabled(self) -> bool:
        return self.enabled

    def get_freeze_count(self) -> int:
        return self.frozen

    def disable(self) -> None:
        self.enabled = False
        self.calls.append("disable")

    def enable(self) -> None:
        self.enabled = True
        self.calls.append("enable")

    def collect(self) -> int:
        self.calls.append("collect")
        return 0

    def freeze(self) -> None:
        self.frozen += 1
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.frozen = 0
        self.calls.append("unfreeze")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def schedule(fake: FakeGc, clock: Clock, **options: float) -> CollectorSchedule:
    return CollectorSchedule(clock=clock, collector=fake, **options)  # type: ignore[arg-type]


def test_collects_and_freezes_every_n_events_and_hands_back() -> None:
    fake, clock = FakeGc(), Clock()
    heap = schedule(fake, clock, every_events=100, every_seconds=math.inf, thaw_every=0)
    with heap.running():
        assert fake.calls == ["disable"] and heap.active
        for _ in range(25):
            heap.seen(10)
        assert heap.collections == 2  # at 100 and 200 events, not before
        assert fake.calls[1:] == ["collect", "freeze", "collect", "freeze"]
    assert fake.calls[-2:] == ["unfreeze", "enable"] and fake.enabled and not heap.active


def test_time_alone_makes_a_collection_due() -> None:
    fake, clock = FakeGc(), Clock()
    heap = schedule(fake, clock, every_events=10**9, every_seconds=60.0)
    heap.start()
    clock.now += 59.9
    assert not heap.due()
    clock.now += 0.2
    assert heap.due()
    heap.collect()
    assert not heap.due() and heap.collections == 1


def test_every_nth_collection_thaws_first() -> None:
    fake, clock = FakeGc(), Clock()
    heap = schedule(fake, clock, every_events=1, every_seconds=math.inf, thaw_every=3)
    heap.start()
    for _ in range(7):
        heap.seen(1)
    assert heap.thaws == 2  # the 3rd and the 6th
    assert fake.calls.count("unfreeze") == 2 and fake.calls.count("collect") == 7


def test_growth_spaces_collections_out() -> None:
    fake, clock = FakeGc(), Clock()
    heap = schedule(fake, clock, every_events=100, every_seconds=math.inf, grow=0.5)
    heap.start()
    for _ in range(1000):
        heap.seen(10)
    # then +max(100, half of what was seen): 100, 200, 300, 450, 680, 1020, 1530, 2300, 3450,
    # 5180, 7770 (events arrive 10 at a time)
    assert heap.collections == 11


@pytest.mark.parametrize("fake", [FakeGc(enabled=False), FakeGc(frozen=5)])
def test_a_process_that_manages_its_collector_is_left_alone(fake: FakeGc) -> None:
    heap = schedule(fake, Clock(), every_events=1)
    with heap.running():
        heap.seen(10)
        assert not heap.active and not heap.due()
    assert fake.calls == [] and heap.collections == 0


def test_not_started_counts_but_never_collects() -> None:
    fake = FakeGc()
    heap = schedule(fake, Clock(), every_events=1)
    heap.seen(1000)
    heap.collect()
    assert fake.calls == [] and heap.collections == 0
    assert heap.start() and not heap.start()  # started once
    heap.stop()
    heap.stop()
    assert fake.calls == ["disable", "enable"]
