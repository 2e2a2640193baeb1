"""The membership index's pure parts: changes -> index writes, cursors, the in-memory index
(pagination stable while members change) and MemoryStore's index after a replay."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.members import brute_force

from segmentflow.config import config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.service.replay import run
from segmentflow.state.members import (
    CursorError,
    Member,
    MemberIndex,
    decode_cursor,
    encode_cursor,
    iter_members,
    member_ops,
)
from segmentflow.state.memory import MemoryStore
from segmentflow.synthetic import generate


def ch(cid: str, dim: str, prev: str | None, cur: str | None, at: int) -> Change:
    return Change(cid, dim, prev, cur, 1, at, None)


def test_entering_moving_and_leaving() -> None:
    ops = member_ops(
        [
            ch("a", "lifecycle", None, "prospect", 1),
            ch("b", "lifecycle", "new", "active", 2),
            ch("c", "rfm", "champions", None, 3),
        ]
    )
    assert ops.adds == {("lifecycle", "prospect"): {"a": 1}, ("lifecycle", "active"): {"b": 2}}
    assert ops.removes == {("lifecycle", "new"): {"b"}, ("rfm", "champions"): {"c"}}


def test_rule_segments_index_in_only() -> None:
    ops = member_ops(
        [
            ch("a", "rule:vip", "out", "in", 5),
            ch("b", "rule:vip", "in", "out", 6),
            ch("c", "rule:vip", "in", None, 7),
            ch("d", "rule:vip", None, "out", 8),
        ]
    )
    assert ops.adds == {("rule:vip", "in"): {"a": 5}}
    assert ops.removes == {("rule:vip", "in"): {"b", "c"}}


def test_net_effect_within_one_commit() -> None:
    # away and back in one batch: still a member, since the re-entry; the detour leaves no trace
    ops = member_ops(
        [
            ch("a", "lifecycle", "active", "at_risk", 10),
            ch("a", "lifecycle", "at_risk", "active", 20),
        ]
    )
    assert ops.adds == {("lifecycle", "active"): {"a": 20}}
    assert ops.removes == {("lifecycle", "at_risk"): {"a"}}
    # forgotten, then a new profile in the same batch
    ops = member_ops([ch("a", "rule:x", "in", None, 1), ch("a", "rule:x", "out", "in", 2)])
    assert ops.adds == {("rule:x", "in"): {"a": 2}} and ops.removes == {}
    assert member_ops([]).adds == {} and member_ops([]).removes == {}


def test_cursor_round_trip_and_bad_cursors() -> None:
    member = Member(1_748_600_100_000_000, "c,1/é\x1f")
    assert decode_cursor(encode_cursor(member)) == member
    for bad in ["", "!!!", "bm90IGpzb24", encode_cursor(Member(1, "x"))[:-3], "WzEsMl0"]:
        with pytest.raises(CursorError, match="next_cursor"):
            decode_cursor(bad)


def index_contents(
    index: MemberIndex, segments: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, int]]:
    out = {}
    for dim, value in segments:
        found = {m.customer_id: m.since for m in iter_members(index, dim, value, page_size=7)}
        if found:
            out[(dim, value)] = found
    return out


def test_memory_store_index_equals_change_stream_and_populations() -> None:
    start = datetime(2025, 9, 1, tzinfo=UTC)
    events = []
    for message in generate(customers=120, seed=5, start=start, days=60, scale=0.25):
        if message.event is not None and not message.duplicate:
            event = validate_event(message.event, None)
            assert isinstance(event, Event)
            events.append(event)
    config = config_from_dict({"rules": [{"name": "repeat", "when": "orders_30d >= 2"}]})
    changes: list[Change] = []
    store = MemoryStore()
    processor, _ = run(events, config, events[-1].ts + 120 * 86_400_000_000, changes.append, store)
    forgotten = changes[0].customer_id
    changes.extend(processor.forget(forgotten))
    expected = brute_force(changes)
    populations = store.populations()
    segments = [(d, v) for d, values in populations.items() for v in values]
    assert index_contents(store.members, segments) == expected
    assert {(d, v): store.members.count(d, v) for d, v in segments} == {
        (d, v): n for d, values in populations.items() for v, n in values.items()
    }
    assert all(forgotten not in members for members in expected.values())
    assert len(changes) > 300


# hypothesis: pages read while members enter and leave never skip or repeat a steady member
ids = st.sampled_from([f"c{n}" for n in range(12)] + ["é", "z\u00ff", "Z"])
moves = st.lists(st.tuples(ids, st.booleans(), st.integers(0, 4)), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.dictionaries(ids, st.integers(0, 4), max_size=15),
    churn=st.lists(moves, min_size=1, max_size=8),
    limit=st.integers(1, 4),
)
def test_pagination_stable_while_members_change(
    initial: dict[str, int], churn: list[list[tuple[str, bool, int]]], limit: int
) -> None:
    index = MemberIndex()
    index.apply([ch(cid, "rule:x", "out", "in", at) for cid, at in initial.items()])
    touched = {cid for step in churn for cid, _, _ in step}
    steady = {cid for cid in initial if cid not in touched}
    seen: list[str] = []
    after = None
    for step in [*churn, *([[]] * 20)]:
        page = index.page("rule:x", "in", limit, after)
        assert page == sorted(page, key=lambda m: m.customer_id.encode())
        seen.extend(m.customer_id for m in page)
        if not page:
            break
        after = page[-1]
        for cid, enters, at in step:  # the moving ones leave or (re-)enter, possibly earlier
            index.apply(
                [ch(cid, "rule:x", "in" if not enters else "out", "in" if enters else "out", at)]
            )
    assert steady <= set(seen)
    assert all(seen.count(cid) == 1 for cid in steady)


_VALUES = st.sampled_from([None, "a", "b", "c", "in", "out"])
_CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["x", "y", "z"]),
        st.sampled_from(["lifecycle", "rule:vip"]),
        _VALUES,
        _VALUES,
        st.integers(0, 50),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(before=_CHANGES, commit=_CHANGES)
def test_in_memory_index_applies_exactly_the_member_ops(
    before: list[tuple[str, str, str | None, str | None, int]],
    commit: list[tuple[str, str, str | None, str | None, int]],
) -> None:
    # the in-memory index makes the writes as it reads the net effects (no MemberOps): the
    # same segments, members and entry times as applying member_ops' removes, then its adds,
    # also for change lists whose `previous` does not chain (an index that drifted)
    index = MemberIndex()
    reference: dict[tuple[str, str], dict[str, int]] = {}
    for changes in ([ch(*c) for c in before], [ch(*c) for c in commit]):
        index.apply(changes)
        ops = member_ops(changes)
        for segment, gone in ops.removes.items():
            for cid in gone:
                reference.get(segment, {}).pop(cid, None)
        for segment, entered in ops.adds.items():
            reference.setdefault(segment, {}).update(entered)
        assert index._segments == reference
