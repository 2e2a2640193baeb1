"""``segmentflow forget CUSTOMER_ID``: erase a customer (CONTRACT §5) through its owner.

The command does not touch Redis state itself (a worker applying that customer's events at the
same moment could write it back): it produces a ``forget`` control record keyed by the customer
id on the website topic, so the worker that owns the customer applies it in order with the
customer's events (it survives crashes and rebalances like any input record), then waits until
the tombstone with this request's id shows up in Redis.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime

import orjson
from rich.console import Console

from segmentflow import bootstrap
from segmentflow.config import Settings
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.events import FORGET
from segmentflow.service.processor import FORGOTTEN
from segmentflow.streams.kafka_clients import producer


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "forget", help="erase a customer (through the worker that owns it) and emit final nulls"
    )
    p.add_argument("customer_id")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for a worker to apply the erasure (default 300)",
    )
    p.add_argument("--no-wait", action="store_true", help="only queue the request")
    p.set_defaults(func=run)


def request(customer_id: str, request_id: str) -> bytes:
    """The forget control record (an extension of CONTRACT §2 on the website topic)."""
    return orjson.dumps(
        {
            "event_id": request_id,
            "customer_id": customer_id,
            "type": FORGET,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "properties": {},
        }
    )


def applied(settings: Settings, customer_id: str, request_id: str) -> CustomerState | None:
    """The customer's stored state once the forget ``request_id`` has been applied (its
    tombstone, or a new profile begun after it), else ``None``."""
    store = bootstrap.redis_store(settings)
    try:
        # None for unreadable bytes too: the worker dead-letters the request (corrupt_state)
        state = store.peek(customer_id)
    finally:
        store.close()
    return state if state is not None and state.extra.get(FORGOTTEN) == request_id else None


def run(args: argparse.Namespace, console: Console) -> int:
    settings = Settings()
    customer_id: str = args.customer_id
    if not customer_id or len(customer_id) > 256:
        console.print("[red]customer id must be 1..256 characters[/red]")
        return 2
    bootstrap.redis_client(settings).close()  # fail early with a clear message
    request_id = f"forget-{uuid.uuid4().hex}"
    kafka = producer(settings)
    key = customer_id.encode("utf-8")
    kafka.send(settings.topic_website_events, key=key, value=request(customer_id, request_id))
    kafka.flush()
    kafka.close()
    if args.no_wait:
        console.print(f"forget of {customer_id!r} queued (request {request_id})")
        return 0
    deadline = time.monotonic() + args.timeout
    while (state := applied(settings, customer_id, request_id)) is None:
        if time.monotonic() > deadline:
            console.print(
                f"[yellow]the forget of {customer_id!r} (request {request_id}) is queued on "
                f"{settings.topic_website_events} but no worker of group {settings.namespace!r} "
                f"applied it within {args.timeout:.0f} s. Is a worker running? It is applied "
                "when one is (the request is not lost); a dead letter with reason "
                "corrupt_state means the stored state must be repaired first.[/yellow]"
            )
            return 1
        time.sleep(0.2)
    dims = ", ".join(f"{d} #{n}" for d, n in sorted(state.seqs.items())) or "none"
    console.print(f"forgot {customer_id}: erased; last change per dimension: {dims}")
    return 0
