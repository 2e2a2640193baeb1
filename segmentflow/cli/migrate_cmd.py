"""``segmentflow migrate-layout [--from URL] [--to URL] [--partitions N] [--dry-run]
[--drop-old]``: bring the namespace's Redis keys to layout 3 (:mod:`segmentflow.state.
migrate_layout`): copy layout 1 (issue 17), or convert layout 2's membership index in place
(issue 13). Stop every worker of the old version first. Exit 0 when migrated and verified, 1
when the verification found differences (the layout is then not switched) or the migration
cannot run, 2 when it is not supported (a layout-2 namespace to another Redis), 3 when Redis
does not answer."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from segmentflow.cli.members_cmd import positive
from segmentflow.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate-layout",
        help="bring the namespace's Redis keys to layout 3 (upgrades from layout 1 or 2)",
        description="Bring SEGMENTFLOW_NAMESPACE's keys to layout 3, verify, then mark the "
        "namespace. From layout 1 (before issue 17) every key is copied (to the same Redis, "
        "another one or a Redis Cluster; the old keys stay, for a rollback, unless "
        "--drop-old); from layout 2 the membership index is converted in place on the Redis "
        "holding it (each segment's old sorted set is deleted once verified). Stop every "
        "worker of the old version first. Resumable: run it again after an interruption.",
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="the Redis holding layout 1 (default SEGMENTFLOW_REDIS_URL; layout 2 is "
        "upgraded in place, on --to)",
    )
    p.add_argument(
        "--to",
        dest="target",
        metavar="URL",
        help="where layout 3 goes: a redis:// URL or a redis+cluster:// seed list "
        "(default SEGMENTFLOW_REDIS_URL)",
    )
    p.add_argument(
        "--partitions",
        type=positive,
        metavar="N",
        default=None,
        help="the input topics' partition count (default: read from the broker, else "
        "SEGMENTFLOW_PARTITIONS)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would move; write nothing")
    p.add_argument(
        "--drop-old",
        action="store_true",
        help="after a verified migration, delete the layout-1 keys (no rollback then)",
    )
    p.set_defaults(func=run)


def _connect(settings: Settings, url: str, role: str) -> Any:
    """A checked client for ``url`` (the bootstrap's: one Redis or a cluster)."""
    from segmentflow.bootstrap import RedisUnavailable, redis_client

    try:
        return redis_client(settings.model_copy(update={"redis_url": url}))
    except RedisUnavailable as exc:
        flag = "--from" if role == "source" else "--to"
        raise RedisUnavailable(
            f"cannot reach the {role} Redis ({flag} or SEGMENTFLOW_REDIS_URL): {exc}"
        ) from None


def partition_count(settings: Settings, given: int | None, err: Console) -> int | None:
    """``--partitions``, else the input topics' real count read from the broker, else
    ``SEGMENTFLOW_PARTITIONS`` (the broker not reachable: said on stderr); ``None`` (said) when
    the input topics' counts differ."""
    if given is not None:
        return given
    from segmentflow.streams.kafka_clients import (
        BrokerUnavailable,
        mismatch,
        topic_partition_counts,
    )

    try:
        counts = topic_partition_counts(settings, list(settings.input_topics.values()))
    except BrokerUnavailable:
        err.print(
            f"[yellow]the broker at {settings.kafka_url} does not answer: using "
            f"SEGMENTFLOW_PARTITIONS={settings.partitions}[/yellow] (pass --partitions with the "
            "input topics' partition count to be sure)",
            highlight=False,
        )
        return settings.partitions
    found = {topic: n for topic, n in counts.items() if n is not None}
    if len(set(found.values())) > 1:
        err.print(f"[red]migrate-layout:[/red] {mismatch(found)}", highlight=False)
        return None
    if not found:
        return settings.partitions
    count = next(iter(found.values()))
    err.print(f"[dim]{count} partitions (the input topics', from the broker)[/dim]")
    return count


def summary(report: Any) -> Table:
    """The counts of a :class:`~segmentflow.state.migrate_layout.MigrationReport`."""
    verb = "would copy" if report.dry_run else "copied"
    table = Table(title=f"migrate-layout {report.namespace!r} ({report.shards} partitions)")
    table.add_column("kind")
    table.add_column(verb, justify="right")
    for kind, count in report.counts.items():
        table.add_row(kind, f"{count:,}")
    return table


def run(args: argparse.Namespace, console: Console) -> int:
    from segmentflow.state.keys import LAYOUT
    from segmentflow.state.migrate_layout import MigrationError, MigrationRefused, migrate

    settings = Settings()
    source_url = args.source or settings.redis_url
    target_url = args.target or settings.redis_url
    err = Console(stderr=True)
    partitions = partition_count(settings, args.partitions, err)
    if partitions is None:
        return 2
    source = _connect(settings, source_url, "source")
    target = source if target_url == source_url else _connect(settings, target_url, "target")
    shown = [time.monotonic()]

    def progress(report: Any) -> None:
        if time.monotonic() - shown[0] >= 2.0:
            shown[0] = time.monotonic()
            counts = report.counts
            states = f"{counts['states']:,} states, " if "states" in counts else ""
            err.print(f"[dim]... {states}{counts['members']:,} memberships[/dim]")

    try:
        report = migrate(
            source,
            target,
            settings.namespace,
            partitions,
            dry_run=args.dry_run,
            drop_old=args.drop_old,
            progress=progress,
            min_replicas=settings.redis_min_replicas,
            replica_timeout=max(settings.redis_replica_timeout, 30.0),
        )
    except MigrationRefused as exc:
        err.print(f"[red]migrate-layout:[/red] {exc}", highlight=False)
        return 2
    except MigrationError as exc:
        if exc.report is not None:
            console.print(summary(exc.report))
            for note in exc.report.notes:
                console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
        err.print(f"[red]migrate-layout:[/red] {exc}", highlight=False)
        return 1
    finally:
        source.close()
        if target is not source:
            target.close()
    if report.resumed:
        console.print("resumed an interrupted migration: the counts are of this run's part")
    if report.already:
        console.print(
            f"namespace {settings.namespace!r} is at layout {LAYOUT} already: nothing copied"
        )
    else:
        console.print(summary(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if args.drop_old:
        verb = "would delete" if args.dry_run else "deleted"
        console.print(f"{verb} {report.dropped:,} layout-1 keys")
    if args.dry_run:
        checked = " (the populations counted from the states match the old)"
        console.print(f"dry run: nothing written{'' if report.source_layout == 2 else checked}")
    elif report.source_layout == 2:
        console.print(
            f"[green]verified[/green]: namespace marked layout {LAYOUT} (the membership index "
            "converted; the layout-2 sorted sets deleted)"
        )
    elif not report.already:
        kept = "" if args.drop_old else "; the layout-1 keys stay until --drop-old"
        console.print(f"[green]verified[/green]: namespace marked layout {LAYOUT}{kept}")
    return 0
