"""Identity merges: ``replay`` against the brute-force reference (tests/reference_identity.py),
written from CONTRACT §2/§3 alone. Per customer and dimension: ids and (sequence, previous,
current, time, cause.kind, cause.event_id); final ``null`` changes carry ``merged_into``."""

from __future__ import annotations

import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import US_PER_DAY, datetime_to_us, format_us
from reference_identity import identity_reference

from segmentflow.bootstrap import replay_events
from segmentflow.config import config_from_dict

BASE = datetime_to_us(datetime(2025, 3, 3, tzinfo=UTC))
KNOWN = ["u1", "u2", "u3"]
ANONYMOUS = ["a1", "a2", "a3"]
TYPES = ["page_view", "product_view", "order_completed", "identify", "search", "email_opened"]
RULES = [
    {"name": "viewer", "when": "product_views_30d >= 2"},
    {"name": "buyer", "when": "orders >= 1 && page_views >= 1"},
    {"name": "de", "when": 'traits.country == "DE"'},
    {"name": "idle", "when": "days_since_last_seen >= 3"},
    {"name": "spender", "when": "revenue_7d >= 20.0"},
]
CONFIG: dict[str, Any] = {
    "rfm": {"enabled": False},
    "persona": {"enabled": False},
    "rules": RULES,
}
Row = tuple[str, int, str | None, str | None, str, str, str | None, Any]


def _props(kind: str, n: int, draw: Any) -> dict[str, Any]:
    if kind == "page_view":
        return {"url": "/"}
    if kind == "product_view":
        return {"product_id": f"p{n}"}
    if kind == "order_completed":
        return {
            "order_id": f"o{n}",
            "revenue": draw(st.sampled_from([5, 12.5, 30])),
            "currency": "EUR",
        }
    if kind == "identify":
        return {"traits": {"country": draw(st.sampled_from(["DE", "FR"])), f"t{n % 2}": n}}
    if kind == "search":
        return {"query": "q"}
    return {"campaign_id": "c"}


@st.composite
def scenarios(draw: Any) -> tuple[list[dict[str, Any]], int]:
    count = draw(st.integers(1, 24))
    offsets = sorted(draw(st.lists(st.integers(0, 60 * 24), min_size=count, max_size=count)))
    events: list[dict[str, Any]] = []
    for n, minutes in enumerate(offsets):
        ts = BASE + minutes * 3600 * 1_000_000  # hours: a 60-day span (no reactivation)
        shape = draw(st.sampled_from(["plain", "plain", "anonymous", "alias", "repeat"]))
        if shape == "repeat" and events:  # the same event again (an SDK retry), hours later
            again = dict(draw(st.sampled_from(events[-3:])))
            if ts - _ts(again) <= US_PER_DAY:  # well inside dedup_horizon
                again["timestamp"] = format_us(max(ts, _ts(events[-1])))
                events.append(again)
                continue
            shape = "plain"
        cid = draw(st.sampled_from(KNOWN + ANONYMOUS))
        event: dict[str, Any] = {
            "event_id": f"e{n}",
            "customer_id": cid,
            "timestamp": format_us(ts),
        }
        if shape == "alias":
            event["type"] = "alias"
            event["properties"] = {"previous_id": draw(st.sampled_from(KNOWN + ANONYMOUS))}
        else:
            kind = draw(st.sampled_from(TYPES))
            event["type"], event["properties"] = kind, _props(kind, n, draw)
            if shape == "anonymous":
                event["anonymous_id"] = draw(st.sampled_from(ANONYMOUS))
        events.append(event)
    until = _ts(events[-1]) + draw(st.integers(0, 200)) * US_PER_DAY // 4
    return events, until


def _ts(event: dict[str, Any]) -> int:
    from reference import parse_ts_us

    return parse_ts_us(event["timestamp"])


def _project(changes: list[dict[str, Any]]) -> dict[tuple[str, str], list[Row]]:
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for c in changes:
        d = c["data"]
        if d["dimension"] != "lifecycle" and not d["dimension"].startswith("rule:"):
            continue
        merged = d["reason"] if d["current"] is None else None
        out[(d["customer_id"], d["dimension"])].append(
            (
                c["id"],
                d["sequence"],
                d["previous"],
                d["current"],
                c["time"],
                d["cause"]["kind"],
                d["cause"]["event_id"],
                merged,
            )
        )
    return dict(out)


def _compare(events: list[dict[str, Any]], until: int) -> None:
    until_dt = datetime.fromtimestamp(until / 1_000_000, tz=UTC)
    ref = _project(identity_reference(events, CONFIG, until_dt))
    eng = _project(replay_events(events, config_from_dict(CONFIG), until))
    if ref != eng:
        lines = []
        for key in sorted(set(ref) | set(eng)):
            if ref.get(key) != eng.get(key):
                lines.append(f"== {key}\n ref {ref.get(key)}\n eng {eng.get(key)}")
        raise AssertionError("engine differs from the identity reference\n" + "\n".join(lines))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_replay_merges_as_the_reference_says(scenario: tuple[list[dict[str, Any]], int]) -> None:
    _compare(*scenario)


def _ev(eid: str, cid: str, kind: str, hours: int, **extra: Any) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {
        "product_view": {"product_id": "p"},
        "page_view": {"url": "/"},
        "order_completed": {"order_id": eid, "revenue": 25, "currency": "EUR"},
        "identify": {"traits": {"country": "DE"}},
    }
    props = table.get(kind, {})
    if kind == "alias":
        props = {"previous_id": extra.pop("previous_id")}
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": kind,
        "timestamp": format_us(BASE + hours * 3600 * 1_000_000),
        "properties": props,
        **extra,
    }


def test_the_issue_flow_anonymous_views_then_identify_then_an_order() -> None:
    events = [
        _ev("v1", "anon", "page_view", 0),
        _ev("v2", "anon", "product_view", 1),
        _ev("v3", "anon", "product_view", 2),
        _ev("i1", "user", "identify", 3, anonymous_id="anon"),
        _ev("v4", "anon", "product_view", 4),  # keyed by the merged-away id: counts for user
        _ev("o1", "user", "order_completed", 5),
        _ev("i1", "user", "identify", 6, anonymous_id="anon"),  # a retried identify
        _ev("al", "user", "alias", 7, previous_id="anon"),  # a repeated alias
    ]
    _compare(events, BASE + 40 * US_PER_DAY)
    changes = replay_events(events, config_from_dict(CONFIG), BASE + 40 * US_PER_DAY)
    anon = [c["data"] for c in changes if c["subject"] == "anon"]
    assert [(d["dimension"], d["current"]) for d in anon[-2:]] == [
        ("lifecycle", None),
        ("rule:viewer", None),
    ]
    assert all(d["cause"]["kind"] == "merge" for d in anon[-2:])
    user = [c["data"] for c in changes if c["subject"] == "user"]
    entered = [d for d in user if d["dimension"] == "rule:viewer" and d["current"] == "in"]
    assert entered and entered[0]["cause"] == {"kind": "merge", "event_id": "i1"}


def test_merges_chain() -> None:
    events = [
        _ev("v1", "a", "product_view", 0),
        _ev("v2", "b", "product_view", 1),
        _ev("x1", "b", "alias", 2, previous_id="a"),
        _ev("x2", "c", "alias", 3, previous_id="b"),
        _ev("v3", "a", "page_view", 4),  # a -> b -> c
        _ev("x3", "a", "alias", 5, previous_id="c"),  # names one person again: nothing
    ]
    _compare(events, BASE + 10 * US_PER_DAY)
