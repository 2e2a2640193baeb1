"""``segmentflow demo`` and ``segmentflow dev``: the whole stack on embedded defaults.

``demo`` finishes when its stream is fully processed, judged by progress, not by a fixed wait:
the worker has received every produced message, every received message is accounted for
(applied + dead-lettered + duplicates = received), the outbox is empty and every change the
worker emitted has been read back from the changes topic. It exits non-zero with what is missing
when that does not happen within ``--timeout`` (or nothing moves for ``--stall``), when the
worker dies, or when no change came out.

``dev`` runs until SIGINT, SIGTERM or SIGHUP and then stops everything it started (worker, broker,
private Redis). It uses a fresh namespace per session unless ``SEGMENTFLOW_NAMESPACE`` (or
``--namespace``) names one.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from rich.console import Console
from rich.table import Table

from segmentflow import bootstrap
from segmentflow.cli.render import change_line, populations_table
from segmentflow.cli.signals import STOP_SIGNALS, Stopped, stop_on_signals
from segmentflow.devstack import DevStack
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


def stop_stack(stack: DevStack) -> None:
    """Stop ``stack`` with the stop signals ignored (a second Ctrl-C cannot orphan children)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        stack.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="embedded broker + Redis + worker + a synthetic stream")
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--days", type=int, default=240)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--bad-ratio", type=float, default=0.01)
    p.add_argument("--show", type=int, default=25, help="changes to print live")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="overall limit in seconds; the demo ends as soon as its stream is processed",
    )
    p.add_argument(
        "--stall",
        type=float,
        default=180.0,
        help="give up when the worker makes no progress for this many seconds",
    )
    p.set_defaults(func=run_demo)
    d = sub.add_parser("dev", help="embedded broker + Redis + worker, until Ctrl-C")
    d.add_argument("--partitions", type=int, default=4)
    d.add_argument(
        "--namespace",
        default=os.environ.get("SEGMENTFLOW_NAMESPACE"),
        help="Redis prefix and consumer group (default: $SEGMENTFLOW_NAMESPACE, else a fresh "
        "one per session, dropped from Redis on exit)",
    )
    d.add_argument("--ready-timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    d.set_defaults(func=run_dev)


def _config_file() -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(DEMO_RULES)
        return handle.name


class DemoFailed(RuntimeError):
    """The demo could not finish; the message says what is missing."""


@dataclass
class Accounting:
    """The worker's counters (from ``/metrics``) and what the demo saw."""

    received: int = 0
    applied: int = 0
    deadlettered: int = 0
    duplicates: int = 0
    late: int = 0
    emitted: int = 0  # changes the worker committed (segmentflow_changes_total)
    outbox: int = 0  # changes committed but not yet confirmed published
    read: int = 0  # changes read back from the changes topic

    @property
    def settled(self) -> int:
        return self.applied + self.deadlettered + self.duplicates

    def key(self) -> tuple[int, ...]:
        return (
            self.received,
            self.applied,
            self.deadlettered,
            self.duplicates,
            self.emitted,
            self.outbox,
            self.read,
        )

    def missing(self, produced: int) -> list[str]:
        """What keeps the stream from counting as processed (empty when done)."""
        gaps = []
        if self.received < produced:
            gaps.append(f"the worker received {self.received:,} of {produced:,} messages")
        if self.settled != self.received:
            gaps.append(
                f"{self.received - self.settled:,} received messages not yet applied, "
                f"dead-lettered or skipped as duplicates (they wait for the event-time clock)"
            )
        if self.outbox:
            gaps.append(f"{self.outbox:,} changes still in the outbox (not yet published)")
        if self.read < self.emitted:
            gaps.append(f"read {self.read:,} of the {self.emitted:,} changes the worker emitted")
        return gaps


def run_demo(args: argparse.Namespace, console: Console) -> int:
    started = time.monotonic()
    console.rule("[bold]segmentflow demo")
    stack = DevStack(config=_config_file(), workers=0)
    with stop_on_signals():
        try:
            with console.status("starting broker and Redis..."):
                stack.start()
            return _demo(stack, args, console, started)
        except DemoFailed as exc:
            console.print(f"[bold red]demo failed:[/bold red] {exc}")
            console.print(f"worker logs: {stack.log_dir}")
            return 1
        finally:
            with console.status("stopping..."):
                stop_stack(stack)


def _demo(stack: DevStack, args: argparse.Namespace, console: Console, started: float) -> int:
    settings = stack.settings
    deadline = started + args.timeout
    console.print(
        f"broker {stack.broker.url} | redis {stack.redis.url} | namespace {stack.namespace}"
    )
    start = datetime(2025, 1, 6, tzinfo=UTC)
    messages = generate(args.customers, args.seed, start, args.days, bad_ratio=args.bad_ratio)
    topics = settings.input_topics
    kafka = producer(settings)
    futures = [
        kafka.send(topics[message.topic_kind], key=message.key, value=message.value)
        for message in messages
    ]
    kafka.flush()
    kafka.close()
    failed = [f for f in futures if f.failed()]
    if failed:
        raise DemoFailed(f"the broker refused {len(failed)} messages: {failed[0].exception}")
    produced = len(messages)
    bad = sum(1 for m in messages if m.event is None)
    console.print(
        f"produced {produced:,} messages for {args.customers} customers over {args.days} "
        f"days ({bad} bad, {sum(1 for m in messages if m.duplicate)} duplicates)"
    )
    # The worker starts on a backlog: months of event time were produced in seconds, and a
    # worker reading them while they arrive would see one customer's events from three topics
    # out of order (late events, CONTRACT §3). On a backlog the watermark holds every partition
    # back until it is read, so the outcome is exactly what `segmentflow replay` gives.
    # no separate wait for /health: the progress loop below watches the worker's start too
    # (it must stay alive and its counters must move within --stall seconds)
    stack.start_worker()
    console.print(f"worker http://127.0.0.1:{stack.web_ports[0]}")
    per_dimension, final = _follow(stack, args, console, produced, deadline)
    console.print(f"... {sum(per_dimension.values()):,} changes in all: {dict(per_dimension)}")
    store = bootstrap.redis_store(settings)
    console.print(populations_table(store.populations(), title="Segment populations"))
    store.close()
    console.print(_accounting_table(stack, final))
    console.print(f"done in {time.monotonic() - started:.1f}s")
    return 0


def _follow(
    stack: DevStack, args: argparse.Namespace, console: Console, produced: int, deadline: float
) -> tuple[Counter[str], Accounting]:
    """Print changes as they arrive until the stream is processed; raise `DemoFailed` if not."""
    settings = stack.settings
    changes = consumer(
        settings,
        settings.topic_segment_changes,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    per_dimension: Counter[str] = Counter()
    shown = 0
    last = Accounting()
    moved_at = time.monotonic()
    done_once = False
    try:
        while True:
            for message in changes:
                change = orjson.loads(message.value)
                per_dimension[change["data"]["dimension"]] += 1
                if shown < args.show:
                    console.print(change_line(change))
                    shown += 1
            if stack.workers[0].poll() is not None:
                raise DemoFailed(
                    f"the worker exited with code {stack.workers[0].returncode} "
                    f"({_log_tail(stack)})"
                )
            now = _accounting(stack, sum(per_dimension.values()))
            if now is None:  # the worker did not answer (busy machine): ask again
                now = last
            if now.key() != last.key():
                moved_at = time.monotonic()
            # done twice in a row with nothing moving in between: the last time-driven changes
            # (fired after the final batch) have come out too
            done = not now.missing(produced)
            if done and done_once and now.key() == last.key():
                break
            done_once = done
            last = now
            waited = time.monotonic() - moved_at
            if time.monotonic() > deadline or waited > args.stall:
                why = "; ".join(now.missing(produced)) or "the counters did not settle"
                limit = (
                    f"no progress for {waited:.0f}s"
                    if waited > args.stall
                    else f"not finished within {args.timeout:.0f}s"
                )
                raise DemoFailed(
                    f"{limit}: {why}. The worker's /health says: {_health(stack)}. Try again on "
                    "a less busy machine, or raise --timeout/--stall."
                )
    finally:
        changes.close()
    if last.applied == 0 or not per_dimension:
        raise DemoFailed(
            f"the stream was processed but produced no change (applied {last.applied:,} of "
            f"{last.received:,} received); see the worker log in {stack.log_dir}"
        )
    return per_dimension, last


def _token() -> str | None:
    return os.environ.get("SEGMENTFLOW_API_TOKEN") or None


def _metric_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def _accounting(stack: DevStack, read: int) -> Accounting | None:
    try:
        text = stack.get("/metrics", token=_token()).decode()
    except OSError:
        return None

    outbox = bootstrap.outbox_backlog(stack.settings)
    if outbox is None:  # Redis did not answer: ask again
        return None

    def total(name: str) -> int:
        return int(_metric_sum(text, f"segmentflow_events_{name}_total"))

    return Accounting(
        received=total("received"),
        applied=total("applied"),
        deadlettered=total("deadlettered"),
        duplicates=total("duplicates"),
        late=total("late"),
        emitted=int(_metric_sum(text, "segmentflow_changes_total")),
        outbox=outbox,
        read=read,
    )


def _health(stack: DevStack) -> str:
    import urllib.error

    try:
        return stack.get("/health").decode()[:600]
    except urllib.error.HTTPError as exc:  # 503: the body says why
        return f"{exc.code} {exc.read().decode(errors='replace')[:600]}"
    except OSError as exc:
        return f"no answer ({exc})"


def _log_tail(stack: DevStack, lines: int = 8) -> str:
    logs = sorted(stack.log_dir.glob("worker-*.log"))
    if not logs:
        return f"logs in {stack.log_dir}"
    tail = logs[-1].read_text(errors="replace").splitlines()[-lines:]
    return f"log {logs[-1]}:\n" + "\n".join(tail)


def _accounting_table(stack: DevStack, final: Accounting) -> Table:
    text = stack.get("/metrics", token=_token()).decode()
    table = Table(title="Accounting (worker metrics)")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name in ("received", "applied", "deadlettered", "duplicates", "late"):
        table.add_row(name, f"{getattr(final, name):,}")
    for line in text.splitlines():
        if line.startswith("segmentflow_deadletter_reasons_total{"):
            reason = line.split('"')[1]
            table.add_row(f"  dead letter: {reason}", line.rsplit(" ", 1)[1].removesuffix(".0"))
    table.add_row("changes emitted", f"{final.emitted:,}")
    table.add_row("changes read back", f"{final.read:,}")
    table.add_row("outbox pending", f"{final.outbox:,}")
    return table


def run_dev(args: argparse.Namespace, console: Console) -> int:
    fresh = not args.namespace
    namespace = args.namespace or f"dev-{uuid.uuid4().hex[:8]}"
    # a fresh namespace is this session's alone: drop it from Redis on exit
    stack = DevStack(namespace=namespace, partitions=args.partitions, drop_state=fresh)
    with stop_on_signals():
        try:
            with console.status("starting broker, Redis and a worker..."):
                stack.start(wait_ready=args.ready_timeout)
            _print_dev(stack, console, fresh)
            while all(p.poll() is None for p in stack.workers):
                time.sleep(0.5)
            console.print(f"[red]the worker exited; logs in {stack.log_dir}[/red]")
            return 1
        except Stopped as exc:
            console.print(f"{exc}: stopping the worker, broker and Redis")
            return 0
        except KeyboardInterrupt:
            console.print("stopping the worker, broker and Redis")
            return 0
        except (TimeoutError, RuntimeError) as exc:
            console.print(f"[red]segmentflow dev could not start:[/red] {exc}")
            return 1
        finally:
            stop_stack(stack)


def _print_dev(stack: DevStack, console: Console, fresh: bool) -> None:
    port = stack.web_ports[0]
    console.print("[bold green]segmentflow dev is up[/bold green]; in another shell:")
    for name, value in (
        ("SEGMENTFLOW_KAFKA_URL", stack.broker.url),
        ("SEGMENTFLOW_REDIS_URL", stack.redis.url),
        ("SEGMENTFLOW_NAMESPACE", stack.namespace),
        ("SEGMENTFLOW_WORKER_URL", f"http://127.0.0.1:{port}"),
    ):
        console.print(f"  export {name}={value}", soft_wrap=True, highlight=False)
    if _token():
        console.print("  (SEGMENTFLOW_API_TOKEN is set: every endpoint but /health needs it)")
    note = "fresh, dropped on exit" if fresh else "given, kept on exit"
    console.print(f"  namespace {stack.namespace} ({note})", highlight=False)
    pids = ", ".join(f"{name} {pid}" for name, pid in stack.pids().items())
    console.print(f"  processes: {pids}", soft_wrap=True, highlight=False)
    console.print(f"  logs in {stack.log_dir}", soft_wrap=True, highlight=False)
    console.print(
        f"  worker HTTP: http://127.0.0.1:{port}/health  (Ctrl-C, SIGTERM or SIGHUP stops all)"
    )
