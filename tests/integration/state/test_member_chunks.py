"""The range-chunked membership hashes (layout 3) in a real Redis against a plain dict: random
adds, moves, removals and only-absent adds, with chunks small enough to split and empty often;
pages, counts and lookups agree with the dict, chunks stay within their size and their ranges,
and an emptied segment leaves no key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.members import write_members

from segmentflow.state import member_chunks
from segmentflow.state.keys import Keys, PartKeys

pytestmark = pytest.mark.integration

SEGMENT = ("rule:x", "in")
# ids that share prefixes, differ in length and go past ASCII, so byte order matters
IDS = st.sampled_from(["", "a", "a\x00", "ab", "b", "é", "z" * 70, *(f"c{i}" for i in range(60))])
OPS = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "absent"]), st.lists(IDS, max_size=12)),
    max_size=25,
)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    c: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def write(
    client: redis.Redis[bytes],
    part: PartKeys,
    removes: list[str],
    adds: dict[str, int],
    absent: bool = False,
    most: int = 4,
) -> None:
    write_members(client, part, SEGMENT, removes, adds, most, only_absent=absent)


def check(client: redis.Redis[bytes], part: PartKeys, expected: dict[str, int], most: int) -> None:
    ordered = sorted((cid.encode(), since) for cid, since in expected.items())
    dim, value = SEGMENT
    for size in (1, 3, 1000):
        walked = [
            row for rows in member_chunks.iter_rows(client, part, dim, value, size) for row in rows
        ]
        assert walked == ordered
    assert member_chunks.count(client, part, dim, value) == len(expected)
    pipe = client.pipeline(transaction=False)
    probe = [*expected, "nobody", "c9x"]
    member_chunks.queue_since(pipe, part, dim, value, probe)
    (reply,) = pipe.execute()
    assert member_chunks.since_of(reply) == [expected.get(cid) for cid in probe]
    directory = part.segment(dim, value)
    bounds = client.zrange(directory, 0, -1)
    if not expected:
        assert not client.exists(directory)
        assert not list(client.scan_iter(match=f"{part.tag}*"))
        return
    assert bounds[0] == b""
    prefix = part.chunk_prefix(dim, value).encode()
    for i, bound in enumerate(bounds):
        held = client.hkeys(prefix + bound)
        assert len(held) < most
        assert held or bound == b""  # only the first chunk may be empty
        upper = bounds[i + 1] if i + 1 < len(bounds) else None
        assert all(cid >= bound and (upper is None or cid < upper) for cid in held)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS, most=st.sampled_from([2, 4, 128]))
def test_chunks_match_a_dict(
    client: redis.Redis[bytes], namespace: str, ops: list[tuple[str, list[str]]], most: int
) -> None:
    part = Keys(f"{namespace}:{most}:{len(ops)}").part(1)
    for key in client.scan_iter(match=f"{part.tag}*"):
        client.delete(key)
    expected: dict[str, int] = {}
    for step, (kind, ids) in enumerate(ops):
        if kind == "remove":
            write(client, part, ids, {}, most=most)
            for cid in ids:
                expected.pop(cid, None)
        else:
            adds = {cid: 1_000 * step + n for n, cid in enumerate(ids)}
            write(client, part, [], adds, absent=kind == "absent", most=most)
            for cid, since in adds.items():
                if kind == "add" or cid not in expected:
                    expected[cid] = since
        check(client, part, expected, most)


def test_a_move_within_one_write(client: redis.Redis[bytes], namespace: str) -> None:
    part = Keys(namespace).part(0)
    write(client, part, [], {f"c{i:03d}": i for i in range(50)})
    write(client, part, [f"c{i:03d}" for i in range(0, 50, 2)], {"c000": 7, "new": 9})
    expected = {f"c{i:03d}": i for i in range(1, 50, 2)} | {"c000": 7, "new": 9}
    check(client, part, expected, 4)


def test_segments_of_one_partition_in_one_call(client: redis.Redis[bytes], namespace: str) -> None:
    part = Keys(namespace).part(2)
    writes: dict[tuple[str, str], tuple[list[str], dict[str, int]]] = {
        ("lifecycle", "new"): ([], {"a": 1, "b": 2}),
        ("lifecycle", "active"): (["a"], {"c": 3}),
        ("persona", "p1"): ([], {}),  # nothing: no key
    }
    pipe = client.pipeline(transaction=True)
    member_chunks.queue_writes(pipe, part, writes)
    assert len(pipe) == 1
    pipe.execute()
    assert [
        r for rows in member_chunks.iter_rows(client, part, "lifecycle", "new") for r in rows
    ] == [
        (b"a", 1),
        (b"b", 2),
    ]
    assert member_chunks.count(client, part, "lifecycle", "active") == 1
    assert not client.exists(part.segment("persona", "p1"))


def test_bulk_writes_split_as_they_fill(client: redis.Redis[bytes], namespace: str) -> None:
    part = Keys(namespace).part(3)
    adds = {f"c{i:05d}": i for i in range(3000)}  # one call: groups capped at the chunk size
    write(client, part, [], adds, most=128)
    check(client, part, adds, 128)
    gone = [f"c{i:05d}" for i in range(0, 3000, 3)] + [f"c{i:05d}" for i in range(1000, 2000)]
    write(client, part, gone, {"c99999": 1}, most=128)
    expected = {cid: since for cid, since in adds.items() if cid not in set(gone)} | {"c99999": 1}
    check(client, part, expected, 128)
    chunk = client.zrange(part.segment("rule:x", "in"), 1, 1)[0]
    encoding = client.object("encoding", part.chunk_prefix("rule:x", "in").encode() + chunk)
    assert encoding == b"listpack"
