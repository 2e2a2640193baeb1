"""Where the collector's messages go: Kafka (aiokafka, async) or memory (tests).

Delivery: ``send`` returns only when the broker has acknowledged every record (``acks=all``), so a
200 means every event of the request is on Kafka. When it raises (the request gets 503), some of
the records may still have been delivered, or be delivered later from the producer's buffer: a
503 does not mean "not produced". SDKs retry the whole request with the same ``messageId`` s,
and the worker applies a repeated ``event_id`` once (CONTRACT §2), so the retry is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from segmentflow.config import Settings
from segmentflow.kafka_options import KafkaOptions
from segmentflow.triggers.backoff import Backoff, retry_async

log = logging.getLogger("segmentflow.collector")


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message to produce."""

    topic: str
    key: bytes | None
    value: bytes


class SinkError(RuntimeError):
    """The messages could not be handed to the broker (the request gets 503)."""


class Sink(Protocol):
    """Async destination of records; ``send`` returns once every record is acknowledged."""

    async def start(self) -> None:
        """Begin connecting; returns at once (the app serves, answering 503, meanwhile)."""

    async def stop(self) -> None: ...

    async def send(self, records: Sequence[Record]) -> None: ...

    async def health(self) -> str | None:
        """``None`` when the broker is reachable, else why not (``/health`` answers 503)."""


class MemorySink:
    """Keeps records in a list; ``fail = True`` makes ``send`` raise and ``health`` report the
    broker down (for tests)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail = False
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def send(self, records: Sequence[Record]) -> None:
        if self.fail:
            raise SinkError("memory sink set to fail")
        self.records.extend(records)

    async def health(self) -> str | None:
        return "memory sink set to fail" if self.fail else None


class KafkaSink:
    """An aiokafka producer (``acks=all``) that connects in the background.

    Started before its broker, it keeps trying with capped backoff (one log line per attempt,
    no traceback); meanwhile ``send`` raises :class:`SinkError` (503) and ``health`` says why.

    Parameters
    ----------
    settings
        Environment settings (Kafka URL and security).
    send_timeout
        Seconds a request may wait for the broker's acknowledgements (then 503).
    retry_first, retry_max
        First and largest pause between connection attempts (seconds).
    health_timeout
        Seconds a ``/health`` probe (a metadata request) may take before the broker counts as down.
    health_every
        Seconds a probe's answer is reused (a flood of ``/health`` costs one probe per period).
    """

    def __init__(
        self,
        settings: Settings,
        send_timeout: float = 15.0,
        retry_first: float = 0.5,
        retry_max: float = 10.0,
        health_timeout: float = 3.0,
        health_every: float = 1.0,
    ) -> None:
        self.settings = settings
        self.send_timeout = send_timeout
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.health_timeout = health_timeout
        self.health_every = health_every
        self._producer: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._why: str = f"connecting to Kafka at {settings.kafka_url}"
        self._probe: asyncio.Future[str | None] | None = None
        self._probed_at = -1e9
        self._probed: str | None = None
        self.attempts = 0

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name="collector-kafka-connect")

    async def _attempt(self) -> Any:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            acks="all",
            linger_ms=2,
            request_timeout_ms=int(self.send_timeout * 1000),
            **KafkaOptions.from_settings(self.settings).aiokafka(
                client_id="segmentflow-collector", producer=True
            ),
        )
        quiet = logging.getLogger("aiokafka")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # our one line per attempt says it all
        try:
            await asyncio.wait_for(producer.start(), timeout=self.send_timeout + 5)
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        finally:
            quiet.setLevel(level)
        return producer

    async def _connect(self) -> None:
        url = self.settings.kafka_url

        async def attempt() -> Any:
            self.attempts += 1
            return await self._attempt()

        def failed(attempt: int, exc: Exception, delay: float) -> None:
            # KafkaConnectionError, OSError, timeouts...: one line, no traceback
            name = exc.__class__.__name__
            reason = str(exc).splitlines()[0][:200] if str(exc) else "no detail"
            reason = reason.removeprefix(f"{name}: ")
            self._why = f"cannot reach Kafka at {url} ({name}: {reason})"
            log.warning(
                "%s; retry %d in %.1fs (requests get 503 until then; start a broker with "
                "`segmentflow dev` or point SEGMENTFLOW_KAFKA_URL at one)",
                self._why,
                attempt,
                delay,
            )

        backoff = Backoff(self.retry_first, cap=self.retry_max, jitter=0)
        self._producer = await retry_async(attempt, backoff, on_failure=failed)
        self._probed_at = -1e9
        log.warning("connected to Kafka at %s", url)

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
            self._connecting = None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send(self, records: Sequence[Record]) -> None:
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise SinkError(self._why)

        async def produce() -> None:
            futures = [await producer.send(r.topic, value=r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(produce(), timeout=self.send_timeout)
        except Exception as exc:  # aiokafka raises many error types for a lost broker
            self._probed_at = -1e9  # the next /health probes again
            name = exc.__class__.__name__
            raise SinkError(f"Kafka did not acknowledge: {name}: {str(exc)[:200]}") from exc

    async def health(self) -> str | None:
        if self._producer is None:
            return self._why
        loop = asyncio.get_running_loop()
        if loop.time() - self._probed_at < self.health_every:
            return self._probed
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._probe)

    async def _check(self) -> str | None:
        loop = asyncio.get_running_loop()
        try:
            client = self._producer.client
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=self.health_timeout)
            result = None
        except Exception as exc:
            name = exc.__class__.__name__
            result = f"Kafka at {self.settings.kafka_url} does not answer ({name})"
        self._probed, self._probed_at, self._probe = result, loop.time(), None
        return result
