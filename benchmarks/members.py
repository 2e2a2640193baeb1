"""Audiences (issue 15): the membership index's Redis bytes per customer, and the export of a
1M-member segment (``segmentflow members``: wall time, peak RSS) — with baselines measured in the
same run.

The index is layout 3 (issue 13, :mod:`segmentflow.state.member_chunks`): per segment and home
partition a chunk directory ``{ns:pP}:mx:<dim>\x1f<value>`` (a sorted set of chunk bounds) and
range-chunked hashes ``{ns:pP}:mc:<dim>\x1f<value>\x1e<bound>`` (customer id -> since, at most
128 members each, so Redis keeps them as listpacks). A segment's bytes are its directory plus
all its chunks, each measured with ``MEMORY USAGE ... SAMPLES 0`` (key, value, allocator
overhead).

1. Bytes per customer: a synthetic population is replayed (default config plus two rules) and
   its index is committed to Redis through ``RedisStore.commit`` (the worker's path); the
   1M-member segment below gives the per-membership cost at scale, times the memberships per
   customer.
2. Export: 1M members (ids like the synthetic ones, entry times on 365 midnights) committed
   through ``RedisStore.commit`` in batches; then the CLI as a subprocess (``--format jsonl``
   and ``csv`` to a file; peak RSS from GNU time), paging through the endpoint's reader with
   ``limit=1000`` cursors (in process, no HTTP), and the baseline: one process that reads the
   whole segment at once without paging (``ZRANGE`` of the directory, then ``HGETALL`` of every
   chunk in one pipeline) and writes the same JSON lines (in chunk order, not id order: the
   same set of lines, not the same file).

Everything lives under a private namespace (``bench-members-<id>``) of a private redis-server
(or ``--redis-url``), deleted at the end.

Usage::

    .venv/bin/python benchmarks/members.py [--members 1000000] [--customers 3000] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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
from segmentflow.state import member_chunks
from segmentflow.state.keys import Keys, PartKeys
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


@dataclass(frozen=True)
class Segment:
    """One segment's index keys in one home partition: its directory and its chunks."""

    keys: PartKeys
    dimension: str
    value: str
    directory: bytes
    chunks: list[bytes]

    @property
    def all_keys(self) -> list[bytes]:
        return [self.directory, *self.chunks]


def segment_of(client: redis.Redis[bytes], keys: PartKeys, dimension: str, value: str) -> Segment:
    """A segment's keys in one partition (the chunks named by the directory's bounds)."""
    directory = keys.segment(dimension, value).encode()
    prefix = keys.chunk_prefix(dimension, value).encode()
    bounds = client.zrange(directory, 0, -1)
    return Segment(keys, dimension, value, directory, [prefix + b for b in bounds])


def segments(client: redis.Redis[bytes], store: RedisStore) -> list[Segment]:
    """Every segment of every home partition (one chunk directory each); checks that no
    chunk key is left outside a directory."""
    found: list[Segment] = []
    for p in store.partitions:
        keys = store.part(p)
        for directory in store.partition_keys(p, "mx:*"):
            found.append(segment_of(client, keys, *keys.segment_of(directory)))
        chunks = sum(1 for _ in store.partition_keys(p, "mc:*"))
        listed = sum(len(s.chunks) for s in found if s.keys is keys)
        assert chunks == listed, (p, chunks, listed)  # every chunk is in its directory
    return found


def memory_usage(client: redis.Redis[bytes], keys: list[bytes]) -> dict[bytes, int]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return {k: int(v or 0) for k, v in zip(keys, pipe.execute(), strict=True)}


