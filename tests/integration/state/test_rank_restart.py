"""RFM ranks across a worker restart, on a real Redis: the rank sync stores the scores each
customer was last given with its metrics (``ns:rfm``, ``ns:rfm:log``), so a restarted worker's
index starts with them. Its first sweep then moves exactly the customers an uninterrupted
worker's sweep moves (not the whole population), and the changes are the same, change for
change; another worker's index knows the scores of customers it does not own."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from segmentflow.config import config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, Limits
from segmentflow.schemas.timefmt import from_datetime
from segmentflow.service.processor import Item, Processor
from segmentflow.service.replay import events_from_dicts
from segmentflow.state.redis_store import RedisStore

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 1, tzinfo=UTC)
CONFIG = config_from_dict({"persona": {"enabled": False}})


def _orders(customers: int, days: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(customers):
        for k in range(rng.choice([1, 1, 2, 3, 5])):
            at = START + timedelta(seconds=rng.randrange(days * 86_400))
            events.append(
                {
                    "event_id": f"o-{n}-{k}",
                    "customer_id": f"c-{n}",
                    "type": "order_completed",
                    "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": {
                        "order_id": f"o-{n}-{k}",
                        "revenue": round(rng.lognormvariate(3.5, 1.0), 2),
                        "currency": "EUR",
                    },
                }
            )
    events.sort(key=lambda e: e["timestamp"])
    return list(events_from_dicts(events, Limits()))


class Worker:
    """A processor over the Redis store with its rank index attached (what ``worker_parts``
    wires), recording the customers each RFM sweep moved."""

    def __init__(self, redis_url: str, namespace: str, sweeps: list[tuple[int, list[str]]]):
        self.store = RedisStore(redis_url, namespace)
        self.processor = Processor(CONFIG, self.store, check_key=False)
        self.store.attach_ranks(self.processor.engine.ranks)
        rfm = self.processor.engine.by_kind("rfm")
        moved, sweep = getattr(rfm, "moved"), self.processor.sweep_rfm  # noqa: B009
        at: list[int] = []

        def moved_spy(include: Any) -> list[tuple[str, Any]]:
            out: list[tuple[str, Any]] = moved(include)
            sweeps.append((at[-1], sorted(cid for cid, _ in out)))
            return out

        def sweep_spy(moment: int) -> list[Change]:
            at.append(moment)
            return sweep(moment)

        setattr(rfm, "moved", moved_spy)  # noqa: B010 (spies on this one instance)
        setattr(self.processor, "sweep_rfm", sweep_spy)  # noqa: B010


def _run(
    redis_url: str, namespace: str, events: list[Event], restart_after: int | None
) -> tuple[list[Change], list[tuple[int, list[str]]], int]:
    """Apply ``events`` in batches of 100, restarting the worker after batch ``restart_after``;
    the changes, every sweep's moved customers, and the moment of the restart."""
    sweeps: list[tuple[int, list[str]]] = []
    worker = Worker(redis_url, namespace, sweeps)
    changes: list[Change] = []
    restarted_at = 0
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    for number, batch in enumerate(batches):
        changes.extend(worker.processor.apply([Item("orders", e) for e in batch]))
        if number == restart_after:
            restarted_at = batch[-1].ts
            worker.store.close()
            worker = Worker(redis_url, namespace, sweeps)
    until = from_datetime(START + timedelta(days=200))
    changes.extend(worker.processor.advance(until))
    worker.store.close()
    return changes, sweeps, restarted_at


def _by_customer(changes: list[Change]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for change in changes:
        out[change.customer_id].append(change.to_json())
    return dict(out)


def test_a_restarted_worker_sweeps_like_an_uninterrupted_one(
    redis_url: str, namespace: str
) -> None:
    events = _orders(400, days=120, seed=5)
    half = len(events) // 200  # restart in the middle of the stream, between two batches
    plain, plain_sweeps, _ = _run(redis_url, f"{namespace}-a", events, None)
    again, again_sweeps, restarted = _run(redis_url, f"{namespace}-b", events, half)
    assert restarted > events[0].ts
    assert sum(c.dimension == "rfm" for c in plain) > 400
    # change for change: the same changes of every customer, in the same order (customers'
    # changes at one moment may interleave differently: the restarted index has another
    # insertion order, from the hash)
    assert _by_customer(again) == _by_customer(plain)
    assert sorted(c.to_json() for c in again) == sorted(c.to_json() for c in plain)
    # and the same work: every sweep after the restart moved the same customers (before the
    # fix the first one moved the whole population: nobody had recorded scores)
    after = [s for s in again_sweeps if s[0] > restarted]
    assert after == [s for s in plain_sweeps if s[0] > restarted]
    first = after[0]
    assert len(first[1]) < 100, first  # not the ~400 customers of the population


def test_another_workers_index_knows_the_scores_given(redis_url: str, namespace: str) -> None:
    """Scores travel with the metrics: a worker that owns none of the customers finds nobody
    to walk in a sweep once it read what the owner gave (and nobody after a late attach)."""
    events = _orders(200, days=60, seed=9)
    owner = Worker(redis_url, namespace, [])
    other = Worker(redis_url, namespace, [])
    for i in range(0, len(events), 100):
        owner.processor.apply([Item("orders", e) for e in events[i : i + 100]])
    owner.processor.advance(events[-1].ts)
    owner.processor.sweep_rfm(events[-1].ts)
    other.store.load_many([])  # reads the rank log
    ranks = other.processor.engine.ranks
    assert len(ranks) == len(owner.processor.engine.ranks) > 150
    assert ranks.sweep() == []
    late = Worker(redis_url, namespace, [])
    assert late.processor.engine.ranks.sweep() == []
    for worker in (owner, other, late):
        worker.store.close()
