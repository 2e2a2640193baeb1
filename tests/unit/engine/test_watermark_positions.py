"""engine/clock.py beyond tests/unit/engine/test_clock.py: positions and lag, messages without a
timestamp, which partitions hold the clock, ``raw`` against ``value`` (fake monotonic clock)."""

from __future__ import annotations

from segmentflow.engine.clock import Watermark


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 50.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lag_counts_unread_messages_per_partition() -> None:
    w = Watermark(clock=FakeClock())
    w.assign(["a", "b", "c"])
    w.set_end("a", 10)
    w.set_position("a", 4)  # committed offset at assignment
    w.observe("b", offset=2, timestamp=5)
    assert w.lag() == {"a": 6, "b": 0, "c": 0}  # unknown ends count 0 unread
    w.set_end("b", 7)
    w.observe("a", offset=9, timestamp=8)
    assert w.lag() == {"a": 0, "b": 4, "c": 0}


def test_a_position_beyond_the_end_moves_the_end() -> None:
    w = Watermark(clock=FakeClock())
    w.assign(["a"])
    w.set_end("a", 3)
    w.set_position("a", 5)
    assert w.lag() == {"a": 0}
    w.set_position("a", 2)  # positions never go back
    assert w.lag() == {"a": 0}


def test_has_read_knows_read_messages_and_known_positions() -> None:
    w = Watermark(clock=FakeClock())
    w.assign(["a", "b", "c"])
    w.observe("a", offset=0, timestamp=None)  # a dead letter: read, no event time
    w.set_position("b", 3)
    assert w.has_read("a") and w.has_read("b")
    assert not w.has_read("c")
    assert not w.has_read("never-assigned")


def test_a_message_without_timestamp_moves_the_position_not_the_clock() -> None:
    w = Watermark(clock=FakeClock())
    w.assign(["a"])
    w.set_end("a", 2)
    w.observe("a", offset=0, timestamp=100)
    w.observe("a", offset=1, timestamp=None)
    assert w.lag() == {"a": 0}
    assert w.value() == 100


def test_holding_lists_the_partitions_that_hold_the_clock_back() -> None:
    clock = FakeClock()
    w = Watermark(idle_timeout=30, clock=clock)
    w.assign(["exact", "guessed", "done"])
    w.set_end("exact", 10)  # a fetch high-water mark: holds however long
    w.set_end("guessed", 10, exact=False)  # a ListOffsets guess: holds until idle
    w.set_end("done", 1)
    w.observe("done", offset=0, timestamp=70)
    assert sorted(map(str, w.holding())) == ["exact", "guessed"]
    clock.now += 30
    assert w.holding() == ["exact"]
    w.observe("exact", offset=9, timestamp=60)
    assert w.holding() == []
    assert w.raw() == 70  # none holds: the latest read anywhere


def test_raw_is_before_lateness_and_may_go_back_value_does_not() -> None:
    clock = FakeClock()
    w = Watermark(allowed_lateness=10, clock=clock)
    w.assign(["a"])
    w.observe("a", offset=0, timestamp=100)
    assert (w.raw(), w.value()) == (100, 90)
    w.assign(["b"])  # a rebalance: a goes, b is new and unread
    w.set_end("b", 5)
    assert w.raw() is None
    assert w.value() == 90  # never backwards, never forgotten
    moved = w.moved_at
    clock.now += 12.5
    w.observe("b", offset=4, timestamp=95)  # raw 95 - 10 = 85 < 90: no move
    assert w.value() == 90 and w.moved_at == moved
    assert w.stalled_seconds() == 12.5
