"""Delivered change events against the clean reference (``replay``): one comparison for every
test that reads a worker's change topic (integration and e2e)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Outcome:
    """What was delivered and what is wrong with it (``problems`` empty: clean)."""

    deliveries: int = 0
    distinct: int = 0
    duplicates: int = 0  # deliveries of an id already seen (identical content)
    problems: list[str] = field(default_factory=list)


def compare(
    values: Sequence[bytes], expected: Sequence[dict[str, Any]], in_order: bool = False
) -> Outcome:
    """Delivered change events (raw values, repeats included) vs the reference: a repeated id
    only with identical bytes, the same ids, each equal to its reference, sequences 1..n per
    customer and dimension without gaps; with ``in_order`` also first delivered in sequence
    order."""
    out = Outcome(deliveries=len(values))
    first: dict[str, bytes] = {}
    order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for value in values:
        change = orjson.loads(value)
        seen = first.get(change["id"])
        if seen is None:
            first[change["id"]] = value
            order[(change["subject"], change["data"]["dimension"])].append(
                change["data"]["sequence"]
            )
        else:
            out.duplicates += 1
            if seen != value:
                out.problems.append(f"id {change['id']} repeated with other content")
    out.distinct = len(first)
    got = {i: orjson.loads(v) for i, v in first.items()}
    want = {c["id"]: c for c in expected}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        out.problems.append(f"{len(missing)} missing, e.g. {[want[i] for i in missing[:2]]}")
    if extra:
        out.problems.append(f"{len(extra)} unexpected, e.g. {[got[i] for i in extra[:2]]}")
    wrong = sorted(i for i in set(got) & set(want) if got[i] != want[i])
    if wrong:
        out.problems.append(f"{len(wrong)} differ, e.g. {got[wrong[0]]} != {want[wrong[0]]}")
    for (cid, dim), seqs in order.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            out.problems.append(f"{cid}/{dim}: sequences {sorted(seqs)[:20]} have a gap")
        elif in_order and seqs != sorted(seqs):
            out.problems.append(f"{cid}/{dim}: first delivered out of order {seqs[:20]}")
    return out
