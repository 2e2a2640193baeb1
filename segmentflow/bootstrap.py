"""Wire settings to the pieces: one place builds the store, engine and processor."""

from __future__ import annotations

import redis

from segmentflow.config import SegmentConfig, Settings
from segmentflow.engine.engine import Engine
from segmentflow.service.processor import Processor
from segmentflow.state.redis_store import RedisStore


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached; the message says which URL and what to do."""


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """A Redis client for ``SEGMENTFLOW_REDIS_URL``, checked with PING."""
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.redis_url, socket_timeout=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {settings.redis_url} ({exc}). Start one "
            "(`segmentflow dev` embeds one) or set SEGMENTFLOW_REDIS_URL."
        ) from None
    return client


def redis_store(settings: Settings, outbox: bool = False) -> RedisStore:
    """The Redis state store under ``SEGMENTFLOW_NAMESPACE`` (sharded like the input topics)."""
    client = redis_client(settings)
    return RedisStore(client, settings.namespace, shards=settings.input_partitions, outbox=outbox)


def processor(
    settings: Settings, config: SegmentConfig | None = None, outbox: bool = False
) -> Processor:
    """A processor over the Redis store with the configured engine (the worker's has the
    transactional outbox on)."""
    return Processor(config or settings.segment_config(), redis_store(settings, outbox))


def engine(settings: Settings) -> Engine:
    """The engine for the configured segmentation."""
    return Engine(settings.segment_config())
