"""Redis state store: one packed value per customer, a sorted set of due moments per shard,
and a hash of segment populations — all under ``SEGMENTFLOW_NAMESPACE``.

Keys (``ns`` = namespace):

- ``ns:s:<customer_id>``: the customer's packed state (:meth:`CustomerState.encode`);
- ``ns:due:<shard>``: sorted set customer_id -> next due moment (epoch µs); the shard is the
  Kafka partition of the customer's key, so a worker fires only the customers it owns;
- ``ns:pop``: hash ``<dimension>\\x1f<value>`` -> number of customers;
- ``ns:rfm`` (hash customer_id -> packed RFM metrics) and ``ns:rfm:log`` (a stream of metric
  updates): every worker keeps an exact local :class:`RankIndex` of the whole population,
  loaded from the hash at start and kept current by reading the stream with each batch;
- ``ns:outbox:<shard>``: list of change events (CloudEvents JSON) committed with the state that
  caused them and not yet confirmed published (the transactional outbox).

Every commit is one ``MULTI``/``EXEC`` round trip, so a crash never leaves half a batch: state,
due moments, populations and the outbox move together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis

from segmentflow.engine.state import CustomerState, T
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.rfm import Metrics, RankIndex
from segmentflow.state.base import StateStore, population_deltas

SEP = "\x1f"


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, like the Java
    client and kafka-python)."""
    from kafka.partitioner.default import murmur2

    hashed: int = murmur2(key.encode("utf-8"))
    return (hashed & 0x7FFFFFFF) % partitions


