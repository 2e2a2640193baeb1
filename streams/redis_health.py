"""Redis memory safety (issue 12): refuse an eviction policy that can drop the worker's keys, and
watch ``used_memory`` against ``maxmemory`` and ``evicted_keys``.

An evicted state key is silent data loss (a customer restarts at sequence 1 and re-emits change
ids with other content), so the worker refuses to start unless Redis answers writes over the
limit with an error (``noeviction``), which the worker treats as an outage: it stalls, retries
with backoff and reports 503 until memory is freed or the limit raised. ``volatile-*`` policies
are refused too: they evict keys with a TTL, and the home-partition claims
(``ns:claim:<customer>``, 24 h TTL) are such keys; ``allkeys-*`` would evict anything.

On a Redis Cluster (issue 17) every check runs per node: the policy on every node that answers
(a replica becomes a primary in a failover), memory per primary (the primary nearest its own
``maxmemory`` decides: a full node refuses its slots' writes whatever the others hold), and
:func:`check_reachable` PINGs every primary and reads ``cluster_state``. Errors of the cluster
client that are not ``redis.RedisError`` (``SlotNotCoveredError``, "cannot be connected": both
``RedisClusterException``) count as outages too (:data:`REDIS_ERRORS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisClusterException

from segmentflow.state.client import RedisClient, is_cluster

log = logging.getLogger("segmentflow.worker")

T = TypeVar("T")

ACCEPTED_POLICIES = frozenset({"noeviction"})
#: redis-py's error for a write refused at ``maxmemory`` (unknown to the types-redis stubs)
OutOfMemoryError: type[redis.RedisError] = redis.exceptions.OutOfMemoryError  # type: ignore[attr-defined]
#: what a Redis or Redis Cluster client raises while the server cannot serve a command: an
#: outage (retried with backoff, /health 503), never the event's fault. The cluster client's
#: ``RedisClusterException`` is no ``RedisError``: ``SlotNotCoveredError`` (a slot without a
#: primary after its retries), "Redis Cluster cannot be connected" (no seed answers).
#: ``ClusterDownError``, ``MovedError``/``AskError`` beyond the client's redirections and a
#: node's ``ConnectionError`` are ``RedisError`` already.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
#: ``used_memory / maxmemory`` above which the worker warns (log and gauge)
WARN_RATIO = 0.9
#: seconds between samples while a cluster primary does not answer
DEGRADED_EVERY = 1.0


class RedisUnsafe(RuntimeError):
    """Redis is configured so that it may silently drop the worker's keys."""


class ClusterUnhealthy(redis.exceptions.ConnectionError):
    """A Redis Cluster does not serve every slot: a primary does not answer or a node reports
    ``cluster_state:fail``; the message names the nodes and what to do."""


