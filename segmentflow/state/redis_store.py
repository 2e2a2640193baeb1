"""Redis state store: one packed value per customer, a sorted set of due moments, a hash of
segment populations and an outbox per home partition, under ``SEGMENTFLOW_NAMESPACE``.

The layout is partition-aligned (layout 2, :mod:`segmentflow.state.keys`, issue 17): every
key of a customer's data carries its *home* partition's hash tag ``{ns:pP}``, so one
partition's commit is one ``MULTI`` even on Redis Cluster. Keys of partition ``P``:

- ``{ns:pP}:s:<customer_id>``: the customer's packed state (:meth:`CustomerState.encode`);
  its home is the input partition its first applied event really arrived on (whatever the
  producer's partitioner), kept in the state, so the worker that consumes the customer's
  events fires its time-driven changes and publishes its outbox (records of the customer that
  arrive on another partition are forwarded there). States from before homes existed have
  the shard murmur2 of the key modulo the partition count gives (the migration put them there);
- ``{ns:pP}:due``: sorted set customer_id -> next due moment (epoch µs);
- ``{ns:pP}:pop``: hash ``<dimension>\x1f<value>`` -> number of customers homed here
  (:meth:`RedisStore.populations` sums the partitions);
- ``{ns:pP}:outbox``: list of change events (CloudEvents JSON) committed with the state that
  caused them and not yet confirmed published (the transactional outbox);
- ``{ns:pP}:quarantine``: hash customer id -> why its state cannot be decoded;
- ``{ns:pP}:alias`` (hash merged-away id homed here -> the id it was merged into) and
  ``{ns:pP}:aliased:<id>`` (set of the ids homed here merged directly into ``<id>``): the
  alias map of identity merges (CONTRACT §3 "Identity"), written in the commit with the states
  of the merge; ``forget`` removes the aliases from the id and, through the sets, every alias
  resolving to it;
- ``{ns:pP}:handover:<survivor>``: hash ``<merge id>\x1f<merged-away id>`` -> the profile's
  encoded state, written by its owner with its tombstone and taken (deleted) by the survivor's
  owner in the commit that merges it (cross-worker merges, notes/identity.md);
- ``{ns:pP}:rfm``/``:rfm:log`` (:mod:`segmentflow.state.redis_ranks`), ``:clv:*``
  (:mod:`segmentflow.state.redis_clv`) and ``:mx:*`` / ``:mc:*`` (:mod:`segmentflow.state.members`),
  written in the same transactions.

Outside the partitions: the directory ``{ns:d<B>}`` (hash id -> home, written once with
``HSETNX`` when a new customer's home is claimed: race-free across workers, and how a reader
that knows only the id finds the state), ``ns:partitions`` (hash ``topic:partition`` ->
incarnation record that makes offsets a hint per incarnation, see the processor), ``ns:meta``.

A commit is one ``MULTI`` per home partition it touches (:func:`~segmentflow.state.client.
transactions`); on one Redis, one ``MULTI`` for all of them. A crash never leaves half a
partition's batch: state, due moments, populations and the outbox move together.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.rfm import RankIndex
from segmentflow.state import members as member_index
from segmentflow.state.base import StateStore, population_deltas
from segmentflow.state.client import (
    RedisClient,
    connect,
    is_cluster,
    queue_mget,
    queue_mset,
    scan_keys,
    transactions,
    wait_replicas,
)
from segmentflow.state.keys import SEP as SEP  # re-exported (tests and tools import it)
from segmentflow.state.keys import Keys, PartKeys
from segmentflow.state.redis_batch import RedisBatch
from segmentflow.state.redis_clv import RedisClvPopulation
from segmentflow.state.redis_ranks import RedisRankSync

log = logging.getLogger("segmentflow.store")
#: states of owned customers a worker keeps between batches (decoded, most recent last;
#: ``SEGMENTFLOW_WARM_STATES``): about 1.4 KB each for CDNOW-like histories, more for long
#: ones. At 100k owned customers, 100,000 instead of 10,000 made the worker 1.08x faster
#: (the RFM sweeps re-score customers who are then not decoded again) for ~150 MB more RSS
WARM_STATES = 10_000


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, like the Java
    client and kafka-python)."""
    from kafka.partitioner.default import murmur2

    hashed: int = murmur2(key.encode("utf-8"))
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(slots=True)
class _PartWrite:
    """What one commit writes under one home partition's tag."""

    states: dict[str, CustomerState] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    handovers: dict[tuple[str, str, str], bytes | None] = field(default_factory=dict)


