"""The membership index in a real Redis: after a replay it equals a brute-force recomputation
from the change stream, the populations ``segments`` counts and the MemoryStore's index; forget
removes the customer everywhere; the paging script agrees with the in-memory index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.members import brute_force, write_members

from segmentflow.config import config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.service.replay import run
from segmentflow.state.keys import Keys
from segmentflow.state.members import (
    SEP,
    Member,
    MemberIndex,
    RedisMembers,
    iter_members,
    reader_for,
)
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration

DAY = 86_400_000_000
CONFIG = {
    "rules": [
        {"name": "repeat", "when": "orders_30d >= 2"},
        {"name": "idle", "when": "days_since_last_seen >= 21"},
    ]
}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    c: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def events(customers: int, seed: int) -> list[Event]:
    start = datetime(2025, 9, 1, tzinfo=UTC)
    out = []
    for message in generate(customers=customers, seed=seed, start=start, days=75, scale=0.25):
        if message.event is not None and not message.duplicate:
            event = validate_event(message.event, None)
            assert isinstance(event, Event)
            out.append(event)
    return out


def stored_index(client: redis.Redis[bytes], ns: str) -> dict[tuple[str, str], dict[str, int]]:
    """Every member under ``ns`` read raw (SCAN + HGETALL of the chunks), not through the code
    under test; the chunks of every home partition and segment
    (``{ns:pP}:mc:<dim>\x1f<value>\x1e<bound>``) merged."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for key in client.scan_iter(match=f"{{{ns}:p*}}:mc:*", count=1000):
        segment = key.decode().partition("}:mc:")[2].rpartition("\x1e")[0]
        dim, _, value = segment.partition(SEP)
        rows = client.hgetall(key)
        out.setdefault((dim, value), {}).update({cid.decode(): int(s) for cid, s in rows.items()})
    return out


def test_index_after_replay_equals_change_stream_populations_and_memory(
    redis_url: str, namespace: str, client: redis.Redis[bytes]
) -> None:
    evs = events(200, 23)
    until = evs[-1].ts + 200 * DAY
    changes: list[Change] = []
    store = RedisStore(redis_url, namespace, shards=4)
    memory = MemoryStore()
    try:
        processor, _ = run(evs, config_from_dict(CONFIG), until, changes.append, store)
        run(evs, config_from_dict(CONFIG), until, lambda c: None, memory)
        expected = brute_force(changes)
        assert len(changes) > 500 and len(expected) >= 8
        assert stored_index(client, namespace) == expected
        counts = {(d, v): n for d, vs in store.populations().items() for v, n in vs.items()}
        assert {seg: len(members) for seg, members in expected.items()} == counts
        reader = reader_for(store)
        for dim, value in expected:
            via_pages = list(iter_members(reader, dim, value, page_size=13))
            assert via_pages == list(iter_members(memory.members, dim, value, page_size=1000))
            assert {m.customer_id: m.since for m in via_pages} == expected[(dim, value)]

        # forget: gone from every segment, in the same commit as its final changes
        victim = max(changes, key=lambda c: c.at).customer_id
        held = [seg for seg, members in expected.items() if victim in members]
        assert held
        drifted = ("lifecycle", "churned")
        write_members(
            client, Keys(namespace).part(store.shard_of(victim)), drifted, [], {victim: 1}
        )
        changes.extend(processor.forget(victim))
        after = stored_index(client, namespace)
        assert all(victim not in members for members in after.values())
        assert after == {seg: m for seg, m in brute_force(changes).items()}
    finally:
        store.close()


@pytest.fixture
def members(client: redis.Redis[bytes], namespace: str) -> RedisMembers:
    return RedisMembers(client, namespace, PARTS)


#: home partitions the paging tests spread members over (a page merges their pages)
PARTS = 3


def _spread(
    client: redis.Redis[bytes], ns: str, seg: tuple[str, str], rows: dict[str, int]
) -> None:
    """Add ``rows`` to the segment's chunks (of 4 at most, so they split), each member in the
    partition its id picks."""
    for cid, since in rows.items():
        write_members(client, Keys(ns).part(part_of(cid)), seg, [], {cid: since}, most=4)


def part_of(cid: str) -> int:
    return sum(cid.encode()) % PARTS


def test_pages_in_id_order_a_vanished_cursor_and_non_ascii_ids(
    members: RedisMembers, client: redis.Redis[bytes], namespace: str
) -> None:
    seg = ("rule:x", "in")
    ids = ["a", "b", "é", "Z", "zz", "a\u00ff", "\u4e2d", "b2", "early", "late"]
    _spread(client, namespace, seg, {cid: 100 + n for n, cid in enumerate(ids)})
    assert len({part_of(cid) for cid in ids}) == PARTS  # the merge across partitions is tested
    expected = sorted(
        (Member(100 + n, cid) for n, cid in enumerate(ids)), key=lambda m: m.customer_id.encode()
    )
    assert list(iter_members(members, "rule:x", "in", page_size=3)) == expected
    cursor = expected[4]
    part = Keys(namespace).part(part_of(cursor.customer_id))
    write_members(client, part, seg, [cursor.customer_id], {})  # the cursor's member leaves
    assert members.page("rule:x", "in", 100, cursor) == expected[5:]
    write_members(client, part, seg, [], {cursor.customer_id: 50})  # ... and comes back
    assert members.page("rule:x", "in", 100, cursor) == expected[5:]
    assert members.page("rule:x", "in", 5, None)[-1] == Member(50, cursor.customer_id)
    assert members.page("rule:x", "in", 10, Member(0, "\U0010ffff")) == []
    assert members.page("lifecycle", "nobody", 10, None) == []
    assert members.page("lifecycle", "nobody", 10, Member(1, "x")) == []
    assert members.count("rule:x", "in") == len(ids)


cids = st.sampled_from(["a", "b", "c", "é", "Z", "b\u00ff", "d", "e"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    state=st.dictionaries(cids, st.integers(0, 3)),
    cursor=st.tuples(st.integers(-1, 4), cids | st.just("")),
    limit=st.integers(1, 5),
)
def test_paging_script_agrees_with_memory_index(
    members: RedisMembers,
    client: redis.Redis[bytes],
    namespace: str,
    state: dict[str, int],
    cursor: tuple[int, str],
    limit: int,
) -> None:
    for kind in ("mx", "mc"):
        for key in client.scan_iter(match=f"{{{namespace}:p*}}:{kind}:persona*"):
            client.delete(key)
    _spread(client, namespace, ("persona", "p"), state)
    memory = MemberIndex()
    memory.apply([Change(cid, "persona", None, "p", 1, at, None) for cid, at in state.items()])
    after = Member(*cursor)
    assert members.page("persona", "p", limit, after) == memory.page("persona", "p", limit, after)
