"""RFM rank structures compared: exact sorted lists (the default), Redis sorted sets, and a KLL
quantile sketch (Apache DataSketches).

For a stream of order updates over N customers it measures updates+queries per second and the
agreement of the resulting RFM segments with exact scores (CONTRACT §3 asks for >= 95%).

    .venv/bin/python benchmarks/rfm_ranks.py [--customers 20000] [--updates 100000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import redis
from rich.console import Console
from rich.table import Table

from segmentflow.config import DEFAULT_RFM_SEGMENTS
from segmentflow.segmenters.rfm import RankIndex, SegmentMap, score

Metrics = tuple[int, int, float]


def stream(customers: int, updates: int, seed: int) -> list[tuple[str, Metrics]]:
    """Order events: (customer, (last order time, orders, revenue)) after each order."""
    rng = random.Random(seed)
    state: dict[str, list[float]] = {}
    out = []
    for step in range(updates):
        cid = f"c-{rng.randrange(customers)}"
        row = state.setdefault(cid, [0, 0, 0.0])
        row[0] = step
        row[1] += 1
        row[2] += round(rng.lognormvariate(3.5, 1.0), 2)
        out.append((cid, (int(row[0]), int(row[1]), float(row[2]))))
    return out


def exact_segments(final: dict[str, Metrics]) -> dict[str, str]:
    ranks = RankIndex()
    for cid, metrics in final.items():
        ranks.update(cid, metrics)
    names = SegmentMap.parse(DEFAULT_RFM_SEGMENTS)
    out = {}
    for cid in final:
        scores = ranks.scores(cid)
        assert scores is not None
        out[cid] = names.name(scores[0], scores[1])
    return out


def run_sorted(events: list[tuple[str, Metrics]]) -> Callable[[str], tuple[int, int]]:
    ranks = RankIndex()
    for cid, metrics in events:
        ranks.update(cid, metrics)
        ranks.scores(cid)

    def rf(cid: str) -> tuple[int, int]:
        scores = ranks.scores(cid)
        assert scores is not None
        return scores[0], scores[1]

    return rf


def run_redis(events: list[tuple[str, Metrics]], url: str) -> Callable[[str], tuple[int, int]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(url)
    keys = ("bench:rfm:r", "bench:rfm:f", "bench:rfm:m")
    client.delete(*keys)
    for start in range(0, len(events), 500):  # pipelined per batch of 500, as the worker would
        pipe = client.pipeline(transaction=False)
        chunk = events[start : start + 500]
        for cid, metrics in chunk:
            for key, value in zip(keys, metrics, strict=True):
                pipe.zadd(key, {cid: value})
        for _cid, metrics in chunk:
            pipe.zcard(keys[0])
            for key, value in zip(keys, metrics, strict=True):
                pipe.zcount(key, "-inf", f"({value}")
        pipe.execute()

    def rf(cid: str) -> tuple[int, int]:
        n = client.zcard(keys[0])
        out = []
        for key in keys[:2]:
            value = client.zscore(key, cid)
            out.append(score(client.zcount(key, "-inf", f"({value}"), n))
        return out[0], out[1]

    return rf


def run_kll(events: list[tuple[str, Metrics]], k: int = 200) -> Callable[[str], tuple[int, int]]:
    from datasketches import kll_floats_sketch

    # a sketch cannot delete: each customer's latest value is inserted again (the stream of
    # updates), so ranks drift toward heavy customers; rebuilt per query window in practice
    sketches = [kll_floats_sketch(k), kll_floats_sketch(k)]
    latest: dict[str, Metrics] = {}
    for cid, metrics in events:
        latest[cid] = metrics
        for sketch, value in zip(sketches, metrics[:2], strict=False):
            sketch.update(float(value))
        sketches[0].get_rank(float(metrics[0]))
    # fair variant: rebuild from the latest value per customer (what a periodic sweep can do)
    rebuilt = [kll_floats_sketch(k), kll_floats_sketch(k)]
    for metrics in latest.values():
        for sketch, value in zip(rebuilt, metrics[:2], strict=False):
            sketch.update(float(value))

    def rf(cid: str) -> tuple[int, int]:
        r_value, f_value = latest[cid][0], latest[cid][1]
        r = min(5, 1 + int(5 * rebuilt[0].get_rank(float(r_value), inclusive=False)))
        f = min(5, 1 + int(5 * rebuilt[1].get_rank(float(f_value), inclusive=False)))
        return r, f

    return rf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    events = stream(args.customers, args.updates, seed=7)
    final = dict(events)
    truth = exact_segments(final)
    names = SegmentMap.parse(DEFAULT_RFM_SEGMENTS)
    table = Table(title=f"RFM ranks: {len(events):,} order updates, {len(final):,} customers")
    for column in ("structure", "updates+queries/s", "ratio", "agreement"):
        table.add_column(column, justify="right" if column != "structure" else "left")
    results = []
    runs: list[tuple[str, Callable[[], Callable[[str], tuple[int, int]]]]] = [
        ("sorted lists (exact, in process)", lambda: run_sorted(events)),
        ("Redis sorted sets (exact, pipelined)", lambda: run_redis(events, args.redis)),
        ("KLL sketch k=200 (approximate)", lambda: run_kll(events)),
    ]
    for name, make in runs:
        started = time.perf_counter()
        rf = make()
        rate = len(events) / (time.perf_counter() - started)
        agree = sum(names.name(*rf(cid)) == seg for cid, seg in truth.items()) / len(truth)
        results.append((name, rate, agree))
    base = results[0][1]
    for name, rate, agree in results:
        table.add_row(name, f"{rate:,.0f}", f"{rate / base:.2f}x", f"{agree:.1%}")
    Console().print(table)


if __name__ == "__main__":
    main()
