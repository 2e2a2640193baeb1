"""``segmentflow worker``: a production worker configured from the environment (§7)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from segmentflow.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker configured from the environment (SIGHUP: reload SEGMENTFLOW_CONFIG)",
    )
    p.add_argument(
        "--loglevel",
        default=os.environ.get("SEGMENTFLOW_LOG_LEVEL", "WARNING"),
        help="DEBUG, INFO, WARNING, ERROR (default: $SEGMENTFLOW_LOG_LEVEL or WARNING)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from segmentflow.streams import hangup, worker
    from segmentflow.streams.redis_health import redacted

    settings = Settings()
    settings.segment_config()  # fail fast on a bad config, before any connection
    hangup.catch_early()  # SIGHUP re-reads SEGMENTFLOW_CONFIG (streams/hangup.py), never kills
    console.print(
        f"segmentflow worker: kafka {settings.kafka_url}, redis {redacted(settings.redis_url)}, "
        f"group {settings.namespace}, web :{settings.web_port}"
    )
    # waits for Redis and the broker (start in any order), then runs until stopped
    return worker.run(settings, loglevel=args.loglevel)
