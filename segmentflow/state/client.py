"""The Redis client the adapters talk to: one Redis, or a Redis Cluster (issue 17).

The adapters use one key layout for both (:mod:`segmentflow.state.keys`); only three things
differ, and they live here:

- :func:`connect`: ``SEGMENTFLOW_REDIS_URL`` names a cluster with the ``redis+cluster://`` or
  ``rediss+cluster://`` scheme and a comma-separated seed list
  (``redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000/``); anything else is one Redis;
- :func:`transactions`: one home partition's writes are one ``MULTI``; on one Redis every
  partition of a commit goes into a single ``MULTI`` (one round trip, atomic across them), on a
  cluster each partition's ``MULTI`` runs on the node of its hash tag;
- :func:`scan_keys`: a resumable ``SCAN`` of the keys matching a pattern under one hash tag,
  on the node that holds the tag (a cluster's cursors are per node).

Examples
--------
>>> seeds("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001/0")
('redis://:pw@10.0.0.1:7000/0', [('10.0.0.1', 7000), ('10.0.0.2', 7001)])
>>> seeds("redis://localhost:6379/0") is None
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
from redis.cluster import ClusterNode, RedisCluster

#: what the adapters accept: one Redis or a cluster (both ``bytes`` replies). A
#: ``RedisCluster`` offers the same command methods; it is typed as ``redis.Redis`` because
#: the types-redis stubs of ``RedisCluster`` lack most of them.
RedisClient: TypeAlias = "redis.Redis[bytes]"
#: queues one partition's writes on an open transaction pipeline
Writes = Callable[[Any], None]

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def seeds(url: str) -> tuple[str, list[tuple[str, int]]] | None:
    """For a cluster URL, a one-node URL carrying its options and the seed nodes; else None."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None:
        return None
    auth, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for hostport in hosts.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        nodes.append((host, int(port)))
    first = f"{auth}@{nodes[0][0]}:{nodes[0][1]}" if auth else f"{nodes[0][0]}:{nodes[0][1]}"
    single = urlunsplit((scheme, first, parts.path, parts.query, parts.fragment))
    return single, nodes


