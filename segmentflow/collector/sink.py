"""Where the collector's messages go: Kafka (aiokafka, async) or memory (tests)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from segmentflow.config import Settings

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

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, records: Sequence[Record]) -> None: ...


class MemorySink:
    """Keeps records in a list; ``fail = True`` makes ``send`` raise (for tests)."""

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


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options for aiokafka from the environment settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_ssl_cafile or "SSL" in settings.kafka_security_protocol.upper():
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    return options


class KafkaSink:
    """An aiokafka producer (``acks=all``) started and stopped with the app.

    Parameters
    ----------
    settings
        Environment settings (Kafka URL and security).
    connect_timeout
        Seconds to keep retrying the first connection before giving up.
    send_timeout
        Seconds a request may wait for the broker's acknowledgements (then 503).
    """

    def __init__(
        self, settings: Settings, connect_timeout: float = 30.0, send_timeout: float = 15.0
    ) -> None:
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                acks="all",
                linger_ms=2,
                request_timeout_ms=int(self.send_timeout * 1000),
                client_id="segmentflow-collector",
                **aiokafka_options(self.settings),
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                await producer.stop()
                if loop.time() + delay > deadline:
                    raise SinkError(
                        f"cannot reach Kafka at {self.settings.kafka_url} "
                        f"({exc.__class__.__name__}); start one with `segmentflow dev` or point "
                        "SEGMENTFLOW_KAFKA_URL at a running broker"
                    ) from exc
                log.warning("Kafka not reachable yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._producer = producer
            return

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._producer is None:
            raise SinkError("the Kafka producer is not running")
        try:
            futures = [
                await self._producer.send(r.topic, value=r.value, key=r.key) for r in records
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self.send_timeout)
        except Exception as exc:  # aiokafka raises many error types for a lost broker
            raise SinkError(f"Kafka did not acknowledge: {exc.__class__.__name__}: {exc}") from exc
