"""Engine.apply / Engine.advance for one customer (CONTRACT §3, §6): stamps, order, sequences."""

from __future__ import annotations

from typing import Any

from segmentflow.config import config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event

DAY = 86_400_000_000
HOUR = 3_600_000_000
MIDNIGHT = 20_000 * DAY  # 2024-10-04T00:00:00Z
T0 = MIDNIGHT + 10 * HOUR + 15 * 60_000_000  # 10:15 that day


def engine(**config: Any) -> Engine:
    config.setdefault("rfm", {"enabled": False})  # RFM has its own tests
    return Engine(config_from_dict(config))


def ev(eid: str, type_: str, ts: int, amount: float = 0.0, cid: str = "c-1", **kw: Any) -> Event:
    return Event(eid, cid, type_, ts, amount, **kw)


def summary(
    changes: list[Change],
) -> list[tuple[str, str | None, str | None, int, int, str | None]]:
    return [(c.dimension, c.previous, c.current, c.sequence, c.at, c.event_id) for c in changes]


def fresh(e: Engine, cid: str = "c-1") -> CustomerState:
    return e.new_state(cid)


# --------------------------------------------------------------------------- first values
def test_first_order_gives_null_to_new_directly() -> None:
    e = engine()
    state = fresh(e)
    out = e.apply(state, ev("e1", "order_completed", T0, 20.0))
    assert out.status == "applied" and not out.late
    assert summary(out.changes) == [("lifecycle", None, "new", 1, T0, "e1")]
    change = out.changes[0].to_cloudevent()
    assert change["id"] == "c-1/lifecycle/1"
    assert change["data"]["cause"] == {"kind": "event", "event_id": "e1"}
    assert change["data"]["previous"] is None


def test_first_non_order_event_gives_prospect_then_order_gives_new() -> None:
    e = engine()
    state = fresh(e)
    first = e.apply(state, ev("e1", "page_view", T0))
    assert summary(first.changes) == [("lifecycle", None, "prospect", 1, T0, "e1")]
    assert e.apply(state, ev("e2", "search", T0 + 1)).changes == []
    second = e.apply(state, ev("e3", "order_completed", T0 + 2, 5.0))
    assert summary(second.changes) == [("lifecycle", "prospect", "new", 2, T0 + 2, "e3")]


# --------------------------------------------------------------------------- time-driven
def test_time_driven_changes_at_exact_due_moments() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 20.0))
    assert e.advance(state, T0 + 30 * DAY - 1) == []
    assert summary(e.advance(state, T0 + 30 * DAY)) == [
        ("lifecycle", "new", "active", 2, T0 + 30 * DAY, None)
    ]
    assert e.advance(state, T0 + 30 * DAY) == []  # fired once
    assert e.advance(state, T0 + 90 * DAY - 1) == []
    [at_risk] = e.advance(state, T0 + 90 * DAY)
    assert (at_risk.previous, at_risk.current, at_risk.at) == ("active", "at_risk", T0 + 90 * DAY)
    assert at_risk.to_cloudevent()["data"]["cause"] == {"kind": "time", "event_id": None}
    assert at_risk.to_cloudevent()["id"] == "c-1/lifecycle/3"


def test_several_due_changes_fire_at_once_in_due_order() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 20.0))
    changes = e.advance(state, T0 + 1000 * DAY)
    assert summary(changes) == [
        ("lifecycle", "new", "active", 2, T0 + 30 * DAY, None),
        ("lifecycle", "active", "at_risk", 3, T0 + 90 * DAY, None),
        ("lifecycle", "at_risk", "churned", 4, T0 + 180 * DAY, None),
    ]
    assert e.advance(state, T0 + 2000 * DAY) == []


def test_configured_thresholds() -> None:
    e = engine(lifecycle={"new_days": 1, "at_risk_days": 2, "churned_days": 3})
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 1.0))
    assert [(c.current, c.at) for c in e.advance(state, T0 + 10 * DAY)] == [
        ("active", T0 + DAY),
        ("at_risk", T0 + 2 * DAY),
        ("churned", T0 + 3 * DAY),
    ]


