"""Config re-evaluation (issue 15, CONTRACT §6): customers re-evaluated per second after a
config change, over a real Redis, through the worker's walk (``ConfigWalk``: SCAN page, load,
re-evaluate, commit with outbox, populations and members index), and for the pure part alone.

A synthetic base (an ``identify`` with a country and 1-3 orders per customer over 300 days) is
replayed under the old config into a private namespace (RFM and personas off: their population
models are not what is measured); the new config changes the lifecycle thresholds, changes one
rule, adds two reading time-dependent variables and removes one. The base is replayed in memory
and committed to Redis in batches (with a change per value, so populations and members exist).

With ``--compare`` the walked store is compared with a fresh replay of the base under the new
config (every customer's values, the populations): the issue's "same outcome as a fresh replay".
With ``--tick`` the walk is then driven the way a worker drives it, by ``SegmentWorker.tick``
(a 1 s timer, the outbox published to a no-op broker) after a reload to a third config: the
customers re-evaluated per second of wall time with the input idle (the long budget) and with a
batch waiting (the short one, for ``--busy-seconds``).

Usage::

    .venv/bin/python benchmarks/config_reeval.py [--customers 100000] [--batch 500] [--compare]
        [--tick] [--no-pure] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from _redis import bench_redis

from segmentflow.config import Settings, config_from_dict
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
from segmentflow.streams.runtime import SegmentWorker

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


#: the third config for the tick measurement (a reload from NEW): two rules changed
NEWER: dict[str, Any] = NEW | {
    "rules": [
        *_RULES,
        {"name": "big", "when": "revenue >= 200.0"},
        {"name": "lapsing", "when": 'lifecycle == "at_risk"'},
        {"name": "idle", "when": "days_since_last_seen >= 30"},
    ]
}
#: and a fourth, walked with a batch waiting (the short budget)
NEWEST: dict[str, Any] = NEWER | {
    "rules": [*NEWER["rules"][:-1], {"name": "idle", "when": "days_since_last_seen >= 45"}]
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


def copy_into(store: RedisStore, memory: MemoryStore, customers: int, copies: int = 1) -> None:
    """Commit the replayed states to Redis, with a change per value so that populations and
    the members index hold them (as the worker would have built them); ``copies`` > 1 stores
    each state that many times under other ids (``<id>-r<k>``: a larger base, same mix)."""
    ids = [f"c{i:07d}" for i in range(customers)]
    for copy in range(copies):
        for i in range(0, len(ids), 1000):
            states = memory.load_many(ids[i : i + 1000])
            if copy:
                for state in states.values():
                    state.customer_id = f"{state.customer_id}-r{copy}"
                states = {s.customer_id: s for s in states.values()}
            changes = [
                Change(cid, dim, None, value, state.seqs.get(dim, 1), state.clock or 0, None)
                for cid, state in states.items()
                for dim, value in state.values.items()
            ]
            store.commit(states, changes)


def _values(state: CustomerState) -> dict[str, str]:
    """A customer's values; a rule never entered and one left (``out``) are alike."""
    return {k: v for k, v in state.values.items() if not (k.startswith("rule:") and v == "out")}


def compare(store: RedisStore, rows: list[dict[str, Any]], customers: int) -> dict[str, Any]:
    """The walked store against a fresh replay of the base under NEW."""
    cfg = config_from_dict(NEW)
    fresh = MemoryStore()
    started = time.perf_counter()
    run(events_from_dicts(rows, Limits.of(cfg)), cfg, END, lambda _c: None, fresh)
    replay_s = time.perf_counter() - started
    ids = [f"c{i:07d}" for i in range(customers)]
    differ: list[str] = []
    for i in range(0, len(ids), 1000):
        mine, theirs = store.load_many(ids[i : i + 1000]), fresh.load_many(ids[i : i + 1000])
        differ += [c for c in mine if _values(mine[c]) != _values(theirs[c])]
    pops, want = store.populations(), fresh.populations()
    populations_equal = {d: {v: n for v, n in c.items() if n} for d, c in pops.items()} == {
        d: {v: n for v, n in c.items() if n} for d, c in want.items()
    }
    return {
        "fresh_replay_seconds": round(replay_s, 1),
        "customers_compared": len(ids),
        "customers_differing": len(differ),
        "first_differing": differ[:5],
        "populations_equal": populations_equal,
    }


