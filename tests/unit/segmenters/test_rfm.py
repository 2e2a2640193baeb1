"""RFM (CONTRACT §3 "Default RFM"): scores, the segment map, the rank index, and agreement of
replay's final values with an exact computation written from the contract's words on 10k
customers."""

from __future__ import annotations

import bisect
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from segmentflow.config import DEFAULT_RFM_SEGMENTS, config_from_dict
from segmentflow.engine.replay import replay_events
from segmentflow.schemas.timefmt import from_datetime
from segmentflow.segmenters.rfm import RankIndex, SegmentMap, score

START = datetime(2025, 1, 1, tzinfo=UTC)


def test_score_formula_edges() -> None:
    assert score(0, 1) == 1
    assert [score(w, 5) for w in range(5)] == [1, 2, 3, 4, 5]
    assert score(99, 100) == 5 and score(19, 100) == 1 and score(20, 100) == 2


def test_default_map_covers_every_pair_once() -> None:
    table = SegmentMap.parse(DEFAULT_RFM_SEGMENTS).table
    assert len(table) == 25 and "other" not in table.values()
    assert table[(5, 1)] == "new_customers" and table[(2, 5)] == "cannot_lose"


def test_bad_pattern_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad pattern"):
        SegmentMap.parse({"x": "5-4"})


def test_rank_index_ties_share_a_score_and_removal_works() -> None:
    ranks = RankIndex()
    for cid, orders in [("a", 1), ("b", 1), ("c", 5)]:
        ranks.update(cid, (10, orders, 10.0))
    assert ranks.scores("a") == ranks.scores("b") == (1, 1, 1)
    assert ranks.scores("c") == (1, 1 + 5 * 2 // 3, 1)
    ranks.update("c", None)
    assert ranks.get("c") is None and len(ranks) == 2


def _orders(customers: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for n in range(customers):
        for k in range(rng.choice([1, 1, 2, 3, 5, 8])):
            at = START + timedelta(seconds=rng.randrange(300 * 86_400))
            revenue = round(rng.lognormvariate(3.5, 1.0), 2)
            events.append(
                {
                    "event_id": f"o-{n}-{k}",
                    "customer_id": f"c-{n}",
                    "type": "order_completed",
                    "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": {"order_id": f"o-{n}-{k}", "revenue": revenue, "currency": "EUR"},
                }
            )
    events.sort(key=lambda e: e["timestamp"])
    return events


def _exact(events: list[dict[str, Any]]) -> dict[str, str]:
    """§3 from its words: for each customer, count customers strictly worse on R, F, M."""
    last: dict[str, str] = {}
    orders: dict[str, int] = {}
    revenue: dict[str, float] = {}
    for e in events:
        cid = e["customer_id"]
        last[cid] = max(last.get(cid, ""), e["timestamp"])
        orders[cid] = orders.get(cid, 0) + 1
        revenue[cid] = revenue.get(cid, 0.0) + e["properties"]["revenue"]
    population = sorted(last)
    n = len(population)
    sorted_last = sorted(last.values())
    sorted_orders = sorted(orders.values())
    sorted_revenue = sorted(revenue.values())
    names = SegmentMap.parse(DEFAULT_RFM_SEGMENTS)
    out = {}
    for cid in population:
        r = min(5, 1 + 5 * bisect.bisect_left(sorted_last, last[cid]) // n)  # strictly older
        f = min(5, 1 + 5 * bisect.bisect_left(sorted_orders, orders[cid]) // n)  # fewer
        _m = min(5, 1 + 5 * bisect.bisect_left(sorted_revenue, revenue[cid]) // n)  # lower
        out[cid] = names.name(r, f)
    return out


def test_replay_agrees_with_exact_scores_on_10k_customers() -> None:
    events = _orders(10_000, seed=1)
    until = START + timedelta(days=301)
    config = config_from_dict({"persona": {"enabled": False}})
    changes = replay_events(events, config, from_datetime(until))
    final: dict[str, str | None] = {}
    for change in changes:
        if change["data"]["dimension"] == "rfm":
            final[change["subject"]] = change["data"]["current"]
    exact = _exact(events)
    assert len(exact) == 10_000
    agree = sum(final.get(cid) == segment for cid, segment in exact.items()) / len(exact)
    print(f"RFM agreement with exact scores on {len(exact)} customers: {agree:.2%}")
    assert agree >= 0.95
    assert agree == 1.0  # replay ends with an exact sweep at --until
