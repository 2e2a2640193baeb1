"""A worker's RFM rank index (issue 13): loading the RFM hashes into it at start
(``RedisRankSync.attach``), the first population sweep after a restart and a sweep of a worker
that owns part of the population, before and after bulk loading and stored scores, measured in
the same run on the same hash.

For each size, the hashes ``{ns:pP}:rfm`` of 12 home partitions (layout 2, issue 17) are filled
with CDNOW-like metrics (last order within 18 months, 1-10 orders, lognormal revenue) and the
scores each customer was given (what a worker's commits store). Then, on a fresh index each:

- **before**: the previous attach, one ``RankIndex.update`` (three sorted-list inserts) per
  entry, no scores, so the first sweep finds every customer moved (each would be loaded,
  re-scored and committed by the processor);
- **after**: ``RedisRankSync.attach``: entries read in pages, the index built in bulk
  (``RankIndex.load``: arrays filled at once, each sorted list from one sorted array) with the
  stored scores, so the first sweep moves nobody (as in an uninterrupted worker);
- **scan only**: HSCAN and decoding without any index (the floor both share);
- **changed sweep on a worker owning 6 of 12 shards**, after one metric change: before, the
  other workers' customers were never recorded locally, so every sweep with a change walked
  all of them through ``store.owns``; now their scores come with their metrics, so it walks
  the customers whose scores moved.

A private redis-server (or ``--redis-url``) and a private namespace (deleted at the end)::

    .venv/bin/python benchmarks/rank_attach.py [--customers 100000 1000000] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis
from _redis import bench_redis

from segmentflow.segmenters.rfm import Metrics, RankIndex, Scores
from segmentflow.state.redis_ranks import unpack_metrics
from segmentflow.state.redis_store import RedisStore

DAY_US = 86_400_000_000
END_US = 1_751_328_000_000_000  # 2025-07-01


def fill(client: redis.Redis[bytes], keys: list[str], customers: int, seed: int) -> None:
    """``customers`` entries in the hashes ``keys`` (one per home partition) as a worker's
    commits write them (with scores)."""
    rng = random.Random(seed)
    metrics: dict[str, Metrics] = {}
    for n in range(customers):
        orders = rng.choice([1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 7, 10])
        last = END_US - rng.randrange(540) * DAY_US - rng.randrange(86_400) * 1_000_000
        metrics[f"cust-{n:07d}"] = (last, orders, round(orders * rng.lognormvariate(3.3, 0.8), 2))
    ranks = RankIndex()
    ranks.load(list(metrics), list(metrics.values()))
    given = dict(ranks.sweep())
    pipe = client.pipeline(transaction=False)
    for i, (cid, (last, orders, revenue)) in enumerate(metrics.items()):
        r, f, m = given[cid]
        home = i % len(keys)
        pipe.hset(
            keys[home], cid, orjson.dumps([last, orders, revenue, home, 100 * r + 10 * f + m])
        )
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def before(client: redis.Redis[bytes], keys: list[str]) -> tuple[float, RankIndex]:
    """The attach before bulk loading: one update per entry (no scores stored then)."""
    ranks, homes = RankIndex(), {}
    began = time.perf_counter()
    for key in keys:
        for cid, packed in client.hscan_iter(key, count=5000):
            metrics, home = unpack_metrics(packed)
            customer = cid.decode("utf-8", "replace")
            ranks.update(customer, metrics)
            if home is not None:
                homes[customer] = home
    return time.perf_counter() - began, ranks


def after(store: RedisStore) -> tuple[float, RankIndex]:
    """The attach now (``RedisStore.attach_ranks``: bulk, with the stored scores)."""
    ranks = RankIndex()
    began = time.perf_counter()
    store.attach_ranks(ranks)
    return time.perf_counter() - began, ranks


def scan_only(client: redis.Redis[bytes], keys: list[str]) -> float:
    began = time.perf_counter()
    for key in keys:
        for cid, packed in client.hscan_iter(key, count=10_000):
            cid.decode("utf-8", "replace")
            unpack_metrics(packed)
    return time.perf_counter() - began


def first_sweep(ranks: RankIndex) -> tuple[float, list[tuple[str, Scores]]]:
    gc.collect()
    began = time.perf_counter()
    moved = ranks.sweep()
    return time.perf_counter() - began, moved


def changed_sweep(ranks: RankIndex, owns: Callable[[str], bool]) -> tuple[float, int]:
    """One more order for one customer, then a sweep filtered by ``owns``: seconds and how
    many customers it walked (``owns`` calls)."""
    first = next(iter(ranks.customers()))
    last, orders, revenue = ranks.get(first) or (0, 0, 0.0)
    ranks.update(first, (last, orders + 1, revenue + 1.0))
    walked = 0

    def counting(cid: str) -> bool:
        nonlocal walked
        walked += 1
        return owns(cid)

    gc.collect()
    began = time.perf_counter()
    ranks.sweep(counting)
    return time.perf_counter() - began, walked


def measure(client: redis.Redis[bytes], namespace: str, customers: int) -> dict[str, Any]:
    # a worker owning half of the 12 shards (homes from the entries)
    store = RedisStore(client, namespace, shards=12)
    store.assign_partitions(range(6))
    keys = [store.part(p).rfm for p in store.partitions]
    client.delete(*keys)
    fill(client, keys, customers, seed=customers)
    out: dict[str, Any] = {"customers": customers}
    gc.collect()
    out["scan_only_s"] = scan_only(client, keys)
    gc.collect()
    out["before_attach_s"], old = before(client, keys)
    out["before_sweep_s"], moved = first_sweep(old)
    out["before_sweep_moved"] = len(moved)
    gc.collect()
    out["after_attach_s"], new = after(store)
    out["after_sweep_s"], moved_now = first_sweep(new)
    out["after_sweep_moved"] = len(moved_now)
    assert len(new) == customers
    out["attach_ratio"] = out["before_attach_s"] / out["after_attach_s"]
    # the old index in its steady state: the worker recorded what it gave its own customers;
    # the others' were never recorded, so every changed sweep walks them
    for cid, scores in moved:
        if store.owns(cid):
            old.record(cid, scores)
    out["before_changed_sweep_s"], out["before_changed_walked"] = changed_sweep(old, store.owns)
    out["after_changed_sweep_s"], out["after_changed_walked"] = changed_sweep(new, store.owns)
    del old, new, moved
    client.delete(*keys)
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| customers | attach before | attach after | ratio | scan+decode only | "
        "first sweep before (moved) | first sweep after (moved) | "
        "changed sweep, owning 6 of 12 shards: before (walked) | after (walked) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['customers']:,} | {r['before_attach_s']:.2f} s | {r['after_attach_s']:.2f} s "
            f"| {r['attach_ratio']:.1f}x | {r['scan_only_s']:.2f} s | "
            f"{r['before_sweep_s']:.2f} s ({r['before_sweep_moved']:,}) | "
            f"{r['after_sweep_s']:.3f} s ({r['after_sweep_moved']:,}) | "
            f"{r['before_changed_sweep_s']:.3f} s ({r['before_changed_walked']:,}) | "
            f"{r['after_changed_sweep_s']:.3f} s ({r['after_changed_walked']:,}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--redis-url", default=None, help="reuse this Redis (default: a private one)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    namespace = f"bench-ranks-{uuid.uuid4().hex[:8]}"
    with bench_redis(args.redis_url, namespace) as (_url, client):
        rows = [measure(client, namespace, n) for n in args.customers]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
