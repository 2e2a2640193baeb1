"""RFM (CONTRACT §3 "Default RFM"): scores, the segment map, the rank index, and agreement of
replay's final values with an exact computation written from the contract's words on 10k
customers."""

from __future__ import annotations

import bisect
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentflow.bootstrap import replay_events
from segmentflow.config import DEFAULT_RFM_SEGMENTS, config_from_dict
from segmentflow.schemas.timefmt import from_datetime
from segmentflow.segmenters.rfm import (
    CountColumn,
    RankIndex,
    SegmentMap,
    SortedColumn,
    score,
)

START = datetime(2025, 1, 1, tzinfo=UTC)


def test_score_formula_edges() -> None:
    assert score(0, 1) == 1
    assert [score(w, 5) for w in range(5)] == [1, 2, 3, 4, 5]
    assert score(99, 100) == 5 and score(19, 100) == 1 and score(20, 100) == 2


def test_default_map_covers_every_pair_once() -> None:
    table = SegmentMap.parse(DEFAULT_RFM_SEGMENTS).table
    assert len(table) == 25 and "other" not in table.values()
    assert table[(5, 1)] == "new_customers" and table[(2, 5)] == "cannot_lose"


def test_bad_pattern_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad pattern"):
        SegmentMap.parse({"x": "5-4"})


