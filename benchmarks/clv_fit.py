"""BG/NBD fit time by library (issue 16): segmentflow's scipy fit, lifetimes, btyd, pymc-marketing.

1. The CDNOW sample (``tests/fixtures/cdnow``) goes through ``population_data.py``'s event writer
   and ``fit-clv``'s reader; our fit gives the population parameters.
2. ``--customers`` synthetic customers are drawn from that fitted model (a Q1 cohort: first
   purchase in weeks 0-13, calibration to week 39): continuous ``(x, t_x, T)`` and the same rounded
   to days, as ``fit-clv`` summarises real orders.
3. Each library fits CDNOW and the synthetic set in its own process (its own virtualenv with
   ``--python LIB=PATH``; default this interpreter); the parent prints seconds, the ratio to our
   fit on the same data in the same run, and the log-likelihood of every library's estimate
   (evaluated by one formula, so they compare).

    .venv/bin/python benchmarks/clv_fit.py [--customers 1000000]
        [--python btyd=/tmp/clv-btyd/bin/python] [--python pymc-marketing=/tmp/clv-pymc/bin/python]
        [--libs scipy,lifetimes,btyd,pymc-marketing] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_sample.txt"
LIBS = ("scipy", "lifetimes", "btyd", "pymc-marketing")


# --- worker side: one library, no segmentflow import unless it is ours -------------------------
def _fit_scipy(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> tuple[float, ...]:
    from segmentflow.segmenters.clv_model import fit_bgnbd

    m = fit_bgnbd(x, t_x, T)
    return m.r, m.alpha, m.a, m.b


def _fit_lifetimes_like(module: str, x: Any, t_x: Any, T: Any) -> tuple[float, ...]:
    mod = __import__(module)
    fitter = mod.BetaGeoFitter(penalizer_coef=0.0)
    fitter.fit(x, t_x, T)
    p = fitter.params_
    return float(p["r"]), float(p["alpha"]), float(p["a"]), float(p["b"])


def _fit_pymc_marketing(x: Any, t_x: Any, T: Any) -> tuple[float, ...]:
    import pandas as pd
    from pymc_extras.prior import Prior
    from pymc_marketing.clv import BetaGeoModel

    data = pd.DataFrame({"customer_id": np.arange(len(x)), "frequency": x, "recency": t_x, "T": T})
    # flat priors: the MAP is then the maximum-likelihood estimate the others compute
    flat = {name: Prior("HalfFlat") for name in ("r", "alpha", "a", "b")}
    model = BetaGeoModel(data=data, model_config=flat)
    model.fit(method="map", progressbar=False)
    post = model.fit_result
    return tuple(float(post[k].values.ravel()[0]) for k in ("r", "alpha", "a", "b"))


def _version(lib: str) -> str:
    from importlib.metadata import version

    name = {"scipy": "scipy", "pymc-marketing": "pymc-marketing"}.get(lib, lib)
    return version(name)


def _import(lib: str) -> None:
    module = {
        "scipy": "segmentflow.segmenters.clv_model",
        "pymc-marketing": "pymc_marketing.clv",
    }.get(lib, lib)
    __import__(module)
    if lib == "pymc-marketing":
        __import__("pymc_extras.prior")


def worker(lib: str, data: Path) -> None:
    """Fit every array set in ``data`` with ``lib``; print one JSON line per set."""
    warnings.filterwarnings("ignore")
    arrays = np.load(data)
    sets = sorted({k.split(":")[0] for k in arrays.files})
    fit = {
        "scipy": _fit_scipy,
        "lifetimes": lambda x, t, T: _fit_lifetimes_like("lifetimes", x, t, T),
        "btyd": lambda x, t, T: _fit_lifetimes_like("btyd", x, t, T),
        "pymc-marketing": _fit_pymc_marketing,
    }[lib]
    print(json.dumps({"set": "version", "version": _version(lib)}), flush=True)
    _import(lib)  # imports are not part of the fit time
    for name in sets:
        x, t_x, T = (arrays[f"{name}:{c}"] for c in ("x", "t_x", "T"))
        started = time.perf_counter()
        params = fit(x, t_x, T)
        seconds = time.perf_counter() - started
        print(json.dumps({"set": name, "seconds": seconds, "params": params}), flush=True)


# --- parent side ----------------------------------------------------------------------------------
def cdnow_summary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CDNOW sample as events (``population_data.cdnow_lines``), read back by ``fit-clv``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from population_data import cdnow_lines, write

    from segmentflow.cli.fit_clv_cmd import ReadStats, read_orders
    from segmentflow.schemas.timefmt import parse_rfc3339
    from segmentflow.segmenters.clv_model import summarize

    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / "master.txt"  # population_data reads the 4-column master layout
        rows = (line.split() for line in FIXTURE.read_text().splitlines())
        master.write_text("".join(f"{r[0]} {r[2]} {r[3]} {r[4]}\n" for r in rows))
        events = Path(tmp) / "cdnow.jsonl"
        write(cdnow_lines(master), events)
        until = parse_rfc3339("1997-09-30T00:00:00Z")
        s = summarize(read_orders(events, until, ReadStats()), until)
    return s.x, s.t_x, s.T


def synthetic(customers: int, params: tuple[float, ...], seed: int) -> dict[str, np.ndarray]:
    from segmentflow.segmenters.clv_model import BgNbd

    rng = np.random.default_rng(seed)
    model = BgNbd(params[0], params[1], params[2], params[3])
    T = 39.0 - rng.uniform(0, 13, customers)
    x, t_x = model.sample(T, rng)
    days_T = np.floor(T * 7) / 7
    days_t = np.minimum(np.floor(t_x * 7) / 7, days_T)
    return {
        "synthetic:x": x,
        "synthetic:t_x": t_x,
        "synthetic:T": T,
        "synthetic_days:x": x,
        "synthetic_days:t_x": days_t,
        "synthetic_days:T": days_T,
    }


def run_lib(lib: str, python: str, data: Path, timeout: float) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--worker", lib, str(data)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    results: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            results[row.pop("set")] = row
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        results["error"] = f"exit {done.returncode}: {tail[:160]}"
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "DATA"), help=argparse.SUPPRESS)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--python", action="append", default=[], metavar="LIB=PATH")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per library")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return

    from rich.console import Console
    from rich.table import Table

    from segmentflow.segmenters.clv_model import BgNbd, fit_bgnbd

    pythons = dict(item.split("=", 1) for item in args.python)
    x, t_x, T = cdnow_summary()
    truth = fit_bgnbd(x, t_x, T)
    params = (truth.r, truth.alpha, truth.a, truth.b)
    arrays = {"cdnow:x": x, "cdnow:t_x": t_x, "cdnow:T": T}
    arrays.update(synthetic(args.customers, params, seed=16))
    out: dict[str, Any] = {"customers": args.customers, "truth": params, "libraries": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sets.npz"
        np.savez(data, **arrays)  # type: ignore[arg-type]
        for lib in args.libs.split(","):
            res = run_lib(lib, pythons.get(lib, sys.executable), data, args.timeout)
            for name, row in res.items():
                if isinstance(row, dict) and "params" in row:
                    cols = [arrays[f"{name}:{c}"] for c in ("x", "t_x", "T")]
                    ll = BgNbd(*row["params"]).log_likelihood_terms(*cols).sum()
                    row["log_likelihood"] = float(ll)
            out["libraries"][lib] = res
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))

    console = Console(width=150)
    table = Table(title=f"BG/NBD fit: CDNOW (2,357) and {args.customers:,} synthetic customers")
    for col in ("library", "version", "data", "seconds", "x scipy", "r", "alpha", "a", "b", "LL"):
        table.add_column(col, justify="left" if col in ("library", "data") else "right")
    base = out["libraries"].get("scipy", {})
    for lib, res in out["libraries"].items():
        version = res.get("version", {}).get("version", "-")
        if "error" in res and not any("params" in v for v in res.values() if isinstance(v, dict)):
            table.add_row(lib, version, "-", res["error"], *["-"] * 6)
            continue
        for name in ("cdnow", "synthetic", "synthetic_days"):
            row = res.get(name)
            if row is None:
                table.add_row(lib, version, name, res.get("error", "-"), *["-"] * 6)
                continue
            ratio = row["seconds"] / base[name]["seconds"] if name in base else float("nan")
            table.add_row(
                lib,
                version,
                name,
                f"{row['seconds']:.2f}",
                f"{ratio:.1f}x",
                *(f"{v:.4f}" for v in row["params"]),
                f"{row['log_likelihood']:,.1f}",
            )
    console.print(table)
    console.print(
        f"truth (our CDNOW fit): r={params[0]:.4f} alpha={params[1]:.4f} "
        f"a={params[2]:.4f} b={params[3]:.4f}"
    )


if __name__ == "__main__":
    main()