class RedisStore(StateStore):
    """State in Redis.

    Parameters
    ----------
    client_or_url
        A ``redis.Redis`` client or a ``redis://`` URL.
    namespace
        Key prefix (``SEGMENTFLOW_NAMESPACE``).
    shards
        Number of due-index shards: the partition count of the input topics.
    outbox
        Also append every committed change to the shard's outbox (the worker publishes and
        then trims it; tools that publish nothing leave it off).
    """

    def __init__(
        self,
        client_or_url: redis.Redis[bytes] | str,
        namespace: str = "segmentflow",
        shards: int = 1,
        shard_of: Callable[[str], int] | None = None,
        outbox: bool = False,
    ) -> None:
        if isinstance(client_or_url, str):
            self.client: redis.Redis[bytes] = redis.Redis.from_url(client_or_url)
        else:
            self.client = client_or_url
        self.namespace = namespace
        self.shards = shards
        self._shard_of = shard_of or (lambda cid: kafka_partition(cid, shards) if shards > 1 else 0)
        self.owned_shards: set[int] | None = None  # None = all
        self.outbox = outbox
        self._ranks: RankIndex | None = None
        self._rank_log_id = "0-0"

    def shard_of(self, customer_id: str) -> int:
        return self._shard_of(customer_id)

    def owns(self, customer_id: str) -> bool:
        return self.owned_shards is None or self._shard_of(customer_id) in self.owned_shards

    def get_meta(self, key: str) -> int | None:
        value = self.client.hget(f"{self.namespace}:meta", key)
        return None if value is None else int(value)

    def set_meta(self, key: str, value: int) -> None:
        self.client.hset(f"{self.namespace}:meta", key, value)

    def _state_key(self, customer_id: str) -> str:
        return f"{self.namespace}:s:{customer_id}"

    def _due_key(self, shard: int) -> str:
        return f"{self.namespace}:due:{shard}"

    @property
    def _pop_key(self) -> str:
        return f"{self.namespace}:pop"

    def _outbox_key(self, shard: int) -> str:
        return f"{self.namespace}:outbox:{shard}"

    def _shards(self) -> list[int]:
        return list(range(self.shards)) if self.owned_shards is None else sorted(self.owned_shards)

    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        ids = list(customer_ids)
        if not ids and self._ranks is None:
            return {}
        pipe = self.client.pipeline(transaction=False)
        if ids:
            pipe.mget([self._state_key(cid) for cid in ids])
        if self._ranks is not None:
            pipe.xread({self._rank_log: self._rank_log_id}, count=1_000_000)
        replies = pipe.execute()
        if self._ranks is not None:
            self._apply_rank_log(replies[-1])
        if not ids:
            return {}
        return {cid: CustomerState.decode(v) for cid, v in zip(ids, replies[0], strict=True) if v}

    # -- RFM population sync ---------------------------------------------------------------

    @property
    def _rank_hash(self) -> str:
        return f"{self.namespace}:rfm"

    @property
    def _rank_log(self) -> str:
        return f"{self.namespace}:rfm:log"

    def attach_ranks(self, ranks: RankIndex) -> None:
        """Load the population's RFM metrics into ``ranks`` and keep them current: each
        ``load_many`` also reads the updates other workers logged since."""
        last = self.client.xrevrange(self._rank_log, count=1)
        self._rank_log_id = last[0][0].decode() if last else "0-0"
        for cid, packed in self.client.hscan_iter(self._rank_hash, count=5000):
            ranks.update(cid.decode(), _unpack_metrics(packed))
        self._ranks = ranks

    def _apply_rank_log(self, reply: Any) -> None:
        assert self._ranks is not None
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._rank_log_id = entry_id.decode()
                for cid, packed in fields.items():
                    self._ranks.update(cid.decode(), _unpack_metrics(packed))

    def _add_ranks(self, pipe: Any, states: Mapping[str, CustomerState]) -> None:
        packed = {cid: _pack_metrics(s) for cid, s in states.items() if s.last_order is not None}
        if packed:
            pipe.hset(self._rank_hash, mapping=packed)
            pipe.xadd(self._rank_log, packed, maxlen=1_000_000, approximate=True)

    def commit(self, states: Mapping[str, CustomerState], changes: Sequence[Change]) -> None:
        pipe = self.client.pipeline(transaction=True)
        self.add_to(pipe, states, changes)
        pipe.execute()

    def add_to(
        self, pipe: Any, states: Mapping[str, CustomerState], changes: Sequence[Change]
    ) -> None:
        """Queue the writes of a commit on an open pipeline (so callers can add their own)."""
        if states:
            pipe.mset({self._state_key(cid): s.encode() for cid, s in states.items()})
            if self._ranks is not None:
                self._add_ranks(pipe, states)
        adds: dict[int, dict[str, int]] = {}
        removes: dict[int, list[str]] = {}
        for cid, state in states.items():
            shard = self._shard_of(cid)
            if state.next_due is None:
                removes.setdefault(shard, []).append(cid)
            else:
                adds.setdefault(shard, {})[cid] = state.next_due
        for shard, members in adds.items():
            pipe.zadd(self._due_key(shard), members)
        for shard, gone in removes.items():
            pipe.zrem(self._due_key(shard), *gone)
        for (dim, value), delta in population_deltas(changes).items():
            if delta:
                pipe.hincrby(self._pop_key, f"{dim}{SEP}{value}", delta)
        if self.outbox and changes:
            boxes: dict[int, list[bytes]] = {}
            for change in changes:
                encoded = change.to_json()
                boxes.setdefault(self._shard_of(change.customer_id), []).append(encoded)
            for shard, encoded_changes in boxes.items():
                pipe.rpush(self._outbox_key(shard), *encoded_changes)

    # -- persona model sharing -------------------------------------------------------------

    def push_samples(self, vectors: Sequence[Mapping[str, float]], cap: int = 50_000) -> None:
        """Queue feature vectors for the persona trainer (oldest dropped beyond ``cap``)."""
        if not vectors:
            return
        key = f"{self.namespace}:persona:samples"
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, *(orjson.dumps(v) for v in vectors))
        pipe.ltrim(key, -cap, -1)
        pipe.execute()

    def take_samples(self, count: int) -> list[dict[str, float]]:
        """Take up to ``count`` queued feature vectors (trainer only)."""
        rows = self.client.lpop(f"{self.namespace}:persona:samples", count) or []
        return [orjson.loads(row) for row in rows]

    def save_model(self, data: bytes, version: int) -> None:
        """Publish a persona model version (atomically with its version number)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.namespace}:persona:model", data)
        pipe.set(f"{self.namespace}:persona:version", version)
        pipe.execute()

    def model_version(self) -> int:
        """The latest published persona model version (0 when none)."""
        return int(self.client.get(f"{self.namespace}:persona:version") or 0)

    def load_model(self) -> bytes | None:
        """The latest published persona model."""
        data: bytes | None = self.client.get(f"{self.namespace}:persona:model")
        return data

    def outbox_pending(self) -> list[tuple[int, list[bytes]]]:
        pipe = self.client.pipeline(transaction=False)
        shards = self._shards()
        for shard in shards:
            pipe.lrange(self._outbox_key(shard), 0, -1)
        return [(shard, rows) for shard, rows in zip(shards, pipe.execute(), strict=True) if rows]

    def outbox_done(self, published: Mapping[int, int]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for shard, count in published.items():
            if count:
                pipe.ltrim(self._outbox_key(shard), count, -1)
        pipe.execute()

    def due(self, upto: int, limit: int) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for shard in self._shards():
            pipe.zrangebyscore(
                self._due_key(shard), "-inf", upto, start=0, num=limit, withscores=True
            )
        found: list[tuple[float, str]] = []
        for rows in pipe.execute():
            found.extend((score, member.decode()) for member, score in rows)
        found.sort()
        return [cid for _, cid in found[:limit]]

    def next_due(self) -> int | None:
        """The earliest due moment over the owned shards."""
        pipe = self.client.pipeline(transaction=False)
        for shard in self._shards():
            pipe.zrange(self._due_key(shard), 0, 0, withscores=True)
        scores = [int(rows[0][1]) for rows in pipe.execute() if rows]
        return min(scores) if scores else None

    def populations(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for field, count in sorted(self.client.hgetall(self._pop_key).items()):
            dim, _, value = field.decode().partition(SEP)
            if int(count):
                out.setdefault(dim, {})[value] = int(count)
        return out

    def delete(self, customer_id: str) -> CustomerState | None:
        state = self.get(customer_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._state_key(customer_id))
        pipe.hdel(self._rank_hash, customer_id)
        pipe.xadd(self._rank_log, {customer_id: b""}, maxlen=1_000_000, approximate=True)
        pipe.zrem(self._due_key(self._shard_of(customer_id)), customer_id)
        pipe.execute()
        return state

    def customer_count(self) -> int:
        return sum(1 for _ in self.client.scan_iter(match=f"{self.namespace}:s:*", count=1000))

    def iter_ids(self) -> Iterable[str]:
        """Every customer id with state (SCAN; for sweeps and tools)."""
        prefix = len(self.namespace) + 3
        for key in self.client.scan_iter(match=f"{self.namespace}:s:*", count=1000):
            yield key.decode()[prefix:]

    def close(self) -> None:
        self.client.close()


def _pack_metrics(state: CustomerState) -> bytes:
    return orjson.dumps(
        [state.last_order, int(state.totals[T["orders"]]), state.totals[T["revenue"]]]
    )


def _unpack_metrics(packed: bytes) -> Metrics | None:
    if not packed:
        return None
    last, orders, revenue = orjson.loads(packed)
    return (int(last), int(orders), float(revenue))
