"""``segmentflow preview --when EXPR``: check a rule segment before deploying it (issue 15):
how many customers of the live state (Redis) match it now, a sample, and with ``--history`` its
daily population over a history file (a replay with the rule added)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from segmentflow import bootstrap
from segmentflow.cli._args import instant
from segmentflow.config import Settings
from segmentflow.engine.state import CustomerState
from segmentflow.service.preview import CANDIDATE, Candidate, preview_history, preview_live
from segmentflow.state.base import StateStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "preview",
        help="how many customers a rule segment that is not deployed yet would hold",
        description="Evaluate a candidate CEL rule (CONTRACT §6) on the live state: how many "
        "customers match, and a sample; with --history, its daily population over a history "
        "file (replay with the rule added to SEGMENTFLOW_CONFIG).",
    )
    p.add_argument("--when", required=True, help="the CEL expression, e.g. 'orders_90d >= 2'")
    p.add_argument("--name", default=CANDIDATE, help=f"rule name (default {CANDIDATE})")
    p.add_argument("--sample", type=int, default=10, help="customer ids to show (default 10)")
    p.add_argument(
        "--at",
        type=instant,
        default=None,
        help="evaluate at this instant (default: the latest customer clock in the state)",
    )
    p.add_argument("--history", type=Path, help="a JSONL event file sorted by timestamp")
    p.add_argument("--until", type=instant, help="replay the history up to this instant")
    p.add_argument("--no-live", action="store_true", help="skip the live state (no Redis)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    candidate = Candidate(settings.segment_config(), args.name, args.when)
    result: dict[str, object] = {"rule": args.name, "when": args.when}
    if not args.no_live:
        store = bootstrap.redis_store(settings)
        try:
            at = args.at if args.at is not None else _latest_clock(store)
            live = preview_live(candidate, _states(store), at or 0, args.sample)
        finally:
            store.close()
        result["live"] = live.as_json()
    daily = None
    if args.history is not None:
        daily = preview_history(candidate, args.history, args.until, bootstrap.memory_store())
    if daily is not None:
        result["history"] = [{"day": day, "members": n} for day, n in daily]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "live" in result:
        live_json = result["live"]
        assert isinstance(live_json, dict)
        console.print(
            f"rule:{args.name} ({args.when}) at {live_json['at']}: "
            f"[bold]{live_json['matching']}[/bold] of {live_json['customers']} customers match"
            + (f", {live_json['errors']} errored (counted as out)" if live_json["errors"] else "")
        )
        if live_json["sample"]:
            console.print("sample: " + ", ".join(live_json["sample"]), highlight=False)
    if daily is not None:
        table = Table(title=f"rule:{args.name} daily population over {args.history}")
        table.add_column("day")
        table.add_column("members", justify="right")
        for day, members in daily:
            table.add_row(day, str(members))
        console.print(table)
    return 0


def _states(store: StateStore, batch: int = 1000) -> Iterator[CustomerState]:
    """Every stored state, read a page of about ``batch`` ids at a time (Redis: SCAN + MGET)."""
    cursor = 0
    while True:
        cursor, ids = store.scan_ids(cursor, batch)
        if ids:
            yield from store.load_many(ids).values()
        if cursor == 0:
            return


def _latest_clock(store: StateStore) -> int | None:
    return max((s.clock for s in _states(store) if s.clock is not None), default=None)