async def _by_ticks(worker: SegmentWorker, busy_seconds: float | None) -> dict[str, Any]:
    """Tick every second (as the agents' timer does) until the walk is done, or for
    ``busy_seconds`` with a batch waiting for the lock."""
    if busy_seconds is not None:
        worker.batches_waiting = 1
    started = time.perf_counter()
    ticks = 0
    while not worker.config_walk.done:
        began = time.perf_counter()
        await worker.tick()
        ticks += 1
        if busy_seconds is not None and time.perf_counter() - started > busy_seconds:
            break
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - began)))
    seconds = time.perf_counter() - started
    worker.batches_waiting = 0
    done = worker.config_walk.progress.customers
    return {
        "seconds": round(seconds, 1),
        "ticks": ticks,
        "customers": done,
        "customers_per_s": round(done / seconds),
    }


def by_ticks(store: RedisStore, busy_seconds: float) -> dict[str, Any]:
    """Reload NEW -> NEWER and walk by ticks (idle input), then NEWER -> NEWEST with a batch
    waiting for ``busy_seconds``."""
    sent = [0]

    async def send(topic: str, key: bytes | None, value: bytes) -> object:
        sent[0] += 1
        return None

    async def ack(token: Any) -> object:
        return None

    async def measure() -> dict[str, Any]:
        processor = Processor(config_from_dict(NEW), store, check_key=False)
        worker = SegmentWorker(Settings(), processor, send, ack)
        worker.assign([(Settings().topic_purchase_events, 0)])
        await worker.tick()  # NEW is what the store follows: nothing to walk
        assert worker.config_walk.done
        assert await worker.reload(config_from_dict(NEWER)) is None
        idle = await _by_ticks(worker, None)
        assert await worker.reload(config_from_dict(NEWEST)) is None
        before = worker.config_walk.progress.customers
        busy = await _by_ticks(worker, busy_seconds)
        busy["customers"] -= before
        busy["customers_per_s"] = round(busy["customers"] / busy["seconds"])
        while not worker.config_walk.done:  # finish it (not measured)
            await worker.tick()
        return {"idle": idle, "busy": busy, "published": sent[0]}

    return asyncio.run(measure())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--redis-url", default=None, help="default: a private redis-server")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--compare", action="store_true", help="compare with a fresh NEW replay")
    ap.add_argument("--tick", action="store_true", help="measure the walk driven by ticks")
    ap.add_argument("--busy-seconds", type=float, default=30.0)
    ap.add_argument("--no-pure", action="store_true", help="skip the pure re-evaluation")
    ap.add_argument(
        "--copies",
        type=int,
        default=1,
        help="replay customers/COPIES and store each state COPIES times (saves the replay)",
    )
    args = ap.parse_args(argv)
    ns = f"bench-reeval-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "customers": args.customers,
        "copies": args.copies,
    }
    with bench_redis(args.redis_url, ns) as (_url, client):
        old_cfg = config_from_dict(OLD)
        if args.copies > 1 and (args.compare or args.customers % args.copies):
            ap.error("--copies: not with --compare; CUSTOMERS must divide by it")
        base = args.customers // args.copies
        rows = events(base)
        started = time.perf_counter()
        memory = MemoryStore()
        run(events_from_dicts(rows, Limits.of(old_cfg)), old_cfg, END, lambda _c: None, memory)
        results["replay_seconds"] = round(time.perf_counter() - started, 1)
        store = RedisStore(client, ns, shards=1, outbox=True)
        copy_into(store, memory, base, args.copies)
        del memory
        store.assign_partitions([0])
        assert ConfigWalk(Processor(old_cfg, store, check_key=False)).done  # adopts
        client.delete(store.keys.outbox(0))  # the replay's changes: not measured
        ids = [f"c{i:07d}" for i in range(args.customers)]
        states: list[CustomerState] = []  # a copy for the pure part, loaded before the walk
        for i in range(0, len(ids) if not (args.no_pure or args.copies > 1) else 0, 1000):
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
        if args.compare:
            results["compare"] = compare(store, rows, args.customers)
            print("compare:", orjson.dumps(results["compare"]).decode(), flush=True)
        if args.tick:
            client.delete(store.keys.outbox(0))  # the walk's changes (published by nobody)
            results["tick"] = by_ticks(store, args.busy_seconds)
            print("tick:", orjson.dumps(results["tick"]).decode(), flush=True)
        if args.no_pure:
            states = []
        engine = Processor(config_from_dict(NEW), MemoryStore()).engine
        prints = fingerprints(Processor(old_cfg, MemoryStore()).engine)
        change = diff(prints, overall(prints), engine)
        started = time.perf_counter()
        found = reevaluate(engine, change, states, END)
        pure = time.perf_counter() - started
        if states:
            results["pure"] = {
                "seconds": round(pure, 2),
                "customers_per_s": round(len(states) / pure),
                "changes": len(found),
            }
            print("pure:", orjson.dumps(results["pure"]).decode(), flush=True)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
