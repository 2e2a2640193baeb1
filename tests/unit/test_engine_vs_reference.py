"""Engine vs. brute-force reference (tests/reference.py) for lifecycle and rule segments.

The reference is written from CONTRACT.md §3/§6 alone. Deterministic examples validate the
reference itself; hypothesis properties compare `replay_events` with it, per customer and
dimension: ids and (sequence, previous, current, time, cause.kind, cause.event_id).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import (
    US_PER_DAY,
    US_PER_SECOND,
    datetime_to_us,
    format_us,
    parse_ts_us,
    reference_changes,
)

BASE_US = datetime_to_us(datetime(2025, 1, 6, tzinfo=UTC))
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")

RULE_POOL: dict[str, str] = {
    "orders_7d_2": "orders_7d >= 2",
    "de_buyer": 'traits.country == "DE" && orders_90d >= 1',
    "idle_3d": "days_since_last_seen >= 3",
    "lc_at_risk": 'lifecycle == "at_risk"',
    "big_spender": "revenue > 100.0",
    "opener": "email_opens_30d >= 1 && !email_unsubscribed",
    "high_aov": "avg_order_value > 50.0",
    "refunder": "refunds >= 1 && revenue_30d < 20.0",
    "browser": "page_views_7d + product_views_30d + searches_90d >= 3",
    "cart": "cart_adds_7d >= 1 || checkouts_30d >= 1",
    "bad_email": "email_hard_bounced || email_complained",
    "delivered": "emails_delivered >= 2 && email_clicks_90d == 0",
    "loyal": "days_since_first_order >= 5 && orders >= 2",
    "window_shopper": "days_since_first_seen >= 2 && orders == 0",
    "recent_buyer": "days_since_last_order <= 1",
    "fresh": 'lifecycle == "reactivated" || lifecycle == "new"',
    "rev7": "revenue_7d >= 30.0 && revenue_90d > 0.0",
}


# --------------------------------------------------------------------------- helpers
def ts(us: int, style: str = "z") -> str:
    """Render an instant as RFC 3339: 'z' (minimal fraction), 'z6' (always 6 digits),
    '+02' / '-0530' (local time with that offset)."""
    offsets = {"+02": (2 * 3600, "+02:00"), "-0530": (-(5 * 3600 + 1800), "-05:30")}
    if style in offsets:
        shift, suffix = offsets[style]
        secs, micro = divmod(us + shift * US_PER_SECOND, US_PER_SECOND)
        text = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if micro:
            text += f".{micro:06d}"
        return text + suffix
    secs, micro = divmod(us, US_PER_SECOND)
    text = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if style == "z6":
        return text + f".{micro:06d}Z"
    if micro:
        text += "." + f"{micro:06d}".rstrip("0")
    return text + "Z"


def ev(
    eid: str, cid: str, etype: str, at: int, props: dict[str, Any] | None = None, style: str = "z"
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": etype,
        "timestamp": ts(at, style),
        "properties": props if props is not None else default_props(etype, eid),
    }


def default_props(etype: str, eid: str) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {
        "page_view": {"url": "https://shop/x"},
        "product_view": {"product_id": "p1", "category": "shoes", "price": 10},
        "add_to_cart": {"product_id": "p1", "quantity": 1, "price": "10.00"},
        "remove_from_cart": {"product_id": "p1"},
        "checkout_started": {"cart_value": 10.0},
        "search": {"query": "boots"},
        "identify": {"traits": {"country": "DE"}},
        "order_completed": {"order_id": f"o-{eid}", "revenue": 60.0, "currency": "EUR"},
        "order_refunded": {"order_id": f"o-{eid}", "amount": 5},
        "email_clicked": {"campaign_id": "cmp", "url": "https://shop/y"},
        "email_bounced": {"campaign_id": "cmp", "bounce_type": "hard"},
    }
    return table.get(etype, {"campaign_id": "cmp"})


def D(days: float) -> int:
    return int(days * US_PER_DAY)


def until_dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


Key = tuple[str, str]
Row = tuple[str, int, str | None, str, int, str, str | None]


def project(changes: list[dict[str, Any]]) -> dict[Key, list[Row]]:
    out: dict[Key, list[Row]] = defaultdict(list)
    for c in changes:
        d = c["data"]
        dim = d["dimension"]
        if dim != "lifecycle" and not dim.startswith("rule:"):
            continue
        out[(d["customer_id"], dim)].append(
            (
                c["id"],
                d["sequence"],
                d["previous"],
                d["current"],
                parse_ts_us(c["time"]),
                d["cause"]["kind"],
                d["cause"]["event_id"],
            )
        )
    return dict(out)


def lc_rows(changes: list[dict[str, Any]], cid: str = "c1") -> list[tuple[Any, ...]]:
    return [
        (prev, cur, format_us(t), kind, eid)
        for _, _, prev, cur, t, kind, eid in project(changes).get((cid, "lifecycle"), [])
    ]


def rule_rows(changes: list[dict[str, Any]], name: str, cid: str = "c1") -> list[tuple[Any, ...]]:
    return [
        (prev, cur, format_us(t), kind, eid)
        for _, _, prev, cur, t, kind, eid in project(changes).get((cid, f"rule:{name}"), [])
    ]


SMALL = {"new_days": 3, "reactivated_days": 2, "at_risk_days": 5, "churned_days": 8}
T0 = BASE_US + D(0.5)  # 2025-01-06T12:00:00Z


def F(us: int) -> str:
    return format_us(us)


# --------------------------------------------------------------------------- reference self-checks
def test_timestamp_parsing() -> None:
    assert parse_ts_us("1970-01-01T00:00:00Z") == 0
    assert parse_ts_us("1970-01-01T02:00:00.5+02:00") == 500_000
    assert parse_ts_us("2025-01-06T12:00:00.000001Z") == T0 + 1
    assert format_us(T0 + 1) == "2025-01-06T12:00:00.000001Z"
    for style in ("z", "z6", "+02", "-0530"):
        assert parse_ts_us(ts(T0 + 123_456, style)) == T0 + 123_456


def test_prospect_then_new_then_active_at_risk_churned() -> None:
    events = [ev("e1", "c1", "page_view", T0), ev("e2", "c1", "order_completed", T0 + D(1))]
    cfg = {"lifecycle": SMALL}
    got = reference_changes(events, cfg, until_dt(T0 + D(20)))
    assert lc_rows(got) == [
        (None, "prospect", F(T0), "event", "e1"),
        ("prospect", "new", F(T0 + D(1)), "event", "e2"),
        ("new", "active", F(T0 + D(4)), "time", None),
        ("active", "at_risk", F(T0 + D(6)), "time", None),
        ("at_risk", "churned", F(T0 + D(9)), "time", None),
    ]
    assert [c["id"] for c in got] == [f"c1/lifecycle/{i}" for i in range(1, 6)]


def test_defaults_and_until_inclusive() -> None:
    events = [ev("e1", "c1", "order_completed", T0)]
    got = reference_changes(events, {}, until_dt(T0 + D(90)))
    assert lc_rows(got) == [
        (None, "new", F(T0), "event", "e1"),
        ("new", "active", F(T0 + D(30)), "time", None),
        ("active", "at_risk", F(T0 + D(90)), "time", None),
    ]
    assert len(lc_rows(reference_changes(events, {}, until_dt(T0 + D(90) - 1)))) == 2


def test_reactivated_from_at_risk_and_not_extended() -> None:
    events = [
        ev("e1", "c1", "order_completed", T0),
        ev("e2", "c1", "order_completed", T0 + D(7)),  # at_risk (since 5d) -> reactivated
        ev("e3", "c1", "order_completed", T0 + D(8)),  # does not extend reactivation
    ]
    got = reference_changes(events, {"lifecycle": SMALL}, until_dt(T0 + D(30)))
    assert lc_rows(got) == [
        (None, "new", F(T0), "event", "e1"),
        ("new", "active", F(T0 + D(3)), "time", None),
        ("active", "at_risk", F(T0 + D(5)), "time", None),
        ("at_risk", "reactivated", F(T0 + D(7)), "event", "e2"),
        ("reactivated", "active", F(T0 + D(9)), "time", None),
        ("active", "at_risk", F(T0 + D(13)), "time", None),
        ("at_risk", "churned", F(T0 + D(16)), "time", None),
    ]


def test_reactivated_from_churned() -> None:
    events = [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(9))]
    got = reference_changes(events, {"lifecycle": SMALL}, until_dt(T0 + D(10)))
    assert lc_rows(got)[-2:] == [
        ("at_risk", "churned", F(T0 + D(8)), "time", None),
        ("churned", "reactivated", F(T0 + D(9)), "event", "e2"),
    ]


def test_time_change_due_at_event_timestamp_comes_first() -> None:
    # order exactly at last + at_risk_days: at_risk is due then, and the order reactivates
    events = [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(5))]
    got = reference_changes(events, {"lifecycle": SMALL}, until_dt(T0 + D(5)))
    assert lc_rows(got)[-2:] == [
        ("active", "at_risk", F(T0 + D(5)), "time", None),
        ("at_risk", "reactivated", F(T0 + D(5)), "event", "e2"),
    ]
    # order exactly at first + new_days: new -> active first, then the order changes nothing
    events = [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(3))]
    got = reference_changes(events, {"lifecycle": SMALL}, until_dt(T0 + D(3)))
    assert lc_rows(got)[-1] == ("new", "active", F(T0 + D(3)), "time", None)


def test_order_while_new_is_not_reactivation_and_new_ends_on_time() -> None:
    events = [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(2))]
    got = reference_changes(events, {"lifecycle": SMALL}, until_dt(T0 + D(6)))
    assert lc_rows(got) == [
        (None, "new", F(T0), "event", "e1"),
        ("new", "active", F(T0 + D(3)), "time", None),
    ]


def test_same_timestamp_orders_and_duplicates() -> None:
    events = [
        ev("e1", "c1", "order_completed", T0),
        ev("e2", "c1", "order_completed", T0 + D(6)),
        ev("e2", "c1", "order_completed", T0 + D(6)),  # duplicate: applied once
        ev("e3", "c1", "order_completed", T0 + D(6)),
    ]
    got = reference_changes(events, {"lifecycle": SMALL}, until_dt(T0 + D(8)))
    assert lc_rows(got)[-2:] == [
        ("at_risk", "reactivated", F(T0 + D(6)), "event", "e2"),
        ("reactivated", "active", F(T0 + D(8)), "time", None),
    ]


def test_rules_midnight_first_in_never_in() -> None:
    cfg = {
        "rules": [
            {"name": "o7", "when": "orders_7d >= 2"},
            {"name": "never", "when": "orders >= 100"},
            {"name": "aov", "when": "avg_order_value > 50.0"},
            {"name": "idle", "when": "days_since_last_seen >= 3"},
        ]
    }
    events = [
        ev("e0", "c1", "page_view", T0),
        ev("e1", "c1", "order_completed", T0 + D(1)),
        ev("e2", "c1", "order_completed", T0 + D(2)),
    ]
    got = reference_changes(events, cfg, until_dt(T0 + D(12)))
    m = BASE_US  # midnight of T0's day
    assert rule_rows(got, "o7") == [
        ("out", "in", F(T0 + D(2)), "event", "e2"),
        ("in", "out", F(m + D(8)), "time", None),  # day(e1)=+1: out once day(t)-7 >= day(e1)
    ]
    assert rule_rows(got, "never") == []
    assert rule_rows(got, "aov") == [("out", "in", F(T0 + D(1)), "event", "e1")]
    assert rule_rows(got, "idle") == [("out", "in", F(m + D(5)), "time", None)]


def test_rule_at_event_on_midnight_sees_time_change_first() -> None:
    cfg = {"rules": [{"name": "o1", "when": "orders_7d >= 1"}]}
    m = BASE_US
    events = [
        ev("e1", "c1", "order_completed", m + 5),
        ev("e2", "c1", "order_completed", m + D(7), style="+02"),
    ]
    got = reference_changes(events, cfg, until_dt(m + D(7)))
    assert rule_rows(got, "o1") == [
        ("out", "in", F(m + 5), "event", "e1"),
        ("in", "out", F(m + D(7)), "time", None),
        ("out", "in", F(m + D(7)), "event", "e2"),
    ]


def test_traits_merge_flags_and_refunds() -> None:
    cfg = {
        "rules": [
            {"name": "de", "when": 'traits.country == "DE" && orders_90d >= 1'},
            {"name": "opener", "when": "email_opens_30d >= 1 && !email_unsubscribed"},
            {"name": "big", "when": "revenue > 100.0"},
            {"name": "bounced", "when": "email_hard_bounced"},
        ]
    }
    events = [
        ev("e1", "c1", "identify", T0, {"traits": {"country": "DE", "age": 30}}),
        ev(
            "e2",
            "c1",
            "order_completed",
            T0 + 1,
            {"order_id": "o1", "revenue": "120.50", "currency": "EUR"},
        ),
        ev("e3", "c1", "email_opened", T0 + 2, {"campaign_id": "c"}),
        ev("e4", "c1", "identify", T0 + 3, {"traits": {"country": "FR"}}),
        ev("e5", "c1", "order_refunded", T0 + 4, {"order_id": "o1", "amount": 30}),
        ev("e6", "c1", "email_bounced", T0 + 5, {"campaign_id": "c", "bounce_type": "soft"}),
        ev("e7", "c1", "email_unsubscribed", T0 + 6, {"campaign_id": "c"}),
    ]
    got = reference_changes(events, cfg, until_dt(T0 + D(1)))
    assert rule_rows(got, "de") == [
        ("out", "in", F(T0 + 1), "event", "e2"),
        ("in", "out", F(T0 + 3), "event", "e4"),
    ]
    assert rule_rows(got, "opener") == [
        ("out", "in", F(T0 + 2), "event", "e3"),
        ("in", "out", F(T0 + 6), "event", "e7"),
    ]
    assert rule_rows(got, "big") == [
        ("out", "in", F(T0 + 1), "event", "e2"),
        ("in", "out", F(T0 + 4), "event", "e5"),
    ]
    assert rule_rows(got, "bounced") == []


def test_lifecycle_rule_only_reevaluated_at_events_and_midnights() -> None:
    cfg = {"lifecycle": SMALL, "rules": [{"name": "ar", "when": 'lifecycle == "at_risk"'}]}
    events = [ev("e1", "c1", "order_completed", T0)]  # at_risk at T0+5d (12:00), midnight after
    got = reference_changes(events, cfg, until_dt(T0 + D(9)))
    assert rule_rows(got, "ar") == [
        ("out", "in", F(BASE_US + D(6)), "time", None),
        ("in", "out", F(BASE_US + D(9)), "time", None),
    ]


# --------------------------------------------------------------------------- generators
EVENT_TYPES = [
    "order_completed",
    "order_completed",
    "order_completed",
    "page_view",
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "search",
    "identify",
    "identify",
    "order_refunded",
    "email_sent",
    "email_delivered",
    "email_opened",
    "email_clicked",
    "email_bounced",
    "email_unsubscribed",
    "email_complained",
]


@st.composite
def money_values(draw: st.DrawFn) -> Any:
    halves = draw(st.integers(0, 300))
    form = draw(st.sampled_from(["float", "str", "int"]))
    if form == "float":
        return halves / 2
    if form == "int":
        return halves // 2
    return f"{halves / 2:.2f}"


@st.composite
def properties_for(draw: st.DrawFn, etype: str, eid: str) -> dict[str, Any]:
    if etype == "order_completed":
        p: dict[str, Any] = {
            "order_id": f"o-{eid}",
            "revenue": draw(money_values()),
            "currency": "EUR",
        }
        if draw(st.booleans()):
            p["items"] = [{"product_id": "p1", "quantity": 1, "price": 5}]
        return p
    if etype == "order_refunded":
        return {"order_id": "o-x", "amount": draw(money_values())}
    if etype == "identify":
        traits: dict[str, Any] = {}
        if draw(st.integers(0, 3)):
            traits["country"] = draw(st.sampled_from(["DE", "FR", "US"]))
        if draw(st.booleans()):
            traits["age"] = draw(st.integers(18, 80))
        if draw(st.booleans()):
            traits["vip"] = draw(st.booleans())
        return {"traits": traits}
    if etype == "email_bounced":
        p = {"campaign_id": "cmp"}
        bt = draw(st.sampled_from(["hard", "soft", None]))
        if bt is not None:
            p["bounce_type"] = bt
        return p
    return default_props(etype, eid)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    if draw(st.integers(0, 4)) == 0:
        th = {"new_days": 30, "reactivated_days": 30, "at_risk_days": 90, "churned_days": 180}
    else:
        at_risk = draw(st.integers(2, 8))
        th = {
            "new_days": draw(st.integers(1, at_risk)),
            "reactivated_days": draw(st.integers(1, at_risk)),
            "at_risk_days": at_risk,
            "churned_days": draw(st.integers(at_risk + 1, 12)),
        }
    names = draw(st.lists(st.sampled_from(sorted(RULE_POOL)), min_size=0, max_size=4, unique=True))
    config: dict[str, Any] = {
        "lifecycle": th,
        "rules": [{"name": n, "when": RULE_POOL[n]} for n in names],
    }
    span_cap = BASE_US + D(500)
    start = BASE_US + draw(st.sampled_from([0, 1, D(1) - 1, draw(st.integers(0, D(1) - 1))]))
    raw: list[tuple[int, int, dict[str, Any]]] = []  # (ts, draw order, event)
    n_customers = draw(st.integers(1, 4))
    counter = 0
    for c in range(n_customers):
        cid = draw(st.sampled_from([f"c{c}", f"c-{c}/ü", f"{c}"]))
        t = start + draw(st.sampled_from([0, draw(st.integers(0, D(3)))]))
        orders: list[int] = []
        for i in range(draw(st.integers(1, 30))):
            etype = draw(st.sampled_from(EVENT_TYPES))
            if i > 0:
                gap = draw(
                    st.sampled_from(
                        [
                            "same",
                            "micro",
                            "seconds",
                            "random",
                            "days",
                            "threshold",
                            "threshold",
                            "midnight",
                        ]
                    )
                )
                cand = t
                if gap == "micro":
                    cand = t + 1
                elif gap == "seconds":
                    cand = t + draw(st.integers(1, 86_400)) * US_PER_SECOND
                elif gap == "random":
                    cand = t + draw(st.integers(0, D(th["churned_days"] + 2)))
                elif gap == "days":
                    cand = t + D(draw(st.integers(1, th["churned_days"] + 1)))
                elif gap == "threshold" and orders:
                    anchor = draw(st.sampled_from([orders[0], orders[-1], *orders]))
                    key = draw(st.sampled_from(sorted(th)))
                    cand = max(t, anchor + D(th[key]) + draw(st.sampled_from([-1, 0, 0, 1])))
                elif gap == "midnight":
                    cand = max(
                        t, (t // US_PER_DAY + 1) * US_PER_DAY + draw(st.sampled_from([-1, 0, 0, 1]))
                    )
                t = cand if cand <= span_cap else t
            eid = f"{cid}-e{i}"
            event = {
                "event_id": eid,
                "customer_id": cid,
                "type": etype,
                "timestamp": ts(t, draw(st.sampled_from(["z", "z", "z6", "+02", "-0530"]))),
                "properties": draw(properties_for(etype, eid)),
            }
            if etype == "order_completed":
                orders.append(t)
            raw.append((t, counter, event))
            counter += 1
    raw.sort(key=lambda r: (r[0], r[1]))
    events = [e for _, _, e in raw]
    # duplicates: exact copies right after the original, or same id re-sent later (other time)
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(events) - 1))
        if draw(st.booleans()):
            events.insert(i + 1, dict(events[i]))
        else:
            j = draw(st.integers(i, len(events) - 1))
            dup = dict(events[i])
            dup["timestamp"] = events[j]["timestamp"]
            events.insert(j + 1, dup)
    last = max(r[0] for r in raw)
    last_orders = [r[0] for r in raw if r[2]["type"] == "order_completed"]
    tail = draw(st.sampled_from(["zero", "random", "midnight", "threshold", "cut"]))
    until = last
    if tail == "random":
        until = last + draw(st.integers(0, D(th["churned_days"] + 3)))
    elif tail == "midnight":
        until = (last // US_PER_DAY + draw(st.integers(1, 3))) * US_PER_DAY
    elif tail == "threshold" and last_orders:
        key = draw(st.sampled_from(sorted(th)))
        until = max(last, draw(st.sampled_from(last_orders)) + D(th[key]))
    elif tail == "cut":  # events after `until` are not applied
        until = draw(st.sampled_from([r[0] for r in raw])) + draw(st.sampled_from([-1, 0, 0, 1]))
    return events, config, until


# --------------------------------------------------------------------------- comparison
def _engine() -> tuple[Any, Any]:
    replay = pytest.importorskip("segmentflow.bootstrap")
    config_mod = importlib.import_module("segmentflow.config")
    return replay.replay_events, config_mod.SegmentConfig


def describe_diff(ref: dict[Key, list[Row]], eng: dict[Key, list[Row]]) -> str:
    lines = []
    for key in sorted(set(ref) | set(eng)):
        r, e = ref.get(key, []), eng.get(key, [])
        if r == e:
            continue
        lines.append(f"== {key}")
        for k in range(max(len(r), len(e))):
            rr = r[k] if k < len(r) else None
            ee = e[k] if k < len(e) else None
            mark = "  " if rr == ee else "!!"

            def fmt(x: Row | None) -> str:
                if x is None:
                    return "-"
                return f"{x[0]} {x[2]}->{x[3]} @{format_us(x[4])} {x[5]}:{x[6]}"

            lines.append(f"{mark} ref {fmt(rr):70s} | eng {fmt(ee)}")
    return "\n".join(lines)


def compare(events: list[dict[str, Any]], config: dict[str, Any], until_us: int) -> None:
    replay_events, segment_config = _engine()
    ref_changes = reference_changes(events, config, until_dt(until_us))
    eng_changes = replay_events(list(events), segment_config.model_validate(config), until_us)
    for c in eng_changes:
        assert TIME_RE.match(c["time"]), c["time"]
        d = c["data"]
        assert c["id"] == f"{d['customer_id']}/{d['dimension']}/{d['sequence']}"
        assert c["subject"] == d["customer_id"]
    ref, eng = project(ref_changes), project(eng_changes)
    if ref != eng:
        pytest.fail("engine differs from reference\n" + describe_diff(ref, eng), pytrace=False)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_matches_reference(
    scenario: tuple[list[dict[str, Any]], dict[str, Any], int],
) -> None:
    events, config, until_us = scenario
    compare(events, config, until_us)


def test_engine_matches_reference_on_fixed_histories() -> None:
    _engine()
    m = BASE_US
    rules = [{"name": n, "when": w} for n, w in RULE_POOL.items()]
    histories = [
        [ev("e1", "c1", "page_view", T0), ev("e2", "c1", "order_completed", T0 + D(1))],
        [
            ev("e1", "c1", "order_completed", T0),
            ev("e2", "c1", "order_completed", T0 + D(7)),
            ev("e3", "c1", "order_completed", T0 + D(8)),
        ],
        [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(9))],
        [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(5))],
        [ev("e1", "c1", "order_completed", T0), ev("e2", "c1", "order_completed", T0 + D(3))],
        [
            ev("e1", "c1", "order_completed", m + 5),
            ev("e2", "c1", "order_completed", m + D(7), style="+02"),
            ev("e3", "c1", "email_opened", m + D(8) - 1),
            ev("e4", "c1", "identify", m + D(8) + 1),
        ],
    ]
    for events in histories:
        compare(events, {"lifecycle": SMALL, "rules": rules}, T0 + D(20))
        compare(events, {"rules": rules}, T0 + D(200))
