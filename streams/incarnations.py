"""Topic-partition incarnations: when offsets restart, they stop meaning anything.

The processor skips a record at or below a customer's highest applied offset of a topic-partition
only when the record is older than ``dedup_horizon`` (within it, the exact event_id set decides),
and only within the same *incarnation* of that topic-partition. A new incarnation starts when the
broker's cluster id differs from the one stored (a new broker, a cluster migration, a fresh
``segmentflow dev``) or when the partition's end offset is below the highest offset ever applied
(a topic deleted and recreated). Records live in Redis (``ns:partitions``); the owner of a
topic-partition updates its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from segmentflow.config import Settings

log = logging.getLogger("segmentflow.worker")
Record = dict[str, Any]


def broker_cluster_id(settings: Settings) -> str | None:
    """The cluster id the broker reports in its metadata (``None`` if it reports none).
    Blocking (kafka-python); raises when the broker cannot be reached."""
    from kafka import KafkaConsumer

    from segmentflow.kafka_options import KafkaOptions

    consumer = KafkaConsumer(
        **KafkaOptions.from_settings(settings).kafka_python(client_id="segmentflow-worker"),
        request_timeout_ms=10_000,
    )
    try:
        consumer.topics()  # one Metadata round trip
        cluster: str | None = consumer._client.cluster.cluster_id
        return cluster
    finally:
        consumer.close()


def reconcile(
    stored: Mapping[str, Record], sources: Iterable[str], cluster: str | None
) -> dict[str, Record]:
    """The incarnation record of each source (``topic:partition``) given the broker's cluster
    id: unchanged, new (epoch 0) or bumped (another cluster)."""
    out: dict[str, Record] = {}
    for source in sources:
        record = dict(stored.get(source) or {"epoch": 0, "high": -1, "cluster": cluster})
        known = record.get("cluster")
        if cluster is not None and known is not None and known != cluster:
            log.warning(
                "%s: the broker's cluster id is %r, was %r: a new incarnation (offsets restart; "
                "event_id de-duplication still applies)",
                source,
                cluster,
                known,
            )
            record = {"epoch": int(record.get("epoch", 0)) + 1, "high": -1, "cluster": cluster}
        elif known is None:
            record["cluster"] = cluster
        out[source] = record
    return out


def truncated(record: Record, end: int) -> Record | None:
    """A bumped record when the partition ends (``end`` = next offset) at or below the highest
    offset applied: the topic was recreated. ``None`` when nothing changed."""
    if end > int(record.get("high", -1)):
        return None
    log.warning(
        "a partition ends at offset %d below the highest applied (%d): recreated topic, a new "
        "incarnation (offsets restart; event_id de-duplication still applies)",
        end,
        record["high"],
    )
    return {**record, "epoch": int(record.get("epoch", 0)) + 1, "high": -1}
