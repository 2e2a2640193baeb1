"""``segmentflow replay FILE --until T --changes-out OUT``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from segmentflow.bootstrap import replay_file
from segmentflow.cli._args import instant
from segmentflow.cli.render import populations_table
from segmentflow.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="run the engine over a JSONL file of events, in event time")
    p.add_argument("file", type=Path, help="JSONL events sorted by timestamp")
    p.add_argument(
        "--until",
        type=instant,
        help="RFC 3339 instant: fire every time-driven change due up to it",
    )
    p.add_argument("--changes-out", type=Path, required=True, help="where to write change events")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    config = Settings().segment_config()
    until: int | None = args.until
    if not args.file.is_file():
        console.print(f"[red]no such file: {args.file}[/red]")
        return 2
    size = args.file.stat().st_size
    started = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.quiet,
        transient=True,
    ) as progress:
        task = progress.add_task("replaying", total=size)
        processor, summary = replay_file(
            args.file,
            config,
            until,
            args.changes_out,
            progress=lambda n: progress.advance(task, n),
        )
    elapsed = time.perf_counter() - started
    if not args.quiet:
        rate = summary.events / elapsed if elapsed > 0 else 0.0
        console.print(
            f"{summary.events} events, {summary.changes} changes, {summary.duplicates} duplicates"
            f" in {elapsed:.2f}s ({rate:,.0f} events/s) -> {args.changes_out}"
        )
        if summary.skipped_after_until:
            console.print(f"{summary.skipped_after_until} events after --until were not applied")
        console.print(populations_table(processor.store.populations()))
    return 0
