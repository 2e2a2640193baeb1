"""Redis bytes per customer of the state before (v2: last 64 event-id hashes) and after (v3: every
id hash within ``dedup_horizon``, with its event time, and the home partition) — issue 11.

Populations: the synthetic one of the benchmarks (all three topics, 120 days), a CDNOW-like one
(purchases only, 1-10 orders per customer over 18 months), and a heavy one (200 orders in a
week, the retried-SDK-batch customer). Each state is written to a private redis-server under
its layout 2 key (``{ns:pP}:s:<id>``, issue 17) and measured with ``MEMORY USAGE`` (key and
value, allocator overhead included), as is each population's share of the customer directory
(``{ns:d<B>}``: id -> home; the per-customer figure shrinks with the population as its 16,384
buckets fill: 31 B at 100k, 15 B at 1M).

Usage::

    .venv/bin/python benchmarks/dedup_memory.py [--customers 3000]
"""

from __future__ import annotations

import argparse
import random
import statistics
from array import array
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis

from segmentflow.config import load_config
from segmentflow.embedded import EmbeddedRedis
from segmentflow.engine.state import CustomerState, _codec
from segmentflow.schemas.decode import Limits
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.keys import Keys
from segmentflow.state.memory import MemoryStore
from segmentflow.synthetic import generate

NAMESPACE = "sf-dedup-memory"


def encode_v2(state: CustomerState) -> bytes:
    """What the previous release stored: the last 64 id hashes, no times, no home."""
    fields = orjson.loads(state.body())[:16]
    ids = array("Q", list(state.recent)[-64:])
    header = b"\x02" + len(ids).to_bytes(2, "little")
    return header + ids.tobytes() + _codec()[0].compress(orjson.dumps(fields))


def states_of(events: list[dict[str, Any]], home: bool) -> list[CustomerState]:
    config = load_config(None)
    store = MemoryStore()
    events.sort(key=lambda e: e["timestamp"])
    run(events_from_dicts(events, Limits.of(config)), config, None, lambda c: None, store)
    states = list(store.load_many({e["customer_id"]: None for e in events}).values())
    for state in states:  # the worker sets it from the first event's partition
        state.home = hash(state.customer_id) % 4 if home else None
    return states


def cdnow(customers: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for c in range(customers):
        t = start + timedelta(days=rng.uniform(0, 90))
        for k in range(rng.randint(1, 10)):
            out.append(
                {
                    "event_id": f"cd{c}-{k}",
                    "customer_id": f"{c:05d}",
                    "type": "order_completed",
                    "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "properties": {"order_id": f"{c}-{k}", "revenue": 12.5, "currency": "USD"},
                }
            )
            t += timedelta(days=rng.expovariate(1 / 50))
    return out


def heavy(customers: int) -> list[dict[str, Any]]:
    t0 = 1_767_225_600_000_000
    return [
        {
            "event_id": f"h{c}-{i}",
            "customer_id": f"h{c}",
            "type": "order_completed",
            "timestamp": format_us(t0 + i * 3_000_000_000),
            "properties": {"order_id": f"{c}-{i}", "revenue": 10, "currency": "USD"},
        }
        for c in range(customers)
        for i in range(200)
    ]


def measure(client: redis.Redis[bytes], name: str, states: list[CustomerState]) -> dict[str, Any]:
    keys = Keys(NAMESPACE)
    out: dict[str, Any] = {"population": name, "customers": len(states)}
    names = [keys.state(s.customer_id, s.home or 0) for s in states]
    for label, encode in (("before_v2", encode_v2), ("after_v3", CustomerState.encode)):
        pipe = client.pipeline(transaction=False)
        for key, state in zip(names, states, strict=True):
            pipe.set(key, encode(state))
        pipe.execute()
        for key in names:
            pipe.memory_usage(key, samples=0)
        out[label] = round(statistics.mean(int(v or 0) for v in pipe.execute()), 1)
        client.delete(*names)
    out["ids_kept_mean"] = round(statistics.mean(len(s.recent) for s in states), 1)
    pipe = client.pipeline(transaction=False)
    for state in states:  # the directory entry (what replaced the claim key of layout 1)
        pipe.hset(keys.directory(state.customer_id), state.customer_id, state.home or 0)
    pipe.execute()
    buckets = sorted({keys.directory(s.customer_id) for s in states})
    for bucket in buckets:
        pipe.memory_usage(bucket, samples=0)
    directory = sum(int(v or 0) for v in pipe.execute())
    out["directory_buckets"] = len(buckets)
    out["directory_bytes_per_customer"] = round(directory / len(states), 1)
    client.delete(*buckets)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=3000)
    args = ap.parse_args()
    synthetic = [
        m.event
        for m in generate(args.customers, 11, datetime(2026, 1, 1, tzinfo=UTC), 120)
        if m.event is not None
    ]
    with EmbeddedRedis() as server:
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        for name, events in (
            ("synthetic", synthetic),
            ("cdnow_like", cdnow(args.customers)),
            ("heavy_200_orders_a_week", heavy(50)),
        ):
            print(orjson.dumps(measure(client, name, states_of(events, home=True))).decode())
        for pattern in Keys(NAMESPACE).everything:
            for key in list(client.scan_iter(match=pattern, count=1000)):
                client.delete(key)
        client.close()


if __name__ == "__main__":
    main()