def test_rank_index_ties_share_a_score_and_removal_works() -> None:
    ranks = RankIndex()
    for cid, orders in [("a", 1), ("b", 1), ("c", 5)]:
        ranks.update(cid, (10, orders, 10.0))
    assert ranks.scores("a") == ranks.scores("b") == (1, 1, 1)
    assert ranks.scores("c") == (1, 1 + 5 * 2 // 3, 1)
    ranks.update("c", None)
    assert ranks.get("c") is None and len(ranks) == 2


def _orders(customers: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(customers):
        for k in range(rng.choice([1, 1, 2, 3, 5, 8])):
            at = START + timedelta(seconds=rng.randrange(300 * 86_400))
            revenue = round(rng.lognormvariate(3.5, 1.0), 2)
            events.append(
                {
                    "event_id": f"o-{n}-{k}",
                    "customer_id": f"c-{n}",
                    "type": "order_completed",
                    "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": {"order_id": f"o-{n}-{k}", "revenue": revenue, "currency": "EUR"},
                }
            )
    events.sort(key=lambda e: e["timestamp"])
    return events


def _exact(events: list[dict[str, Any]]) -> dict[str, str]:
    """§3 from its words: for each customer, count customers strictly worse on R, F, M."""
    last: dict[str, str] = {}
    orders: dict[str, int] = {}
    revenue: dict[str, float] = {}
    for e in events:
        cid = e["customer_id"]
        last[cid] = max(last.get(cid, ""), e["timestamp"])
        orders[cid] = orders.get(cid, 0) + 1
        revenue[cid] = revenue.get(cid, 0.0) + e["properties"]["revenue"]
    population = sorted(last)
    n = len(population)
    sorted_last = sorted(last.values())
    sorted_orders = sorted(orders.values())
    sorted_revenue = sorted(revenue.values())
    names = SegmentMap.parse(DEFAULT_RFM_SEGMENTS)
    out = {}
    for cid in population:
        r = min(5, 1 + 5 * bisect.bisect_left(sorted_last, last[cid]) // n)  # strictly older
        f = min(5, 1 + 5 * bisect.bisect_left(sorted_orders, orders[cid]) // n)  # fewer
        _m = min(5, 1 + 5 * bisect.bisect_left(sorted_revenue, revenue[cid]) // n)  # lower
        out[cid] = names.name(r, f)
    return out


def test_replay_agrees_with_exact_scores_on_10k_customers() -> None:
    events = _orders(10_000, seed=1)
    until = START + timedelta(days=301)
    config = config_from_dict({"persona": {"enabled": False}})
    changes = replay_events(events, config, from_datetime(until))
    final: dict[str, str | None] = {}
    for change in changes:
        if change["data"]["dimension"] == "rfm":
            final[change["subject"]] = change["data"]["current"]
    exact = _exact(events)
    assert len(exact) == 10_000
    agree = sum(final.get(cid) == segment for cid, segment in exact.items()) / len(exact)
    print(f"RFM agreement with exact scores on {len(exact)} customers: {agree:.2%}")
    assert agree >= 0.95
    assert agree == 1.0  # replay ends with an exact sweep at --until


# -- the rank index against the contract's definition (brute force) ------------------------


def _brute(metrics: dict[str, tuple[int, int, float]]) -> dict[str, tuple[int, int, int]]:
    """§3 from its words: w = customers strictly worse; score = min(5, 1 + floor(5 w / |P|))."""
    n = len(metrics)
    out = {}
    for cid, mine in metrics.items():
        r, f, m = (
            min(5, 1 + (5 * sum(other[j] < mine[j] for other in metrics.values())) // n)
            for j in range(3)
        )
        out[cid] = (r, f, m)
    return out


_ids = st.sampled_from([f"c{i}" for i in range(25)])
_metrics = st.tuples(
    st.integers(0, 6), st.integers(1, 4), st.sampled_from([0.0, 1.5, 2.0, 7.25, 100.0])
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("update"), _ids, _metrics),
        st.tuples(st.just("delete"), _ids, st.none()),
        st.tuples(st.just("record"), _ids, st.none()),
        st.tuples(st.just("sweep"), st.none(), st.none()),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, capacity=st.sampled_from([1, 2, 1024]))
def test_rank_index_matches_the_definition_after_random_operations(
    ops: list[tuple[str, str | None, tuple[int, int, float] | None]], capacity: int
) -> None:
    """Scores, sweeps (who moved, in insertion order) and recorded scores equal a brute-force
    model after any mix of updates, deletes (slot reuse), records and sweeps."""
    ranks = RankIndex(capacity)
    metrics: dict[str, tuple[int, int, float]] = {}  # insertion-ordered, like the index
    recorded: dict[str, tuple[int, int, int]] = {}
    for op, cid, value in ops:
        if op == "update":
            assert cid is not None and value is not None
            ranks.update(cid, value)
            metrics[cid] = value
        elif op == "delete":
            assert cid is not None
            ranks.update(cid, None)
            metrics.pop(cid, None)
            recorded.pop(cid, None)
        elif op == "record" and cid in metrics:
            assert cid is not None
            given_scores = _brute(metrics)[cid]
            ranks.record(cid, given_scores)
            recorded[cid] = given_scores
        elif op == "sweep":
            expected = _brute(metrics)
            moved = [(c, s) for c, s in expected.items() if recorded.get(c) != s]
            assert ranks.sweep() == moved
            for c, s in moved[::2]:  # the engine records what it gives; leave some unrecorded
                ranks.record(c, s)
                recorded[c] = s
        assert len(ranks) == len(metrics)
    expected = _brute(metrics)
    for cid in metrics:
        assert ranks.scores(cid) == expected[cid]
        assert ranks.get(cid) == metrics[cid]
        assert ranks.recorded(cid) == recorded.get(cid)
    assert list(ranks.customers()) == list(metrics)
    if metrics:
        cuts = ranks.thresholds()
        for cid, (r, f, m) in expected.items():
            counted = [1 + sum(v > c for c in cuts[j]) for j, v in enumerate(metrics[cid])]
            assert counted == [r, f, m]


_scores = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))


def _state(ranks: RankIndex) -> tuple[Any, ...]:
    ids = list(ranks.customers())
    return (
        ids,
        [ranks.get(c) for c in ids],
        [ranks.scores(c) for c in ids],
        [ranks.recorded(c) for c in ids],
        ranks.thresholds() if ids else None,
    )


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(st.tuples(_ids, _metrics, st.none() | _scores), max_size=60),
    ops=_ops,
    capacity=st.sampled_from([1, 2, 1024]),
)
def test_bulk_load_equals_one_update_and_record_at_a_time(
    entries: list[tuple[str, tuple[int, int, float], tuple[int, int, int] | None]],
    ops: list[tuple[str, str | None, tuple[int, int, float] | None]],
    capacity: int,
) -> None:
    """``RankIndex.load`` (the rank sync's attach) builds the same index as ``update`` and
    ``record`` per entry (repeats included), and the index keeps working after it."""
    bulk, single = RankIndex(capacity), RankIndex(capacity)
    bulk.load([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries])
    for cid, metrics, given_scores in entries:
        single.update(cid, metrics)
        if given_scores is not None:
            single.record(cid, given_scores)
    assert _state(bulk) == _state(single)
    assert bulk.sweep() == single.sweep()
    for op, who, value in ops:
        for ranks in (bulk, single):
            if op == "update":
                assert who is not None
                ranks.update(who, value)
            elif op == "delete":
                assert who is not None
                ranks.update(who, None)
            elif op == "record" and who is not None and ranks.get(who) is not None:
                ranks.record(who, (1, 2, 3))
        if op == "sweep":
            assert bulk.sweep() == single.sweep()
        assert _state(bulk) == _state(single)
    for ranks in (bulk, single):  # on a filled index: one by one
        ranks.load([e[0] for e in entries[:5]], [e[1] for e in entries[:5]])
    assert _state(bulk) == _state(single) and bulk.sweep() == single.sweep()


_values = st.integers(0, 30)
_column_ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "remove", "move"]), _values, _values), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(start=st.lists(_values, max_size=80), ops=_column_ops, load=st.sampled_from([1, 4, 8, 16]))
def test_columns_rank_like_a_sorted_list(
    start: list[int], ops: list[tuple[str, int, int]], load: int
) -> None:
    """``SortedColumn`` (split and merged sublists: a tiny ``LOAD``) and ``CountColumn`` give
    the ranks, order statistics and sizes of a plain sorted list after adds, removes, moves."""
    model = sorted(start)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SortedColumn, "LOAD", load)
        columns: list[Any] = [SortedColumn(model), CountColumn(start)]
        for op, a, b in ops:
            if op == "add":
                bisect.insort(model, a)
                for column in columns:
                    column.add(a)
            elif a in model:
                model.remove(a)
                if op == "move":
                    bisect.insort(model, b)
                for column in columns:
                    if op == "move" and isinstance(column, CountColumn):
                        column.move(a, b)
                    else:
                        column.remove(a)
                        if op == "move":
                            column.add(b)
            else:
                for column in columns:
                    with pytest.raises(ValueError):
                        column.remove(a)
            for column in columns:
                assert len(column) == len(model)
                assert [column.rank(v) for v in range(-1, 33)] == [
                    bisect.bisect_left(model, v) for v in range(-1, 33)
                ]
                assert [column[k] for k in range(len(model))] == model
        sorted_column = columns[0]
        assert all(0 < size <= 2 * load for size in sorted_column.lens)
        assert sorted_column.maxes == [sub[-1] for sub in sorted_column.lists]


