"""``segmentflow fit-clv FILE --until T [--json]``: the BG/NBD (and Gamma-Gamma) fit offline.

The summaries follow the papers (CONTRACT §5): time in weeks, the first order starts a
customer's clock, later UTC days with orders are the repeat transactions, ``T`` runs from the
first order's day to ``--until``. An order is dated by its UTC day, as in the paper's data, so
``--until 1997-09-30T00:00:00Z`` includes that day's orders. Only ``order_completed`` events count;
refunds, other event types and aliases are ignored (the offline fit takes ``customer_id`` as it
is); a repeated ``event_id`` counts once. Lines that are not valid events are counted and reported
on stderr, never fitted.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from segmentflow.cli._args import instant
from segmentflow.schemas.decode import Rejection, parse_json, validate_event
from segmentflow.schemas.timefmt import format_us
from segmentflow.segmenters.clv_model import (
    DAY_US,
    BgNbd,
    FitError,
    GammaGamma,
    Summary,
    fit_bgnbd,
    fit_gamma_gamma,
    summarize,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fit-clv", help="fit the BG/NBD and Gamma-Gamma models on the orders of a JSONL file"
    )
    p.add_argument("file", type=Path, help="JSONL events (any order)")
    p.add_argument(
        "--until", type=instant, required=True, help="RFC 3339 end of the calibration period"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


@dataclass
class ReadStats:
    """What :func:`read_orders` saw besides the orders it returned."""

    lines: int = 0
    orders: int = 0
    after_until: int = 0
    duplicates: int = 0
    invalid: int = 0
    first_invalid: str = ""
    other_types: dict[str, int] = field(default_factory=dict)


def read_orders(path: Path, until_us: int, stats: ReadStats) -> Iterator[tuple[str, int, float]]:
    """``(customer_id, time_us, revenue)`` of each distinct ``order_completed`` of the JSONL file
    whose UTC day starts at or before ``until_us``; counts the rest in ``stats``."""
    seen: set[str] = set()
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            stats.lines += 1
            data = parse_json(line)
            event = data if isinstance(data, Rejection) else validate_event(data, None)
            if isinstance(event, Rejection):
                stats.invalid += 1
                if not stats.first_invalid:
                    stats.first_invalid = f"line {number}: {event.reason.value}: {event.detail}"
                continue
            if event.type != "order_completed":
                stats.other_types[event.type] = stats.other_types.get(event.type, 0) + 1
                continue
            if event.event_id in seen:
                stats.duplicates += 1
                continue
            seen.add(event.event_id)
            if event.ts // DAY_US * DAY_US > until_us:
                stats.after_until += 1
                continue
            stats.orders += 1
            yield event.customer_id, event.ts, event.amount


def fit_file(path: Path, until_us: int) -> tuple[Summary, BgNbd, GammaGamma | None, ReadStats]:
    """Read, summarise and fit; the Gamma-Gamma part is ``None`` when it cannot be fitted."""
    stats = ReadStats()
    summary = summarize(read_orders(path, until_us, stats), until_us)
    model = fit_bgnbd(summary.x, summary.t_x, summary.T)
    try:
        spend: GammaGamma | None = fit_gamma_gamma(summary.x, summary.monetary)
    except FitError:
        spend = None
    return summary, model, spend, stats


def result_json(model: BgNbd, spend: GammaGamma | None) -> dict[str, Any]:
    """The CONTRACT §5 object, plus the log-likelihood and the Gamma-Gamma fit."""
    out: dict[str, Any] = {
        "model": "bgnbd",
        "r": model.r,
        "alpha": model.alpha,
        "a": model.a,
        "b": model.b,
        "customers": model.customers,
        "time_unit": "week",
        "log_likelihood": model.log_likelihood,
    }
    out["gamma_gamma"] = (
        None
        if spend is None
        else {"p": spend.p, "q": spend.q, "gamma": spend.gamma, "customers": spend.customers}
    )
    return out


def run(args: argparse.Namespace, console: Console) -> int:
    err = Console(stderr=True, soft_wrap=True)
    until: int = args.until
    if not args.file.is_file():
        err.print(f"[red]no such file: {args.file}[/red]")
        return 2
    try:
        summary, model, spend, stats = fit_file(args.file, until)
    except FitError as exc:
        err.print(f"[red]fit-clv: {exc}[/red]")
        return 2
    if stats.invalid:
        err.print(
            f"[yellow]{stats.invalid} of {stats.lines} lines are not valid events and were not "
            f"used[/yellow] (first: {stats.first_invalid}); `segmentflow replay` dead-letters them"
        )
    if args.json:
        console.file.write(orjson.dumps(result_json(model, spend)).decode() + "\n")
        return 0
    table = Table(title=f"BG/NBD fit on {args.file.name} until {format_us(until)} (weeks)")
    for name in ("r", "alpha", "a", "b"):
        table.add_column(name, justify="right")
    table.add_column("log-likelihood", justify="right")
    table.add_row(
        *(f"{v:.4f}" for v in (model.r, model.alpha, model.a, model.b)),
        f"{model.log_likelihood:,.1f}",
    )
    console.print(table)
    repeaters = int((summary.x > 0).sum())
    console.print(
        f"{model.customers} customers ({repeaters} repeat buyers), {stats.orders} orders used, "
        f"{stats.after_until} after --until, {stats.duplicates} duplicate ids",
        soft_wrap=True,
    )
    if spend is not None:
        mean = spend.p * spend.gamma / (spend.q - 1) if spend.q > 1 else math.inf
        console.print(
            f"Gamma-Gamma: p={spend.p:.4f} q={spend.q:.4f} gamma={spend.gamma:.4f}"
            f" (mean spend per transaction {mean:,.2f})",
            soft_wrap=True,
        )
    return 0