class OneCallPacker:
    """Packs a command into RESP in one C call (``hiredis.pack_command``).

    redis-py's hiredis packer first passes every argument through its Python ``Encoder`` (one
    call and three type checks each), which was a tenth of the worker's engine thread on
    CDNOW-like data (about 40 arguments per event: ``benchmarks/README.md``, "Results
    (2026-12-04, evening)"). hiredis encodes ``str``/``bytes``/``int``/``float`` the same way
    (UTF-8, ``repr`` of numbers); anything else (a ``bool``, ``None``, a ``memoryview``, a
    command name that is not all letters) goes to redis-py's packer, which packs or raises as it
    always did.

    Examples
    --------
    >>> from redis.connection import PythonRespSerializer
    >>> from redis._parsers.encoders import Encoder
    >>> encode = Encoder("utf-8", "strict", False).encode
    >>> packer = OneCallPacker(PythonRespSerializer(6000, encode).pack)
    >>> packer.pack("SET", "k", 1.5)[0].split()
    [b'*3', b'$3', b'SET', b'$1', b'k', b'$3', b'1.5']
    >>> packer.pack("SET", "k", True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    redis.exceptions.DataError: Invalid input of type: 'bool'. ...
    """

    def __init__(self, fallback: Callable[..., list[bytes]]) -> None:
        self.fallback = fallback

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]  # redis-py splits a str name at any whitespace, a bytes one at b" "
        if b" " in first if isinstance(first, bytes) else not first.isalpha():
            return self.fallback(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a type only redis-py knows what to do with (or to refuse)
            return self.fallback(*args)


class OneCallConnection(redis.Connection):
    """A ``redis.Connection`` whose commands are packed by :class:`OneCallPacker` (when the
    client encodes as UTF-8, the default)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        encoder, me = self.encoder, cast(Any, self)  # the stubs lack the packer attribute
        if (encoder.encoding, encoder.encoding_errors) == ("utf-8", "strict"):
            me._command_packer = OneCallPacker(me._command_packer.pack)


def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url`` (a ``redis+cluster://`` seed list gives a ``RedisCluster``)."""
    found = seeds(url)
    if found is None:
        if urlsplit(url).scheme == "redis":  # plain TCP: rediss:// and unix:// keep theirs
            options.setdefault("connection_class", OneCallConnection)
        single: redis.Redis[bytes] = redis.Redis.from_url(url, **options)
        return single
    first, nodes = found
    cluster: RedisCluster[bytes] = RedisCluster.from_url(
        first, startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options
    )
    return cast("redis.Redis[bytes]", cluster)


def is_client(client: object) -> bool:
    """Whether ``client`` is a Redis client this module can use."""
    return isinstance(client, redis.Redis | RedisCluster)


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def transactions(
    client: RedisClient,
    writes: Mapping[int, Writes],
    before: Writes | None = None,
    after: Writes | None = None,
) -> list[Any]:
    """Run each home partition's queued writes as one ``MULTI`` (see the module docstring);
    the replies of what ``after`` queued.

    ``before`` queues commands on other keys that must land first (directory entries), and
    ``after`` ones that must run after every partition's transaction (global meta, reads of
    other partitions' logs). On one Redis all of it is one ``MULTI``; on a cluster ``before``
    and ``after`` are plain pipelines and each partition's ``MULTI`` runs on its node, in the
    mapping's order.
    """
    if not is_cluster(client):
        pipe = client.pipeline(transaction=True)
        if before is not None:
            before(pipe)
        for queue in writes.values():
            queue(pipe)
        mark = len(pipe)
        if after is not None:
            after(pipe)
        if not len(pipe):
            return []
        return list(pipe.execute()[mark:])
    if before is not None:
        _run(client, before, transaction=False)
    for queue in writes.values():
        _run(client, queue, transaction=True)
    return [] if after is None else _run(client, after, transaction=False)


class ReplicaLag(redis.RedisError):
    """A commit was not acknowledged by enough replicas in time (it may be lost if its
    primary fails now); the worker retries the batch (its events are then duplicates)."""


def wait_replicas(
    client: RedisClient,
    keys: Iterable[str],
    replicas: int,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait until ``replicas`` replicas of every primary holding one of ``keys`` have
    everything that primary had written when this was called (the ``WAIT`` command, for writes
    of any connection: ``INFO replication`` offsets). Raises :class:`ReplicaLag` after
    ``timeout`` seconds."""
    if replicas <= 0:
        return
    if is_cluster(client):
        cluster: Any = client
        nodes = {node.name: node for node in map(cluster.get_node_from_key, keys)}
        servers: list[Any] = [node.redis_connection for node in nodes.values()]
    else:
        servers = [client]
    deadline = clock() + timeout
    for server in servers:
        info = server.info("replication")
        target = int(info.get("master_repl_offset", 0))
        pause = 0.0005
        while _acked(info, target) < replicas:
            if clock() > deadline:
                raise ReplicaLag(
                    f"{_acked(info, target)} of {replicas} replicas acknowledged a commit within "
                    f"{timeout:g} s (SEGMENTFLOW_REDIS_MIN_REPLICAS): is a replica down or "
                    "lagging? The batch is retried."
                )
            sleep(pause)
            pause = min(2 * pause, 0.05)
            info = server.info("replication")


def _acked(info: Mapping[str, Any], target: int) -> int:
    """Replicas (``slaveN`` entries of ``INFO replication``) at or past offset ``target``."""
    return sum(
        1
        for name, replica in info.items()
        if name.startswith("slave")
        and isinstance(replica, dict)
        and int(replica.get("offset", -1)) >= target
    )


def _run(client: RedisClient, queue: Writes, transaction: bool) -> list[Any]:
    pipe = client.pipeline(transaction=transaction)
    queue(pipe)
    return list(pipe.execute()) if len(pipe) else []


def queue_mget(pipe: Any, keys: list[str]) -> None:
    """Queue an ``MGET`` of keys of one hash tag (redis-py refuses the method in a cluster
    pipeline, though the server runs it when every key is in one slot)."""
    pipe.execute_command("MGET", *keys)


def queue_mset(pipe: Any, mapping: Mapping[str, bytes]) -> None:
    """Queue an ``MSET`` of keys of one hash tag (see :func:`queue_mget`)."""
    args: list[Any] = []
    for key, value in mapping.items():
        args.append(key)
        args.append(value)
    pipe.execute_command("MSET", *args)


def scan_keys(
    client: RedisClient, tag_key: str, pattern: str, cursor: int, count: int
) -> tuple[int, list[bytes]]:
    """One ``SCAN`` step over the keys matching ``pattern`` on the node holding ``tag_key``."""
    if is_cluster(client):
        cluster: Any = client
        node = cluster.get_node_from_key(tag_key)  # a primary (the slot's owner now)
        after, found = node.redis_connection.scan(cursor, match=pattern, count=count)
    else:
        after, found = client.scan(cursor, match=pattern, count=count)
    return int(after), list(found)
