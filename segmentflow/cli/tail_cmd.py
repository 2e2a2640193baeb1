"""``segmentflow tail [--dimension D]``: print segment changes as they arrive."""

from __future__ import annotations

import argparse

import orjson
from rich.console import Console

from segmentflow.cli.render import change_line
from segmentflow.config import Settings
from segmentflow.streams.kafka_clients import consumer


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tail", help="print segment changes as they arrive")
    p.add_argument("--dimension", help="only this dimension (e.g. lifecycle, rule:vip)")
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest change")
    p.add_argument("--json", action="store_true", help="print raw change events as JSON lines")
    p.add_argument("--max", type=int, default=0, help="stop after this many changes")
    p.add_argument("--timeout", type=float, default=0, help="stop after this many idle seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    kafka = consumer(
        settings,
        settings.topic_segment_changes,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"),
    )
    shown = 0
    try:
        for message in kafka:
            try:
                change = orjson.loads(message.value)
            except orjson.JSONDecodeError:
                continue
            if args.dimension and change.get("data", {}).get("dimension") != args.dimension:
                continue
            if args.json:
                print(message.value.decode("utf-8"), flush=True)
            else:
                console.print(change_line(change))
            shown += 1
            if args.max and shown >= args.max:
                break
    finally:
        kafka.close()
    return 0
