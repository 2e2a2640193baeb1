"""The composition root: settings -> stores, engine and processor (cosmicpython's bootstrap).

This is the only module outside ``segmentflow.state`` that names a concrete store: the service
layer (:mod:`segmentflow.service`) and the worker runtime (:mod:`segmentflow.streams.runtime`)
receive the interfaces of :mod:`segmentflow.state.base`, :mod:`segmentflow.state.ranks` and
:mod:`segmentflow.state.personas` (see PLAN.md "Layout").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from segmentflow.config import ConfigError, SegmentConfig, Settings
from segmentflow.engine.engine import Engine
from segmentflow.segmenters.clv import Clv
from segmentflow.service import replay
from segmentflow.service.clv_share import SharedClvRefit
from segmentflow.service.processor import Processor
from segmentflow.state.base import StateStore
from segmentflow.state.client import RedisClient, connect, seeds
from segmentflow.state.members import RedisMembers
from segmentflow.state.members_rebuild import RebuildReport
from segmentflow.state.memory import MemoryStore
from segmentflow.state.personas import PersonaModelStore
from segmentflow.state.ranks import RankSync
from segmentflow.state.redis_personas import RedisPersonaStore
from segmentflow.state.redis_store import RedisStore
from segmentflow.streams.redis_health import REDIS_ERRORS, check_reachable, redacted


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached; the message says which URL and what to do (a URL of the wrong
    kind, one Redis for a cluster or the reverse, is a :class:`ConfigError` instead)."""


#: what building a client raises: a cluster without a reachable seed, a malformed URL
_CONNECT_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, ValueError)


def redis_client(settings: Settings) -> RedisClient:
    """A client for ``SEGMENTFLOW_REDIS_URL`` (a ``redis+cluster://`` seed list gives a
    ``RedisCluster``), checked with PING (on a cluster: of every primary, and
    ``cluster_state:ok``)."""
    url = settings.redis_url
    shown = redacted(url)
    cluster = seeds(url) is not None
    try:
        client = connect(url, socket_timeout=30)
    except _CONNECT_ERRORS as exc:
        if cluster and "not enabled" in str(exc):  # waiting would not help
            raise ConfigError(
                f"SEGMENTFLOW_REDIS_URL {shown} names a Redis Cluster, but the Redis there runs "
                "without cluster mode: for one Redis use redis:// (rediss:// for TLS)"
            ) from None
        raise RedisUnavailable(
            f"cannot connect to Redis{' Cluster' if cluster else ''} at {shown} ({exc}). "
            "Start it or fix SEGMENTFLOW_REDIS_URL (README: Configuration)."
        ) from None
    try:
        check_reachable(client)
        if not cluster and _cluster_enabled(client):
            client.close()
            raise ConfigError(
                f"SEGMENTFLOW_REDIS_URL {shown} names one Redis, but it is a Redis Cluster node: "
                "name the cluster, SEGMENTFLOW_REDIS_URL=redis+cluster://HOST:PORT,HOST:PORT/ "
                '(rediss+cluster:// for TLS; README "Redis Cluster")'
            )
    except REDIS_ERRORS as exc:
        client.close()
        what = "Redis Cluster" if cluster else "Redis"
        start = "" if cluster else " Start one (`segmentflow dev` embeds one) or"
        raise RedisUnavailable(
            f"cannot reach {what} at {shown} ({exc}).{start} set SEGMENTFLOW_REDIS_URL."
        ) from None
    return client


def _cluster_enabled(client: RedisClient) -> bool:
    """Whether one Redis (reached with ``redis://``) runs with ``cluster-enabled yes``."""
    try:
        return bool(int(client.info("cluster").get("cluster_enabled", 0)))
    except redis.ResponseError:  # a proxy or managed Redis that hides INFO cluster
        return False


def redis_store(settings: Settings, outbox: bool = False) -> RedisStore:
    """The Redis state store under ``SEGMENTFLOW_NAMESPACE`` (sharded like the input topics);
    raises :class:`~segmentflow.state.migrate_layout.LayoutError` when the namespace still holds
    the old key layout (``segmentflow migrate-layout``), marks a fresh one."""
    from segmentflow.state.migrate_layout import ensure_layout

    client = redis_client(settings)
    try:
        ensure_layout(client, settings.namespace)
    except BaseException:
        client.close()
        raise
    return RedisStore(
        client,
        settings.namespace,
        shards=settings.input_partitions,
        outbox=outbox,
        min_replicas=settings.redis_min_replicas,
        replica_timeout=settings.redis_replica_timeout,
        warm_states=settings.warm_states,
    )


