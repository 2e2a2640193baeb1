"""Time of one ``clv`` population refit (issue 16) at N customers: the fit of BG/NBD and
Gamma-Gamma to every customer's ``(x, t_x, T)`` and the re-valuation of all of them
(``Clv.prepare_sweep``: arrays from the population index, both fits, vectorised figures, the
high_value quantile, the customers whose value moved). Customers are drawn from the CDNOW
estimates (observed 10-78 weeks); the best of ``--repeat`` runs is reported.

With ``--redis`` the same population is stored as the workers store it (the packed rows of
``segmentflow.state.redis_clv`` in a private ``redis-server``) and the shared refit's read is
timed: the pipelined ``HGETALL`` of every bucket and the numpy decode
(``RedisClvPopulation.read``), then the whole shared refit of one worker (read, fit, publish,
the customers it moves: ``SharedClvRefit.prepare_sweep``), with the bytes per customer Redis
holds for the rows (``MEMORY USAGE`` of the buckets) and on the wire (a row's fields).

    .venv/bin/python benchmarks/clv_refit.py [--customers 100000] [--repeat 3] [--redis]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from segmentflow.segmenters.clv import Clv, ClvParams
from segmentflow.segmenters.clv_model import DAY_US, BgNbd


def population(n: int, at: int, seed: int = 16) -> dict[str, tuple[int, int, int, float]]:
    """``n`` customers drawn from BG/NBD with the CDNOW estimates, spend Gamma-distributed."""
    rng = np.random.default_rng(seed)
    weeks = rng.integers(10, 79, n)
    x, t_x = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426).sample(weeks.astype(float), rng)
    first = at // DAY_US - weeks * 7
    spend = rng.gamma(6.25, 15.44 / 3.74, n) * x
    return {
        f"c{i}": (int(first[i]), int(first[i] + t_x[i] * 7), int(x[i]), float(spend[i]))
        for i in range(n)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="also time the shared Redis read")
    args = parser.parse_args()
    at = 20_000 * DAY_US
    rows = population(args.customers, at)
    best = float("inf")
    dim = Clv(ClvParams())
    for _ in range(args.repeat):
        dim = Clv(ClvParams())
        dim.population, dim.version = rows, 1
        start = time.perf_counter()
        dim.prepare_sweep(at)
        best = min(best, time.perf_counter() - start)
    c = dim.cfg
    print(
        f"{args.customers:,} customers: refit {best:.2f} s (best of {args.repeat}); "
        f"r={c.r:.3f} alpha={c.alpha:.3f} a={c.a:.3f} b={c.b:.3f} p={c.p:.2f} q={c.q:.2f} "
        f"gamma={c.gamma:.2f}; high_value from {dim.high_value_min:.2f}; "
        f"{len(dim.moved(None)):,} customers to re-value"
    )
    if args.redis:
        shared(rows, at, args.repeat)


def shared(rows: dict[str, tuple[int, int, int, float]], at: int, repeat: int) -> None:
    """Store ``rows`` as the workers do and time the shared read and refit."""
    import redis

    from segmentflow.embedded import EmbeddedRedis
    from segmentflow.engine.state import CustomerState
    from segmentflow.segmenters.clv import ClvSlice
    from segmentflow.service.clv_share import SharedClvRefit
    from segmentflow.state.memory import MemoryStore
    from segmentflow.state.redis_clv import BUCKETS, RedisClvPopulation

    with EmbeddedRedis() as server:
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        pop = RedisClvPopulation(client, "bench")
        writer = Clv(ClvParams())
        pop.attach(writer)
        items = list(rows.items())
        start = time.perf_counter()
        for i in range(0, len(items), 10_000):  # as commits do: rows in the commit pipeline
            states = {}
            for cid, (first, last, x, spend) in items[i : i + 10_000]:
                state = CustomerState(cid)
                state.slices["clv"] = ClvSlice(first, last, x, 0.0, spend)
                state.home = 0
                states[cid] = state
            pipe = client.pipeline(transaction=True)
            pop.queue_commit(pipe, 0, states)  # one home partition
            pipe.execute()
        write = time.perf_counter() - start
        stored = sum(int(client.memory_usage(pop.rows_key(0, b)) or 0) for b in range(BUCKETS))
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            read = pop.read()
            best = min(best, time.perf_counter() - start)
        assert len(read.rows) == len(rows)
        dim = Clv(ClvParams())
        share = SharedClvRefit(dim, pop, MemoryStore(), 1)
        share.attach()
        start = time.perf_counter()
        share.prepare_sweep(at)
        refit = time.perf_counter() - start
        key_bytes = sum(len(cid) for cid in rows) / len(rows)
        print(
            f"{len(rows):,} customers in Redis: write {write:.2f} s (10k-row commits); "
            f"read {best:.2f} s (best of {repeat}: {BUCKETS} pipelined HGETALL + decode); "
            f"shared refit {refit:.2f} s (read, fit, publish, moved); "
            f"{stored / len(rows):.0f} B/customer in Redis "
            f"(23 B row + {key_bytes:.1f} B id + hash overhead); "
            f"{dim.refits} refit, {len(dim.moved(None)):,} to re-value"
        )
        client.close()


if __name__ == "__main__":
    main()
