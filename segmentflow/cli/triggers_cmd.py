"""``segmentflow triggers``: deliver matching segment changes to HTTP webhooks.

Config: the YAML file named by ``SEGMENTFLOW_TRIGGERS_CONFIG`` (or ``--config``); see
:mod:`segmentflow.triggers.config`. Consumer group ``<SEGMENTFLOW_NAMESPACE>-triggers``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from rich.console import Console

from segmentflow.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("triggers", help="deliver matching segment changes to HTTP webhooks")
    p.add_argument(
        "--config",
        default=os.environ.get("SEGMENTFLOW_TRIGGERS_CONFIG"),
        help="triggers YAML file (default: $SEGMENTFLOW_TRIGGERS_CONFIG)",
    )
    p.add_argument(
        "--start-from",
        choices=["earliest", "latest"],
        default=os.environ.get("SEGMENTFLOW_TRIGGERS_START_FROM", "earliest"),
        help="where a new consumer group starts (default earliest: no change is missed)",
    )
    p.add_argument(
        "--host",
        default=os.environ.get("SEGMENTFLOW_TRIGGERS_HOST", "127.0.0.1"),
        help="bind address of /health and /metrics (default 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SEGMENTFLOW_TRIGGERS_PORT", "6067")),
        help="port of /health and /metrics (default 6067; 0 = off)",
    )
    p.add_argument(
        "--max-records",
        type=int,
        default=int(os.environ.get("SEGMENTFLOW_TRIGGERS_MAX_RECORDS", "500")),
        help="records per batch; offsets are committed after each settled batch (default 500)",
    )
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--loglevel", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from segmentflow.triggers.config import TriggersConfigError, load_triggers_config

    try:
        config = load_triggers_config(args.config)
    except TriggersConfigError as exc:
        Console(stderr=True).print(f"[red]triggers configuration error:[/red] {exc}")
        return 2
    settings = Settings()
    topic = config.resolved_deadletter_topic()
    if args.check:
        console.print(f"ok: {len(config.targets)} target(s); dead letters to {topic}")
        return 0
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("segmentflow").setLevel(args.loglevel.upper())
    from segmentflow.triggers.dispatcher import run_dispatcher

    console.print(
        f"segmentflow triggers: kafka {settings.kafka_url}, group {settings.namespace}-triggers, "
        f"{len(config.targets)} target(s), dead letters to {topic}"
        + (f", metrics on {args.host}:{args.port}" if args.port else "")
    )
    from aiokafka.errors import KafkaConnectionError

    from segmentflow.streams.kafka_clients import BrokerUnavailable

    try:
        asyncio.run(
            run_dispatcher(
                settings,
                config,
                host=args.host,
                port=args.port,
                start_from=args.start_from,
                max_records=args.max_records,
            )
        )
    except KafkaConnectionError as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.kafka_url} ({exc}); "
            "set SEGMENTFLOW_KAFKA_URL to a running broker"
        ) from None
    return 0
