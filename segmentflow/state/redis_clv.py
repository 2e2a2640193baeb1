"""The clv population in Redis (issue 16), driven by the Redis state store's commits.

Keys (``ns`` = namespace, ``P`` = a home partition):

- ``{ns:pP}:clv:rows:<bucket>``: hash customer_id -> packed row (:data:`~segmentflow.state.
  clv_population.ROW`, 23 bytes), in :data:`BUCKETS` buckets (crc32 of the id) per partition,
  written in the commit transaction of the customer's state; a refit reads them with one
  pipelined ``HGETALL`` per bucket (one round trip; no reply is one huge share);
- ``{ns:pP}:clv:version``: the partition's part of the population version (``INCRBY`` in the
  same transaction: committed customers whose summary changed: an order, a merge; forgets);
  the version is their sum;
- ``ns:clv:fits``: hash refit moment -> :class:`~segmentflow.segmenters.clv.ClvFit` JSON (the
  first published for a moment wins: ``HSETNX``; about 300 bytes a week of event time, kept);
- ``ns:clv:ready``: hash shard -> the latest refit moment its owner reached (the barrier);
- ``ns:clv:lock``: the refit lock (``SET NX PX``; its holder fits; expires if it dies).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from segmentflow.engine.state import CustomerState
from segmentflow.segmenters.clv import Clv, ClvFit
from segmentflow.state.client import RedisClient
from segmentflow.state.clv_population import (
    ClvPopulationStore,
    PopulationRows,
    decode_rows,
    row_of,
    take_changed,
)
from segmentflow.state.keys import Keys

#: hash buckets of the rows (a refit reads them all in one pipelined round trip)
BUCKETS = 64
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


def bucket_of(customer_id: str) -> int:
    """The row bucket of a customer.

    Examples
    --------
    >>> bucket_of("c-1"), bucket_of("c-1") == bucket_of("c-1")
    (62, True)
    """
    return zlib.crc32(customer_id.encode("utf-8")) % BUCKETS


class RedisClvPopulation(ClvPopulationStore):
    """The shared clv population (idle, writing nothing, until :meth:`attach`).

    Parameters
    ----------
    client
        The Redis client (the state store's: row writes join its commit transactions).
    namespace
        Key prefix (``SEGMENTFLOW_NAMESPACE``).
    """

    def __init__(
        self, client: RedisClient, namespace: str = "segmentflow", partitions: range = range(1)
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.partitions = partitions
        self.dim: Clv | None = None

    def rows_key(self, partition: int, bucket: int) -> str:
        return self.keys.part(partition).clv_rows(bucket)

    def attach(self, dim: Clv) -> None:
        self.dim = dim
        dim.changed = set() if dim.changed is None else dim.changed

    def queue_commit(self, pipe: Any, home: int, states: Mapping[str, CustomerState]) -> None:
        """Queue the rows of committed ``states`` homed in ``home`` and the version increment
        on ``pipe``."""
        if self.dim is None:
            return
        buckets: dict[int, dict[str, bytes]] = {}
        written: set[str] = set()
        for cid, state in states.items():
            row = row_of(state, self.dim.kind)
            if row is not None:
                buckets.setdefault(bucket_of(cid), {})[cid] = row
                written.add(cid)
        for bucket, rows in buckets.items():
            pipe.hset(self.rows_key(home, bucket), mapping=rows)  # type: ignore[arg-type]
        changed = take_changed(self.dim, states)
        for cid in changed - written:  # merged away or forgotten: no summary any more
            pipe.hdel(self.rows_key(home, bucket_of(cid)), cid)
        if changed:
            pipe.incrby(self.keys.part(home).clv_version, len(changed))

    def queue_forget(self, pipe: Any, home: int, customer_id: str) -> None:
        """Queue the removal of a customer's row (a forget changes the population)."""
        if self.dim is None:
            return
        pipe.hdel(self.rows_key(home, bucket_of(customer_id)), customer_id)
        pipe.incrby(self.keys.part(home).clv_version, 1)

    def version(self) -> int:
        """The population version (the partitions' versions summed)."""
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            pipe.get(self.keys.part(p).clv_version)
        return sum(int(v or 0) for v in pipe.execute())

    def read(self) -> PopulationRows:
        version = self.version()
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            for bucket in range(BUCKETS):
                pipe.hgetall(self.rows_key(p, bucket))
        ids: list[bytes] = []
        values: list[bytes] = []
        for reply in pipe.execute():
            ids.extend(reply.keys())
            values.extend(reply.values())
        rows = decode_rows(values)
        if len(rows) != len(ids):  # damaged rows left out: keep ids aligned with the rest
            ids = [cid for cid, v in zip(ids, values, strict=True) if len(v) == rows.itemsize]
        return PopulationRows(version, ids, rows)

    def fit_at(self, at: int) -> ClvFit | None:
        data = self.client.hget(self.keys.clv_fits, str(at))
        return None if data is None else ClvFit.loads(data)

    def latest_fit(self) -> ClvFit | None:
        moments = [int(m) for m in self.client.hkeys(self.keys.clv_fits)]
        return self.fit_at(max(moments)) if moments else None

    def publish(self, fit: ClvFit) -> ClvFit:
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(self.keys.clv_fits, str(fit.at), fit.dumps())
        pipe.hget(self.keys.clv_fits, str(fit.at))
        return ClvFit.loads(pipe.execute()[1])

    def mark_ready(self, at: int, shards: Iterable[int]) -> None:
        mapping = {str(shard): at for shard in shards}
        if mapping:
            self.client.hset(self.keys.clv_ready, mapping=mapping)  # type: ignore[arg-type]

    def all_ready(self, at: int, shards: int) -> bool:
        marks = self.client.hmget(self.keys.clv_ready, [str(s) for s in range(shards)])
        return all(m is not None and int(m) >= at for m in marks)

    def try_lock(self, at: int, seconds: float) -> str | None:
        token = f"{at}:{uuid.uuid4().hex}"
        taken = self.client.set(self.keys.clv_lock, token, nx=True, px=max(1, int(seconds * 1000)))
        return token if taken else None

    def unlock(self, token: str) -> None:
        self.client.eval(_UNLOCK, 1, self.keys.clv_lock, token)  # type: ignore[no-untyped-call]
