"""Config re-evaluation (issue 15, CONTRACT §6): customers re-evaluated per second after a
config change, over a real Redis, through the worker's walk (``ConfigWalk``: SCAN page, load,
re-evaluate, commit with outbox, populations and members index), and for the pure part alone.

A synthetic base (an ``identify`` with a country and 1-3 orders per customer over 300 days) is
replayed under the old config into a private namespace (RFM and personas off: their population
models are not what is measured); the new config changes the lifecycle thresholds, changes one
rule, adds two reading time-dependent variables and removes one. The base is replayed in memory
and committed to Redis in batches (with a change per value, so populations and members exist).

Usage::

    .venv/bin/python benchmarks/config_reeval.py [--customers 100000] [--batch 500] [--json OUT]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

from segmentflow.config import config_from_dict
from segmentflow.embedded import EmbeddedRedis
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Limits
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.config_walk import ConfigWalk
from segmentflow.service.processor import Processor
from segmentflow.service.reevaluate import diff, fingerprints, overall, reevaluate
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore

DAY_US = 86_400_000_000
END = 20_600 * DAY_US  # a midnight in 2026
_RULES = [{"name": "buyer", "when": "orders >= 1"}]
OLD: dict[str, Any] = {
    "persona": {"enabled": False},
    "rfm": {"enabled": False},
    "rules": [
        *_RULES,
        {"name": "big", "when": "revenue >= 300.0"},
        {"name": "de", "when": 'traits.country == "DE" && orders >= 2'},
    ],  # no time-dependent rule: the replay building the base needs no midnight per customer
}
NEW: dict[str, Any] = {
    "persona": {"enabled": False},
    "rfm": {"enabled": False},
    "lifecycle": {"at_risk_days": 40, "churned_days": 120},
    "rules": [
        *_RULES,
        {"name": "big", "when": "revenue >= 100.0"},
        {"name": "lapsing", "when": 'lifecycle == "at_risk"'},
        {"name": "idle", "when": "days_since_last_seen >= 20"},
    ],
}


def events(customers: int, seed: int = 7) -> list[dict[str, Any]]:
    """The synthetic base, sorted by time."""
    rng = random.Random(seed)
    rows: list[tuple[int, dict[str, Any]]] = []
    for i in range(customers):
        cid = f"c{i:07d}"
        t = END - rng.randrange(300 * DAY_US)
        country = rng.choice(["DE", "FR", "US", "NL"])
        base = {"customer_id": cid}
        rows.append(
            (
                t,
                {
                    **base,
                    "event_id": f"{cid}-i",
                    "type": "identify",
                    "properties": {"traits": {"country": country}},
                },
            )
        )
        for k in range(rng.randint(1, 3)):
            t = min(END - 1, t + rng.randrange(40 * DAY_US))
            revenue = rng.randint(20, 250)
            order = {"order_id": f"{cid}-{k}", "revenue": revenue, "currency": "EUR"}
            event = {"event_id": f"{cid}-o{k}", "type": "order_completed", "properties": order}
            rows.append((t, {**base, **event}))
    rows.sort(key=lambda r: r[0])
    return [{**row, "timestamp": format_us(t)} for t, row in rows]


def copy_into(store: RedisStore, memory: MemoryStore, customers: int) -> None:
    """Commit the replayed states to Redis, with a change per value so that populations and
    the members index hold them (as the worker would have built them)."""
    ids = [f"c{i:07d}" for i in range(customers)]
    for i in range(0, len(ids), 1000):
        states = memory.load_many(ids[i : i + 1000])
        changes = [
            Change(cid, dim, None, value, state.seqs.get(dim, 1), state.clock or 0, None)
            for cid, state in states.items()
            for dim, value in state.values.items()
        ]
        store.commit(states, changes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--redis-url", default=None, help="default: a private redis-server")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    ns = f"bench-reeval-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "customers": args.customers}
    server = EmbeddedRedis(args.redis_url)
    with server:
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        try:
            old_cfg = config_from_dict(OLD)
            rows = events(args.customers)
            started = time.perf_counter()
            memory = MemoryStore()
            run(events_from_dicts(rows, Limits.of(old_cfg)), old_cfg, END, lambda _c: None, memory)
            results["replay_seconds"] = round(time.perf_counter() - started, 1)
            store = RedisStore(client, ns, shards=1, outbox=True)
            copy_into(store, memory, args.customers)
            store.assign_partitions([0])
            assert ConfigWalk(Processor(old_cfg, store, check_key=False)).done  # adopts
            client.delete(f"{ns}:outbox:0")  # the replay's changes: not measured
            ids = [f"c{i:07d}" for i in range(args.customers)]
            states: list[CustomerState] = []  # a copy for the pure part, loaded before the walk
            for i in range(0, len(ids), 1000):
                states.extend(store.load_many(ids[i : i + 1000]).values())
            new = Processor(config_from_dict(NEW), store, check_key=False)
            walk = ConfigWalk(new, args.batch)
            started = time.perf_counter()
            while not walk.done:
                walk.step(END)
            seconds = time.perf_counter() - started
            results["walk"] = {
                "batch": args.batch,
                "seconds": round(seconds, 2),
                "customers": walk.progress.customers,
                "customers_per_s": round(walk.progress.customers / seconds),
                "changes": walk.progress.changes,
            }
            print("walk:", orjson.dumps(results["walk"]).decode(), flush=True)
            engine = Processor(config_from_dict(NEW), MemoryStore()).engine
            prints = fingerprints(Processor(old_cfg, MemoryStore()).engine)
            change = diff(prints, overall(prints), engine)
            started = time.perf_counter()
            found = reevaluate(engine, change, states, END)
            pure = time.perf_counter() - started
            results["pure"] = {
                "seconds": round(pure, 2),
                "customers_per_s": round(len(states) / pure),
                "changes": len(found),
            }
            print("pure:", orjson.dumps(results["pure"]).decode(), flush=True)
        finally:
            keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
            client.close()
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