def test_due_changes_fire_before_a_later_event() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 20.0))
    back = T0 + 200 * DAY
    out = e.apply(state, ev("e2", "order_completed", back, 20.0))
    assert summary(out.changes) == [
        ("lifecycle", "new", "active", 2, T0 + 30 * DAY, None),
        ("lifecycle", "active", "at_risk", 3, T0 + 90 * DAY, None),
        ("lifecycle", "at_risk", "churned", 4, T0 + 180 * DAY, None),
        ("lifecycle", "churned", "reactivated", 5, back, "e2"),
    ]
    # reactivated for exactly 30 days (a later order does not extend it)
    assert e.apply(state, ev("e3", "order_completed", back + 10 * DAY, 5.0)).changes == []
    assert e.advance(state, back + 30 * DAY - 1) == []
    assert summary(e.advance(state, back + 30 * DAY)) == [
        ("lifecycle", "reactivated", "active", 6, back + 30 * DAY, None)
    ]


def test_change_due_exactly_at_event_time_fires_first() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 20.0))
    e.advance(state, T0 + 30 * DAY)
    # an order exactly at the at_risk threshold: at_risk fires (time), then the order
    # placed while at_risk reactivates (event)
    out = e.apply(state, ev("e2", "order_completed", T0 + 90 * DAY, 20.0))
    assert summary(out.changes) == [
        ("lifecycle", "active", "at_risk", 3, T0 + 90 * DAY, None),
        ("lifecycle", "at_risk", "reactivated", 4, T0 + 90 * DAY, "e2"),
    ]


def test_event_exactly_at_new_threshold_sees_time_change_only() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 20.0))
    out = e.apply(state, ev("e2", "page_view", T0 + 30 * DAY))
    assert summary(out.changes) == [("lifecycle", "new", "active", 2, T0 + 30 * DAY, None)]


def test_order_while_active_does_not_reactivate() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 20.0))
    out = e.apply(state, ev("e2", "order_completed", T0 + 89 * DAY, 20.0))
    assert summary(out.changes) == [("lifecycle", "new", "active", 2, T0 + 30 * DAY, None)]
    # active now runs until the new last order + 90d
    assert e.advance(state, T0 + 89 * DAY + 90 * DAY - 1) == []
    [change] = e.advance(state, T0 + 89 * DAY + 90 * DAY)
    assert (change.current, change.at) == ("at_risk", T0 + 179 * DAY)


# --------------------------------------------------------------------------- midnights
def test_time_dependent_rule_changes_at_midnight_stamped_at_midnight() -> None:
    e = engine(rules=[{"name": "idle", "when": "days_since_last_seen >= 2"}])
    state = fresh(e)
    first = e.apply(state, ev("e1", "page_view", T0))
    assert [c.dimension for c in first.changes] == ["lifecycle"]  # never in: nothing for rule
    assert e.advance(state, MIDNIGHT + 2 * DAY - 1) == []
    changes = e.advance(state, MIDNIGHT + 2 * DAY)
    assert summary(changes) == [("rule:idle", "out", "in", 1, MIDNIGHT + 2 * DAY, None)]
    data = changes[0].to_cloudevent()["data"]
    assert data["cause"]["kind"] == "time" and changes[0].to_cloudevent()["id"] == "c-1/rule:idle/1"
    # an event days later: nothing more fired at the midnights in between, then the event
    later = MIDNIGHT + 5 * DAY + 12 * HOUR
    out = e.apply(state, ev("e2", "page_view", later))
    assert summary(out.changes) == [("rule:idle", "in", "out", 2, later, "e2")]


