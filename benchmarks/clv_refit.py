"""Time of one ``clv`` population refit (issue 16) at N customers: the fit of BG/NBD and
Gamma-Gamma to every customer's ``(x, t_x, T)`` and the re-valuation of all of them
(``Clv.prepare_sweep``: arrays from the population index, both fits, vectorised figures, the
high_value quantile, the customers whose value moved). Customers are drawn from the CDNOW
estimates (observed 10-78 weeks); the best of ``--repeat`` runs is reported.

    .venv/bin/python benchmarks/clv_refit.py [--customers 100000] [--repeat 3]
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


if __name__ == "__main__":
    main()
