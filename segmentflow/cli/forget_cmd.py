"""``segmentflow forget CUSTOMER_ID``: delete a customer's data; emit a final change to null."""

from __future__ import annotations

import argparse

import orjson
from rich.console import Console

from segmentflow import bootstrap
from segmentflow.config import Settings
from segmentflow.streams.kafka_clients import producer


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("forget", help="delete a customer's state and emit final null changes")
    p.add_argument("customer_id")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    kafka = producer(settings)  # fail before deleting anything if Kafka is down
    processor = bootstrap.processor(settings)
    changes = processor.forget(args.customer_id)
    key = args.customer_id.encode("utf-8")
    for change in changes:
        kafka.send(
            settings.topic_segment_changes, key=key, value=orjson.dumps(change.to_cloudevent())
        )
    kafka.flush()
    kafka.close()
    if not changes:
        console.print(f"[yellow]no state for customer {args.customer_id!r}[/yellow]")
        return 1
    console.print(f"forgot {args.customer_id}: {len(changes)} final change(s) published")
    return 0