def test_midnight_change_fires_before_an_event_of_a_later_day() -> None:
    e = engine(rules=[{"name": "idle", "when": "days_since_last_seen >= 2"}])
    state = fresh(e)
    e.apply(state, ev("e1", "page_view", T0))
    later = MIDNIGHT + 3 * DAY + HOUR
    out = e.apply(state, ev("e2", "page_view", later))
    assert summary(out.changes) == [
        ("rule:idle", "out", "in", 1, MIDNIGHT + 2 * DAY, None),
        ("rule:idle", "in", "out", 2, later, "e2"),
    ]


def test_window_rule_leaves_at_the_midnight_the_window_ends() -> None:
    # orders_7d counts day(t) - 7 < day(order) <= day(t): an order on day D counts through D+6
    e = engine(rules=[{"name": "recent", "when": "orders_7d >= 1"}])
    state = fresh(e)
    out = e.apply(state, ev("e1", "order_completed", T0, 10.0))
    assert summary(out.changes) == [
        ("lifecycle", None, "new", 1, T0, "e1"),
        ("rule:recent", "out", "in", 1, T0, "e1"),
    ]
    assert e.advance(state, MIDNIGHT + 7 * DAY - 1) == []
    assert summary(e.advance(state, MIDNIGHT + 7 * DAY)) == [
        ("rule:recent", "in", "out", 2, MIDNIGHT + 7 * DAY, None)
    ]


def test_rule_on_lifecycle_is_evaluated_after_lifecycle_on_events() -> None:
    e = engine(rules=[{"name": "fresh", "when": 'lifecycle == "new"'}])
    state = fresh(e)
    out = e.apply(state, ev("e1", "order_completed", T0, 10.0))
    assert [(c.dimension, c.current) for c in out.changes] == [
        ("lifecycle", "new"),
        ("rule:fresh", "in"),
    ]
    # new -> active at T0 + 30d (10:15); the rule follows at the next midnight
    changes = e.advance(state, MIDNIGHT + 31 * DAY)
    assert summary(changes) == [
        ("lifecycle", "new", "active", 2, T0 + 30 * DAY, None),
        ("rule:fresh", "in", "out", 2, MIDNIGHT + 31 * DAY, None),
    ]


def test_event_only_rule_is_not_evaluated_at_midnight() -> None:
    e = engine(rules=[{"name": "buyer", "when": "orders >= 1"}])
    state = fresh(e)
    e.apply(state, ev("e1", "order_completed", T0, 10.0))
    assert state.next_due == T0 + 30 * DAY  # the lifecycle threshold, no midnights


# --------------------------------------------------------------------------- duplicates, late
def test_duplicate_event_id_applied_once() -> None:
    e = engine(rules=[{"name": "two", "when": "orders >= 2"}])
    state = fresh(e)
    first = e.apply(state, ev("e1", "order_completed", T0, 10.0))
    again = e.apply(state, ev("e1", "order_completed", T0 + HOUR, 10.0))
    assert first.status == "applied" and again.status == "duplicate"
    assert again.changes == []
    assert state.totals[0] == 1  # orders
    assert state.values.get("rule:two") is None
    third = e.apply(state, ev("e2", "order_completed", T0 + 2 * HOUR, 10.0))
    assert summary(third.changes) == [("rule:two", "out", "in", 1, T0 + 2 * HOUR, "e2")]


def test_late_event_applied_and_stamped_with_customer_clock() -> None:
    e = engine(rules=[{"name": "buyer", "when": "orders >= 1"}])
    state = fresh(e)
    e.apply(state, ev("e1", "page_view", T0))
    latest = T0 + 5 * HOUR
    e.apply(state, ev("e2", "page_view", latest))
    out = e.apply(state, ev("e3", "order_completed", T0 + HOUR, 10.0))
    assert out.status == "applied" and out.late
    assert summary(out.changes) == [
        ("lifecycle", "prospect", "new", 2, latest, "e3"),
        ("rule:buyer", "out", "in", 1, latest, "e3"),
    ]
    # the order itself keeps its own time: new lasts until that order + 30d
    assert state.first_order == T0 + HOUR
    assert summary(e.advance(state, T0 + HOUR + 30 * DAY)) == [
        ("lifecycle", "new", "active", 3, T0 + HOUR + 30 * DAY, None)
    ]


