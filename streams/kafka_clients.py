"""kafka-python clients for the CLI tools (produce, tail, forget), with clear errors."""

from __future__ import annotations

from typing import Any

from segmentflow.config import Settings


class BrokerUnavailable(RuntimeError):
    """Kafka cannot be reached; the message says which URL and how to start one."""


def security_options(settings: Settings) -> dict[str, Any]:
    """SASL/SSL options from the environment, in kafka-python's names."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_ssl_cafile:
        options["ssl_cafile"] = settings.kafka_ssl_cafile
    return options


def _unavailable(settings: Settings, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Kafka at {settings.kafka_url} ({exc.__class__.__name__}). "
        "Start one with `segmentflow dev` (embedded broker) or `docker compose up -d kafka`, "
        "or point SEGMENTFLOW_KAFKA_URL at a running broker."
    )


def producer(settings: Settings, **extra: Any) -> Any:
    """A connected ``KafkaProducer`` (bytes in, bytes out)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            linger_ms=5,
            acks="all",
            request_timeout_ms=15000,
            **security_options(settings),
            **extra,
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None


def consumer(settings: Settings, *topics: str, **extra: Any) -> Any:
    """A connected ``KafkaConsumer`` subscribed to ``topics``."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        return KafkaConsumer(
            *topics,
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            **security_options(settings),
            **extra,
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None
