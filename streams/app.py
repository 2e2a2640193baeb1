"""The Faust application: settings tuned for a worker that is ready in seconds.

Consumer group = ``SEGMENTFLOW_NAMESPACE``; a new group starts at the earliest offset. Values
and keys are raw bytes: decoding is the engine's job, so bad input becomes a dead letter rather
than a serializer crash.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import faust

from segmentflow.config import Settings
from segmentflow.kafka_options import KafkaOptions
from segmentflow.streams import faust_patches
from segmentflow.streams.faust_patches import FETCH_MAX_WAIT_MS as FETCH_MAX_WAIT_MS
from segmentflow.streams.faust_patches import patch_fetch_max_wait as patch_fetch_max_wait

#: Tuned Faust settings (see README "Tuning"). The group join on Tansu answers after about half
#: the session timeout, so short timeouts make a worker ready in seconds instead of 30 s.
TUNING: dict[str, Any] = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 0.5,
    "broker_rebalance_timeout": 10.0,
    "broker_request_timeout": 30.0,
    "broker_commit_interval": 1.0,
    "broker_commit_every": 10_000,
    "broker_max_poll_records": 5000,
    "consumer_max_fetch_size": 4 * 1024 * 1024,
    "stream_buffer_maxsize": 20_000,
    # On a rebalance Faust would wait for every consumed message to be acked; the worker holds
    # messages unacked in its event-time aligner until more input moves the watermark, which
    # the paused consumer never delivers: the rebalance hung forever. Held messages need no
    # wait: after the rebalance Faust seeks every partition back to its committed offset.
    "stream_wait_empty": False,
    "producer_linger": 0.005,
    "producer_max_batch_size": 256 * 1024,
    "producer_acks": -1,
    "topic_disable_leader": True,
}


def compression(settings: Settings) -> str | None:
    """The producer codec (``SEGMENTFLOW_KAFKA_COMPRESSION``) in aiokafka's terms."""
    return KafkaOptions.from_settings(settings).compression


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SASL/SSL from the environment, or ``None`` for PLAINTEXT."""
    return KafkaOptions.from_settings(settings).faust_credentials()


def create_app(settings: Settings, partitions: int = 4, **overrides: Any) -> faust.App:
    """A Faust app for ``settings`` (consumer group and web port from the environment)."""
    options: dict[str, Any] = {
        # broker URL, SASL/TLS credentials and the producer codec
        **KafkaOptions.from_settings(settings).faust(),
        "datadir": str(Path(tempfile.gettempdir()) / f"segmentflow-{settings.namespace}-data"),
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": partitions,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": "127.0.0.1",
        "web_in_thread": False,
        "autodiscover": False,
        **TUNING,
    }
    options.update(overrides)
    faust_patches.apply()
    return faust.App(settings.namespace, **options)
