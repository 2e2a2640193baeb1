"""Audiences (issue 15): the membership index's Redis bytes per customer, and the export of a
1M-member segment (``segmentflow members``: wall time, peak RSS) — with baselines measured in the
same run.

1. Bytes per customer: a synthetic population is replayed (default config plus two rules) and
   its index is committed to Redis through ``RedisStore.commit`` (the worker's path); each
   member key is measured with ``MEMORY USAGE ... SAMPLES 0`` (key, value, allocator overhead).
   Small segments use Redis's compact listpack encoding, large ones a skiplist; the 1M-member
   set below gives the per-membership cost at scale, times the memberships per customer.
2. Export: 1M members (ids like the synthetic ones, entry times on 365 midnights, so ~2,700
   customers share each ``since``) committed through ``RedisStore.commit`` in batches; then the
   CLI as a subprocess (``--format jsonl`` and ``csv`` to a file; peak RSS from ``wait4``),
   paging through the endpoint's reader with ``limit=1000`` cursors (in process, no HTTP), and
   a single ``ZRANGE 0 -1`` that loads everything at once (the baseline).

Everything lives under a private namespace (``bench-members-<id>``) of a private redis-server
(or ``--redis-url``), deleted at the end.

Usage::

    .venv/bin/python benchmarks/members.py [--members 1000000] [--customers 3000] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from _redis import bench_redis

from segmentflow.config import config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.service.replay import run
from segmentflow.state.keys import Keys
from segmentflow.state.members import RedisMembers, iter_members
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore
from segmentflow.synthetic import customer_id_for, generate

DAY = 86_400_000_000
START = datetime(2026, 1, 1, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000
RULES = {
    "rules": [
        {"name": "repeat", "when": "orders_30d >= 2"},
        {"name": "engaged", "when": "page_views_30d >= 3"},
    ]
}


def member_keys(store: RedisStore) -> list[bytes]:
    """Every membership key (one sorted set per segment and home partition)."""
    return [key for p in store.partitions for key in store.partition_keys(p, "m:*")]


def memory_usage(client: redis.Redis[bytes], keys: list[bytes]) -> dict[bytes, int]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return {k: int(v or 0) for k, v in zip(keys, pipe.execute(), strict=True)}


def population_bytes(client: redis.Redis[bytes], ns: str, customers: int) -> dict[str, Any]:
    """Replay a synthetic population; commit its changes to Redis; measure the member keys."""
    events: list[Event] = []
    for message in generate(customers, 11, START, 120):
        if message.event is not None and not message.duplicate:
            event = validate_event(message.event, None)
            assert isinstance(event, Event)
            events.append(event)
    changes: list[Change] = []
    memory = MemoryStore()
    run(events, config_from_dict(RULES), events[-1].ts, changes.append, memory)
    store = RedisStore(client, ns)
    for i in range(0, len(changes), 5000):
        store.commit({}, changes[i : i + 5000])
    keys = member_keys(store)
    sizes = memory_usage(client, keys)
    memberships = sum(int(client.zcard(k)) for k in keys)
    with_state = memory.customer_count()
    pops = sum(n for values in store.populations().values() for n in values.values())
    assert memberships == pops, (memberships, pops)  # the index is what `segments` counts
    total = sum(sizes.values())
    return {
        "customers": with_state,
        "segments": len(keys),
        "memberships": memberships,
        "memberships_per_customer": round(memberships / with_state, 2),
        "index_bytes": total,
        "bytes_per_customer": round(total / with_state, 1),
        "bytes_per_membership": round(total / memberships, 1),
        "largest_segment": max(int(client.zcard(k)) for k in keys),
        "encodings": sorted({client.object("encoding", k).decode() for k in keys}),
    }


def fill(client: redis.Redis[bytes], ns: str, members: int, batch: int = 10_000) -> float:
    """Commit ``members`` entries into ``rule:bench in`` through RedisStore.commit; seconds."""
    store = RedisStore(client, ns)
    started = time.perf_counter()
    for lo in range(0, members, batch):
        changes = [
            Change(
                customer_id_for(i), "rule:bench", "out", "in", 1, START_US + (i % 365) * DAY, None
            )
            for i in range(lo, min(members, lo + batch))
        ]
        store.commit({}, changes)
    return time.perf_counter() - started


def measured(cmd: list[str], env: dict[str, str], stdout: Any) -> tuple[float, float]:
    """Run ``cmd`` under GNU time: (seconds, peak RSS in MB). (A child's ``ru_maxrss`` counts
    the memory of the process it was forked from, so it is read from a small parent.)"""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        timed = ["/usr/bin/time", "-o", report.name, "-f", "%M", *cmd]
        started = time.perf_counter()
        done = subprocess.run(timed, env=env, stdout=stdout, stderr=subprocess.PIPE, check=False)
        seconds = time.perf_counter() - started
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        peak_kb = int(report.read().split()[-1])
    return seconds, peak_kb / 1024


def cli(url: str, ns: str, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, SEGMENTFLOW_REDIS_URL=url, SEGMENTFLOW_NAMESPACE=ns)
    return [sys.executable, "-m", "segmentflow.cli.main", "members", *args], env


def export(url: str, ns: str, fmt: str, out: Path) -> dict[str, Any]:
    """``segmentflow members rule:bench in`` as a process: seconds, peak RSS, lines."""
    cmd, env = cli(url, ns, "rule:bench", "in", "--format", fmt)
    with out.open("wb") as sink:
        seconds, peak = measured(cmd, env, sink)
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    return {
        "format": fmt,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "lines": lines,
        "bytes": out.stat().st_size,
    }


def startup(url: str, ns: str) -> dict[str, Any]:
    """The same command on an empty segment: interpreter and imports, the floor of both."""
    cmd, env = cli(url, ns, "rule:none", "in")
    seconds, peak = measured(cmd, env, subprocess.DEVNULL)
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1)}


def paged(client: redis.Redis[bytes], ns: str, limit: int) -> dict[str, Any]:
    reader = RedisMembers(client, ns)
    started = time.perf_counter()
    count = sum(1 for _ in iter_members(reader, "rule:bench", "in", page_size=limit))
    seconds = time.perf_counter() - started
    return {"limit": limit, "members": count, "seconds": round(seconds, 2)}


#: the baseline: one ZRANGE 0 -1 loads the whole set, then the same lines are written
NAIVE = """
import sys, orjson, redis
from segmentflow.schemas.timefmt import format_us
client = redis.Redis.from_url(sys.argv[1], socket_timeout=600)
rows = client.zrange(sys.argv[2], 0, -1, withscores=True)
out = sys.stdout
for cid, since in rows:
    out.write(orjson.dumps({"customer_id": cid.decode(), "since": format_us(int(since))}).decode())
    out.write("\\n")
