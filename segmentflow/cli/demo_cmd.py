"""``segmentflow demo`` and ``segmentflow dev``: the whole stack on embedded defaults."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime

import orjson
from rich.console import Console
from rich.table import Table

from segmentflow.cli.render import change_line, populations_table
from segmentflow.devstack import DevStack
from segmentflow.state.redis_store import RedisStore
from segmentflow.streams.kafka_clients import consumer, producer
from segmentflow.synthetic import generate

DEMO_RULES = """\
rules:
  - name: de_repeat_buyers
    when: 'traits.country == "DE" && orders_90d >= 2'
  - name: email_engaged
    when: 'email_opens_30d >= 3 && !email_unsubscribed'
  - name: big_spenders
    when: 'revenue >= 1000.0'
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="embedded broker + Redis + worker + a synthetic stream")
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--days", type=int, default=240)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bad-ratio", type=float, default=0.01)
    p.add_argument("--show", type=int, default=25, help="changes to print live")
    p.add_argument("--timeout", type=float, default=50.0, help="seconds to wait for the worker")
    p.set_defaults(func=run_demo)
    d = sub.add_parser("dev", help="embedded broker + Redis + worker, until Ctrl-C")
    d.add_argument("--partitions", type=int, default=4)
    d.set_defaults(func=run_dev)


def _config_file() -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(DEMO_RULES)
        return handle.name


def run_demo(args: argparse.Namespace, console: Console) -> int:
    started = time.monotonic()
    console.rule("[bold]segmentflow demo")
    with console.status("starting broker and Redis..."):
        stack = DevStack(config=_config_file(), workers=0).start()
    try:
        return _demo(stack, args, console, started)
    finally:
        with console.status("stopping..."):
            stack.stop()


def _demo(stack: DevStack, args: argparse.Namespace, console: Console, started: float) -> int:
    settings = stack.settings
    console.print(
        f"broker {stack.broker.url} | redis {stack.redis.url} | namespace {stack.namespace}"
    )
    start = datetime(2025, 1, 6, tzinfo=UTC)
    messages = generate(args.customers, args.seed, start, args.days, bad_ratio=args.bad_ratio)
    topics = settings.input_topics
    kafka = producer(settings)
    for message in messages:
        kafka.send(topics[message.topic_kind], key=message.key, value=message.value)
    kafka.flush()
    kafka.close()
    bad = sum(1 for m in messages if m.event is None)
    console.print(
        f"produced {len(messages):,} messages for {args.customers} customers over {args.days} "
        f"days ({bad} bad, {sum(1 for m in messages if m.duplicate)} duplicates)"
    )
    # The worker starts on a backlog: months of event time were produced in seconds, and a
    # worker reading them while they arrive would see one customer's events from three topics
    # out of order (late events, CONTRACT §3). On a backlog the watermark holds every partition
    # back until it is read, so the outcome is exactly what `segmentflow replay` gives.
    with console.status("starting a worker..."):
        stack.start_worker()
        stack.wait_healthy(60)
    console.print(f"worker http://127.0.0.1:{stack.web_ports[0]}")
    changes = consumer(
        settings,
        settings.topic_segment_changes,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    per_dimension: Counter[str] = Counter()
    shown = 0
    idle_since = time.monotonic()
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        got = False
        for message in changes:
            got = True
            change = orjson.loads(message.value)
            per_dimension[change["data"]["dimension"]] += 1
            if shown < args.show:
                console.print(change_line(change))
                shown += 1
        received = _received(stack)
        if got:
            idle_since = time.monotonic()
        elif received >= len(messages) and time.monotonic() - idle_since > 2.0:
            break
    changes.close()
    console.print(f"... {sum(per_dimension.values()):,} changes in all: {dict(per_dimension)}")
    store = RedisStore(settings.redis_url, settings.namespace)
    console.print(populations_table(store.populations(), title="Segment populations"))
    store.close()
    console.print(_deadletter_table(stack))
    console.print(f"done in {time.monotonic() - started:.1f}s")
    return 0


def _metric_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def _received(stack: DevStack) -> int:
    try:
        text = stack.get("/metrics").decode()
    except OSError:
        return 0
    return int(_metric_sum(text, "segmentflow_events_received_total"))


def _deadletter_table(stack: DevStack) -> Table:
    text = stack.get("/metrics").decode()
    table = Table(title="Accounting (worker metrics)")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name in ("received", "applied", "deadlettered", "duplicates", "late"):
        table.add_row(name, f"{_metric_sum(text, f'segmentflow_events_{name}_total'):,.0f}")
    for line in text.splitlines():
        if line.startswith("segmentflow_deadletter_reasons_total{"):
            reason = line.split('"')[1]
            table.add_row(f"  dead letter: {reason}", line.rsplit(" ", 1)[1].removesuffix(".0"))
    return table


def run_dev(args: argparse.Namespace, console: Console) -> int:
    stack = DevStack(namespace="segmentflow", partitions=args.partitions, drop_state=False)
    with console.status("starting broker, Redis and a worker..."):
        stack.start()
    console.print("[bold green]segmentflow dev is up[/bold green]; in another shell:")
    console.print(f"  export SEGMENTFLOW_KAFKA_URL={stack.broker.url}")
    console.print(f"  export SEGMENTFLOW_REDIS_URL={stack.redis.url}")
    console.print(f"  export SEGMENTFLOW_NAMESPACE={stack.namespace}")
    console.print(f"  worker HTTP: http://127.0.0.1:{stack.web_ports[0]}/health  (Ctrl-C stops)")
    try:
        while all(p.poll() is None for p in stack.workers):
            time.sleep(0.5)
        console.print(f"[red]the worker exited; logs in {stack.log_dir}[/red]")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
