"""engine/identity.py: merging two profiles (CONTRACT §3 "Identity"), against the contract's
words: the merged core state equals one profile that saw both histories (counters, windows,
first/last, flags), traits of the survivor win, the merged-away id ends every dimension with
``null``, the survivor's dimensions are re-evaluated with ``cause.kind`` ``merge``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segmentflow.config import config_from_dict
from segmentflow.engine.engine import DAY_US, Engine
from segmentflow.engine.identity import (
    MERGE,
    MERGED_INTO,
    has_merged,
    is_merged_away,
    merge,
    merge_core,
)
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.clv import Clv, ClvSlice
from segmentflow.segmenters.interest import InterestSlice

BASE = 20_000 * DAY_US
TYPES = [
    "page_view",
    "product_view",
    "add_to_cart",
    "search",
    "order_completed",
    "order_refunded",
    "email_opened",
    "email_unsubscribed",
    "email_delivered",
    "identify",
]
CONFIG: dict[str, Any] = {
    "persona": {"enabled": False},
    "rules": [
        {"name": "viewer", "when": "product_views_30d >= 2"},
        {"name": "buyer", "when": "orders >= 1"},
    ],
}


def _event(cid: str, n: int, kind: str, ts: int, country: str = "DE") -> Event:
    amount = 10.0 + n if kind in ("order_completed", "order_refunded") else 0.0
    traits = {"country": country, f"k{n % 3}": n} if kind == "identify" else None
    return Event(f"{cid}-{n}", cid, kind, ts, amount=amount, traits=traits)


events = st.lists(
    st.tuples(st.sampled_from(TYPES), st.integers(0, 120 * DAY_US)), min_size=1, max_size=12
)


def _play(engine: Engine, cid: str, evs: list[tuple[str, int]], tag: str) -> CustomerState:
    state = engine.new_state(cid)
    for n, (kind, offset) in enumerate(sorted(evs, key=lambda e: e[1])):
        engine.apply(state, _event(tag, n, kind, BASE + offset, country=tag))
    return state


@settings(max_examples=60, deadline=None)
@given(ours=events, theirs=events)
def test_merged_core_equals_one_profile_with_both_histories(
    ours: list[tuple[str, int]], theirs: list[tuple[str, int]]
) -> None:
    engine = Engine(config_from_dict(CONFIG))
    survivor = _play(engine, "u", ours, "u")
    merged = _play(engine, "a", theirs, "a")
    both = engine.new_state("x")
    timeline = [(ts, "u", n, k) for n, (k, ts) in enumerate(sorted(ours, key=lambda e: e[1]))]
    timeline += [(ts, "a", n, k) for n, (k, ts) in enumerate(sorted(theirs, key=lambda e: e[1]))]
    for ts, tag, n, kind in sorted(timeline):
        engine.apply(both, _event(tag, n, kind, BASE + ts, country=tag))
    traits_u, traits_a = dict(survivor.traits), dict(merged.traits)
    merge_core(survivor, merged)
    assert survivor.totals == both.totals
    today = max(survivor.last_seen or 0, both.last_seen or 0) // DAY_US
    for metric in ("orders", "revenue", "product_views", "page_views", "email_opens"):
        for n in (7, 30, 90):
            assert survivor.window(metric, n, today) == both.window(metric, n, today)
    assert (survivor.first_seen, survivor.last_seen) == (both.first_seen, both.last_seen)
    assert (survivor.first_order, survivor.last_order) == (both.first_order, both.last_order)
    assert survivor.flags == both.flags
    assert survivor.traits == {**traits_a, **traits_u}  # the survivor's win
    seen = {h for h in survivor.recent if engine.seen(survivor, h)}
    assert seen == {h for h in both.recent if engine.seen(both, h)}


def test_merge_emits_final_nulls_and_re_evaluates_the_survivor() -> None:
    engine = Engine(config_from_dict(CONFIG))
    anon, user = engine.new_state("anon"), engine.new_state("user")
    for n in range(3):
        engine.apply(anon, _event("anon", n, "product_view", BASE + n * 1000))
    engine.apply(user, _event("user", 0, "identify", BASE + 5000))
    assert anon.values["rule:viewer"] == "in" and user.values.get("rule:viewer") is None
    changes, tomb = merge(engine, user, anon, BASE + 6000, "merge-1")
    assert all(c.cause == MERGE and c.event_id == "merge-1" for c in changes)
    final = [c for c in changes if c.customer_id == "anon"]
    assert {c.dimension for c in final} == {"lifecycle", "rule:viewer"}
    assert all(c.current is None and c.reason == {MERGED_INTO: "user"} for c in final)
    assert [c.sequence for c in final] == [2, 2]  # after prospect/in at 1
    mine = {c.dimension: c for c in changes if c.customer_id == "user"}
    assert mine["rule:viewer"].current == "in" and mine["rule:viewer"].previous == "out"
    assert user.totals[4] == 3  # product_views
    assert is_merged_away(tomb) and tomb.seqs == {"lifecycle": 2, "rule:viewer": 2}
    assert has_merged(user, "anon")
    cloud = mine["rule:viewer"].to_cloudevent()["data"]["cause"]
    assert cloud == {"kind": "merge", "event_id": "merge-1"}


def test_merging_a_tombstone_or_an_empty_profile_changes_nothing() -> None:
    engine = Engine(config_from_dict(CONFIG))
    user = engine.new_state("user")
    engine.apply(user, _event("user", 0, "product_view", BASE))
    before = user.encode()
    changes, tomb = merge(engine, user, CustomerState("ghost"), BASE + 1, "m")
    assert changes == [] and user.encode() == before and tomb.customer_id == "ghost"


def test_the_merge_is_stamped_no_earlier_than_either_clock() -> None:
    engine = Engine(config_from_dict(CONFIG))
    anon, user = engine.new_state("anon"), engine.new_state("user")
    engine.apply(anon, _event("anon", 0, "product_view", BASE + 9000))
    engine.apply(user, _event("user", 0, "page_view", BASE + 1000))
    changes, _ = merge(engine, user, anon, BASE + 2000, "m")
    assert {c.at for c in changes} == {BASE + 9000}
    assert user.clock == BASE + 9000


def test_time_driven_changes_due_before_the_merge_fire_first() -> None:
    engine = Engine(config_from_dict(CONFIG))
    anon, user = engine.new_state("anon"), engine.new_state("user")
    engine.apply(anon, _event("anon", 0, "order_completed", BASE))
    engine.apply(user, _event("user", 0, "page_view", BASE))
    changes, _ = merge(engine, user, anon, BASE + 40 * DAY_US, "m")
    first = changes[0]
    assert (first.customer_id, first.current, first.cause) == ("anon", "active", None)
    assert first.at == BASE + 30 * DAY_US
    mine = {c.dimension: c.current for c in changes if c.customer_id == "user"}
    assert mine["lifecycle"] == "active"  # the anonymous order counts


def test_clv_slices_merge_their_order_days() -> None:
    s = ClvSlice(10, 10, 0, 5.0, 0.0)
    s.merge(ClvSlice(10, 12, 1, 1.0, 2.0))
    assert s == ClvSlice(10, 12, 1, 6.0, 2.0)
    t = ClvSlice(20, 30, 2, 5.0, 7.0)
    t.merge(ClvSlice(4, 4, 0, 3.0, 0.0))
    assert t == ClvSlice(4, 30, 3, 3.0, 12.0)


def test_builtin_slices_merge() -> None:
    config = config_from_dict(
        {"persona": {"enabled": False}, "dimensions": [{"kind": "clv"}, {"kind": "interest"}]}
    )
    engine = Engine(config)
    anon, user = engine.new_state("anon"), engine.new_state("user")
    engine.apply(anon, Event("a1", "anon", "product_view", BASE, categories=("books",)))
    engine.apply(anon, Event("a2", "anon", "order_completed", BASE, amount=5.0))
    engine.apply(user, Event("u1", "user", "product_view", BASE + DAY_US, categories=("toys",)))
    changes, _ = merge(engine, user, anon, BASE + DAY_US, "m")
    interest = user.slices["interest"]
    assert isinstance(interest, InterestSlice) and set(interest.scores) == {"books", "toys"}
    assert isinstance(user.slices["clv"], ClvSlice)
    clv = engine.by_kind("clv")
    assert isinstance(clv, Clv)
    assert "anon" not in clv.population and "user" in clv.population
    dims = {c.dimension for c in changes if c.customer_id == "user"}
    assert "clv" in dims and "lifecycle" in dims


def test_inspect_names_the_merge_on_both_sides() -> None:
    from segmentflow.engine.inspect import describe

    engine = Engine(config_from_dict(CONFIG))
    anon, user = engine.new_state("anon"), engine.new_state("user")
    engine.apply(anon, _event("anon", 0, "product_view", BASE))
    _, tomb = merge(engine, user, anon, BASE + 1, "m")
    assert describe(tomb, engine)["merged_into"] == "user"
    assert describe(user, engine)["merged"] == ["anon"]
    assert "merged" not in describe(engine.new_state("x"), engine)