"""


def zrange_all(url: str, ns: str, out: Path) -> dict[str, Any]:
    key = Keys(ns).segment(0, "rule:bench", "in")  # one home partition: one set
    with out.open("wb") as sink:
        seconds, peak = measured([sys.executable, "-c", NAIVE, url, key], dict(os.environ), sink)
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    return {"lines": lines, "seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--members", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--redis-url", default=None, help="default: a private redis-server")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    ns = f"bench-members-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "members": args.members}
    with bench_redis(args.redis_url, ns, f"{ns}-pop") as (url, client):
        results["population"] = population_bytes(client, f"{ns}-pop", args.customers)
        print("population:", orjson.dumps(results["population"]).decode(), flush=True)
        seconds = fill(client, ns, args.members)
        key = Keys(ns).segment(0, "rule:bench", "in")
        size = int(client.memory_usage(key, samples=0) or 0)
        results["fill"] = {
            "seconds": round(seconds, 2),
            "members_per_s": round(args.members / seconds),
            "key_bytes": size,
            "bytes_per_membership": round(size / args.members, 1),
            "encoding": client.object("encoding", key).decode(),
        }
        print("fill:", orjson.dumps(results["fill"]).decode(), flush=True)
        out = Path(f"/tmp/{ns}.out")
        results["startup"] = startup(url, ns)
        print("startup:", orjson.dumps(results["startup"]).decode(), flush=True)
        results["export"] = [export(url, ns, fmt, out) for fmt in ("jsonl", "csv")]
        print("export:", orjson.dumps(results["export"]).decode(), flush=True)
        results["zrange_all"] = zrange_all(url, ns, out)
        out.unlink()
        results["paged"] = paged(client, ns, 1000)
        print("paged:", orjson.dumps(results["paged"]).decode())
        print("zrange 0 -1:", orjson.dumps(results["zrange_all"]).decode())
        per = results["population"]["memberships_per_customer"]
        results["bytes_per_customer_at_scale"] = round(
            per * results["fill"]["bytes_per_membership"], 1
        )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
