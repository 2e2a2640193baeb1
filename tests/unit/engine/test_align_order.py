"""engine/align.py: items leave in (timestamp, arrival) order once the watermark reaches them;
a partition's items never overtake each other; draining and peeking keep everything."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from segmentflow.engine.align import Aligner


def test_nothing_leaves_before_the_watermark_reaches_it() -> None:
    a: Aligner[str] = Aligner()
    a.add(10, "x")
    assert list(a.release(None)) == []
    assert list(a.release(9)) == []
    assert len(a) == 1 and a.oldest() == 10
    assert list(a.release(10)) == ["x"]  # inclusive
    assert len(a) == 0 and a.oldest() is None


def test_ties_leave_in_arrival_order() -> None:
    a: Aligner[int] = Aligner()
    for n in range(5):
        a.add(7, n)
    assert list(a.release(7)) == [0, 1, 2, 3, 4]


def test_a_partition_stepping_back_keeps_offset_order() -> None:
    a: Aligner[str] = Aligner()
    a.add(100, "p0", partition=("web", 0))
    a.add(40, "p1", partition=("web", 0))  # keyed at 100: behind p0
    a.add(50, "q0", partition=("buy", 0))  # another partition is not held back by it
    assert list(a.release(60)) == ["q0"]
    assert list(a.release(100)) == ["p0", "p1"]


def test_release_is_lazy_and_resumable() -> None:
    a: Aligner[int] = Aligner()
    for n in range(4):
        a.add(n, n)
    released = a.release(10)
    assert next(released) == 0
    assert len(a) == 3  # only what was taken left the heap
    assert sorted(a.held()) == [1, 2, 3]
    assert list(a.drain()) == [1, 2, 3]
    assert len(a) == 0


def test_held_removes_nothing() -> None:
    a: Aligner[str] = Aligner()
    a.add(2, "b")
    a.add(1, "a")
    assert sorted(a.held()) == ["a", "b"]
    assert len(a) == 2
    assert list(a.drain()) == ["a", "b"]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1000)),  # (partition, timestamp)
        max_size=60,
    ),
    st.integers(0, 1000),
)
def test_released_items_are_sorted_by_key_and_partitions_keep_their_order(
    items: list[tuple[int, int]], watermark: int
) -> None:
    a: Aligner[tuple[int, int]] = Aligner()
    keys: dict[int, int] = {}
    expected = []
    for seq, (partition, ts) in enumerate(items):
        key = max(ts, keys.get(partition, ts))
        keys[partition] = key
        expected.append((key, seq, (partition, seq)))
        a.add(ts, (partition, seq), partition=partition)
    out = list(a.release(watermark))
    assert out == [item for key, _, item in sorted(expected) if key <= watermark]
    for partition in range(4):
        seqs = [seq for p, seq in out if p == partition]
        assert seqs == sorted(seqs)
    assert len(out) + len(a) == len(items)


def test_many_partitions_merge_like_a_sort() -> None:
    rng = random.Random(5)
    a: Aligner[int] = Aligner()
    stamps = [rng.randrange(10_000) for _ in range(500)]
    for n, ts in enumerate(stamps):
        a.add(ts, n)
    out = list(a.release(10_000))
    assert [stamps[n] for n in out] == sorted(stamps)