def encodings(client: redis.Redis[bytes], keys: list[bytes]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.object("encoding", key)
    return sorted({e.decode() for e in pipe.execute()})


def measure(client: redis.Redis[bytes], found: list[Segment]) -> dict[str, Any]:
    """Members, bytes (directories + chunks), encodings and chunk counts of ``found``."""
    sizes = memory_usage(client, [k for s in found for k in s.all_keys])
    counts = [member_chunks.count(client, s.keys, s.dimension, s.value) for s in found]
    chunks = [len(s.chunks) for s in found]
    return {
        "memberships": sum(counts),
        "index_bytes": sum(sizes.values()),
        "directory_bytes": sum(sizes[s.directory] for s in found),
        "largest_segment": max(counts),
        "chunks": sum(chunks),
        "chunks_per_segment_max": max(chunks),
        "members_per_chunk": round(sum(counts) / max(sum(chunks), 1), 1),
        "chunk_encodings": encodings(client, [c for s in found for c in s.chunks]),
        "directory_encodings": encodings(client, [s.directory for s in found]),
    }


def population_bytes(client: redis.Redis[bytes], ns: str, customers: int) -> dict[str, Any]:
    """Replay a synthetic population; commit its changes to Redis; measure the index keys."""
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
    found = segments(client, store)
    m = measure(client, found)
    memberships, total = m["memberships"], m["index_bytes"]
    with_state = memory.customer_count()
    pops = sum(n for values in store.populations().values() for n in values.values())
    assert memberships == pops, (memberships, pops)  # the index is what `segments` counts
    return {
        "customers": with_state,
        "segments": len(found),
        "memberships_per_customer": round(memberships / with_state, 2),
        "bytes_per_customer": round(total / with_state, 1),
        "bytes_per_membership": round(total / memberships, 1),
        **m,
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


def lines_digest(path: Path) -> tuple[int, str]:
    """The number of lines of ``path`` and a digest of them that ignores their order."""
    total, lines = 0, 0
    with path.open("rb") as f:
        for line in f:
            total += int.from_bytes(hashlib.blake2b(line, digest_size=8).digest())
            lines += 1
    return lines, f"{total % 2**64:016x}"


def cli(url: str, ns: str, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, SEGMENTFLOW_REDIS_URL=url, SEGMENTFLOW_NAMESPACE=ns)
    return [sys.executable, "-m", "segmentflow.cli.main", "members", *args], env


def export(url: str, ns: str, fmt: str, out: Path) -> dict[str, Any]:
    """``segmentflow members rule:bench in`` as a process: seconds, peak RSS, lines."""
    cmd, env = cli(url, ns, "rule:bench", "in", "--format", fmt)
    with out.open("wb") as sink:
        seconds, peak = measured(cmd, env, sink)
    lines, digest = lines_digest(out)
    return {
        "format": fmt,
        "digest": digest,
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


#: the baseline: the whole segment at once (the directory's bounds, then every chunk in one
#: pipeline), then the same lines (in chunk order, not id order)
NAIVE = """
import sys, orjson, redis
from segmentflow.schemas.timefmt import format_us
client = redis.Redis.from_url(sys.argv[1], socket_timeout=600)
prefix = sys.argv[3].encode()
pipe = client.pipeline(transaction=False)
for bound in client.zrange(sys.argv[2], 0, -1):
    pipe.hgetall(prefix + bound)
out = sys.stdout
for chunk in pipe.execute():
    for cid, since in chunk.items():
        row = {"customer_id": cid.decode(), "since": format_us(int(since))}
        out.write(orjson.dumps(row).decode())
        out.write("\\n")
"""


def read_all(url: str, ns: str, out: Path) -> dict[str, Any]:
    keys = Keys(ns).part(0)  # one home partition: one directory
    args = [url, keys.segment("rule:bench", "in"), keys.chunk_prefix("rule:bench", "in")]
    with out.open("wb") as sink:
        seconds, peak = measured([sys.executable, "-c", NAIVE, *args], dict(os.environ), sink)
    lines, digest = lines_digest(out)
    return {
        "lines": lines,
        "digest": digest,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
    }


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
        segment = segment_of(client, RedisStore(client, ns).part(0), "rule:bench", "in")
        m = measure(client, [segment])
        assert m["memberships"] == args.members, m
        results["fill"] = {
            "seconds": round(seconds, 2),
            "members_per_s": round(args.members / seconds),
            "bytes_per_membership": round(m["index_bytes"] / args.members, 1),
            **{k: v for k, v in m.items() if k not in ("memberships", "largest_segment")},
        }
        print("fill:", orjson.dumps(results["fill"]).decode(), flush=True)
        out = Path(f"/tmp/{ns}.out")
        results["startup"] = startup(url, ns)
        print("startup:", orjson.dumps(results["startup"]).decode(), flush=True)
        results["export"] = [export(url, ns, fmt, out) for fmt in ("jsonl", "csv")]
        print("export:", orjson.dumps(results["export"]).decode(), flush=True)
        results["read_all"] = read_all(url, ns, out)
        out.unlink()
        jsonl = results["export"][0]
        assert results["read_all"]["digest"] == jsonl["digest"], "not the same lines"
        results["paged"] = paged(client, ns, 1000)
        print("paged:", orjson.dumps(results["paged"]).decode())
        print("read all (no paging):", orjson.dumps(results["read_all"]).decode())
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
