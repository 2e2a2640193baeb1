"""``segmentflow inspect CUSTOMER_ID`` and ``segmentflow segments`` (read from Redis)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from segmentflow import bootstrap
from segmentflow.cli.render import populations_table
from segmentflow.config import Settings
from segmentflow.engine.inspect import describe
from segmentflow.service.config_walk import status_from_meta
from segmentflow.service.processor import is_tombstone


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect", help="a customer's state, values per dimension, and why")
    p.add_argument("customer_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_inspect)
    s = sub.add_parser("segments", help="population of every segment of every dimension")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=run_segments)


def run_inspect(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    store = bootstrap.redis_store(settings)
    state = store.get(args.customer_id)
    if state is None or is_tombstone(state):  # erased (README "forget")
        console.print(f"[yellow]no state for customer {args.customer_id!r}[/yellow]")
        return 1
    info = describe(state, bootstrap.engine(settings))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    table = Table(title=f"customer {args.customer_id}")
    table.add_column("dimension")
    table.add_column("value")
    table.add_column("seq", justify="right")
    table.add_column("why")
    for dim, entry in info["dimensions"].items():
        why = json.dumps(entry.get("why", {}), default=str)
        table.add_row(dim, str(entry["value"]), str(entry["sequence"]), why)
    console.print(table)
    for key in ("clock", "next_due", "first_seen", "last_seen", "first_order", "last_order"):
        console.print(f"{key}: {info[key]}")
    console.print(json.dumps(info["variables"], default=str))
    return 0


def run_segments(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    store = bootstrap.redis_store(settings)
    populations = store.populations()
    if args.json:
        print(json.dumps(populations, indent=2))
    else:
        console.print(populations_table(populations))
        walk = status_from_meta(store.meta_items())
        if walk["running"]:  # CONTRACT §6: a changed config is being applied to stored state
            console.print(
                f"config change: re-evaluating stored customers, {walk['customers']} done, "
                f"{walk['pending_shards']} shard(s) pending"
            )
    return 0
