"""Redis state store: one packed value per customer, a sorted set of due moments per shard,
and a hash of segment populations — all under ``SEGMENTFLOW_NAMESPACE``.

Keys (``ns`` = namespace):

- ``ns:s:<customer_id>``: the customer's packed state (:meth:`CustomerState.encode`);
- ``ns:due:<shard>``: sorted set customer_id -> next due moment (epoch µs); the shard is the
  customer's *home*: the input partition its first applied event really arrived on (whatever
  the producer's partitioner), kept in its state, so the worker that consumes the customer's
  events fires its time-driven changes and publishes its outbox (records of the customer that
  arrive on another partition are forwarded there). States written before homes existed keep
  the shard they had: murmur2 of the key modulo the partition count;
- ``ns:claim:<customer_id>``: a new customer's home claim (``SET NX``, expires after a day:
  by then the state holds the home);
- ``ns:partitions``: hash ``topic:partition`` -> incarnation record (cluster id, epoch,
  highest offset applied) that makes offsets a hint per incarnation (see the processor);
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

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis

from segmentflow.engine.state import CustomerState, T
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.rfm import Metrics, RankIndex
from segmentflow.state import members as member_index
from segmentflow.state.base import StateStore, population_deltas

SEP = "\x1f"
#: how long a new customer's home claim lives (its state holds the home long before)
CLAIM_SECONDS = 86_400
#: how long ``rfm:log`` keeps an entry (ms of Redis server time)
RANK_LOG_RETENTION_MS = 600_000
log = logging.getLogger("segmentflow.store")


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
        The partition count of the input topics (due-index shards are partition numbers).
    shard_of
        The shard of a customer whose state has no home (default: murmur2 of the key modulo
        ``shards``: where states written before homes existed have their due entry).
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
        self._legacy_shard = shard_of or (
            lambda cid: kafka_partition(cid, shards) if shards > 1 else 0
        )
        #: home partition of the customers this process loaded, committed, claimed or ranked
        self._homes: dict[str, int] = {}
        self.owned_shards: set[int] | None = None  # None = all
        self.outbox = outbox
        self._ranks: RankIndex | None = None
        self._rank_log_id = "0-0"
        self._rank_read_at = 0.0
        #: packed RFM metrics that could not be read (skipped; see ``_update_rank``)
        self.corrupt_metrics = 0
        #: customers whose stored state could not be decoded at their last load, and how many
        #: distinct times that happened (``/metrics``)
        self._quarantined: set[str] = set()
        self.corrupt_states = 0

    def _shard_of(self, customer_id: str) -> int:
        home = self._homes.get(customer_id)
        return self._legacy_shard(customer_id) if home is None else home

    def _home_of(self, state: CustomerState) -> int:
        """The state's home (a state from before homes adopts its legacy shard)."""
        if state.home is None:
            state.home = self._legacy_shard(state.customer_id)
        self._homes[state.customer_id] = state.home
        return state.home

    def shard_of(self, customer_id: str) -> int:
        return self._shard_of(customer_id)

    def claim_homes(self, wanted: Mapping[str, int]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for cid, partition in wanted.items():
            key = f"{self.namespace}:claim:{cid}"
            pipe.set(key, partition, nx=True, ex=CLAIM_SECONDS)
            pipe.get(key)
        replies = pipe.execute()
        homes = {cid: int(replies[2 * i + 1]) for i, cid in enumerate(wanted)}
        self._homes.update(homes)
        return homes

    # -- topic-partition incarnations ------------------------------------------------------

    @property
    def _partitions_key(self) -> str:
        return f"{self.namespace}:partitions"

    def partition_records(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored incarnation record (``cluster``, ``epoch``, ``high``) of each
        ``topic:partition`` that has one."""
        names = list(sources)
        if not names:
            return {}
        values = self.client.hmget(self._partitions_key, names)
        return {n: orjson.loads(v) for n, v in zip(names, values, strict=True) if v}

    def save_partition_records(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Store incarnation records (the owner of each topic-partition writes its own)."""
        if records:
            mapping = {k: orjson.dumps(v) for k, v in records.items()}
            self.client.hset(self._partitions_key, mapping=mapping)  # type: ignore[arg-type]

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

    def load_many(
        self, customer_ids: Iterable[str], *, sync_ranks: bool = True
    ) -> dict[str, CustomerState]:
        """The stored states (see :class:`StateStore`); with ``sync_ranks`` also apply the RFM
        updates other workers logged since the last load (only the processor's loads do: it
        may run in a worker thread, and the rank index is not shared across threads)."""
        ids = list(customer_ids)
        ranks = self._ranks if sync_ranks else None
        if not ids and ranks is None:
            return {}
        pipe = self.client.pipeline(transaction=False)
        if ids:
            pipe.mget([self._state_key(cid) for cid in ids])
        if ranks is not None:
            if time.monotonic() - self._rank_read_at > RANK_LOG_RETENTION_MS / 2000:
                self.attach_ranks(ranks)  # entries may have been trimmed since: reload
            pipe.xread({self._rank_log: self._rank_log_id}, count=1_000_000)
        replies = pipe.execute()
        if ranks is not None:
            self._apply_rank_log(replies[-1])
            self._rank_read_at = time.monotonic()
        if not ids:
            return {}
        states: dict[str, CustomerState] = {}
        for cid, value in zip(ids, replies[0], strict=True):
            if value:
                try:
                    states[cid] = CustomerState.decode(value)
                    self._home_of(states[cid])
                except Exception as exc:  # bytes no codec can read (issue 12): never a crash
                    self._quarantine(cid, f"{exc.__class__.__name__}: {exc}"[:300])
                    continue
            self._quarantined.discard(cid)  # readable (again): e.g. repaired by an operator
        return states

    def get(self, customer_id: str) -> CustomerState | None:
        """One customer's state, without touching the rank index (views and tools call this
        while a batch may be running in the worker's thread)."""
        return self.load_many([customer_id], sync_ranks=False).get(customer_id)

    @property
    def _quarantine_key(self) -> str:
        return f"{self.namespace}:quarantine"

    def _quarantine(self, customer_id: str, why: str) -> None:
        """Mark a customer whose state cannot be decoded: counted, logged, recorded in
        ``ns:quarantine`` (customer -> error); its due entry goes (it would stop the clock at
        that moment forever); the stored bytes stay for repair."""
        if customer_id not in self._quarantined:
            self._quarantined.add(customer_id)
            self.corrupt_states += 1
            log.error("state of customer %r cannot be decoded (%s): quarantined", customer_id, why)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._quarantine_key, customer_id, why)
        for shard in range(max(self.shards, 1)):  # its home is in the bytes that failed
            pipe.zrem(self._due_key(shard), customer_id)
        pipe.execute()

    def is_quarantined(self, customer_id: str) -> bool:
        return customer_id in self._quarantined

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
        stored: set[str] = set()
        for cid, packed in self.client.hscan_iter(self._rank_hash, count=5000):
            stored.add(cid.decode("utf-8", "replace"))
            self._update_rank(ranks, cid, packed)
        for gone in [cid for cid in ranks.customers() if cid not in stored]:  # on a reload
            ranks.update(gone, None)
        self._ranks = ranks
        self._rank_read_at = time.monotonic()

    def _update_rank(self, ranks: RankIndex, cid: bytes, packed: bytes) -> None:
        """Apply one packed metric; one that cannot be read is skipped and counted (the
        customer's next commit rewrites it from its state)."""
        try:
            metrics, home = _unpack_metrics(packed)
        except Exception as exc:
            self.corrupt_metrics += 1
            log.error("RFM metrics of %r unreadable (%s): skipped", cid[:64], exc)
            return
        customer = cid.decode("utf-8", "replace")
        ranks.update(customer, metrics)
        if home is not None:
            self._homes[customer] = home

    def _apply_rank_log(self, reply: Any) -> None:
        assert self._ranks is not None
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                self._rank_log_id = entry_id.decode()
                for cid, packed in fields.items():
                    self._update_rank(self._ranks, cid, packed)

    def _add_ranks(self, pipe: Any, states: Mapping[str, CustomerState]) -> None:
        packed = {cid: _pack_metrics(s) for cid, s in states.items() if s.last_order is not None}
        if packed:
            pipe.hset(self._rank_hash, mapping=packed)
            pipe.xadd(self._rank_log, packed, **self._log_trim())

    def _log_trim(self) -> dict[str, Any]:
        """Trim ``rfm:log`` to about :data:`RANK_LOG_RETENTION_MS` before the newest entry this
        worker read (server time), so customer ids and metrics do not linger in it (issue 12:
        erasure); a worker that has not read it for half that long reloads from the hash."""
        newest_ms = int(self._rank_log_id.split("-", 1)[0])
        if not newest_ms:
            return {"maxlen": 1_000_000, "approximate": True}
        return {"minid": newest_ms - RANK_LOG_RETENTION_MS, "approximate": True}

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
            shard = self._home_of(state)
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
        member_index.queue_changes(pipe, self.namespace, changes)  # same MULTI (state/members.py)
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
        pipe.xadd(self._rank_log, {customer_id: b""}, **self._log_trim())
        pipe.zrem(self._due_key(self._shard_of(customer_id)), customer_id)
        pipe.execute()
        return state

    def erase(self, customer_id: str, tomb: CustomerState, changes: Sequence[Change]) -> None:
        pipe = self.client.pipeline(transaction=True)
        self.add_to(pipe, {customer_id: tomb}, changes)
        pipe.hdel(self._rank_hash, customer_id)
        pipe.hdel(self._quarantine_key, customer_id)
        member_index.queue_forget(pipe, self.client, self.namespace, customer_id)
        pipe.xadd(self._rank_log, {customer_id: b""}, **self._log_trim())
        pipe.execute()

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
    revenue = state.totals[T["revenue"]]
    if not math.isfinite(revenue):  # JSON would store null: refuse rather than poison readers
        raise ValueError(f"customer {state.customer_id[:64]!r}: revenue is not finite")
    return orjson.dumps([state.last_order, int(state.totals[T["orders"]]), revenue, state.home])


def _unpack_metrics(packed: bytes) -> tuple[Metrics | None, int | None]:
    """The metrics in ``packed`` (``None`` for the empty deletion marker) and the customer's
    home partition (``None`` in entries written before homes); raises for bytes that are no
    metrics (e.g. a null written by an older version)."""
    if not packed:
        return None, None
    last, orders, revenue, *rest = orjson.loads(packed)
    metrics = (int(last), int(orders), float(revenue))
    if not math.isfinite(metrics[2]):
        raise ValueError("revenue is not finite")
    home = rest[0] if rest and isinstance(rest[0], int) else None
    return metrics, home
