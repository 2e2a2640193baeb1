"""Bootstrap of a worker process: settings -> store, processor, Faust app, agents, views.

A worker may start before its broker or its Redis (compose, Kubernetes and systemd start
services in any order): :func:`run` waits for both with capped backoff, one log line per retry,
answering ``/health`` with 503 meanwhile; then it reads the input topics' real partition count
from the broker (unequal counts stop start-up with a message saying what to fix) and runs.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import faust

from segmentflow import bootstrap
from segmentflow.config import Settings
from segmentflow.service import heap
from segmentflow.streams import agents, hangup, web
from segmentflow.streams.app import TUNING, create_app
from segmentflow.streams.batch_send import send_batches
from segmentflow.streams.batch_tap import BatchTap
from segmentflow.streams.faust_patches import on_fetch
from segmentflow.streams.incarnations import broker_cluster_id
from segmentflow.streams.kafka_clients import (
    BrokerUnavailable,
    PartitionMismatch,
    input_partition_count,
)
from segmentflow.streams.redis_health import RedisUnsafe, check_eviction_policy
from segmentflow.streams.runtime import SegmentWorker
from segmentflow.triggers.backoff import Backoff

log = logging.getLogger("segmentflow.worker")

#: CloudEvents Kafka protocol binding, structured mode (CONTRACT §1)
CLOUDEVENT_HEADERS = [("content-type", b"application/cloudevents+json")]
#: dead letters are plain JSON (§4), not CloudEvents
DEADLETTER_HEADERS = [("content-type", b"application/json")]
#: input records buffered between the fetcher and the worker (Faust's stream buffer size)
TAP_CAPACITY = int(TUNING["stream_buffer_maxsize"])
#: capped backoff while waiting for the broker or Redis at start-up (seconds)
START_BACKOFF = (0.5, 10.0)


def headers_for(settings: Settings, topic: str) -> list[tuple[str, bytes]] | None:
    """Record headers of a topic the worker writes."""
    if topic == settings.topic_segment_changes:
        return CLOUDEVENT_HEADERS
    if topic == settings.topic_segmentflow_deadletter:
        return DEADLETTER_HEADERS
    return None


def build(settings: Settings, **app_overrides: Any) -> tuple[faust.App, SegmentWorker]:
    """Wire a worker from ``settings``; nothing starts until the app runs. The app's partition
    count is ``settings.input_partitions`` (the broker's, once :func:`prepare` read it)."""
    parts = bootstrap.worker_parts(settings)
    check_eviction_policy(parts.redis, settings.redis_url)
    app = create_app(settings, partitions=settings.input_partitions, **app_overrides)
    headers = {
        topic: headers_for(settings, topic)
        for topic in (settings.topic_segment_changes, settings.topic_segmentflow_deadletter)
    }

    async def send(topic: str, key: bytes | None, value: bytes) -> object:
        pending = await app.producer.send(topic, key, value, None, None, headers.get(topic))
        return await pending

    async def send_many(
        topic: str, keys: Sequence[bytes | None], values: Sequence[bytes]
    ) -> object:
        """Whole record batches per partition, then the broker's acknowledgements: no
        future or task per message (batch_send.py)."""
        producer: Any = app.producer  # faust's aiokafka driver (faust_patches.INTERNALS)
        return await send_batches(
            producer._ensure_producer(), topic, keys, values, headers.get(topic)
        )

    # input records in whole fetches, below Faust's per-message stream path (batch_tap.py)
    tap = BatchTap(settings.input_topics.values(), capacity=TAP_CAPACITY)
    tap.install(app.consumer)

    async def send_to(topic: str, partition: int, key: bytes | None, value: bytes) -> object:
        """Forward an input record to its customer's home partition (same topic)."""
        pending = await app.producer.send(topic, key, value, partition, None, None)
        return await pending

    worker = SegmentWorker(
        settings,
        parts.processor,
        send,
        tap.ack,
        send_to=send_to,
        cluster_id=lambda: broker_cluster_id(settings),
        ranks=parts.ranks,
        personas=parts.personas,
        redis=parts.redis,
        send_many=send_many,
    )
    if worker.persona is not None:
        worker.persona.refresh()  # a restart continues with the stored model
    agents.register(app, worker, tap)
    web.register(app, worker)
    hangup.register(app, worker, settings)  # SIGHUP: reload SEGMENTFLOW_CONFIG (§6)
    on_fetch(app, fetch_listener(worker))
    return app, worker


def fetch_listener(worker: SegmentWorker) -> Callable[[BaseException | None], None]:
    """Record failed fetches in the worker's status: logged once per error (not per retry),
    counted, shown by ``/health``; cleared by the next fetch that works."""
    status = worker.status

    def listener(error: BaseException | None) -> None:
        if error is None:
            log.warning("fetching input works again (after: %s)", status.fetch_error)
            status.fetch_error = None
            return
        text = f"{error.__class__.__name__}: {error}"
        status.fetch_errors[error.__class__.__name__] += 1
        if status.fetch_error != text:
            log.error("fetching input failed, retrying until it works: %s", text)
        status.fetch_error = text

    return listener


class StartupStatus:
    """What a worker waits for before it can run (``/health`` answers 503 meanwhile)."""

    def __init__(self) -> None:
        self.waiting_for = "start"
        self.detail = ""
        self.attempts = 0

    def body(self) -> bytes:
        return json.dumps(
            {
                "status": "starting",
                "ready": False,
                "waiting_for": self.waiting_for,
                "attempts": self.attempts,
                "last_error": self.detail or None,
            }
        ).encode()


def _startup_server(settings: Settings, status: StartupStatus) -> ThreadingHTTPServer | None:
    """A tiny server answering every GET with 503 + the start-up status (``None`` when the port
    cannot be bound: then Faust's own bind reports it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = status.body()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer((settings.web_host, settings.web_port), Handler)
    except OSError:
        return None
    threading.Thread(target=server.serve_forever, name="startup-health", daemon=True).start()
    return server


def _say(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}] segmentflow worker: {message}", file=sys.stderr, flush=True)


def prepare(
    settings: Settings,
    status: StartupStatus | None = None,
    say: Callable[[str], None] = _say,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Wait for Redis and the broker (capped backoff, one line per retry), then read the input
    topics' real partition count from the broker and record it in ``settings``; return it.
    Raises :class:`PartitionMismatch` when the three topics' counts differ."""
    status = status or StartupStatus()
    first, cap = START_BACKOFF
    delays = Backoff(first, cap=cap, jitter=0).delays()  # one schedule across both waits
    steps: list[tuple[str, Callable[[], object]]] = [
        ("redis", lambda: bootstrap.redis_client(settings).close()),
        ("kafka", lambda: settings.set_input_partitions(input_partition_count(settings))),
    ]
    for what, step in steps:
        status.waiting_for, status.attempts = what, 0
        while True:
            try:
                step()
                break
            except (bootstrap.RedisUnavailable, BrokerUnavailable) as exc:
                status.attempts += 1
                status.detail = str(exc)
                delay = next(delays)
                say(f"waiting for {what} (attempt {status.attempts}, next in {delay:.1f} s): {exc}")
                sleep(delay)
        if status.attempts:
            say(f"{what} is reachable")
    status.waiting_for, status.detail = "", ""
    return settings.input_partitions


def run(settings: Settings, loglevel: str = "WARNING") -> int:
    """Run a worker until stopped (SIGINT/SIGTERM); return the exit code (2 when the input
    topics' partition counts differ)."""
    status = StartupStatus()
    server = _startup_server(settings, status)
    try:
        count = prepare(settings, status)
    except PartitionMismatch as exc:
        _say(f"cannot start: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    _say(f"input topics have {count} partitions each")
    try:
        app, _ = build(settings)
    except RedisUnsafe as exc:
        _say(f"cannot start: {exc}")
        return 2
    faust_worker(app, loglevel).execute_from_commandline()
    return 0


def faust_worker(app: faust.App, loglevel: str = "WARNING", **options: Any) -> faust.Worker:
    """Faust's worker for ``app``, without its start-up spinner: for the spinner Faust sets the
    root logger to DEBUG at any level from WARNING up and never sets it back, so every debug
    call of aiokafka, mode and Faust (one per record produced) built a log record that no
    handler printed: 5% of a worker's time at 100k customers. The process's cyclic collector
    runs on the worker's schedule from here on (``segmentflow.service.heap.PROCESS``)."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, **options)
    worker.spinner = None
    heap.PROCESS.start()
    return worker