def test_sorted_column_splits_and_merges_under_churn() -> None:
    """Thousands of random adds and removes (recency-like: new values at the top, old ones
    leaving from anywhere) through sublists of 4: ranks and order statistics stay exact."""
    rng = random.Random(5)
    model: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SortedColumn, "LOAD", 4)
        column = SortedColumn()
        for step in range(4000):
            if model and rng.random() < 0.45:
                value = model[rng.randrange(len(model))]
                model.remove(value)
                column.remove(value)
            else:
                value = step if rng.random() < 0.5 else rng.randrange(step + 1)
                bisect.insort(model, value)
                column.add(value)
            probe = rng.randrange(-1, step + 2)
            assert column.rank(probe) == bisect.bisect_left(model, probe)
            assert len(column) == len(model)
        assert [column[k] for k in range(len(model))] == model
        assert sum(column.lens) == len(model) and max(column.lens) <= 8


def test_count_column_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="negative"):
        CountColumn([-1])
    with pytest.raises(ValueError, match="negative"):
        CountColumn().add(-2)


def test_sweep_with_nothing_changed_reuses_its_scores_and_include_filters() -> None:
    ranks = RankIndex()
    for i in range(10):
        ranks.update(f"c{i}", (i, 1 + i % 3, float(i)))
    version = ranks.version
    moved = ranks.sweep(lambda cid: cid != "c3")
    assert [cid for cid, _ in moved] == [f"c{i}" for i in range(10) if i != 3]
    for cid, s in moved:
        ranks.record(cid, s)
    assert ranks.version == version  # records do not count as metric changes
    assert ranks.sweep(lambda cid: cid != "c3") == []
    assert [cid for cid, _ in ranks.sweep()] == ["c3"]  # not recorded: still moved
    ranks.update("c0", (0, 1, 0.0))  # the same metrics: no change
    assert ranks.version == version


def _with_gap(events: list[dict[str, Any]], days: int) -> list[dict[str, Any]]:
    """The second half of ``events`` moved ``days`` later: a silence in event time."""
    half = len(events) // 2
    out = events[:half]
    for e in events[half:]:
        at = datetime.strptime(e["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        out.append({**e, "timestamp": (at + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return out


def test_a_year_gap_runs_no_sweep_per_day_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sweeps with no metric change in between collapse: same changes, same ``rfm_swept`` and
    next sweep as sweeping every day, with a handful of population sweeps for the gap."""
    from segmentflow.schemas.decode import Limits
    from segmentflow.service.processor import SWEPT, Processor
    from segmentflow.service.replay import events_from_dicts, run
    from segmentflow.state.memory import MemoryStore

    events = _with_gap(_orders(300, seed=3), days=3 * 365)
    config = config_from_dict({"persona": {"enabled": False}})
    until = from_datetime(START + timedelta(days=4 * 365))

    def replay(collapse: bool) -> tuple[list[bytes], int | None, int | None, int]:
        sweeps = 0
        original = RankIndex.sweep

        def counting(self: RankIndex, include: Any = None) -> Any:
            nonlocal sweeps
            sweeps += 1
            return original(self, include)

        with monkeypatch.context() as patch:
            patch.setattr(RankIndex, "sweep", counting)
            if not collapse:
                patch.setattr(Processor, "_sweep_unchanged", lambda self: False)
            store = MemoryStore()
            out: list[bytes] = []
            decoded = events_from_dicts(events, Limits())
            processor, _ = run(decoded, config, until, lambda c: out.append(c.to_json()), store)
        return out, store.get_meta(SWEPT), processor.next_sweep, sweeps

    fast, fast_swept, fast_next, fast_sweeps = replay(True)
    slow, slow_swept, slow_next, slow_sweeps = replay(False)
    assert fast == slow
    assert (fast_swept, fast_next) == (slow_swept, slow_next)
    assert slow_sweeps > 4 * 365 - 10  # one per day of event time
    assert fast_sweeps <= 302  # one after each of the ~300 days with orders, + the last one
