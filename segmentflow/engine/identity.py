"""Identity merges (CONTRACT §3 "Identity"): one profile per person. No I/O.

When ``previous_id`` and ``customer_id`` turn out to be one person (an ``alias`` event, or an
event whose ``anonymous_id`` differs from its ``customer_id``), :func:`merge` folds the state of
``previous_id`` (the *merged-away* profile) into the state of ``customer_id`` (the *survivor*):

- :func:`merge_core`: counters, day windows, revenue and orders add up; first/last seen and
  first/last order are the min/max of both; flags are OR-ed; traits of the survivor win, those
  it lacks come from the merged-away profile; kept event ids (dedup) and input offsets are the
  union; the latest reactivation of the two is kept (the contract names no rule for it);
- each dimension folds its own typed slice (:meth:`Dimension.merge_slice`);
- the merged-away id emits a final change to ``null`` per dimension it holds (a rule's ``out``
  is held by nobody), reason ``{"merged_into": customer_id}``, and is left as a tombstone
  (:func:`merged_tombstone`: its sequence numbers, its home, ``merged_into``), which no
  dimension evaluates again;
- every dimension of the survivor is evaluated on the merged state (``Moment.cause`` ``merge``).

Every change of the merge carries ``cause.kind`` ``merge`` and the merging event's id. Both
profiles are first advanced to the merging event's time ``t`` (their due time-driven changes
fire as usual); the merge is stamped ``max(t, both clocks)`` so no customer's change times go
backwards (as for a late event, CONTRACT §3 "Late events").

Idempotence is the caller's: a merge is applied when ``previous_id`` does not already resolve
to the survivor (the alias map) and the survivor has not merged it yet (:func:`has_merged`);
a merged-away profile is a tombstone, so merging it again adds nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from segmentflow.engine.engine import DAY_US, Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import Moment

#: ``cause.kind`` of a merge's changes
MERGE = "merge"
#: ``CustomerState.extra`` key of a merged-away tombstone: the survivor's id
MERGED_INTO = "merged_into"
#: ``CustomerState.extra`` key of a survivor: the ids merged into it (transitively)
MERGED = "merged"


def merge_sources(event: Event) -> tuple[str, ...]:
    """The ids ``event`` says are the same person as its customer (CONTRACT §2): an
    ``alias``'s ``previous_id``, an ``anonymous_id`` that differs from ``customer_id``.

    Examples
    --------
    >>> merge_sources(Event("e", "u", "page_view", 0, anonymous_id="anon"))
    ('anon',)
    >>> merge_sources(Event("e", "u", "page_view", 0, anonymous_id="u"))
    ()
    """
    if event.anonymous_id is None and event.previous_id is None:  # the common case
        return ()
    out: tuple[str, ...] = ()
    if event.type == "alias" and event.previous_id and event.previous_id != event.customer_id:
        out = (event.previous_id,)
    anonymous = event.anonymous_id
    if anonymous and anonymous != event.customer_id and anonymous not in out:
        out = (*out, anonymous)
    return out


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge_core(survivor: CustomerState, merged: CustomerState) -> None:
    """Fold ``merged``'s core fields into ``survivor`` (mutated; see the module docstring).

    Examples
    --------
    >>> a = CustomerState("u", first_seen=5, last_seen=9, flags=1, traits={"country": "DE"})
    >>> b = CustomerState("anon", first_seen=2, last_seen=7, flags=4,
    ...                   traits={"country": "FR", "city": "Lyon"})
    >>> a.totals[3], b.totals[3] = 1, 2
    >>> merge_core(a, b)
    >>> a.first_seen, a.last_seen, a.flags, a.totals[3], a.traits
    (2, 9, 5, 3, {'country': 'DE', 'city': 'Lyon'})
    """
    survivor.totals = [x + y for x, y in zip(survivor.totals, merged.totals, strict=True)]
    for day, bucket in merged.days.items():
        mine = survivor.days.get(day)
        survivor.days[day] = (
            list(bucket) if mine is None else [x + y for x, y in zip(mine, bucket, strict=True)]
        )
    survivor.first_seen = _min(survivor.first_seen, merged.first_seen)
    survivor.last_seen = _max(survivor.last_seen, merged.last_seen)
    survivor.first_order = _min(survivor.first_order, merged.first_order)
    survivor.last_order = _max(survivor.last_order, merged.last_order)
    survivor.reactivated_at = _max(survivor.reactivated_at, merged.reactivated_at)
    survivor.flags |= merged.flags
    survivor.traits = {**merged.traits, **survivor.traits}
    for id_hash, ts in merged.recent.items():
        if survivor.recent.get(id_hash, ts - 1) < ts:
            survivor.recent[id_hash] = ts
    for source, offset in merged.offsets.items():
        survivor.offsets[source] = max(survivor.offsets.get(source, -1), offset)
    ids = [*survivor.extra.get(MERGED, []), *merged.extra.get(MERGED, []), merged.customer_id]
    survivor.extra[MERGED] = list(dict.fromkeys(ids))


def has_merged(survivor: CustomerState | None, previous_id: str) -> bool:
    """Whether ``previous_id``'s profile was merged into ``survivor`` already (directly or
    through a chain): a repeated hand-over of it must add nothing."""
    return survivor is not None and previous_id in survivor.extra.get(MERGED, ())


def is_merged_away(state: CustomerState | None) -> bool:
    """Whether ``state`` is what a merge left of a merged-away profile."""
    return state is not None and MERGED_INTO in state.extra and state.clock is None


def merged_tombstone(state: CustomerState, survivor_id: str) -> CustomerState:
    """What a merged-away profile leaves: its sequence numbers (a change id is never reused),
    its home partition and the survivor's id; no event, time, trait or total."""
    tomb = CustomerState(state.customer_id, seqs=dict(state.seqs))
    tomb.extra[MERGED_INTO] = survivor_id
    tomb.home = state.home
    return tomb


