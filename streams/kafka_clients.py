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


class PartitionMismatch(RuntimeError):
    """The input topics' partition counts differ; the message says what to fix."""


def topic_partition_counts(settings: Settings, topics: list[str]) -> dict[str, int | None]:
    """Real partition count of each topic (``None`` for a topic that does not exist)."""
    from kafka.errors import KafkaError

    kafka = consumer(settings, request_timeout_ms=10000, bootstrap_timeout_ms=5000)
    try:
        kafka.topics()  # refreshes the metadata of every topic
        counts: dict[str, int | None] = {}
        for topic in topics:
            partitions = kafka.partitions_for_topic(topic)
            counts[topic] = len(partitions) if partitions else None
        return counts
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None
    finally:
        kafka.close()


def create_topics(settings: Settings, names: list[str], partitions: int) -> None:
    """Create topics (replication factor 1 on a one-broker cluster, else up to 3); existing
    ones are left alone."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            client_id="segmentflow-worker",
            **security_options(settings),
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None
    try:
        replicas = min(3, len(admin.describe_cluster().get("brokers", [])) or 1)
        new = [NewTopic(name, partitions, replicas) for name in names]
        admin.create_topics(new, timeout_ms=15000)
    except TopicAlreadyExistsError:
        pass
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None
    finally:
        admin.close()


def input_partition_count(settings: Settings) -> int:
    """The partition count of the three input topics, read from the broker. Topics that do not
    exist yet (input and output) are created with the input topics' count
    (``SEGMENTFLOW_PARTITIONS`` when no input topic exists). Raises :class:`PartitionMismatch`
    when the existing input topics' counts differ."""
    inputs = list(settings.input_topics.values())
    outputs = [
        settings.topic_segment_changes,
        settings.topic_segmentflow_deadletter,
        settings.topic_segmentflow_metrics,
    ]
    counts = topic_partition_counts(settings, inputs + outputs)
    found = {topic: n for topic, n in counts.items() if n is not None and topic in inputs}
    missing = [topic for topic, n in counts.items() if n is None]
    if len(set(found.values())) > 1:
        raise mismatch(found)
    count = next(iter(found.values())) if found else settings.partitions
    if missing:
        create_topics(settings, missing, count)
    return count


def mismatch(found: dict[str, int]) -> PartitionMismatch:
    """The error for input topics with different partition counts: what to fix."""
    listed = ", ".join(f"{topic}={n}" for topic, n in found.items())
    most = max(found.values())
    fewer = [topic for topic, n in found.items() if n < most]
    return PartitionMismatch(
        f"the input topics have different partition counts ({listed}); segmentflow reads them "
        f"co-partitioned, so they must be equal. Add partitions to {', '.join(fewer)} "
        f"(e.g. `kafka-topics.sh --alter --topic {fewer[0]} --partitions {most}`; note that "
        "adding partitions moves keys to other partitions, so do it before producing), or "
        "recreate the topics with one count, then start the worker again."
    )