class RedisStore(StateStore):
    """State in Redis (one Redis or a Redis Cluster).

    Parameters
    ----------
    client_or_url
        A client (``redis.Redis`` or ``RedisCluster``) or a URL
        (:func:`segmentflow.state.client.connect`).
    namespace
        Key prefix (``SEGMENTFLOW_NAMESPACE``).
    shards
        The partition count of the input topics (home partitions are partition numbers).
    shard_of
        The home of a customer whose state has none (default: murmur2 of the key modulo
        ``shards``: where states written before homes existed live).
    outbox
        Also append every committed change to its home partition's outbox (the worker
        publishes and then trims it; tools that publish nothing leave it off).
    min_replicas, replica_timeout
        A commit returns only once ``min_replicas`` replicas of each primary it wrote to hold
        it (``SEGMENTFLOW_REDIS_MIN_REPLICAS``: a failover then loses nothing acknowledged);
        else it raises :class:`~segmentflow.state.client.ReplicaLag` after
        ``replica_timeout`` seconds.
    warm_states
        Decoded states of owned customers kept between batch sessions, least recently used
        dropped first (``SEGMENTFLOW_WARM_STATES``; 0 keeps none).
    """

    def __init__(
        self,
        client_or_url: RedisClient | str,
        namespace: str = "segmentflow",
        shards: int = 1,
        shard_of: Callable[[str], int] | None = None,
        outbox: bool = False,
        min_replicas: int = 0,
        replica_timeout: float = 5.0,
        warm_states: int = WARM_STATES,
    ) -> None:
        if isinstance(client_or_url, str):
            self.client: RedisClient = connect(client_or_url)
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
        #: customers known to have a home but no directory entry yet (written with the next
        #: commit of their state)
        self._unlisted: set[str] = set()
        self.outbox = outbox
        self.min_replicas = min_replicas
        self.warm_states = warm_states
        self.replica_timeout = replica_timeout
        #: the RFM rank sync this store drives (idle until :meth:`RedisRankSync.attach`)
        owned_range = range(max(shards, 1))
        self.ranks = RedisRankSync(self.client, namespace, partitions=owned_range)
        #: the shared clv population (rows written with the states once attached)
        self.clv = RedisClvPopulation(self.client, namespace, partitions=owned_range)
        #: customers whose stored state could not be decoded at their last load, and how many
        #: distinct times that happened (``/metrics``)
        self._quarantined: set[str] = set()
        self.corrupt_states = 0
        #: the open batch session (:mod:`segmentflow.state.redis_batch`), if any
        self._batch: RedisBatch | None = None
        #: owned customers' states kept between sessions: only this worker writes them, so a
        #: batch need not read and decode them again; dropped on any change of ownership and
        #: after a failed session (its states may hold what was not written)
        #: least recently used first (``popitem(last=False)`` is O(1); deleting a plain dict's
        #: first key again and again rescans the deleted slots: 36x slower at 10k)
        self._warm: OrderedDict[str, CustomerState] = OrderedDict()
        #: home partitions this process recorded in ``ns:span`` / read from it
        self._marked = 0
        self._span: int | None = None

    @property
    def partitions(self) -> range:
        """Every home partition that holds data: the input partitions, or more if the
        namespace was written with more (``ns:span``; read once)."""
        if self._span is None:
            stored = self.client.zscore(self.keys.span, "partitions")
            self._span = int(stored or 0)
        return range(max(self.shards, self._span, 1))

    def part(self, partition: int) -> PartKeys:
        """The keys of one home partition."""
        return self.keys.part(partition)

    # -- batch sessions (issue 13: no round trips per batch part) ----------------------------

    def begin_batch(self, on_flush: Callable[[], None] | None = None) -> bool:
        self._batch = RedisBatch(self, on_flush, warm=self._warm)
        return True

    def flush_batch(self, over: int = 0) -> None:
        if self._batch is not None and self._batch.size >= over:
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
            if ok:
                self._keep_warm(batch.states)
            else:
                self._warm.clear()
                batch.restore_ranks()

    def _keep_warm(self, states: Mapping[str, CustomerState | None]) -> None:
        """Keep a finished session's states of owned customers (at most ``warm_states``, the
        least recently used go first)."""
        warm, owned = self._warm, self._owned
        for cid, state in states.items():
            warm.pop(cid, None)
            if state is None or state.clock is None or cid in self._quarantined:
                continue  # none stored, a tombstone (merged away: aliased), or unreadable
            if owned is None or state.home in owned:
                warm[cid] = state
        while len(warm) > self.warm_states:
            warm.popitem(last=False)

    def assign_partitions(self, partitions: Iterable[int]) -> None:
        self._warm.clear()  # a partition owned again may have been written by another worker
        super().assign_partitions(partitions)

    def revoke_partitions(self) -> None:
        self._warm.clear()
        super().revoke_partitions()

    def _leave_batch(self) -> None:
        """Before a write past the session (erase, delete): flush, forget what it cached."""
        if self._batch is not None:
            self._batch.flush()
            self._keep_warm(self._batch.states)
            self._batch = RedisBatch(self, self._batch.on_flush, warm=self._warm)

    # -- homes and the directory ---------------------------------------------------------------

    def _shard_of(self, customer_id: str) -> int:
        home = self._homes.get(customer_id)
        if home is None:
            home = self.ranks.homes.get(customer_id)
        return self._legacy_shard(customer_id) if home is None else home

    def _home_of(self, state: CustomerState) -> int:
        """The state's home (a state from before homes adopts its legacy shard)."""
        if state.home is None:
            state.home = self._legacy_shard(state.customer_id)
        if state.customer_id not in self._homes:
            self._unlisted.add(state.customer_id)
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
        # a home already known wins (stored bytes found unlisted, e.g. undecodable ones)
        offered = {cid: self._homes.get(cid, partition) for cid, partition in wanted.items()}
        for cid, home in offered.items():
            pipe.hsetnx(self.keys.directory(cid), cid, home)
        won = pipe.execute()
        homes = {cid: home for (cid, home), ok in zip(offered.items(), won, strict=True) if ok}
        taken = [cid for cid in offered if cid not in homes]  # claimed before: read the winner
        if taken:
            pipe = self.client.pipeline(transaction=False)
            for cid in taken:
                pipe.hget(self.keys.directory(cid), cid)
            homes.update((cid, int(home)) for cid, home in zip(taken, pipe.execute(), strict=True))
        self._homes.update(homes)
        self._unlisted.difference_update(homes)
        return homes

    def locate(self, customer_ids: Iterable[str]) -> dict[str, int]:
        """The homes of those customers that have one (the directory, cached)."""
        ids = list(dict.fromkeys(customer_ids))
        out = {cid: home for cid in ids if (home := self._homes.get(cid)) is not None}
        ask = [cid for cid in ids if cid not in out]
        if ask:
            pipe = self.client.pipeline(transaction=False)
            for cid in ask:
                pipe.hget(self.keys.directory(cid), cid)
            for cid, home in zip(ask, pipe.execute(), strict=True):
                if home is not None:
                    out[cid] = self._homes[cid] = int(home)
        return out

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

    @property
    def atomic_commits(self) -> bool:
        return not is_cluster(self.client)

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
        return list(self.partitions) if self._owned is None else sorted(self._owned)

    # -- loads -----------------------------------------------------------------------------

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
        values, into = self.read(ids, aliases, syncing)
        return self._decode_many(values), into

    def read(
        self, ids: Sequence[str], aliases: bool = False, syncing: bool = False
    ) -> tuple[dict[str, tuple[int, bytes | None]], dict[str, str]]:
        """The stored bytes of ``ids`` (id -> (home, bytes or ``None``)) and, with ``aliases``,
        the first alias hop of each; with ``syncing``, the RFM rank log is read (and applied)
        in the same round trip. A customer whose home this process does not know yet is looked
        up in the directory while its state is read where the default partitioner puts it: one
        round trip when that guess is right, two when not."""
        known: dict[int, list[str]] = {}
        guessed: dict[int, list[str]] = {}
        unknown: list[str] = []
        for cid in ids:
            home = self._homes.get(cid)
            if home is not None:
                known.setdefault(home, []).append(cid)
            else:
                unknown.append(cid)
                guessed.setdefault(self._legacy_shard(cid), []).append(cid)
        pipe = self.client.pipeline(transaction=False)
        for cid in unknown:
            pipe.hget(self.keys.directory(cid), cid)
        groups = [*known.items(), *guessed.items()]
        self._queue_reads(pipe, groups, aliases)
        reads = self.ranks.queue_read(pipe) if syncing else 0
        replies = pipe.execute()
        if reads:
            self.ranks.apply_read(replies[len(replies) - reads :])
        listed = dict(zip(unknown, replies[: len(unknown)], strict=True))
        values, into = self._take_reads(groups, replies[len(unknown) :], aliases)
        wrong: dict[int, list[str]] = {}
        for cid, home in listed.items():
            guess = values[cid][0]
            if home is None:
                if values[cid][1] is not None:  # stored without a directory entry
                    self._homes[cid] = guess
                    self._unlisted.add(cid)
                else:
                    del values[cid]
                    into.pop(cid, None)
                continue
            self._homes[cid] = int(home)
            if int(home) != guess:
                del values[cid]
                into.pop(cid, None)
                wrong.setdefault(int(home), []).append(cid)
        if wrong:
            pipe = self.client.pipeline(transaction=False)
            regroups = list(wrong.items())
            self._queue_reads(pipe, regroups, aliases)
            more, more_into = self._take_reads(regroups, pipe.execute(), aliases)
            values.update(more)
            into.update(more_into)
        return values, into

    def _queue_reads(
        self, pipe: Any, groups: Sequence[tuple[int, list[str]]], aliases: bool
    ) -> None:
        for home, group in groups:
            part = self.part(home)
            queue_mget(pipe, [part.state(cid) for cid in group])
            if aliases:
                pipe.hmget(part.alias, group)

    def _take_reads(
        self, groups: Sequence[tuple[int, list[str]]], replies: Sequence[Any], aliases: bool
    ) -> tuple[dict[str, tuple[int, bytes | None]], dict[str, str]]:
        values: dict[str, tuple[int, bytes | None]] = {}
        into: dict[str, str] = {}
        step = 2 if aliases else 1
        for i, (home, group) in enumerate(groups):
            for cid, raw in zip(group, replies[step * i], strict=True):
                values[cid] = (home, raw)
            if aliases:
                for cid, target in zip(group, replies[step * i + 1], strict=True):
                    if target is not None:
                        into[cid] = target.decode()
        return values, into

    def _decode_many(
        self, values: Mapping[str, tuple[int, bytes | None]]
    ) -> dict[str, CustomerState]:
        """Decode stored values (undecodable ones are quarantined)."""
        states: dict[str, CustomerState] = {}
        for cid, (home, value) in values.items():
            if value:
                try:
                    states[cid] = CustomerState.decode(value)
                    self._home_of(states[cid])
                except Exception as exc:  # bytes no codec can read (issue 12): never a crash
                    self._quarantine(cid, home, f"{exc.__class__.__name__}: {exc}"[:300])
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
        raw = self.read([customer_id])[0].get(customer_id, (0, None))[1]
        if not raw:
            return None
        try:
            return CustomerState.decode(raw)
        except Exception:  # unreadable bytes: the worker quarantines and dead-letters
            return None

    def _quarantine(self, customer_id: str, home: int, why: str) -> None:
        """Mark a customer whose state cannot be decoded: counted, logged, recorded in its
        partition's quarantine hash (customer -> error); its due entry goes (it would stop the
        clock at that moment forever); the stored bytes stay for repair."""
        if customer_id not in self._quarantined:
            self._quarantined.add(customer_id)
            self.corrupt_states += 1
            log.error("state of customer %r cannot be decoded (%s): quarantined", customer_id, why)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.part(home).quarantine, customer_id, why)
        self._unindex_due(pipe, [customer_id])  # its home is in the bytes that failed
        pipe.execute()

    def quarantined(self) -> dict[str, str]:
        """Every quarantine record (customer -> why), over all partitions."""
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            pipe.hgetall(self.part(p).quarantine)
        out: dict[str, str] = {}
        for reply in pipe.execute():
            out.update({k.decode(): v.decode() for k, v in reply.items()})
        return out

    def _unindex_due(self, pipe: Any, customer_ids: Sequence[str]) -> None:
        """Queue the removal of the due entries of ``customer_ids`` from every partition (their
        home is not known); an open batch session reads its due windows again afterwards."""
        for p in self.partitions:
            pipe.zrem(self.part(p).due, *customer_ids)
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

    # -- commits ---------------------------------------------------------------------------

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
        self.write(states, changes, aliases, handovers)
        if batch is not None:
            batch.committed(states)

    def write(
        self,
        states: Mapping[str, CustomerState],
        changes: Sequence[Change],
        aliases: Mapping[str, str] | None = None,
        handovers: Mapping[tuple[str, str, str], bytes | None] | None = None,
        meta: Mapping[str, int] | None = None,
        after: Callable[[Any], int] | None = None,
    ) -> list[Any]:
        """Write a commit: one ``MULTI`` per home partition it touches (on one Redis, one for
        all), directory entries first, ``meta`` and what ``after`` queues last (the replies
        of the commands ``after`` queued: it returns how many it queued)."""
        parts, listing = self._group(states, changes, aliases or {}, handovers or {})

        def before(pipe: Any) -> None:
            for cid, home in listing.items():
                pipe.hsetnx(self.keys.directory(cid), cid, home)

        top = max(parts, default=-1) + 1
        span = max(top, self.shards) if top > self._marked else 0

        def queue_after(pipe: Any) -> None:
            if meta:
                pipe.hset(self.keys.meta, mapping=dict(meta))
            if span:
                pipe.zadd(self.keys.span, {"partitions": span}, gt=True)
            if after is not None:
                after(pipe)

        def writes_of(home: int, write: _PartWrite) -> Callable[[Any], None]:
            return lambda pipe: self.queue_part(pipe, home, write)

        # a hand-over is taken (deleted) only after the survivor's partition holds what it
        # absorbed: on a cluster a failure between the two leaves the hand-over, never a loss
        order = sorted(parts, key=lambda h: None in parts[h].handovers.values())
        replies = transactions(
            self.client,
            {home: writes_of(home, parts[home]) for home in order},
            before=before if listing else None,
            after=queue_after if meta or span or after is not None else None,
        )
        self._replicated([*(self.part(p).due for p in parts), *map(self.keys.directory, listing)])
        self._unlisted.difference_update(listing)
        self._marked = max(self._marked, span)
        return replies[int(bool(meta)) + int(bool(span)) :]

    def _replicated(self, keys: Sequence[str]) -> None:
        """Wait for the replicas of the primaries holding ``keys`` (``min_replicas``)."""
        if self.min_replicas and keys:
            wait_replicas(self.client, keys, self.min_replicas, self.replica_timeout)

    def _group(
        self,
        states: Mapping[str, CustomerState],
        changes: Sequence[Change],
        aliases: Mapping[str, str],
        handovers: Mapping[tuple[str, str, str], bytes | None],
    ) -> tuple[dict[int, _PartWrite], dict[str, int]]:
        """A commit's writes by home partition, and the directory entries it must add."""
        parts: dict[int, _PartWrite] = {}
        listing: dict[str, int] = {}
        for cid, state in states.items():
            home = self._home_of(state)
            if cid in self._unlisted:
                listing[cid] = home
            parts.setdefault(home, _PartWrite()).states[cid] = state
        for change in changes:
            parts.setdefault(self._shard_of(change.customer_id), _PartWrite()).changes.append(
                change
            )
        if aliases:
            homes = self.locate(aliases)
            for previous, survivor in aliases.items():
                found = homes.get(previous)
                if found is None:  # an id only named: it lives with the survivor
                    found = homes[previous] = self._homes[previous] = self._shard_of(survivor)
                    listing[previous] = found
                parts.setdefault(found, _PartWrite()).aliases[previous] = survivor
        for key, raw in handovers.items():
            parts.setdefault(self._shard_of(key[2]), _PartWrite()).handovers[key] = raw
        return parts, listing

    def queue_part(self, pipe: Any, home: int, write: _PartWrite) -> None:
        """Queue one home partition's writes of a commit on an open transaction."""
        part = self.part(home)
        states, changes = write.states, write.changes
        if states:
            queue_mset(pipe, {part.state(cid): s.encode() for cid, s in states.items()})
            self.ranks.queue_commit(pipe, home, states)
            self.clv.queue_commit(pipe, home, states)
            due_of = {cid: s.next_due for cid, s in states.items() if s.next_due is not None}
            if due_of:
                pipe.zadd(part.due, due_of)  # type: ignore[arg-type]
            gone = [cid for cid, s in states.items() if s.next_due is None]
            if gone:
                pipe.zrem(part.due, *gone)
        if changes:
            for (dim, value), delta in population_deltas(changes).items():
                if delta:
                    pipe.hincrby(part.pop, f"{dim}{SEP}{value}", delta)
            member_index.queue_changes(pipe, part, changes)
            if self.outbox:
                pipe.rpush(part.outbox, *(change.to_json() for change in changes))
        if write.aliases:
            pipe.hset(part.alias, mapping=write.aliases)  # type: ignore[arg-type]
            for previous, survivor in write.aliases.items():
                pipe.sadd(part.aliased(survivor), previous)
                if previous in states:
                    self.ranks.queue_forget(pipe, home, previous)
        for (survivor, merge_id, gone_id), raw in write.handovers.items():
            key, fld = part.handover(survivor), f"{merge_id}{SEP}{gone_id}"
            if raw is None:
                pipe.hdel(key, fld)
            else:
                pipe.hset(key, fld, raw)

    def handovers(self, survivor: str, merge_id: str) -> dict[str, CustomerState]:
        out: dict[str, CustomerState] = {}
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            pipe.hgetall(self.part(p).handover(survivor))
        for reply in pipe.execute():
            for fld, raw in reply.items():
                mid, _, gone = fld.decode().partition(SEP)
                if mid == merge_id:
                    out[gone] = CustomerState.decode(raw)
        return out

    def resolve_aliases(self, customer_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(customer_ids))
        out: dict[str, str] = {}
        current = {cid: cid for cid in ids}  # id -> where its chain has got so far
        for _ in range(64):
            if not current:
                break
            asked = list(dict.fromkeys(current.values()))
            homes = self.locate(asked)
            located = [cid for cid in asked if cid in homes]
            pipe = self.client.pipeline(transaction=False)
            for cid in located:
                pipe.hget(self.part(homes[cid]).alias, cid)
            found = dict(zip(located, pipe.execute(), strict=True))
            moved: dict[str, str] = {}
            for cid, at in current.items():
                target = found.get(at)
                if target is not None:
                    moved[cid] = out[cid] = target.decode()
            current = moved
        return out

    # -- the outbox, the due index, populations -------------------------------------------

    def outbox_pending(self) -> list[tuple[int, list[bytes]]]:
        pipe = self.client.pipeline(transaction=False)
        shards = self._shards()
        for shard in shards:
            pipe.lrange(self.part(shard).outbox, 0, -1)
        return [(shard, rows) for shard, rows in zip(shards, pipe.execute(), strict=True) if rows]

    def outbox_done(self, published: Mapping[int, int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for shard, count in published.items():
            if count:
                pipe.ltrim(self.part(shard).outbox, count, -1)
        pipe.execute()

    def due(self, upto: int, limit: int) -> list[str]:
        if self._batch is not None:
            return self._batch.due(upto, limit)
        pipe = self.client.pipeline(transaction=False)
        for shard in self._shards():
            pipe.zrangebyscore(
                self.part(shard).due, "-inf", upto, start=0, num=limit, withscores=True
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
            pipe.zrange(self.part(shard).due, 0, 0, withscores=True)
        scores = [int(rows[0][1]) for rows in pipe.execute() if rows]
        return min(scores) if scores else None

    def populations(self) -> dict[str, dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            pipe.hgetall(self.part(p).pop)
        counts: dict[str, int] = {}
        for reply in pipe.execute():
            for fld, count in reply.items():
                counts[fld.decode()] = counts.get(fld.decode(), 0) + int(count)
        out: dict[str, dict[str, int]] = {}
        for fld, count in sorted(counts.items()):
            dim, _, value = fld.partition(SEP)
            if count:
                out.setdefault(dim, {})[value] = count
        return out

    # -- deletes ----------------------------------------------------------------------------

    def delete(self, customer_id: str) -> CustomerState | None:
        self._leave_batch()
        self._warm.pop(customer_id, None)
        state = self.get(customer_id)
        home = self._shard_of(customer_id)
        part = self.part(home)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(part.state(customer_id))
        self.ranks.queue_forget(pipe, home, customer_id)
        self.clv.queue_forget(pipe, home, customer_id)
        pipe.zrem(part.due, customer_id)
        pipe.execute()
        return state

    def _aliases_of(self, customer_id: str) -> tuple[str | None, list[tuple[str, int]]]:
        """The id ``customer_id`` was merged into (or ``None``) and every id resolving to it,
        with its home (walking the reverse sets of every partition: a chain points through
        others)."""
        home = self.locate([customer_id]).get(customer_id)
        raw = None if home is None else self.client.hget(self.part(home).alias, customer_id)
        into = None if raw is None else raw.decode()
        found: list[tuple[str, int]] = []
        pending, seen = [customer_id], {customer_id}
        while pending:
            target = pending.pop()
            pipe = self.client.pipeline(transaction=False)
            for p in self.partitions:
                pipe.smembers(self.part(p).aliased(target))
            for p, members in zip(self.partitions, pipe.execute(), strict=True):
                for member in members:
                    previous = member.decode()
                    if previous not in seen:
                        seen.add(previous)
                        found.append((previous, p))
                        pending.append(previous)
        return into, found

    def erase(self, customer_id: str, tomb: CustomerState, changes: Sequence[Change]) -> None:
        self._leave_batch()
        self._warm.pop(customer_id, None)
        into, merged = self._aliases_of(customer_id)
        home = self._home_of(tomb)
        segments = self._segments_ever()
        every = [customer_id, *(previous for previous, _ in merged)]
        merged_in: dict[int, list[str]] = {}
        for previous, p in merged:
            merged_in.setdefault(p, []).append(previous)

        def queue(p: int) -> Callable[[Any], None]:
            def queue_partition(pipe: Any) -> None:
                part = self.part(p)
                if p == home:
                    self.queue_part(pipe, home, _PartWrite({customer_id: tomb}, list(changes)))
                    pipe.hdel(part.alias, customer_id)
                    if into is not None:
                        pipe.srem(part.aliased(into), customer_id)
                    self.ranks.queue_forget(pipe, home, customer_id)
                    self.clv.queue_forget(pipe, home, customer_id)
                    pipe.hdel(part.quarantine, customer_id)
                    member_index.queue_leave(pipe, part, customer_id, segments)
                if p in merged_in:
                    pipe.hdel(part.alias, *merged_in[p])
                pipe.delete(*(part.aliased(cid) for cid in every))
                pipe.delete(part.handover(customer_id))

            return queue_partition

        listing = {customer_id: home} if customer_id in self._unlisted else {}

        def before(pipe: Any) -> None:
            for cid, p in listing.items():
                pipe.hsetnx(self.keys.directory(cid), cid, p)

        order = [home, *(p for p in self.partitions if p != home)]
        transactions(self.client, {p: queue(p) for p in order}, before=before if listing else None)
        self._replicated([*(self.part(p).due for p in order), *map(self.keys.directory, listing)])
        self._unlisted.difference_update(listing)

    def _segments_ever(self) -> list[tuple[str, str]]:
        """Every (dimension, value) any partition ever counted (the population fields)."""
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            pipe.hkeys(self.part(p).pop)
        fields = {f for reply in pipe.execute() for f in reply}
        out = []
        for raw in sorted(fields):
            dim, _, value = raw.decode().partition(SEP)
            out.append((dim, value))
        return out

    # -- walks ------------------------------------------------------------------------------

    def customer_count(self) -> int:
        return sum(1 for _ in self.iter_ids())

    def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One step of a walk over every stored customer; the cursor names a partition and a
        position in it (``0`` starts, and ends when returned)."""
        parts = max(self.shards, 1)
        p, inner = cursor % parts, cursor // parts
        part = self.part(p)
        after, found = scan_keys(self.client, part.due, part.state_prefix + "*", inner, count)
        ids = [part.customer_of(key) for key in found]
        if after:
            return after * parts + p, ids
        return (p + 1 if p + 1 < parts else 0), ids

    def iter_ids(self) -> Iterable[str]:
        """Every customer id with state (SCAN of each partition; for sweeps and tools)."""
        for p in self.partitions:
            yield from self.partition_ids(p)

    def partition_ids(self, partition: int) -> Iterable[str]:
        """The ids of the customers homed in ``partition`` with state."""
        part = self.part(partition)
        cursor = 0
        while True:
            cursor, found = scan_keys(self.client, part.due, part.state_prefix + "*", cursor, 1000)
            yield from (part.customer_of(key) for key in found)
            if not cursor:
                return

    def partition_keys(self, partition: int, suffix: str) -> Iterable[bytes]:
        """The keys of ``partition`` whose name after its tag matches ``suffix`` (a glob)."""
        part = self.part(partition)
        cursor = 0
        while True:
            cursor, found = scan_keys(self.client, part.due, f"{part.tag}:{suffix}", cursor, 1000)
            yield from found
            if not cursor:
                return

    def close(self) -> None:
        self.client.close()