def redacted(url: str) -> str:
    """``url`` without its password (for messages and logs).

    Examples
    --------
    >>> redacted("rediss+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7000/?ssl_cert_reqs=none")
    'rediss+cluster://app:***@10.0.0.1:7000,10.0.0.2:7000/?ssl_cert_reqs=none'
    >>> redacted("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    parts = urlsplit(url)
    auth, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in auth:
        return url
    user = auth.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def on_nodes(
    client: RedisClient, call: Callable[..., T], primaries: bool = True
) -> tuple[dict[str, T], dict[str, Exception]]:
    """``call(**target)`` on one Redis (node name ``""``; its errors propagate), or on every
    primary (``primaries``) or every node of a cluster, one at a time: the answers and the
    errors (:data:`REDIS_ERRORS`) by node name (``host:port``). A node that fails makes the
    cluster client reload its slot map, so a call after a failover reaches the new primary."""
    if not is_cluster(client):
        return {"": call()}, {}
    cluster: Any = client
    answers: dict[str, T] = {}
    errors: dict[str, Exception] = {}
    try:
        nodes = cluster.get_primaries() if primaries else cluster.get_nodes()
    except REDIS_ERRORS as exc:
        return {}, {"cluster": exc}
    for node in nodes:
        try:
            answers[node.name] = call(target_nodes=node)
        except REDIS_ERRORS as exc:
            errors[node.name] = exc
    return answers, errors


def _describe(errors: dict[str, Exception]) -> str:
    return "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in sorted(errors.items()))


def check_reachable(client: RedisClient) -> None:
    """PING Redis; on a cluster PING every primary and require ``cluster_state:ok``.

    Raises
    ------
    redis.RedisError
        One Redis does not answer (as ``PING`` raises it).
    ClusterUnhealthy
        A primary does not answer or the cluster does not serve every slot.
    """
    if not is_cluster(client):
        client.ping()
        return
    cluster: Any = client
    answers, errors = on_nodes(client, lambda **target: cluster.ping(**target))
    if errors:
        raise ClusterUnhealthy(
            f"{len(errors)} of {len(answers) + len(errors)} primaries do not answer "
            f"({_describe(errors)}): restart them, or wait for their replicas to take over "
            "(cluster-node-timeout); `redis-cli -c -h HOST -p PORT cluster nodes` shows the "
            "cluster's view"
        )
    node = cluster.get_primaries()[0]
    state = _text(dict(cluster.cluster_info(target_nodes=node)).get("cluster_state", "ok"))
    if state != "ok":
        raise ClusterUnhealthy(
            f"Redis Cluster node {node.name} reports cluster_state:{state} (a slot has no "
            "live primary): wait for the failover, or assign the slots (`redis-cli --cluster "
            "fix HOST:PORT`)"
        )


def check_eviction_policy(client: RedisClient, url: str = "") -> str:
    """Return Redis's ``maxmemory-policy`` (on a cluster: of every node that answers); raise
    :class:`RedisUnsafe` (a message saying what to change) unless it is one of
    :data:`ACCEPTED_POLICIES`."""
    cluster: Any = client
    answers, _ = on_nodes(client, lambda **target: cluster.info("memory", **target), False)
    policies = {
        name: _text(info.get("maxmemory_policy", "noeviction")) for name, info in answers.items()
    }
    unsafe = {name: p for name, p in sorted(policies.items()) if p not in ACCEPTED_POLICIES}
    if unsafe:
        name, policy = next(iter(unsafe.items()))
        where = f"Redis {redacted(url)}".rstrip() if not name else f"Redis Cluster node {name}"
        others = f" (and {len(unsafe) - 1} more nodes)" if len(unsafe) > 1 else ""
        raise RedisUnsafe(
            f"{where} has maxmemory-policy {policy!r}{others}: it may evict segmentflow's "
            "state keys and lose customers silently. Set `maxmemory-policy noeviction` "
            "(redis.conf or `CONFIG SET maxmemory-policy noeviction`, on every node of a "
            'cluster) and size maxmemory (README "Sizing Redis"); at the limit the worker then '
            "pauses and retries instead."
        )
    return next(iter(policies.values()), "noeviction")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class MemorySample:
    """Redis memory figures at one moment (``maxmemory`` 0 = no limit). On a cluster:
    ``used_memory``/``maxmemory`` of the primary nearest its limit (``node``), evictions
    summed, the first unsafe policy, and the primaries that did not answer."""

    used_memory: int = 0
    maxmemory: int = 0
    evicted_keys: int = 0
    policy: str = "noeviction"
    #: the node the figures are from (``host:port`` on a cluster, ``""`` on one Redis)
    node: str = ""
    #: primaries that answered (1 on one Redis)
    nodes: int = 1
    #: primaries that did not answer (``host:port``)
    unreachable: tuple[str, ...] = ()

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

    @property
    def degraded(self) -> bool:
        """A primary of the cluster did not answer (its slots are not served)."""
        return bool(self.unreachable)


def combine(per_node: dict[str, MemorySample], unreachable: tuple[str, ...] = ()) -> MemorySample:
    """One sample from per-primary ones: the tightest node decides (highest ``ratio``; without
    limits the largest ``used_memory``), ``evicted_keys`` summed, an unsafe policy kept.

    Examples
    --------
    >>> a = MemorySample(900, 1000, 0, node="a")
    >>> b = MemorySample(1500, 4000, 2, node="b")
    >>> s = combine({"a": a, "b": b})
    >>> (s.node, s.used_memory, s.maxmemory, s.evicted_keys, s.nodes, s.warning)
    ('a', 900, 1000, 2, 2, False)
    """
    if not per_node:
        return MemorySample(nodes=0, unreachable=unreachable)
    tightest = max(per_node.values(), key=lambda s: (s.ratio, s.used_memory))
    unsafe = [s.policy for s in per_node.values() if s.policy not in ACCEPTED_POLICIES]
    return MemorySample(
        tightest.used_memory,
        tightest.maxmemory,
        sum(s.evicted_keys for s in per_node.values()),
        unsafe[0] if unsafe else tightest.policy,
        tightest.node,
        len(per_node),
        unreachable,
    )


class MemoryWatch:
    """Samples ``INFO memory``/``INFO stats`` (of every primary of a cluster) at most every
    ``every`` seconds (from the worker's tick) and logs a warning (at most once a minute)
    while :attr:`MemorySample.warning` or :attr:`MemorySample.degraded`."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.sample: MemorySample | None = None
        self._at = float("-inf")
        self._warned_at = float("-inf")

    def due(self) -> bool:
        """Whether a sample is due: ``every`` seconds after the last, at most 1 s while a
        cluster primary did not answer (so /health sees the failover soon)."""
        every = self.every
        if self.sample is not None and self.sample.degraded:
            every = min(every, DEGRADED_EVERY)
        return time.monotonic() - self._at >= every

    def expire(self) -> None:
        """Make the sample due now (Redis refused a write for memory: the figures it showed,
        up to ``every`` seconds old, may predate the limit)."""
        self._at = float("-inf")

    def poll(self, client: RedisClient) -> MemorySample:
        """Take a sample now (raises one of :data:`REDIS_ERRORS` when Redis, or every primary
        of a cluster, does not answer; a cluster with some primaries down gives a
        :attr:`MemorySample.degraded` sample of the others)."""
        cluster: Any = client

        def node_sample(**target: Any) -> MemorySample:
            memory = cluster.info("memory", **target)
            stats = cluster.info("stats", **target)
            node = target.get("target_nodes")
            return MemorySample(
                int(memory.get("used_memory", 0)),
                int(memory.get("maxmemory", 0)),
                int(stats.get("evicted_keys", 0)),
                _text(memory.get("maxmemory_policy", "noeviction")),
                "" if node is None else str(node.name),
            )

        answers, errors = on_nodes(client, node_sample)
        if not answers:
            raise next(iter(errors.values()))
        sample = combine(answers, tuple(sorted(errors)))
        self.sample, self._at = sample, time.monotonic()
        now = time.monotonic()
        if (sample.warning or sample.degraded) and now - self._warned_at >= 60:
            self._warned_at = now
            if sample.degraded:
                log.warning(
                    "Redis Cluster: primaries %s do not answer (%s): their slots are not served "
                    "until they return or their replicas take over",
                    ", ".join(sample.unreachable),
                    _describe(errors),
                )
            if sample.warning:
                log.warning(
                    "Redis memory%s: used %d of maxmemory %d bytes (%.0f%%), policy %s, %d keys "
                    'evicted: raise maxmemory or free memory (README "Sizing Redis")',
                    f" (node {sample.node})" if sample.node else "",
                    sample.used_memory,
                    sample.maxmemory,
                    100 * sample.ratio,
                    sample.policy,
                    sample.evicted_keys,
                )
        return sample
