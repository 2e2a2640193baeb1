"""Redis memory safety (issue 12): refuse an eviction policy that can drop the worker's keys, and
watch ``used_memory`` against ``maxmemory`` and ``evicted_keys``.

An evicted state key is silent data loss (a customer restarts at sequence 1 and re-emits change
ids with other content), so the worker refuses to start unless Redis answers writes over the
limit with an error (``noeviction``), which the worker treats as an outage: it stalls, retries
with backoff and reports 503 until memory is freed or the limit raised. ``volatile-*`` policies
are refused too: they evict keys with a TTL, and the home-partition claims
(``ns:claim:<customer>``, 24 h TTL) are such keys; ``allkeys-*`` would evict anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger("segmentflow.worker")

ACCEPTED_POLICIES = frozenset({"noeviction"})
#: redis-py's error for a write refused at ``maxmemory`` (unknown to the types-redis stubs)
OutOfMemoryError: type[redis.RedisError] = redis.exceptions.OutOfMemoryError  # type: ignore[attr-defined]
#: ``used_memory / maxmemory`` above which the worker warns (log and gauge)
WARN_RATIO = 0.9


class RedisUnsafe(RuntimeError):
    """Redis is configured so that it may silently drop the worker's keys."""


def check_eviction_policy(client: redis.Redis[bytes], url: str = "") -> str:
    """Return Redis's ``maxmemory-policy``; raise :class:`RedisUnsafe` (a message saying
    what to change) unless it is one of :data:`ACCEPTED_POLICIES`."""
    policy = _text(client.info("memory").get("maxmemory_policy", "noeviction"))
    if policy not in ACCEPTED_POLICIES:
        raise RedisUnsafe(
            f"Redis {url} has maxmemory-policy {policy!r}: it may evict segmentflow's state "
            "keys and lose customers silently. Set `maxmemory-policy noeviction` (redis.conf or "
            "`CONFIG SET maxmemory-policy noeviction`) and size maxmemory (README "
            '"Sizing Redis"); at the limit the worker then pauses and retries instead.'
        )
    return policy


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class MemorySample:
    """Redis memory figures at one moment (``maxmemory`` 0 = no limit)."""

    used_memory: int = 0
    maxmemory: int = 0
    evicted_keys: int = 0
    policy: str = "noeviction"

    @property
    def ratio(self) -> float:
        """``used_memory / maxmemory`` (0 without a limit)."""
        return self.used_memory / self.maxmemory if self.maxmemory else 0.0

    @property
    def warning(self) -> bool:
        """Above :data:`WARN_RATIO` of the limit, an unsafe policy or keys evicted."""
        return (
            self.ratio > WARN_RATIO
            or self.policy not in ACCEPTED_POLICIES
            or (self.evicted_keys > 0 and self.policy != "noeviction")
        )


class MemoryWatch:
    """Samples ``INFO memory``/``INFO stats`` at most every ``every`` seconds (from the
    worker's tick) and logs a warning (at most once a minute) while :attr:`MemorySample.warning`."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.sample: MemorySample | None = None
        self._at = float("-inf")
        self._warned_at = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._at >= self.every

    def expire(self) -> None:
        """Make the sample due now (Redis refused a write for memory: the figures it showed,
        up to ``every`` seconds old, may predate the limit)."""
        self._at = float("-inf")

    def poll(self, client: redis.Redis[bytes]) -> MemorySample:
        """Take a sample now (raises ``redis.RedisError`` when Redis does not answer)."""
        memory = client.info("memory")
        stats = client.info("stats")
        sample = MemorySample(
            int(memory.get("used_memory", 0)),
            int(memory.get("maxmemory", 0)),
            int(stats.get("evicted_keys", 0)),
            _text(memory.get("maxmemory_policy", "noeviction")),
        )
        self.sample, self._at = sample, time.monotonic()
        now = time.monotonic()
        if sample.warning and now - self._warned_at >= 60:
            self._warned_at = now
            log.warning(
                "Redis memory: used %d of maxmemory %d bytes (%.0f%%), policy %s, %d keys "
                'evicted: raise maxmemory or free memory (README "Sizing Redis")',
                sample.used_memory,
                sample.maxmemory,
                100 * sample.ratio,
                sample.policy,
                sample.evicted_keys,
            )
        return sample
