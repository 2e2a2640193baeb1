"""Brute-force reference for identity merges (CONTRACT §2 ``alias``/``anonymous_id``, §3
"Identity"), on top of ``tests/reference.py`` (lifecycle and rule segments). Nothing here
imports segmentflow.

Every value is recomputed from the full applied history of a profile, where merging
``previous_id`` into ``customer_id`` makes the survivor's history the union of both ("counters,
day windows, revenue and orders add up; first/last seen and first/last order are the min/max of
both; flags are OR-ed" all follow from the union), except traits, which the contract defines
by precedence: at a merge the survivor's traits win and those it lacks come from
``previous_id``; later ``identify`` events update them as usual.

Steps run globally in time order (merges couple customers): at an instant X, first the
time-driven evaluations of every profile with events (lifecycle at each threshold moment,
rules at each UTC midnight), then each event at X in input order:

1. its customer is resolved through the aliases so far (merges chain);
2. an event whose id the profile already applied is a duplicate: nothing happens (the
   generator repeats ids within hours, well inside ``dedup_horizon``);
3. for each id it names as the same person (an ``alias``'s ``previous_id``, an
   ``anonymous_id`` that differs from ``customer_id``), resolved: if it is another profile,
   that profile emits ``null`` per dimension it holds (a rule's ``out`` is held by nobody),
   reason ``{"merged_into": survivor}``; its history joins the survivor's; every dimension of
   the survivor is evaluated (``cause.kind`` ``merge``, the event's id); from then on the id
   resolves to the survivor; an id without events only records the alias;
4. the event is applied to the (survivor's) history and evaluated (``cause.kind`` ``event``).

Limit: reactivation (``reactivated`` lifecycle) over a merged history is not modelled (the
contract names no rule for it; the engine keeps the later of the two reactivations): scenarios
keep every order within ``at_risk_days`` of the previous one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cel
from reference import (
    LIFECYCLE_DEFAULTS,
    US_PER_DAY,
    _change,
    datetime_to_us,
    evaluate_rule,
    lifecycle_at,
    parse_ts_us,
    rule_variables,
)


@dataclass
class Profile:
    cid: str
    applied: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    gone: bool = False


def _sources(event: dict[str, Any]) -> list[str]:
    cid = event["customer_id"]
    out: list[str] = []
    if event["type"] == "alias":
        prev = event["properties"]["previous_id"]
        if prev != cid:
            out.append(prev)
    anon = event.get("anonymous_id")
    if anon and anon != cid and anon not in out:
        out.append(anon)
    return out


def identity_reference(
    events: list[dict[str, Any]], config: dict[str, Any], until: datetime
) -> list[dict[str, Any]]:
    """Change events (§3 JSON) for ``lifecycle`` and ``rule:<name>`` with identity merges, up
    to and including ``until`` (events sorted by timestamp)."""
    until_us = datetime_to_us(until)
    th = dict(LIFECYCLE_DEFAULTS)
    th.update(config.get("lifecycle") or {})
    rules = [(r["name"], cel.compile(r["when"])) for r in config.get("rules") or []]
    evs = [(parse_ts_us(e["timestamp"]), e) for e in events]
    evs = [(ts, e) for ts, e in evs if ts <= until_us]
    out: list[dict[str, Any]] = []
    if not evs:
        return out
    orders = [ts for ts, e in evs if e["type"] == "order_completed"]
    moments: set[int] = set()
    for o in orders:
        for key in ("new_days", "reactivated_days", "at_risk_days", "churned_days"):
            moments.add(o + th[key] * US_PER_DAY)
    first = evs[0][0]
    moments |= set(range((first // US_PER_DAY + 1) * US_PER_DAY, until_us + 1, US_PER_DAY))
    steps = sorted([(x, 0, -1) for x in moments if first < x <= until_us])
    steps += [(ts, 1, i) for i, (ts, _) in enumerate(evs)]
    steps.sort()

    profiles: dict[str, Profile] = {}
    alias: dict[str, str] = {}
    seq: dict[tuple[str, str], int] = defaultdict(int)

    def resolve(cid: str) -> str:
        while cid in alias:
            cid = alias[cid]
        return cid

    def emit(p: Profile, dim: str, cur: str | None, t: int, kind: str, eid: str | None) -> None:
        seq[(p.cid, dim)] += 1
        prev = p.values.get(dim)
        if prev is None and dim.startswith("rule:"):
            prev = "out"
        change = _change(p.cid, dim, seq[(p.cid, dim)], prev, cur or "", t, kind, eid)
        change["data"]["current"] = cur
        if kind == "merge" and cur is None:
            change["data"]["reason"] = {"merged_into": alias[p.cid]}
        out.append(change)
        if cur is None:
            p.values.pop(dim, None)
        else:
            p.values[dim] = cur

    def evaluate(p: Profile, t: int, kind: str, eid: str | None, with_rules: bool) -> None:
        ordered = [ts for ts, e in p.applied if e["type"] == "order_completed"]
        stage = lifecycle_at(sorted(ordered), t, th)
        if stage != p.values.get("lifecycle"):
            emit(p, "lifecycle", stage, t, kind, eid)
        if not with_rules:
            return
        variables = rule_variables(p.applied, t, p.values.get("lifecycle"))
        variables["traits"] = dict(p.traits)
        for name, program in rules:
            dim = f"rule:{name}"
            inside = evaluate_rule(program, variables)
            was = p.values.get(dim, "out")
            if inside and was != "in":
                emit(p, dim, "in", t, kind, eid)
            elif not inside and was == "in":
                emit(p, dim, "out", t, kind, eid)

    for instant, step, index in steps:
        if step == 0:
            for p in profiles.values():
                if not p.gone and p.applied:
                    evaluate(p, instant, "time", None, instant % US_PER_DAY == 0)
            continue
        ts, event = evs[index]
        sid = resolve(event["customer_id"])
        survivor = profiles.setdefault(sid, Profile(sid))
        if survivor.gone:  # cannot happen: a merged-away id resolves elsewhere
            raise AssertionError(sid)
        eid = event["event_id"]
        if eid in survivor.ids:
            continue
        for source in _sources(event):
            gid = resolve(source)
            if gid == sid:
                continue
            alias[gid] = sid
            gone = profiles.get(gid)
            if gone is None or not gone.applied:
                continue
            for dim in sorted(gone.values):
                if dim.startswith("rule:") and gone.values[dim] == "out":
                    continue
                emit(gone, dim, None, ts, "merge", eid)
            gone.gone = True
            survivor.applied = sorted(survivor.applied + gone.applied, key=lambda a: a[0])
            survivor.traits = {**gone.traits, **survivor.traits}
            survivor.ids |= gone.ids
            evaluate(survivor, ts, "merge", eid, True)
        survivor.applied.append((ts, event))
        survivor.ids.add(eid)
        if event["type"] == "identify":
            survivor.traits.update(event.get("properties", {}).get("traits") or {})
        evaluate(survivor, ts, "event", eid, True)
    return out