def memory_store(outbox: bool = False) -> StateStore:
    """An in-process state store (``replay``, backtests)."""
    return MemoryStore(outbox=outbox)


def member_reader(store: RedisStore) -> RedisMembers:
    """The membership index of ``store`` (``segmentflow members``)."""
    return RedisMembers(store.client, store.namespace, store.shards)


def rebuild_members(
    store: RedisStore, progress: Callable[[RebuildReport], None] | None = None
) -> RebuildReport:
    """Rebuild ``store``'s membership index from its states (``segmentflow members --rebuild``;
    see :mod:`segmentflow.state.members_rebuild`)."""
    from segmentflow.state import members_rebuild

    return members_rebuild.rebuild_members(store, progress=progress)


def outbox_backlog(settings: Settings) -> int | None:
    """How many committed changes wait in the outbox of any shard, not yet published
    (``segmentflow demo`` waits for none); ``None`` while Redis does not answer."""
    try:
        store = redis_store(settings)
    except RedisUnavailable:
        return None
    try:
        return sum(len(rows) for _, rows in store.outbox_pending())
    except REDIS_ERRORS:
        return None
    finally:
        store.close()


def replay_events(
    events: Iterable[dict[str, Any]],
    config: SegmentConfig,
    until_us: int | None,
    store: StateStore | None = None,
) -> list[dict[str, Any]]:
    """``replay`` of event dicts over an in-memory store (or ``store``): the change events
    (see :func:`segmentflow.service.replay.replay_events`)."""
    return replay.replay_events(
        events, config, until_us, store if store is not None else memory_store()
    )


def replay_file(
    path: Path,
    config: SegmentConfig,
    until: int | None,
    out: Path,
    progress: Callable[[int], None] | None = None,
    store: StateStore | None = None,
) -> tuple[Processor, replay.ReplaySummary]:
    """``segmentflow replay`` of a JSONL file over an in-memory store (or ``store``; see
    :func:`segmentflow.service.replay.replay_file`)."""
    return replay.replay_file(
        path, config, until, out, store if store is not None else memory_store(), progress
    )


def processor(
    settings: Settings, config: SegmentConfig | None = None, outbox: bool = False
) -> Processor:
    """A processor over the Redis store with the configured engine (the worker's has the
    transactional outbox on)."""
    return Processor(config or settings.segment_config(), redis_store(settings, outbox))


def engine(settings: Settings) -> Engine:
    """The engine for the configured segmentation."""
    return Engine(settings.segment_config())


@dataclass(frozen=True)
class WorkerParts:
    """What a worker runs on: the processor over the Redis state store (outbox on), the RFM
    rank sync (``None`` with RFM off), the persona model store (``None`` with personas off) and
    the Redis client (memory figures, eviction policy check)."""

    processor: Processor
    ranks: RankSync | None
    personas: PersonaModelStore | None
    redis: RedisClient


def worker_parts(settings: Settings, config: SegmentConfig | None = None) -> WorkerParts:
    """Wire a worker's stores: the state store with its outbox; the rank sync attached to the
    engine's rank index (loads the population's metrics: one scan of ``ns:rfm``); the persona
    store sharing the client; the shared ``clv`` refit (:func:`share_clv`)."""
    config = config or settings.segment_config()
    store = redis_store(settings, outbox=True)
    proc = Processor(config, store)
    ranks: RankSync | None = None
    if config.rfm.enabled:
        store.ranks.attach(proc.engine.ranks)
        ranks = store.ranks
    personas = None
    if proc.engine.persona is not None:
        personas = RedisPersonaStore(store.client, settings.namespace)
    share_clv(proc, store, settings.input_partitions)
    return WorkerParts(proc, ranks, personas, store.client)


def share_clv(proc: Processor, store: RedisStore, shards: int) -> SharedClvRefit | None:
    """Share the ``clv`` refit through Redis (when the config has a refitting ``clv``): rows
    written with the states, one fit per refit moment for all workers, the stored parameters
    adopted at start (:mod:`segmentflow.service.clv_share`)."""
    for dim in proc.engine.registry:
        if isinstance(dim, Clv) and dim.sweep_every_us:
            kind = dim.kind

            def current(kind: str = kind) -> Clv:  # the engine's clv, also after a reload
                found = proc.engine.by_kind(kind)
                assert isinstance(found, Clv)
                return found

            share = SharedClvRefit(current, store.clv, store, shards)
            share.attach()
            proc.shares[dim.kind] = share
            return share
    return None
