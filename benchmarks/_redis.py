"""The Redis of a benchmark: the one at ``--redis-url`` when it answers, else a private
redis-server on 127.0.0.1 (:class:`~segmentflow.embedded.EmbeddedRedis`), and a client. On
exit the keys of the benchmark's namespaces are deleted (by ``SCAN``, never ``FLUSHALL``: the
Redis may be shared) and the client is closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from segmentflow.embedded import EmbeddedRedis
from segmentflow.state.keys import Keys


@contextmanager
def bench_redis(url: str | None, *namespaces: str) -> Iterator[tuple[str, redis.Redis[bytes]]]:
    """``(url, client)`` of the benchmark's Redis; ``namespaces``' keys deleted after."""
    with EmbeddedRedis(url) as server:
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        try:
            yield server.url, client
        finally:
            for ns in namespaces:
                keys = [
                    key
                    for pattern in Keys(ns).everything
                    for key in client.scan_iter(match=pattern, count=1000)
                ]
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i : i + 1000])
            client.close()