def final_changes(state: CustomerState, survivor_id: str, at: int, event_id: str) -> list[Change]:
    """The merged-away profile's final change to ``null`` per dimension it holds (mutates
    ``state``: values cleared, sequences bumped)."""
    reason: dict[str, Any] = {MERGED_INTO: survivor_id}
    out: list[Change] = []
    for dim, value in sorted(state.values.items()):
        if dim.startswith("rule:") and value == "out":
            continue
        sequence = state.seqs.get(dim, 0) + 1
        state.seqs[dim] = sequence
        out.append(
            Change(state.customer_id, dim, value, None, sequence, at, event_id, reason, MERGE)
        )
    state.values.clear()
    return out


def leave(
    engine: Engine, merged: CustomerState, survivor_id: str, t: int, event_id: str
) -> tuple[list[Change], CustomerState, CustomerState | None]:
    """The merged-away side of a merge at the merging event's time ``t``: ``merged`` is
    advanced to ``t`` (its due time-driven changes fire) and emits its final ``null`` changes.

    Returns the changes, the tombstone that replaces it, and the state to fold into the
    survivor (:func:`absorb`; ``None`` for a tombstone or a profile without events, which is
    then returned as its own "tombstone", unchanged). ``merged`` is left as exported (values
    cleared, sequences bumped); the caller stores the tombstone instead.
    """
    changes = engine.advance(merged, t)
    if merged.clock is None:  # no event ever applied, or a tombstone: kept as it is
        return changes, merged, None
    at = max(t, merged.clock)
    changes.extend(final_changes(merged, survivor_id, at, event_id))
    return changes, merged_tombstone(merged, survivor_id), merged


def absorb(
    engine: Engine, survivor: CustomerState, exported: CustomerState, t: int, event_id: str
) -> list[Change]:
    """The survivor's side of a merge at the merging event's time ``t``: ``survivor`` is
    advanced to ``t``, ``exported`` (:func:`leave`'s, possibly handed over by another worker)
    folded in, and every dimension evaluated (``cause.kind`` ``merge``). ``exported`` must not
    be used afterwards (its slices may be shared)."""
    if survivor.customer_id == exported.customer_id:
        raise ValueError(f"cannot merge {survivor.customer_id!r} into itself")
    changes = engine.advance(survivor, t)
    at = max(t, survivor.clock if survivor.clock is not None else t)
    if exported.clock is not None:
        at = max(at, exported.clock)
    merge_core(survivor, exported)
    for dim in engine.registry:
        dim.merge_slice(survivor, exported)
    for population in engine.populations:  # the merged-away id leaves every population
        population.forget(exported.customer_id)
    moment = Moment(at, event_id, None, MERGE)
    survivor.prune(at // DAY_US)
    found: list[Change] = []
    for dim in engine.registry:
        found.extend(dim.evaluate(survivor, moment, engine.emit))
    changes.extend(dataclasses.replace(c, cause=MERGE) for c in found)
    survivor.clock = at
    survivor.next_due = engine._next_due(survivor)
    return changes


def merge(
    engine: Engine, survivor: CustomerState, merged: CustomerState, t: int, event_id: str
) -> tuple[list[Change], CustomerState]:
    """Merge ``merged`` into ``survivor`` (mutated) at the merging event's time ``t``, both
    sides in one process (:func:`leave` then :func:`absorb`).

    Returns the changes in order (the merged-away profile's due time-driven changes up to ``t``
    and its final ``null`` changes, then the survivor's due changes and re-evaluation) and the
    tombstone that replaces the merged-away state. A tombstone (forgotten or merged away
    before) or a profile without events merges nothing and is returned as it is.
    """
    if survivor.customer_id == merged.customer_id:
        raise ValueError(f"cannot merge {survivor.customer_id!r} into itself")
    if merged.clock is not None and survivor.clock is not None:
        t = max(t, survivor.clock)  # the final changes are stamped with the merge's moment
    changes, tomb, exported = leave(engine, merged, survivor.customer_id, t, event_id)
    if exported is not None:
        changes.extend(absorb(engine, survivor, exported, t, event_id))
    return changes, tomb
