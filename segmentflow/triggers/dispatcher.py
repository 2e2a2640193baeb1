"""The trigger dispatcher behind ``segmentflow triggers``.

Consumes ``segment-changes`` in the consumer group ``<namespace>-triggers`` and, for every target
whose match accepts a change, POSTs it as a CloudEvent (:mod:`.cloudevents`) with
``Idempotency-Key: <change id>``.

Delivery is at-least-once: a batch of records is fetched, every matching (target, change) pair
is either delivered (2xx) or written to the dead-letter topic, and only then are the batch's
offsets committed. A crash anywhere before the commit redelivers the batch after restart (with
the same idempotency keys). Within a batch, one target receives one customer's changes in topic
order (one after the other); different customers and targets proceed concurrently, each target
limited by its token bucket (every attempt takes a token) and ``max_in_flight``.

Failures: a non-2xx answer, a timeout or a connection error is retried after a capped,
jittered exponential backoff (``Retry-After`` honoured) up to ``max_attempts`` attempts; a 4xx
other than 408/425/429 is permanent (dead-lettered at once) unless ``retry_on_4xx`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import signal
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from segmentflow.config import Settings
from segmentflow.kafka_options import GROUP_TUNING, KafkaOptions
from segmentflow.streams.kafka_clients import create_topics
from segmentflow.triggers.backoff import Backoff, parse_retry_after, retry_async
from segmentflow.triggers.cloudevents import EncodeError, encode
from segmentflow.triggers.config import TargetConfig, TriggersConfig
from segmentflow.triggers.matching import Match
from segmentflow.triggers.ratelimit import TokenBucket

log = logging.getLogger("segmentflow.triggers")

USER_AGENT = "segmentflow-triggers/0.1"
RETRYABLE_4XX = frozenset({408, 425, 429})
#: Dead-letter produce: 5 attempts, waits 0.5, 1, 2, 4 s; then the batch fails uncommitted
DEADLETTER_RETRY = Backoff(base=0.5, factor=2.0, cap=4.0, jitter=0.0)


def utc_now() -> str:
    """Wall-clock time as RFC 3339 (UTC, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Outcome:
    """What became of one (target, change) delivery."""

    target: str
    change_id: str
    delivered: bool
    attempts: int
    last_status: int | None = None
    last_error: str | None = None


@dataclass
class Source:
    """Where a change came from (for dead letters)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


class TriggerMetrics:
    """Prometheus metrics of one dispatcher (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.changes = Counter("segmentflow_triggers_changes", "Change events consumed", registry=r)
        self.matched = Counter(
            "segmentflow_triggers_matched", "Changes matched per target", ["target"], registry=r
        )
        self.deliveries = Counter(
            "segmentflow_triggers_deliveries",
            "Finished deliveries per target and outcome (delivered, deadlettered)",
            ["target", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "segmentflow_triggers_attempts",
            "HTTP attempts per target and result (2xx, 4xx, 5xx, timeout, error)",
            ["target", "result"],
            registry=r,
        )
        self.latency = Histogram(
            "segmentflow_triggers_request_seconds",
            "Duration of one HTTP attempt",
            ["target"],
            registry=r,
        )
        self.throttled = Counter(
            "segmentflow_triggers_ratelimit_wait_seconds",
            "Seconds spent waiting for the rate limit",
            ["target"],
            registry=r,
        )
        self.undecodable = Counter(
            "segmentflow_triggers_undecodable",
            "Records on the changes topic that are not change events (dead-lettered)",
            registry=r,
        )
        self.commits = Counter(
            "segmentflow_triggers_commits", "Offset commits after a finished batch", registry=r
        )
        self.last_batch = Gauge(
            "segmentflow_triggers_last_batch_seconds", "Duration of the last batch", registry=r
        )


class TargetRuntime:
    """A target with its compiled matches, token bucket, concurrency limit and backoff."""

    def __init__(self, config: TargetConfig, backoff: Backoff) -> None:
        self.config = config
        self.name = config.name
        self.matches: list[Match] = config.matches
        self.bucket = TokenBucket(config.rate_limit_per_s, config.burst)
        self.backoff = backoff
        self.in_flight = asyncio.Semaphore(config.max_in_flight)

    def wants(self, change: dict[str, Any]) -> bool:
        return any(m.matches(change) for m in self.matches)


def _attempt_result(status: int | None) -> str:
    if status is None:
        return "error"
    return f"{status // 100}xx"


class Deliverer:
    """Delivers one change to one target: rate limit, HTTP POST, retries with backoff."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: TriggerMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.metrics = metrics
        self.rng = rng or random.Random()

    async def deliver(self, target: TargetRuntime, change: dict[str, Any]) -> Outcome:
        """Try until delivered, permanently refused or out of attempts."""
        cfg = target.config
        change_id = str(change.get("id"))
        try:
            headers, body = encode(change, cfg.mode, cfg.headers)
        except EncodeError as exc:
            return Outcome(cfg.name, change_id, False, 0, None, f"cannot encode: {exc}")
        headers.setdefault("User-Agent", USER_AGENT)
        status: int | None = None
        error: str | None = None
        for attempt in range(1, cfg.max_attempts + 1):
            waited = await target.bucket.acquire()
            if waited:
                self.metrics.throttled.labels(cfg.name).inc(waited)
            retry_after: float | None = None
            started = time.monotonic()
            async with target.in_flight:
                try:
                    async with self.session.post(
                        cfg.url,
                        data=body,
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
                        allow_redirects=False,
                    ) as response:
                        status, error = response.status, None
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        await response.content.read(65536)  # drain a little; body unused
                        if not 200 <= status < 300:
                            error = f"HTTP {status} {response.reason or ''}".strip()
                except TimeoutError:
                    status, error = None, f"timeout after {cfg.timeout_s:g}s"
                except (aiohttp.ClientError, OSError) as exc:
                    status, error = None, f"{exc.__class__.__name__}: {exc}"
            self.metrics.latency.labels(cfg.name).observe(time.monotonic() - started)
            result = "timeout" if error and error.startswith("timeout") else _attempt_result(status)
            self.metrics.attempts.labels(cfg.name, result).inc()
            if status is not None and 200 <= status < 300:
                return Outcome(cfg.name, change_id, True, attempt, status, None)
            permanent = (
                status is not None
                and 400 <= status < 500
                and status not in RETRYABLE_4XX
                and not cfg.retry_on_4xx
            )
            if permanent or attempt == cfg.max_attempts:
                return Outcome(cfg.name, change_id, False, attempt, status, error)
            delay = target.backoff.delay(attempt, self.rng, retry_after)
            log.info(
                "target %s: %s for %s (attempt %d/%d), retry in %.2fs",
                cfg.name,
                error,
                change_id,
                attempt,
                cfg.max_attempts,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


@dataclass
class _Parsed:
    source: Source
    change: dict[str, Any] | None
    raw: bytes
    problem: str | None = None
    subject: str = ""


@dataclass
class BatchReport:
    """Counts of one processed batch."""

    records: int = 0
    delivered: int = 0
    deadlettered: int = 0
    outcomes: list[Outcome] = field(default_factory=list)


def parse_record(source: Source, value: bytes | None) -> _Parsed:
    """Decode one record of the changes topic; ``change`` is None when it is not an event."""
    raw = value or b""
    try:
        change = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Parsed(source, None, raw, f"not JSON: {exc}")
    if not isinstance(change, dict) or not isinstance(change.get("id"), str):
        return _Parsed(source, None, raw, "not a change event (object with an id)")
    data = change.get("data")
    subject = change.get("subject") or (data.get("customer_id") if isinstance(data, dict) else "")
    return _Parsed(source, change, raw, None, str(subject or ""))


def plan_deliveries(
    targets: Sequence[TargetRuntime], parsed: Iterable[_Parsed]
) -> dict[tuple[str, str], list[_Parsed]]:
    """Group matching changes by (target, subject), keeping topic order inside each group."""
    groups: dict[tuple[str, str], list[_Parsed]] = defaultdict(list)
    for item in parsed:
        if item.change is None:
            continue
        for target in targets:
            if target.wants(item.change):
                groups[(target.name, item.subject)].append(item)
    return groups


def deadletter_value(
    target: TargetConfig | None, outcome: Outcome | None, item: _Parsed
) -> dict[str, Any]:
    """The dead-letter record for a failed delivery (or an undecodable record)."""
    value: dict[str, Any] = {
        "target": target.name if target else None,
        "url": target.url if target else None,
        "change_id": outcome.change_id if outcome else None,
        "attempts": outcome.attempts if outcome else 0,
        "last_status": outcome.last_status if outcome else None,
        "last_error": outcome.last_error if outcome else item.problem,
        "failed_at": utc_now(),
        "topic": item.source.topic,
        "partition": item.source.partition,
        "offset": item.source.offset,
        "change": item.change,
    }
    if item.change is None:
        value["payload"] = base64.b64encode(item.raw).decode()
    return value


class _Stopped(Exception):
    """The stop event was set while waiting to retry."""


def _connect_errors() -> tuple[type[Exception], ...]:
    from aiokafka.errors import KafkaError as AIOKafkaError
    from kafka.errors import KafkaError

    return (AIOKafkaError, KafkaError, OSError, TimeoutError)


_CONNECT_ERRORS = _connect_errors()


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's own per-attempt error lines (the dispatcher logs one line itself)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class Dispatcher:
    """Kafka consumer + webhook deliveries + dead letters + offset commits."""

    def __init__(
        self,
        settings: Settings,
        config: TriggersConfig,
        *,
        group: str | None = None,
        start_from: str = "earliest",
        max_records: int = 500,
        rng: random.Random | None = None,
        connect_backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.group = group or f"{settings.namespace}-triggers"
        self.start_from = start_from
        self.max_records = max_records
        self.deadletter_topic = config.resolved_deadletter_topic()
        self.metrics = TriggerMetrics()
        self.targets = [TargetRuntime(t, config.backoff_for(t)) for t in config.targets]
        self._by_name = {t.name: t for t in self.targets}
        self.rng = rng or random.Random()
        self.ready = False
        self.last_error: str | None = None
        self.connect_backoff = connect_backoff or Backoff(base=0.5, factor=2.0, cap=10.0)
        self.consumer: Any = None
        self.producer: Any = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Connect to Kafka (creating the dead-letter topic if needed), waiting for the broker
        with capped backoff and one log line per retry; False when ``stop`` was set first."""
        failures = 0

        async def connect() -> None:
            try:
                with _quiet_aiokafka():
                    await self._connect()
            except _CONNECT_ERRORS:
                await self._close_clients()
                raise

        def failed(attempt: int, exc: Exception, delay: float) -> None:
            nonlocal failures
            failures = attempt
            name, text = exc.__class__.__name__, str(exc) or repr(exc)
            self.last_error = text if text.startswith(name) else f"{name}: {text}"
            log.warning(
                "triggers: Kafka at %s unavailable (%s); retry %d in %.1fs",
                self.settings.kafka_url,
                self.last_error,
                attempt,
                delay,
            )

        async def wait(delay: float) -> None:
            if stop is None:
                await asyncio.sleep(delay)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise _Stopped

        try:
            await retry_async(
                connect,
                self.connect_backoff,
                retry_on=_CONNECT_ERRORS,
                on_failure=failed,
                sleep=wait,
                rng=self.rng,
            )
        except _Stopped:
            return False
        if failures:
            log.warning(
                "triggers: connected to Kafka at %s after %d attempts",
                self.settings.kafka_url,
                failures + 1,
            )
        self.last_error = None
        self.ready = True
        return True

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        kafka = KafkaOptions.from_settings(self.settings)
        self.producer = AIOKafkaProducer(
            **kafka.aiokafka(client_id="segmentflow-triggers", producer=True),
            acks="all",
            linger_ms=5,
        )
        await self.producer.start()  # fails at once while the broker is not there
        await asyncio.to_thread(self._ensure_topics)
        self.consumer = AIOKafkaConsumer(
            self.settings.topic_segment_changes,
            **kafka.aiokafka(client_id="segmentflow-triggers"),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.start_from,
            max_poll_interval_ms=900_000,
            **GROUP_TUNING,
        )
        await self.consumer.start()
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def _close_clients(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self.consumer = self.producer = None

    def _ensure_topics(self) -> None:
        try:
            create_topics(
                self.settings,
                [self.deadletter_topic],
                self.settings.partitions,
                timeout=5.0,
            )
        except Exception as exc:  # no admin rights: the topic may still exist or auto-create
            log.warning("could not create %s: %s", self.deadletter_topic, exc)

    async def stop(self) -> None:
        """Close clients (no commit: unfinished work is redelivered)."""
        self.ready = False
        await self._close_clients()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, deliver and commit until ``stop`` is set."""
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
            if not batch or stop.is_set():
                continue
            work = asyncio.ensure_future(self.process(batch))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not work.done():  # stopping: abandon the batch uncommitted
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return
            work.result()  # re-raise a failure (e.g. dead-letter topic unreachable)

    async def process(self, batch: dict[Any, list[Any]]) -> BatchReport:
        """Deliver every matching change of ``batch``, dead-letter failures, then commit."""
        started = time.monotonic()
        parsed: list[_Parsed] = []
        last: dict[Any, int] = {}
        for tp, records in batch.items():
            for rec in records:
                source = Source(rec.topic, rec.partition, rec.offset, rec.key)
                parsed.append(parse_record(source, rec.value))
                last[tp] = max(last.get(tp, -1), rec.offset)
        report = await self.deliver_all(parsed)
        await self._commit({tp: offset + 1 for tp, offset in last.items()})
        self.metrics.last_batch.set(time.monotonic() - started)
        return report

    async def deliver_all(self, parsed: list[_Parsed]) -> BatchReport:
        """Deliver or dead-letter everything in ``parsed`` (returns when all are settled)."""
        assert self.session is not None
        report = BatchReport(records=len(parsed))
        self.metrics.changes.inc(len(parsed))
        for item in parsed:
            if item.change is None:
                self.metrics.undecodable.inc()
                log.warning("undecodable record %s: %s", item.source, item.problem)
                await self._deadletter(item.source.key, deadletter_value(None, None, item))
                report.deadlettered += 1
        deliverer = Deliverer(self.session, self.metrics, self.rng)
        groups = plan_deliveries(self.targets, parsed)

        async def run_group(target: TargetRuntime, items: list[_Parsed]) -> None:
            for item in items:
                assert item.change is not None
                self.metrics.matched.labels(target.name).inc()
                outcome = await deliverer.deliver(target, item.change)
                report.outcomes.append(outcome)
                if outcome.delivered:
                    report.delivered += 1
                    self.metrics.deliveries.labels(target.name, "delivered").inc()
                    continue
                log.warning(
                    "target %s: dead-lettering %s after %d attempt(s): %s",
                    target.name,
                    outcome.change_id,
                    outcome.attempts,
                    outcome.last_error,
                )
                value = deadletter_value(target.config, outcome, item)
                await self._deadletter(item.source.key, value)
                report.deadlettered += 1
                self.metrics.deliveries.labels(target.name, "deadlettered").inc()

        await asyncio.gather(
            *(run_group(self._by_name[name], items) for (name, _), items in groups.items())
        )
        return report

    async def _deadletter(self, key: bytes | None, value: dict[str, Any]) -> None:
        payload = orjson.dumps(value)

        def failed(attempt: int, exc: Exception, delay: float) -> None:
            log.warning("dead-letter produce failed (%s); retry %d in %.1fs", exc, attempt, delay)

        await retry_async(
            lambda: self.producer.send_and_wait(self.deadletter_topic, payload, key=key),
            DEADLETTER_RETRY,
            attempts=5,
            on_failure=failed,
        )

    async def _commit(self, offsets: dict[Any, int]) -> None:
        from aiokafka.errors import CommitFailedError, IllegalStateError

        try:
            await self.consumer.commit(offsets)
            self.metrics.commits.inc()
        except (CommitFailedError, IllegalStateError) as exc:
            # partitions moved to another member: it redelivers from the last commit
            log.warning("offset commit failed after a rebalance (%s); will be redelivered", exc)


async def serve_http(dispatcher: Dispatcher, host: str, port: int) -> Any:
    """``/health`` (open) and ``/metrics`` (bearer ``SEGMENTFLOW_API_TOKEN`` when set, as every
    other path)."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from segmentflow.auth import bearer_middleware

    async def health(request: web.Request) -> web.Response:
        ok = dispatcher.ready
        body: dict[str, Any] = {
            "status": "ok" if ok else "starting",
            "group": dispatcher.group,
        }
        if not ok and dispatcher.last_error:
            body["status"] = "waiting for kafka"
            body["last_error"] = dispatcher.last_error
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(dispatcher.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[bearer_middleware(dispatcher.settings.api_token)])
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_dispatcher(
    settings: Settings,
    config: TriggersConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    start_from: str = "earliest",
    max_records: int = 500,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): the body of ``segmentflow triggers``."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    dispatcher = Dispatcher(settings, config, start_from=start_from, max_records=max_records)
    runner = await serve_http(dispatcher, host, port) if port else None
    try:
        if not await dispatcher.start(stop):
            return
        log.warning(
            "triggers: %d target(s), group %s, dead letters to %s",
            len(dispatcher.targets),
            dispatcher.group,
            dispatcher.deadletter_topic,
        )
        await dispatcher.run(stop)
    finally:
        await dispatcher.stop()
        if runner is not None:
            await runner.cleanup()
