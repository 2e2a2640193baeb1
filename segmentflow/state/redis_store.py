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
  updates): the rank sync (:mod:`segmentflow.state.redis_ranks`), which this store drives in
  its round trips and transactions;
- ``ns:persona:*``: the persona model store (:mod:`segmentflow.state.redis_personas`);
- ``ns:clv:*``: the shared clv population (:mod:`segmentflow.state.redis_clv`): rows written
  in the commit transaction of their states once attached;
- ``ns:outbox:<shard>``: list of change events (CloudEvents JSON) committed with the state that
  caused them and not yet confirmed published (the transactional outbox);
- ``ns:alias`` (hash merged-away id -> the id it was merged into) and ``ns:aliased:<id>`` (set
  of the ids merged directly into ``<id>``): the alias map of identity merges (CONTRACT §3
  "Identity"), written in the commit's ``MULTI`` with the states of the merge; ``forget``
  removes the aliases from the id and, through the sets, every alias resolving to it;
- ``ns:handover:<survivor>``: hash ``<merge id>\x1f<merged-away id>`` -> the merged-away
  profile's encoded state, written by its owner with its tombstone and taken (deleted) by the
  survivor's owner in the commit that merges it (cross-worker merges, notes/identity.md).

The names come from :class:`~segmentflow.state.keys.Keys` (one module for every key).

Every commit is one ``MULTI``/``EXEC`` round trip, so a crash never leaves half a batch: state,
due moments, populations and the outbox move together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.rfm import RankIndex
from segmentflow.state import members as member_index
from segmentflow.state.base import StateStore, population_deltas
from segmentflow.state.keys import Keys
from segmentflow.state.redis_batch import RedisBatch
from segmentflow.state.redis_clv import RedisClvPopulation
from segmentflow.state.redis_ranks import RedisRankSync

