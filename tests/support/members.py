"""A brute-force reference of the membership index (CONTRACT §5 ``members``), from the change
stream alone: shared by the index's unit and Redis tests."""

from __future__ import annotations

from segmentflow.schemas.changes import Change


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
