"""Membership index writes (issue 13): the layout-3 chunk script against layout 2's
``ZREM``/``ZADD`` on the same moves, in one Redis, alternating; prints wall time per commit and
Redis CPU (``INFO cpu``) per member operation.

A segment of one home partition is filled with ``--members`` ids spread over ``--segments``
segments; then ``--commits`` commits each move ``--moves`` random members to another segment
(a remove and an add each), once through :func:`member_chunks.queue_writes` and once as sorted
set commands, in one ``MULTI`` per commit like a worker's commit. Two rounds of new moves,
the order of the two layouts swapped in the second.

Usage::

    .venv/bin/python benchmarks/member_writes.py [--members 30000] [--moves 200] [--json OUT]
"""

from __future__ import annotations

import argparse
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

from segmentflow.state import member_chunks
from segmentflow.state.keys import Keys, PartKeys

Plan = dict[tuple[str, str], tuple[list[str], dict[str, int]]]


def segment(n: int) -> tuple[str, str]:
    return ("persona", f"p{n}")


def plans(ids: list[str], where: dict[str, int], args: argparse.Namespace, seed: int) -> list[Plan]:
    """The commits' moves (each customer leaves its segment for another); updates ``where``."""
    rng = random.Random(seed)
    out: list[Plan] = []
    for r in range(args.commits):
        plan: Plan = {}
        for cid in rng.sample(ids, args.moves):
            old, new = where[cid], rng.randrange(args.segments)
            if old == new:
                continue
            plan.setdefault(segment(old), ([], {}))[0].append(cid)
            plan.setdefault(segment(new), ([], {}))[1][cid] = r
            where[cid] = new
        out.append(plan)
    return out


def chunked(client: redis.Redis[bytes], part: PartKeys, plan: Plan) -> None:
    pipe = client.pipeline(transaction=True)
    member_chunks.queue_writes(pipe, part, plan)
    pipe.execute()


def sorted_sets(client: redis.Redis[bytes], part: PartKeys, plan: Plan) -> None:
    pipe = client.pipeline(transaction=True)
    for seg, (removes, adds) in plan.items():
        if removes:
            pipe.zrem(part.layout2_segment(*seg), *removes)
        if adds:
            scores: dict[str | bytes, float] = {cid: since for cid, since in adds.items()}
            pipe.zadd(part.layout2_segment(*seg), scores)
    pipe.execute()


def redis_cpu(client: redis.Redis[bytes]) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--members", type=int, default=30_000)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--commits", type=int, default=50)
    ap.add_argument("--moves", type=int, default=200)
    ap.add_argument("--redis-url", default=None, help="default: a private redis-server")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ns = f"bench-writes-{uuid.uuid4().hex[:8]}"
    part = Keys(ns).part(0)
    ids = [f"k{i:07d}" for i in range(args.members)]
    where = {cid: random.Random(cid).randrange(args.segments) for cid in ids}
    results: dict[str, Any] = {"members": args.members, "moves": args.moves, "rounds": []}
    with bench_redis(args.redis_url, ns) as (_, client):
        for lo in range(0, len(ids), 2000):
            fill: Plan = {}
            for cid in ids[lo : lo + 2000]:
                fill.setdefault(segment(where[cid]), ([], {}))[1][cid] = 0
            chunked(client, part, fill)
            sorted_sets(client, part, fill)
        # each layout follows its own copy of who is where: the same moves every round
        followed = {"sorted sets (layout 2)": dict(where), "chunks (layout 3)": dict(where)}
        ways: list[tuple[str, Callable[[redis.Redis[bytes], PartKeys, Plan], None]]] = [
            ("sorted sets (layout 2)", sorted_sets),
            ("chunks (layout 3)", chunked),
        ]
        for round_ in range(2):
            for name, write in ways if round_ == 0 else ways[::-1]:
                moves = plans(ids, followed[name], args, seed=round_)
                ops = sum(len(r) + len(a) for plan in moves for r, a in plan.values())
                cpu, started = redis_cpu(client), time.perf_counter()
                for plan in moves:
                    write(client, part, plan)
                wall, used = time.perf_counter() - started, redis_cpu(client) - cpu
                row = {
                    "round": round_ + 1,
                    "layout": name,
                    "ms_per_commit": round(1000 * wall / len(moves), 3),
                    "redis_cpu_us_per_op": round(1e6 * used / ops, 2),
                }
                results["rounds"].append(row)
                print(orjson.dumps(row).decode(), flush=True)
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
