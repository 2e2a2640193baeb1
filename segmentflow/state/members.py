"""Audiences: who is in each segment (CONTRACT §5 ``members``, §8 members endpoint).

The membership index is derived from the changes a store commits, in the same commit as the
populations, so it holds exactly the customers ``segments`` counts: a change removes the
customer from its ``previous`` value and adds it to its ``current`` one with ``since`` = the
change's time (the moment it entered); a ``null`` value (forget, merge) only removes. Rule
segments index ``in`` only (``out`` is not a population, as in
:func:`~segmentflow.state.base.population_deltas`).

Members are ordered by customer id (compared as UTF-8 bytes, as Redis does), and a page
starts strictly after a cursor holding the last member read: a member present throughout a
pagination keeps its place, so it is neither skipped nor repeated.

Redis layout (3): per home partition ``P`` and segment, range-chunked compact hashes
customer_id -> since (epoch µs) under the partition's hash tag
(:mod:`segmentflow.state.member_chunks`); a page merges the partitions' pages.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
import redis
from redis.exceptions import RedisClusterException

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.state import member_chunks
from segmentflow.state.base import StoreUnavailable
from segmentflow.state.client import RedisClient, is_client
from segmentflow.state.keys import SEP as SEP  # re-exported (callers import it from here)
from segmentflow.state.keys import Keys, PartKeys

Segment = tuple[str, str]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Member:
    """A customer in a segment since ``since`` (epoch µs); pages list them by customer id."""

    since: int
    customer_id: str


@dataclass(frozen=True, slots=True)
class MemberOps:
    """The index writes of one commit: per segment, who enters (with since) and who leaves.

    A customer appears at most once per dimension, in ``adds`` or ``removes`` of a segment,
    so the writes commute.
    """

    adds: dict[Segment, dict[str, int]]
    removes: dict[Segment, set[str]]


def indexed(dimension: str, value: str | None) -> str | None:
    """The segment value a dimension value is a member of (``None``: none).

    Examples
    --------
    >>> indexed("lifecycle", "active"), indexed("rule:vip", "out"), indexed("rule:vip", "in")
    ('active', None, 'in')
    """
    if value is None or (dimension.startswith("rule:") and value != "in"):
        return None
    return value


def indexed_values(state: CustomerState | None) -> dict[str, str]:
    """dimension -> the segment value a stored state is a member of (what the index should
    list it under; ``members --rebuild`` and ``migrate-layout`` compare and copy it)."""
    if state is None:
        return {}
    out = {}
    for dim, value in state.values.items():
        member = indexed(dim, value)
        if member is not None:
            out[dim] = member
    return out


def pages(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter).

    Examples
    --------
    >>> list(pages("abcde", 2))
    [['a', 'b'], ['c', 'd'], ['e']]
    """
    page: list[T] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


def member_ops(changes: Iterable[Change]) -> MemberOps:
    """The index writes implied by ``changes`` (in commit order).

    Per customer and dimension only the net effect counts: every value it left goes, the value
    it ends in is added with the time of the change that brought it there.

    Examples
    --------
    >>> c = lambda prev, cur, at: Change("c1", "lifecycle", prev, cur, 1, at, None)
    >>> ops = member_ops([c(None, "new", 5), c("new", "active", 9)])
    >>> ops.adds, ops.removes
    ({('lifecycle', 'active'): {'c1': 9}}, {('lifecycle', 'new'): {'c1'}})
    """
    final, left = _net(changes)
    adds: dict[Segment, dict[str, int]] = {}
    removes: dict[Segment, set[str]] = {}
    for key, (value, at) in final.items():
        cid, dim = key
        if value is not None:
            adds.setdefault((dim, value), {})[cid] = at
        gone = left.get(key)
        if gone is not None:
            for one in (gone,) if isinstance(gone, str) else gone:
                if one != value:
                    removes.setdefault((dim, one), set()).add(cid)
    return MemberOps(adds, removes)