def test_event_at_the_customer_clock_is_not_late() -> None:
    e = engine()
    state = fresh(e)
    e.apply(state, ev("e1", "page_view", T0))
    assert not e.apply(state, ev("e2", "page_view", T0)).late
    assert e.apply(state, ev("e3", "page_view", T0 - 1)).late


def test_change_times_never_go_backwards() -> None:
    e = engine(rules=[{"name": "idle", "when": "days_since_last_seen >= 1"}])
    state = fresh(e)
    times: list[int] = []
    stream = [
        ("page_view", T0),
        ("order_completed", T0 + 40 * DAY),
        ("page_view", T0 + 3 * DAY),  # late
        ("order_completed", T0 + 2 * DAY),  # late
        ("page_view", T0 + 300 * DAY),
    ]
    for n, (type_, ts) in enumerate(stream):
        times.extend(c.at for c in e.apply(state, ev(f"e{n}", type_, ts, 1.0)).changes)
    times.extend(c.at for c in e.advance(state, T0 + 400 * DAY))
    assert times == sorted(times) and len(times) > 5


# --------------------------------------------------------------------------- sequences, ids
def test_sequences_grow_by_one_per_dimension() -> None:
    e = engine(
        lifecycle={"new_days": 1, "at_risk_days": 2, "churned_days": 3},
        rules=[
            {"name": "buyer", "when": "orders_7d >= 1"},
            {"name": "de", "when": 'traits.country == "DE"'},
        ],
    )
    state = fresh(e)
    changes: list[Change] = []
    ts = T0
    for n in range(6):
        changes += e.apply(state, ev(f"o{n}", "order_completed", ts, 1.0)).changes
        changes += e.apply(
            state, ev(f"i{n}", "identify", ts + 1, traits={"country": "DE" if n % 2 else "FR"})
        ).changes
        ts += 10 * DAY
    changes += e.advance(state, ts + 10 * DAY)
    by_dim: dict[str, list[int]] = {}
    for change in changes:
        by_dim.setdefault(change.dimension, []).append(change.sequence)
        assert change.id == f"c-1/{change.dimension}/{change.sequence}"
        assert change.to_cloudevent()["id"] == change.id
    assert set(by_dim) == {"lifecycle", "rule:buyer", "rule:de"}
    for dim, seqs in by_dim.items():
        assert seqs == list(range(1, len(seqs) + 1)), dim
        assert len(seqs) >= 3, dim
    # each change's previous is the value the one before it set
    last: dict[str, str | None] = {}
    for change in changes:
        expected = last.get(change.dimension, "out" if change.dimension != "lifecycle" else None)
        assert change.previous == expected
        last[change.dimension] = change.current


def test_customers_are_independent() -> None:
    e = engine()
    a, b = fresh(e, "a"), fresh(e, "b")
    assert (
        e.apply(a, ev("e1", "order_completed", T0, 1.0, cid="a")).changes[0].id == "a/lifecycle/1"
    )
    out = e.apply(b, ev("e1", "page_view", T0, cid="b"))  # same event id, other customer
    assert out.status == "applied"
    assert out.changes[0].id == "b/lifecycle/1"


def test_cloudevent_shape() -> None:
    e = engine()
    state = fresh(e)
    [change] = e.apply(state, ev("e1", "order_completed", MIDNIGHT + 500_000, 1.0)).changes
    doc = change.to_cloudevent()
    assert {k: doc[k] for k in ("specversion", "type", "source", "subject", "datacontenttype")} == {
        "specversion": "1.0",
        "type": "segmentflow.segment.changed",
        "source": "segmentflow",
        "subject": "c-1",
        "datacontenttype": "application/json",
    }
    assert doc["time"] == "2024-10-04T00:00:00.500000Z"
    assert doc["data"]["customer_id"] == "c-1" and doc["data"]["dimension"] == "lifecycle"
    assert doc["data"]["sequence"] == 1 and "rule" in doc["data"]["reason"]
