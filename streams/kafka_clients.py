"""kafka-python clients for the CLI tools (produce, tail, forget) and topic administration,
with clear errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from segmentflow.config import Settings
from segmentflow.kafka_options import KafkaOptions


class BrokerUnavailable(RuntimeError):
    """Kafka cannot be reached; the message says which URL and how to start one."""


def security_options(settings: Settings) -> dict[str, Any]:
    """SASL/SSL options from the environment, in kafka-python's names
    (:meth:`KafkaOptions.security <segmentflow.kafka_options.KafkaOptions.security>`)."""
    return KafkaOptions.from_settings(settings).security()


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
        # uncompressed unless asked (``compression_type=``): kafka-python encodes snappy and lz4
        # only with optional packages; SEGMENTFLOW_KAFKA_COMPRESSION is for the services' records
        options = KafkaOptions.from_settings(settings).kafka_python(client_id="segmentflow-cli")
        defaults = {"linger_ms": 5, "acks": "all", "request_timeout_ms": 15000}
        return KafkaProducer(**{**options, **defaults, **extra})
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None


def consumer(settings: Settings, *topics: str, **extra: Any) -> Any:
    """A connected ``KafkaConsumer`` subscribed to ``topics``."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        options = KafkaOptions.from_settings(settings).kafka_python(client_id="segmentflow-cli")
        return KafkaConsumer(*topics, **{**options, **extra})
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


def create_topics(
    target: Settings | str, names: Iterable[str], partitions: int, timeout: float = 15.0
) -> list[str]:
    """Create the topics that do not exist yet; existing ones are left alone.

    The one way segmentflow creates topics (worker, trigger dispatcher, ``segmentflow dev``,
    tests).

    Parameters
    ----------
    target
        The environment settings (URL and security), or a plain ``host:port`` bootstrap
        (an embedded broker).
    names
        Topic names (repeats are ignored).
    partitions
        Partition count of each new topic. The replication factor is 1 on a one-broker
        cluster, else up to 3.
    timeout
        Seconds allowed for each admin request.

    Returns
    -------
    list[str]
        The topics created by this call.

    Raises
    ------
    BrokerUnavailable
        The broker cannot be reached or refused the request (the message says what to do).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    settings = target if isinstance(target, Settings) else Settings(kafka_url=f"kafka://{target}")
    wanted = list(dict.fromkeys(names))
    try:
        admin = KafkaAdminClient(
            **KafkaOptions.from_settings(settings).kafka_python(client_id="segmentflow-admin"),
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
        )
    except (KafkaError, OSError) as exc:
        raise _unavailable(settings, exc) from None
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        replicas = min(3, len(admin.describe_cluster().get("brokers", [])) or 1)
        new = [NewTopic(name, partitions, replicas) for name in missing]
        with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile by another
            admin.create_topics(new, timeout_ms=int(timeout * 1000))
        return missing
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
