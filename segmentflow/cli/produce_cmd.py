"""``segmentflow produce FILE.jsonl``: publish events, each routed to its topic by ``type``."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import Progress

from segmentflow.config import Settings
from segmentflow.schemas.events import topic_kind_of
from segmentflow.streams.kafka_clients import producer


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("produce", help="publish a JSONL file of events to the input topics")
    p.add_argument("file", type=Path)
    p.add_argument("--topic", help="send every line to this topic instead of routing by type")
    p.set_defaults(func=run)


def route(line: bytes, settings: Settings) -> tuple[str | None, bytes | None]:
    """(topic, key) for one JSONL line, or (None, None) when it cannot be routed."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    kind = topic_kind_of(str(data.get("type")))
    cid = data.get("customer_id")
    key = cid.encode("utf-8") if isinstance(cid, str) else None
    return (settings.input_topics[kind] if kind else None), key


def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    if not args.file.is_file():
        console.print(f"[red]no such file: {args.file}[/red]")
        return 2
    lines = [line.rstrip(b"\r\n") for line in args.file.read_bytes().splitlines() if line.strip()]
    kafka = producer(settings)
    sent = 0
    unroutable: list[int] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("producing", total=len(lines))
        for number, line in enumerate(lines, start=1):
            topic, key = route(line, settings)
            if args.topic:
                topic = args.topic
            if topic is None:
                unroutable.append(number)
            else:
                kafka.send(topic, key=key, value=line)
                sent += 1
            progress.advance(task)
        kafka.flush()
    kafka.close()
    console.print(f"sent {sent} events from {args.file}")
    if unroutable:
        shown = ", ".join(map(str, unroutable[:10]))
        console.print(
            f"[yellow]{len(unroutable)} lines have no known event type and were not sent "
            f"(lines {shown}{'...' if len(unroutable) > 10 else ''}); use --topic to force[/yellow]"
        )
        return 1
    return 0
