"""Rebuild the membership index from the stored states (``segmentflow members --rebuild``).

The index (:mod:`segmentflow.state.members`) is written by every commit from the changes it
holds, so it only misses what was stored before it existed (state written by an older version,
or keys restored without their ``{ns:pP}:mx:*`` / ``:mc:*`` chunks). The rebuild makes it exact
again, safely next to running workers:

1. every stored customer is added to the segments its values say (only where absent: a member
   already indexed keeps its ``since``; a missing one gets the customer's clock, the time of its
   latest event or evaluation, since the time it entered was never stored);
2. every indexed member whose state no longer holds that value (or has no state) is removed.

Each page of customers is read under ``WATCH`` of their state keys and written in one
``MULTI``: a worker committing one of them meanwhile makes the page start again, so the rebuild
never re-adds a member that a concurrent commit just removed (or the reverse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from segmentflow.engine.state import CustomerState
from segmentflow.state import member_chunks
from segmentflow.state.keys import PartKeys
from segmentflow.state.members import Segment, indexed_values, pages
from segmentflow.state.redis_store import RedisStore


@dataclass(slots=True)
class RebuildReport:
    """What a rebuild did."""

    customers: int = 0
    added: int = 0
    removed: int = 0
    #: pages read again because a worker committed one of their customers meanwhile
    retried: int = 0


Write = Callable[[Any, dict[str, CustomerState]], None]


def _watched(store: RedisStore, home: int, ids: list[str], write: Write) -> tuple[int, int]:
    """Queue ``write``'s commands for the states of ``ids`` (homed in ``home``) in one MULTI
    under WATCH of their keys, again until no commit interfered; (sum of the replies: members
    added or removed, retries)."""
    part = store.part(home)
    keys = [part.state(cid) for cid in ids]
    retries = 0
    with store.client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(*keys)
                states = store.load_many(ids, sync_ranks=False)
                pipe.multi()
                write(pipe, states)
                return sum(int(n) for n in pipe.execute()), retries
            except redis.WatchError:
                retries += 1


def rebuild_members(
    store: RedisStore, page: int = 500, progress: Callable[[RebuildReport], None] | None = None
) -> RebuildReport:
    """Make ``store``'s membership index list exactly the segments its states hold (one home
    partition after the other; each page of one partition is one transaction)."""
    report = RebuildReport()
    for home in store.partitions:
        part = store.part(home)

        def add(pipe: Any, states: dict[str, CustomerState], part: PartKeys = part) -> None:
            entering: dict[Segment, dict[str, int]] = {}
            for cid, state in states.items():
                for dim, value in indexed_values(state).items():
                    entering.setdefault((dim, value), {})[cid] = state.clock or 0
            writes = {segment: ((), adds) for segment, adds in entering.items()}
            member_chunks.queue_writes(pipe, part, writes, only_absent=True)

        for ids in pages(store.partition_ids(home), page):
            added, retries = _watched(store, home, ids, add)
            report.customers += len(ids)
            report.added += added
            report.retried += retries
            if progress is not None:
                progress(report)

    for home in store.partitions:
        part = store.part(home)
        for dim, value in _known(store, home):
            for rows in member_chunks.iter_rows(store.client, part, dim, value, page):
                ids = [cid.decode() for cid, _ in rows]

                def remove(
                    pipe: Any,
                    states: dict[str, CustomerState],
                    ids: list[str] = ids,
                    dim: str = dim,
                    value: str = value,
                    part: PartKeys = part,
                ) -> None:
                    gone = [
                        cid
                        for cid in ids
                        if indexed_values(states.get(cid)).get(dim) != value
                        and not (cid not in states and store.is_quarantined(cid))  # unreadable
                    ]
                    if gone:
                        member_chunks.queue_writes(pipe, part, {(dim, value): (gone, {})})

                removed, retries = _watched(store, home, ids, remove)
                report.removed += removed
                report.retried += retries
            if progress is not None:
                progress(report)
    return report


def _known(store: RedisStore, home: int) -> list[tuple[str, str]]:
    """Every segment with an index key in partition ``home`` (from the keys themselves)."""
    part = store.part(home)
    return sorted(part.segment_of(key) for key in store.partition_keys(home, "mx:*"))