def _net(
    changes: Iterable[Change],
) -> tuple[dict[tuple[str, str], tuple[str | None, int]], dict[tuple[str, str], str | set[str]]]:
    """Per (customer, dimension) in first-change order: the indexed value it ends in with the
    time of that change, and the indexed value(s) it left (one string, or a set of several)."""
    final: dict[tuple[str, str], tuple[str | None, int]] = {}
    left: dict[tuple[str, str], str | set[str]] = {}
    for change in changes:
        dim = change.dimension
        key = (change.customer_id, dim)
        previous, current = change.previous, change.current
        if dim.startswith("rule:"):  # inline :func:`indexed` (a hot path: every commit)
            if previous != "in":
                previous = None
            if current != "in":
                current = None
        if previous is not None:
            held = left.get(key)
            if held is None:
                left[key] = previous
            elif isinstance(held, str):
                if held != previous:
                    left[key] = {held, previous}
            else:
                held.add(previous)
        final[key] = (current, change.at)
    return final, left


class CursorError(ValueError):
    """A pagination cursor that no page handed out."""


def encode_cursor(member: Member) -> str:
    """An opaque, URL-safe cursor for the page after ``member``.

    Examples
    --------
    >>> decode_cursor(encode_cursor(Member(7, "c/1 é")))
    Member(since=7, customer_id='c/1 é')
    """
    raw = orjson.dumps([member.since, member.customer_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Member:
    """The member a cursor of :func:`encode_cursor` points after; :class:`CursorError` for
    anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        since, customer_id = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise CursorError(
            f"cursor {cursor[:40]!r} is not one this server handed out: pass the "
            "`next_cursor` of the previous page verbatim, or omit it to start at the beginning"
        ) from None
    if not isinstance(since, int) or isinstance(since, bool) or not isinstance(customer_id, str):
        raise CursorError(f"cursor {cursor[:40]!r} is malformed: pass `next_cursor` verbatim")
    return Member(since, customer_id)


class MemberReader(Protocol):
    """Pages of a segment's members."""

    def page(self, dimension: str, value: str, limit: int, after: Member | None) -> list[Member]:
        """Up to ``limit`` members after ``after`` (from the first when ``None``), in order;
        :class:`~segmentflow.state.base.StoreUnavailable` when the store cannot be read."""
        ...


def iter_members(
    reader: MemberReader, dimension: str, value: str, page_size: int = 10_000
) -> Iterator[Member]:
    """Every member of a segment, read ``page_size`` at a time (never all in memory)."""
    after: Member | None = None
    while True:
        page = reader.page(dimension, value, page_size, after)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1]


# -- in memory ------------------------------------------------------------------------------


class MemberIndex:
    """The membership index of :class:`~segmentflow.state.memory.MemoryStore`.

    Examples
    --------
    >>> index = MemberIndex()
    >>> index.apply([Change("c1", "rule:vip", "out", "in", 1, 42, None)])
    >>> index.page("rule:vip", "in", 10, None)
    [Member(since=42, customer_id='c1')]
    """

    def __init__(self) -> None:
        self._segments: dict[Segment, dict[str, int]] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply the index writes of a commit's changes."""
        if not changes:
            return
        # the writes of :func:`member_ops` commute, so they are made as the net effects are
        # read (no intermediate ``MemberOps``); each segment's entries keep the same order
        segments = self._segments
        final, left = _net(changes)
        for key, (value, at) in final.items():
            cid, dim = key
            gone = left.get(key)
            if gone is not None:
                for one in (gone,) if isinstance(gone, str) else gone:
                    if one != value:
                        held = segments.get((dim, one))
                        if held is not None:
                            held.pop(cid, None)
            if value is not None:
                held = segments.get((dim, value))
                if held is None:
                    held = segments[(dim, value)] = {}
                held[cid] = at

    def forget(self, customer_id: str) -> None:
        """Remove a customer from every segment."""
        for held in self._segments.values():
            held.pop(customer_id, None)

    def count(self, dimension: str, value: str) -> int:
        """How many members the segment has."""
        return len(self._segments.get((dimension, value), {}))

    def page(self, dimension: str, value: str, limit: int, after: Member | None) -> list[Member]:
        held = self._segments.get((dimension, value), {})
        found = (Member(since, cid) for cid, since in held.items())
        if after is not None:
            found = (m for m in found if _after(m, after))
        return heapq.nsmallest(limit, found, key=_order)


def _order(member: Member) -> bytes:
    return member.customer_id.encode()


def _after(member: Member, cursor: Member) -> bool:
    return _order(member) > _order(cursor)


# -- Redis ----------------------------------------------------------------------------------


def segment_key(namespace: str, dimension: str, value: str, partition: int = 0) -> str:
    """The Redis key of a segment's chunk directory in one home partition.

    Examples
    --------
    >>> segment_key("sf", "lifecycle", "active", 2)
    '{sf:p2}:mx:lifecycle\\x1factive'
    """
    return Keys(namespace).segment(partition, dimension, value)


def queue_changes(pipe: Any, keys: PartKeys, changes: Sequence[Change]) -> None:
    """Queue the index writes of ``changes`` (of customers homed in the partition of
    ``keys``) on the commit's ``MULTI`` pipeline (one script call)."""
    if not changes:
        return
    ops = member_ops(changes)
    writes: dict[Segment, tuple[Iterable[str], Mapping[str, int]]] = {}
    for segment, gone in ops.removes.items():
        writes[segment] = (gone, ops.adds.get(segment, {}))
    for segment, entered in ops.adds.items():
        if segment not in writes:
            writes[segment] = ((), entered)
    member_chunks.queue_writes(pipe, keys, writes)


def queue_leave(pipe: Any, keys: PartKeys, customer_id: str, segments: Iterable[Segment]) -> None:
    """Queue the removal of a customer from ``segments`` of the partition of ``keys``."""
    member_chunks.queue_writes(pipe, keys, {segment: ((customer_id,), {}) for segment in segments})


class RedisMembers:
    """Pages of the membership index in Redis: each partition's page is one atomic script
    call (:func:`~segmentflow.state.member_chunks.page_rows`), and a page is the first
    ``limit`` of their merge.

    Parameters
    ----------
    client
        The store's Redis client (one Redis or a cluster).
    namespace
        ``SEGMENTFLOW_NAMESPACE``.
    partitions
        The number of home partitions (the input topics' partition count).
    """

    def __init__(self, client: RedisClient, namespace: str, partitions: int = 1) -> None:
        self.client = client
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.partitions = range(max(partitions, 1))

    def page(self, dimension: str, value: str, limit: int, after: Member | None) -> list[Member]:
        found: list[Member] = []
        cursor = None if after is None else after.customer_id
        try:
            for p in self.partitions:
                rows = member_chunks.page_rows(
                    self.client, self.keys.part(p), dimension, value, cursor, limit
                )
                found.extend(Member(since, cid.decode()) for cid, since in rows)
        except (redis.RedisError, RedisClusterException) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return heapq.nsmallest(limit, found, key=_order)

    def count(self, dimension: str, value: str) -> int:
        """How many members the segment has."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for p in self.partitions:
                member_chunks.queue_count(pipe, self.keys.part(p), dimension, value)
            return sum(int(n) for n in pipe.execute())
        except (redis.RedisError, RedisClusterException) as exc:
            raise StoreUnavailable(str(exc)) from exc


def reader_for(store: object) -> MemberReader:
    """The member reader of a state store (Redis or memory); ``TypeError`` for others."""
    members = getattr(store, "members", None)
    if isinstance(members, MemberIndex):
        return members
    client, namespace = getattr(store, "client", None), getattr(store, "namespace", None)
    if is_client(client) and isinstance(namespace, str):
        return RedisMembers(client, namespace, int(getattr(store, "shards", 1)))  # type: ignore[arg-type]
    raise TypeError(f"{type(store).__name__} keeps no membership index")
