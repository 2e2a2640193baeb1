"""The event-time watermark on a fake monotonic clock: fetch high-water marks replace ListOffsets
guesses, empty or idle partitions never freeze it, lagging partitions with unread data hold it."""

from __future__ import annotations

from segmentflow.engine.clock import Watermark


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watermark(idle: float = 30.0) -> tuple[Watermark, FakeClock]:
    clock = FakeClock()
    return Watermark(idle_timeout=idle, clock=clock), clock


def test_the_slowest_lagging_partition_holds_the_clock() -> None:
    w, _ = watermark()
    w.assign(["a", "b"])
    w.set_end("a", 10)
    w.set_end("b", 10)
    w.observe("a", 0, 500)
    assert w.value() is None  # b not read yet: it could hold anything
    w.observe("b", 0, 100)
    assert w.value() == 100
    w.observe("b", 9, 900)  # b read to its end
    assert w.value() == 500
    w.observe("a", 9, 950)
    assert w.value() == 950  # none lags: the latest read


def test_a_too_high_guess_is_replaced_by_the_fetch_high_water_mark() -> None:
    """The freeze of issue 11 (finding 8): an end offset kept as the max of every answer let one
    too-high answer make an empty partition lag for ever."""
    w, _ = watermark()
    w.assign(["buy", "web"])
    w.set_end("buy", 5)
    w.observe("buy", 4, 700)
    w.set_end("web", 3, exact=False)  # ListOffsets guess for an empty partition: wrong
    assert w.value() is None
    w.set_end("web", 0)  # the fetch says: empty
    assert w.value() == 700
    w.set_end("web", 7, exact=False)  # a later guess does not override the fetch
    assert w.holding() == []


def test_a_fetch_mark_replaces_a_higher_earlier_one() -> None:
    w, _ = watermark()
    w.assign(["a"])
    w.set_end("a", 50)
    w.set_end("a", 3)  # replaces, not max
    w.observe("a", 2, 10)
    assert w.holding() == [] and w.value() == 10
    assert w.lag() == {"a": 0}


def test_an_end_below_what_was_read_counts_what_was_read() -> None:
    w, _ = watermark()
    w.assign(["a"])
    w.observe("a", 9, 10)
    w.set_end("a", 4, exact=False)  # Tansu: base offset of the last batch + 1
    assert w.lag() == {"a": 0} and w.value() == 10


def test_a_partition_without_a_fetch_mark_stops_holding_after_idle_timeout() -> None:
    w, clock = watermark(idle=30)
    w.assign(["buy", "web"])
    w.set_end("buy", 2)
    w.observe("buy", 0, 100)
    w.observe("buy", 1, 200)
    assert w.value() is None  # web's end unknown, nothing read: could hold anything
    clock.now += 29
    assert w.value() is None and w.holding() == ["web"]
    clock.now += 2
    assert w.holding() == [] and w.value() == 200
    # a message arriving later holds it again until read to the end the fetch reports
    w.set_end("web", 1)
    assert w.holding() == ["web"]


def test_guessed_unread_data_idle_for_the_timeout_stops_holding() -> None:
    w, clock = watermark(idle=10)
    w.assign(["a", "b"])
    w.set_end("a", 1)
    w.observe("a", 0, 100)
    w.set_end("b", 5, exact=False)
    w.observe("b", 0, 50)
    assert w.value() == 50
    clock.now += 11
    assert w.value() == 100


def test_exact_unread_data_holds_however_long_it_waits() -> None:
    w, clock = watermark(idle=10)
    w.assign(["a", "b"])
    w.set_end("a", 1)
    w.observe("a", 0, 100)
    w.set_end("b", 5)
    w.observe("b", 0, 50)
    moved = w.value()
    clock.now += 3600
    assert w.value() == moved == 50
    assert w.holding() == ["b"]
    assert w.stalled_seconds() == 3600


def test_never_backwards_and_lateness() -> None:
    w = Watermark(allowed_lateness=10, clock=FakeClock())
    w.assign(["a", "b"])
    w.set_end("a", 1)
    w.observe("a", 0, 100)
    w.set_end("b", 0)
    assert w.value() == 90
    w.set_end("b", 1)  # new data on b: raw goes back (b not read yet), the value does not
    assert w.raw() is None and w.value() == 90


def test_stalled_seconds_counts_from_the_last_move() -> None:
    w, clock = watermark()
    w.assign(["a"])
    w.set_end("a", 2)
    w.observe("a", 0, 100)
    w.value()
    clock.now += 5
    assert w.stalled_seconds() == 5
    w.observe("a", 1, 200)
    w.value()
    assert w.stalled_seconds() == 0


def test_assign_keeps_known_partitions_and_drops_others() -> None:
    w, _ = watermark()
    w.assign(["a", "b"])
    w.set_end("a", 1)
    w.observe("a", 0, 100)
    w.assign(["a", "c"])
    w.set_end("c", 0)
    assert w.value() == 100 and set(w.lag()) == {"a", "c"}
