"""``segmentflow members DIMENSION VALUE [--format jsonl|csv] [--limit N]`` (CONTRACT §5): the
customers currently in a segment, one per line, streamed from Redis page by page.
``segmentflow members --rebuild`` rebuilds the membership index from the stored states (for
state stored before the index existed; safe next to running workers)."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from segmentflow import bootstrap
from segmentflow.config import Settings
from segmentflow.service.audience import write_export


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "members",
        help="the customers currently in a segment (an audience), one per line",
        description="Stream the customers in segment DIMENSION=VALUE with the time each entered "
        "(e.g. `segmentflow members lifecycle at_risk --format csv > at_risk.csv`; rule "
        "segments: `segmentflow members rule:NAME in`). `segmentflow members --rebuild` "
        "rebuilds the index from the stored states (state written before the index existed).",
    )
    p.add_argument("dimension", nargs="?", help="lifecycle, rfm, persona or rule:<name>")
    p.add_argument("value", nargs="?", help="the segment's value (rule segments: in)")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the membership index from the stored states, then exit",
    )
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="default jsonl")
    p.add_argument("--limit", type=positive, default=None, help="at most N members")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    if args.rebuild:
        return rebuild(settings, console)
    if args.dimension is None or args.value is None:
        console.print("give DIMENSION and VALUE (e.g. `segmentflow members lifecycle at_risk`)")
        return 2
    store = bootstrap.redis_store(settings)
    reader = bootstrap.member_reader(store)
    try:
        write_export(sys.stdout, reader, args.dimension, args.value, args.format, args.limit)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if reader.count(args.dimension, args.value) == 0:  # a typo? say which segments exist
        known = [f"{d} {v}" for d, values in store.populations().items() for v in values]
        hint = f"; segments with members: {', '.join(known[:12])}" if known else ""
        Console(stderr=True).print(
            f"nobody is in segment {args.dimension} {args.value!r}{hint}", highlight=False
        )
    store.close()
    return 0


def rebuild(settings: Settings, console: Console) -> int:
    """``--rebuild``: the index made exact from the states; a summary on stderr."""
    store = bootstrap.redis_store(settings)
    err = Console(stderr=True)
    report = bootstrap.rebuild_members(store)
    store.close()
    err.print(
        f"members index rebuilt: {report.customers} customers, {report.added} memberships "
        f"added, {report.removed} removed ({report.retried} pages read again after a commit)",
        highlight=False,
    )
    return 0