SEP = "\x1f"
#: how long a new customer's home claim lives (its state holds the home long before)
CLAIM_SECONDS = 86_400
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
        #: the key names (state/keys.py)
        self.keys = Keys(namespace)
        self.shards = shards
        self._legacy_shard = shard_of or (
            lambda cid: kafka_partition(cid, shards) if shards > 1 else 0
        )
        #: home partition of the customers this process loaded, committed, claimed or ranked
        self._homes: dict[str, int] = {}
        self.outbox = outbox
        #: the RFM rank sync this store drives (idle until :meth:`RedisRankSync.attach`)
        self.ranks = RedisRankSync(self.client, namespace)
        #: the shared clv population (rows written with the states once attached)
        self.clv = RedisClvPopulation(self.client, namespace)
        #: customers whose stored state could not be decoded at their last load, and how many
        #: distinct times that happened (``/metrics``)
        self._quarantined: set[str] = set()
        self.corrupt_states = 0
        #: the open batch session (:mod:`segmentflow.state.redis_batch`), if any
        self._batch: RedisBatch | None = None

    # -- batch sessions (issue 13: no round trips per batch part) ----------------------------

    def begin_batch(self, on_flush: Callable[[], None] | None = None) -> bool:
        self._batch = RedisBatch(self, on_flush)
        return True

    def flush_batch(self) -> None:
        if self._batch is not None:
            self._batch.flush()

    def end_batch(self, ok: bool) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            if ok:
                batch.flush()
        except BaseException:
            ok = False
            raise
        finally:
            if not ok:
                batch.restore_ranks()

    def _leave_batch(self) -> None:
        """Before a write past the session (erase, delete): flush, forget what it cached."""
        if self._batch is not None:
            self._batch.flush()
            self._batch = RedisBatch(self, self._batch.on_flush)

    def _shard_of(self, customer_id: str) -> int:
        home = self._homes.get(customer_id)
        if home is None:
            home = self.ranks.homes.get(customer_id)
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
        if self._batch is not None:
            return self._batch.claim_homes(wanted)
        return self._claim_homes(wanted)

    def _claim_homes(self, wanted: Mapping[str, int]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for cid, partition in wanted.items():
            key = self.keys.claim(cid)
            pipe.set(key, partition, nx=True, ex=CLAIM_SECONDS)
            pipe.get(key)
        replies = pipe.execute()
        homes = {cid: int(replies[2 * i + 1]) for i, cid in enumerate(wanted)}
        self._homes.update(homes)
        return homes

    # -- topic-partition incarnations ------------------------------------------------------

    def partition_records(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored incarnation record (``cluster``, ``epoch``, ``high``) of each
        ``topic:partition`` that has one."""
        names = list(sources)
        if not names:
            return {}
        values = self.client.hmget(self.keys.partitions, names)
        return {n: orjson.loads(v) for n, v in zip(names, values, strict=True) if v}

    def save_partition_records(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Store incarnation records (the owner of each topic-partition writes its own)."""
        if records:
            mapping = {k: orjson.dumps(v) for k, v in records.items()}
            self.client.hset(self.keys.partitions, mapping=mapping)  # type: ignore[arg-type]

    def owns(self, customer_id: str) -> bool:
        return self._owned is None or self._shard_of(customer_id) in self._owned

    @property
    def has_outbox(self) -> bool:
        return self.outbox

    def get_meta(self, key: str) -> int | None:
        value = self.client.hget(self.keys.meta, key)
        return None if value is None else int(value)

    def set_meta(self, key: str, value: int) -> None:
        if self._batch is not None:  # written with the session's next flush
            self._batch.meta[key] = value
            return
        self.client.hset(self.keys.meta, key, value)

    def meta_items(self) -> dict[str, int]:
        """Every persisted small integer (field -> value)."""
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.meta).items()}

    def _shards(self) -> list[int]:
        return list(range(self.shards)) if self._owned is None else sorted(self._owned)

    def load_many(
        self, customer_ids: Iterable[str], *, sync_ranks: bool = True
    ) -> dict[str, CustomerState]:
        """The stored states (see :class:`StateStore`); with ``sync_ranks`` also apply the RFM
        updates other workers logged since the last load (only the processor's loads do: it
        may run in a worker thread, and the rank index is not shared across threads)."""
        if sync_ranks and self._batch is not None:
            return self._batch.load(list(customer_ids))
        return self._load(list(customer_ids), sync_ranks)[0]

    def load_resolved(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, CustomerState], dict[str, str]]:
        """As :meth:`StateStore.load_resolved`, the first alias hop in the same round trip as
        the states (a second one only when some id was merged away)."""
        ids = list(dict.fromkeys(customer_ids))
        if self._batch is not None:
            cached = self._batch.load_resolved(ids)
            if cached is not None:
                return cached
            self._batch.flush()  # some id was merged away: resolved in Redis (now current)
        states, first = self._load(ids, True, aliases=True)
        if not first:
            return states, {}
        further = self.resolve_aliases(dict.fromkeys(first.values()))  # merges chain
        resolved = {cid: further.get(target, target) for cid, target in first.items()}
        missing = [t for t in dict.fromkeys(resolved.values()) if t not in states]
        if missing:
            states.update(self.load_many(missing))
        return states, resolved

    def _load(
        self, ids: list[str], sync_ranks: bool, aliases: bool = False
    ) -> tuple[dict[str, CustomerState], dict[str, str]]:
        """States of ``ids`` and, with ``aliases``, the ids they were merged into (first hop)."""
        syncing = sync_ranks and self.ranks.ranks is not None
        if not ids and not syncing:
            return {}, {}
        pipe = self.client.pipeline(transaction=False)
        if ids:
            pipe.mget([self.keys.state(cid) for cid in ids])
            if aliases:
                pipe.hmget(self.keys.alias, ids)
        if syncing:
            self.ranks.queue_read(pipe)
        replies = pipe.execute()
        if syncing:
            self.ranks.apply_read(replies[-1])
        if not ids:
            return {}, {}
        into: dict[str, str] = {}
        if aliases:
            into = {c: t.decode() for c, t in zip(ids, replies[1], strict=True) if t is not None}
        return self._decode_many(ids, replies[0]), into

    def _decode_many(
        self, ids: Sequence[str], values: Sequence[bytes | None]
    ) -> dict[str, CustomerState]:
        """Decode stored values of ``ids`` (undecodable ones are quarantined)."""
        states: dict[str, CustomerState] = {}
        for cid, value in zip(ids, values, strict=True):
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

    def peek(self, customer_id: str) -> CustomerState | None:
        """One customer's stored state, read with no side effect: ``None`` when it has none or
        its bytes cannot be decoded (no quarantine record: the owner's load writes that)."""
        raw = self.client.get(self.keys.state(customer_id))
        if not raw:
            return None
        try:
            return CustomerState.decode(raw)
        except Exception:  # unreadable bytes: the worker quarantines and dead-letters
            return None

    def _quarantine(self, customer_id: str, why: str) -> None:
        """Mark a customer whose state cannot be decoded: counted, logged, recorded in
        ``ns:quarantine`` (customer -> error); its due entry goes (it would stop the clock at
        that moment forever); the stored bytes stay for repair."""
        if customer_id not in self._quarantined:
            self._quarantined.add(customer_id)
            self.corrupt_states += 1
            log.error("state of customer %r cannot be decoded (%s): quarantined", customer_id, why)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.quarantine, customer_id, why)
        self._unindex_due(pipe, [customer_id])  # its home is in the bytes that failed
        pipe.execute()

    def _unindex_due(self, pipe: Any, customer_ids: Sequence[str]) -> None:
        """Queue the removal of the due entries of ``customer_ids`` from every shard (their
        home is not known); an open batch session reads its due windows again afterwards."""
        for shard in range(max(self.shards, 1)):
            pipe.zrem(self.keys.due(shard), *customer_ids)
        if self._batch is not None:
            self._batch.windows.clear()

    def is_quarantined(self, customer_id: str) -> bool:
        return customer_id in self._quarantined

    def drop_due(self, customer_ids: Sequence[str]) -> None:
        log.warning(
            "due customers without state (deleted outside segmentflow?): %s; due entries removed",
            ", ".join(customer_ids[:5]) + (" ..." if len(customer_ids) > 5 else ""),
        )
        pipe = self.client.pipeline(transaction=False)
        self._unindex_due(pipe, customer_ids)
        pipe.execute()

    # -- RFM population sync ---------------------------------------------------------------

    def attach_ranks(self, ranks: RankIndex) -> None:
        """Load the population's RFM metrics into ``ranks`` and keep them current (see
        :meth:`RedisRankSync.attach`; the same as ``store.ranks.attach(ranks)``)."""
        self.ranks.attach(ranks)

    def commit(
        self,
        states: Mapping[str, CustomerState],
        changes: Sequence[Change],
        aliases: Mapping[str, str] | None = None,
        handovers: Mapping[tuple[str, str, str], bytes | None] | None = None,
    ) -> None:
        batch = self._batch
        if batch is not None:
            if not aliases and not handovers:
                batch.hold(states, changes)
                return
            batch.flush()  # a merge: written at once, after what is held
        pipe = self.client.pipeline(transaction=True)
        self.add_to(pipe, states, changes)
        if aliases:
            self.queue_aliases(pipe, aliases, states)
        for (survivor, merge_id, gone), raw in (handovers or {}).items():
            key, field = self.keys.handover(survivor), f"{merge_id}{SEP}{gone}"
            if raw is None:
                pipe.hdel(key, field)
            else:
                pipe.hset(key, field, raw)
        pipe.execute()
        if batch is not None:
            batch.committed(states)

    def handovers(self, survivor: str, merge_id: str) -> dict[str, CustomerState]:
        out: dict[str, CustomerState] = {}
        for field, raw in self.client.hgetall(self.keys.handover(survivor)).items():
            mid, _, gone = field.decode().partition(SEP)
            if mid == merge_id:
                out[gone] = CustomerState.decode(raw)
        return out

    def queue_aliases(
        self, pipe: Any, aliases: Mapping[str, str], states: Mapping[str, CustomerState]
    ) -> None:
        """Queue the writes of ``aliases`` (merged-away id -> survivor) on an open ``MULTI``; a
        merged-away id committed with them leaves the RFM population."""
        pipe.hset(self.keys.alias, mapping=dict(aliases))
        for previous, survivor in aliases.items():
            pipe.sadd(self.keys.aliased(survivor), previous)
            if previous in states:
                self.ranks.queue_forget(pipe, previous)

    def resolve_aliases(self, customer_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(customer_ids))
        out: dict[str, str] = {}
        current = {cid: cid for cid in ids}  # id -> where its chain has got so far
        for _ in range(64):
            if not current:
                break
            asked = list(dict.fromkeys(current.values()))
            found = dict(zip(asked, self.client.hmget(self.keys.alias, asked), strict=True))
            moved: dict[str, str] = {}
            for cid, at in current.items():
                target = found[at]
                if target is not None:
                    moved[cid] = out[cid] = target.decode()
            current = moved
        return out

    def add_to(
        self, pipe: Any, states: Mapping[str, CustomerState], changes: Sequence[Change]
    ) -> None:
        """Queue the writes of a commit on an open pipeline (so callers can add their own)."""
        if states:
            pipe.mset({self.keys.state(cid): s.encode() for cid, s in states.items()})
            self.ranks.queue_commit(pipe, states)
            self.clv.queue_commit(pipe, states)
        adds: dict[int, dict[str, int]] = {}
        removes: dict[int, list[str]] = {}
        for cid, state in states.items():
            shard = self._home_of(state)
            if state.next_due is None:
                removes.setdefault(shard, []).append(cid)
            else:
                adds.setdefault(shard, {})[cid] = state.next_due
        for shard, due_of in adds.items():
            pipe.zadd(self.keys.due(shard), due_of)
        for shard, gone in removes.items():
            pipe.zrem(self.keys.due(shard), *gone)
        for (dim, value), delta in population_deltas(changes).items():
            if delta:
                pipe.hincrby(self.keys.pop, f"{dim}{SEP}{value}", delta)
        member_index.queue_changes(pipe, self.keys, changes)  # same MULTI (state/members.py)
        if self.outbox and changes:
            boxes: dict[int, list[bytes]] = {}
            for change in changes:
                encoded = change.to_json()
                boxes.setdefault(self._shard_of(change.customer_id), []).append(encoded)
            for shard, encoded_changes in boxes.items():
                pipe.rpush(self.keys.outbox(shard), *encoded_changes)

    def outbox_pending(self) -> list[tuple[int, list[bytes]]]:
        pipe = self.client.pipeline(transaction=False)
        shards = self._shards()
        for shard in shards:
            pipe.lrange(self.keys.outbox(shard), 0, -1)
        return [(shard, rows) for shard, rows in zip(shards, pipe.execute(), strict=True) if rows]

    def outbox_done(self, published: Mapping[int, int]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for shard, count in published.items():
            if count:
                pipe.ltrim(self.keys.outbox(shard), count, -1)
        pipe.execute()

    def due(self, upto: int, limit: int) -> list[str]:
        if self._batch is not None:
            return self._batch.due(upto, limit)
        pipe = self.client.pipeline(transaction=False)
        for shard in self._shards():
            pipe.zrangebyscore(
                self.keys.due(shard), "-inf", upto, start=0, num=limit, withscores=True
            )
        found: list[tuple[float, str]] = []
        for rows in pipe.execute():
            found.extend((score, member.decode()) for member, score in rows)
        found.sort()
        return [cid for _, cid in found[:limit]]

    def next_due(self) -> int | None:
        """The earliest due moment over the owned shards."""
        if self._batch is not None:
            return self._batch.next_due()
        pipe = self.client.pipeline(transaction=False)
        for shard in self._shards():
            pipe.zrange(self.keys.due(shard), 0, 0, withscores=True)
        scores = [int(rows[0][1]) for rows in pipe.execute() if rows]
        return min(scores) if scores else None

    def populations(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for field, count in sorted(self.client.hgetall(self.keys.pop).items()):
            dim, _, value = field.decode().partition(SEP)
            if int(count):
                out.setdefault(dim, {})[value] = int(count)
        return out

    def delete(self, customer_id: str) -> CustomerState | None:
        self._leave_batch()
        state = self.get(customer_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.state(customer_id))
        self.ranks.queue_forget(pipe, customer_id)
        self.clv.queue_forget(pipe, customer_id)
        pipe.zrem(self.keys.due(self._shard_of(customer_id)), customer_id)
        pipe.execute()
        return state

    def _aliases_of(self, customer_id: str) -> tuple[str | None, list[str]]:
        """The id ``customer_id`` was merged into (or ``None``) and every id resolving to it
        (walking the reverse sets: a chain points through others)."""
        raw = self.client.hget(self.keys.alias, customer_id)
        into, found, pending = None if raw is None else raw.decode(), [], [customer_id]
        seen = {customer_id}
        while pending:
            for member in self.client.smembers(self.keys.aliased(pending.pop())):
                previous = member.decode()
                if previous not in seen:
                    seen.add(previous)
                    found.append(previous)
                    pending.append(previous)
        return into, found

    def erase(self, customer_id: str, tomb: CustomerState, changes: Sequence[Change]) -> None:
        self._leave_batch()
        into, merged = self._aliases_of(customer_id)
        pipe = self.client.pipeline(transaction=True)
        self.add_to(pipe, {customer_id: tomb}, changes)
        if into is not None:
            pipe.hdel(self.keys.alias, customer_id)
            pipe.srem(self.keys.aliased(into), customer_id)
        if merged:
            pipe.hdel(self.keys.alias, *merged)
        pipe.delete(self.keys.aliased(customer_id), *map(self.keys.aliased, merged))
        pipe.delete(self.keys.handover(customer_id))
        pipe.hdel(self.ranks.hash_key, customer_id)
        self.clv.queue_forget(pipe, customer_id)
        pipe.hdel(self.keys.quarantine, customer_id)
        member_index.queue_forget(pipe, self.client, self.keys, customer_id)
        pipe.xadd(self.ranks.log_key, {customer_id: b""}, **self.ranks.log_trim())
        pipe.execute()

    def customer_count(self) -> int:
        pattern = self.keys.state_prefix + "*"
        return sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))

    def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        pattern = self.keys.state_prefix + "*"
        after, found = self.client.scan(cursor, match=pattern, count=count)
        return int(after), [self.keys.customer_of(key) for key in found]

    def iter_ids(self) -> Iterable[str]:
        """Every customer id with state (SCAN; for sweeps and tools)."""
        for key in self.client.scan_iter(match=self.keys.state_prefix + "*", count=1000):
            yield self.keys.customer_of(key)

    def close(self) -> None:
        self.client.close()
