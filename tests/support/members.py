"""A brute-force reference of the membership index (CONTRACT §5 ``members``), from the change
stream alone, shared by the index's unit and Redis tests; and a direct write to the Redis index
(members a test plants or takes away behind the store's back)."""

from __future__ import annotations

from typing import Any

from segmentflow.schemas.changes import Change
from segmentflow.state import member_chunks
from segmentflow.state.keys import PartKeys


def brute_force(changes: list[Change]) -> dict[tuple[str, str], dict[str, int]]:
    """Each customer's current value per dimension and when it got it, from the change stream."""
    held: dict[tuple[str, str], tuple[str | None, int]] = {}
    for c in changes:
        held[(c.customer_id, c.dimension)] = (c.current, c.at)
    out: dict[tuple[str, str], dict[str, int]] = {}
    for (cid, dim), (value, at) in held.items():
        if value is not None and not (dim.startswith("rule:") and value == "out"):
            out.setdefault((dim, value), {})[cid] = at
    return out


def write_members(
    client: Any,
    part: PartKeys,
    segment: tuple[str, str],
    removes: list[str],
    adds: dict[str, int],
    most: int = member_chunks.CHUNK,
    only_absent: bool = False,
) -> None:
    """Remove ``removes`` from and add ``adds`` (id -> since) to one partition's segment (one
    transaction; chunks of at most ``most``; ``only_absent`` as in ``queue_writes``)."""
    pipe = client.pipeline(transaction=True)
    member_chunks.queue_writes(pipe, part, {segment: (removes, adds)}, only_absent, most)
    pipe.execute()
