"""Migrate a namespace's Redis keys to layout 3 (``segmentflow migrate-layout``).

Layout 1 (:class:`~segmentflow.state.keys.LegacyKeys`) keeps one key per kind of data for the
whole namespace; layout 2 (issue 17) puts every key of a home partition under its hash tag
``{ns:pP}`` so one partition's commit is one ``MULTI`` on one Redis Cluster node; layout 3
(:class:`~segmentflow.state.keys.Keys`, issue 13) is layout 2 with the membership index as
range-chunked hashes (:mod:`~segmentflow.state.member_chunks`) instead of one sorted set per
segment and partition. :func:`migrate` copies layout 1 (on one Redis) into layout 3 (on the
same Redis or another one, or a Redis Cluster; the old keys stay for a rollback unless
``drop_old``), or converts a layout-2 namespace's membership index in place (:class:`_Upgrade`:
each segment's sorted set is deleted once its chunks verified; every other key stays). Workers
of the old version must be stopped first; new workers call :func:`ensure_layout` at start and
refuse a namespace at layout 1 or 2.

From layout 1:

The steps (each one idempotent; the state pass resumes from the ``SCAN`` cursor kept in the
target's ``ns:meta``, the others run again when interrupted):

1. global keys: ``ns:meta``, ``ns:partitions``, ``ns:clv:fits|ready`` keep their names (copied
   only to another Redis); the persona model goes to ``{ns:persona}:model|version|samples``;
2. states, page by page (``SCAN ns:s:*``): each state's bytes go unchanged under its home
   partition ``H`` (the state's ``home``, else the legacy murmur2 shard; undecodable bytes go to
   the legacy shard), with its directory entry, due entry (the old score, else ``next_due``),
   RFM metrics, clv row, and the memberships its values imply (``since`` from the old index;
   where that lacks the member, the state's clock, as ``members --rebuild`` does);
3. quarantine records, aliases (under the merged-away id's home), the reverse alias sets and
   the hand-overs (under the home of the id handed over);
4. the old memberships no state implies (stale entries, kept as they were) under the member's
   home;
5. outboxes ``ns:outbox:P`` -> ``{ns:pP}:outbox`` (replaced whole: the same list each time);
6. populations per partition, recounted from the migrated states (through the directory), the
   clv version per partition (its sum exceeds the old version: the next refit runs) and
   ``ns:span``;
7. verify (populations summed equal the old ``ns:pop``, same states, every old member in the
   new index, every alias copied), then ``ns:layout`` = 3; with ``drop_old`` the old keys go.

Each page's writes are one ``MULTI`` per home partition, merged per key (:func:`~segmentflow.
state.client.transactions`); the directory entries (other hash tags) go first: in the same
``MULTI`` on one Redis, in a plain pipeline before on a cluster.

Examples
--------
>>> import redis  # doctest: +SKIP
>>> client = redis.Redis.from_url("redis://127.0.0.1:6379/0")  # doctest: +SKIP
>>> report = migrate(client, client, "segmentflow", shards=8)  # doctest: +SKIP
>>> report.counts["states"], report.differences  # doctest: +SKIP
(120000, [])
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segmentflow.engine.state import CustomerState
from segmentflow.state import member_chunks
from segmentflow.state.client import (
    RedisClient,
    ReplicaLag,
    is_cluster,
    queue_mget,
    queue_mset,
    scan_keys,
    transactions,
    wait_replicas,
)
from segmentflow.state.keys import (
    DIRECTORY_BUCKETS,
    LAYOUT,
    SEP,
    Keys,
    LegacyKeys,
    PartKeys,
    glob_escape,
)
from segmentflow.state.members import indexed_values, pages

#: fields of the target's ``ns:meta`` holding the migration's progress (removed at the end)
META_CURSOR = "migrate-layout:cursor"
META_STEP = "migrate-layout:step"
#: the layout a run writes (absent: progress an interrupted run of an earlier version left)
META_TO = "migrate-layout:to"
#: the kinds of data counted in :attr:`MigrationReport.counts`, in report order
KINDS = (
    "states",
    "undecodable",
    "directory",
    "due",
    "rfm",
    "clv rows",
    "quarantine",
    "aliases",
    "aliased",
    "handovers",
    "members",
    "members from states",
    "populations",
    "outbox",
    "globals",
)
#: legacy clv row buckets (``ns:clv:rows:<b>``; crc32 of the id modulo this)
CLV_BUCKETS = 64
#: how long the migration lock outlives its holder's last sign of life (ms)
LOCK_MS = 120_000
_STATE_STEP, _ALIAS_STEP, _MEMBER_STEP, _OUTBOX_STEP = 2, 3, 4, 5
_CHUNK = 10_000


class LayoutError(RuntimeError):
    """The namespace's stored layout is not the one this version reads."""


class MigrationError(RuntimeError):
    """The migration cannot go on, or its verification found differences (``report`` says)."""

    def __init__(self, message: str, report: MigrationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class MigrationRefused(MigrationError):
    """The migration asked for is not supported (nothing was written; a usage error)."""


@dataclass(slots=True)
class MigrationReport:
    """What :func:`migrate` copied (or, in a dry run, would copy) and what it found."""

    namespace: str
    shards: int
    dry_run: bool = False
    #: the layout migrated from (1: copied, with every kind of key; 2: the membership index
    #: converted in place, :data:`UPGRADE_KINDS` counted)
    source_layout: int = 1
    #: kind (:data:`KINDS`) -> entries copied
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: what the verification found different (any makes the migration fail)
    differences: list[str] = field(default_factory=list)
    #: things worth knowing that are no failure
    notes: list[str] = field(default_factory=list)
    #: the target held ``ns:layout`` = :data:`LAYOUT` already: nothing was copied
    already: bool = False
    #: the state pass went on from a cursor an interrupted run left
    resumed: bool = False
    #: old keys deleted (``drop_old``; in a dry run: that would be)
    dropped: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n


def _id_hash(customer_id: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(customer_id, digest_size=8).digest(), "little")


def same_redis(a: Any, b: Any) -> bool:
    """Whether two clients reach the same database of the same Redis server (then the global
    keys both layouts share are neither copied nor dropped)."""
    if a is b:
        return True
    if is_cluster(a) or is_cluster(b):
        return False

    def where(client: Any) -> tuple[str, int]:
        run_id = str(client.info("server").get("run_id", ""))
        return run_id, int(client.connection_pool.connection_kwargs.get("db", 0) or 0)

    return where(a) == where(b)


def legacy_shard(customer_id: str, shards: int) -> int:
    """The layout-1 shard of a customer whose state has no home (murmur2, as Kafka)."""
    from segmentflow.state.redis_store import kafka_partition

    return kafka_partition(customer_id, shards) if shards > 1 else 0


def _bucket(customer_id: str) -> int:
    import zlib

    return zlib.crc32(customer_id.encode("utf-8")) % CLV_BUCKETS


class _Part:
    """One home partition's writes of a page, merged per key (a few commands, not one per
    entry; the memberships of every segment one script call)."""

    __slots__ = ("hashes", "keys", "lists", "members", "sets", "strings", "zsets")

    def __init__(self, keys: PartKeys) -> None:
        self.keys = keys
        #: (dimension, value) -> {customer id: since} (layout-3 chunks)
        self.members: dict[tuple[str, str], dict[str, int]] = {}
        self.strings: dict[str, bytes] = {}
        self.zsets: dict[str, dict[str, float]] = {}
        self.hashes: dict[str, dict[bytes | str, bytes | str]] = {}
        self.sets: dict[str, set[str]] = {}
        #: lists replaced whole (a copy written twice is the same list)
        self.lists: dict[str, list[bytes]] = {}

    def queue(self, pipe: Any) -> None:
        for chunk in pages(self.strings.items(), _CHUNK):
            queue_mset(pipe, dict(chunk))
        for key, scores in self.zsets.items():
            pipe.zadd(key, scores)
        for key, fields in self.hashes.items():
            pipe.hset(key, mapping=fields)
        for key, members in self.sets.items():
            pipe.sadd(key, *members)
        for key, rows in self.lists.items():
            pipe.delete(key)
            for values in pages(rows, _CHUNK):
                pipe.rpush(key, *values)
        if self.members:
            writes = {segment: ((), adds) for segment, adds in self.members.items()}
            member_chunks.queue_writes(pipe, self.keys, writes)


class _Writes:
    """One page's writes: directory entries, then one ``MULTI`` per home partition."""

    def __init__(self, target: Any, keys: Keys, dry_run: bool) -> None:
        self.target, self.keys, self.dry_run = target, keys, dry_run
        self.directory: dict[str, int] = {}
        self.parts: dict[int, _Part] = {}

    def part(self, home: int) -> _Part:
        found = self.parts.get(home)
        if found is None:
            found = self.parts[home] = _Part(self.keys.part(home))
        return found

    def set(self, home: int, key: str, value: bytes) -> None:
        self.part(home).strings[key] = value

    def zadd(self, home: int, key: str, member: str, score: float) -> None:
        self.part(home).zsets.setdefault(key, {})[member] = score

    def member(self, home: int, dim: str, value: str, cid: str, since: float) -> None:
        """``cid`` in segment ``dim=value`` of partition ``home`` since ``since`` (epoch µs)."""
        self.part(home).members.setdefault((dim, value), {})[cid] = int(since)

    def hset(self, home: int, key: str, name: bytes | str, value: bytes | str) -> None:
        self.part(home).hashes.setdefault(key, {})[name] = value

    def sadd(self, home: int, key: str, member: str) -> None:
        self.part(home).sets.setdefault(key, set()).add(member)

    def replace_list(self, home: int, key: str, rows: list[bytes]) -> None:
        self.part(home).lists[key] = rows

    def flush(self) -> None:
        directory, parts = self.directory, self.parts
        self.directory, self.parts = {}, {}
        if self.dry_run or not (directory or parts):
            return
        buckets: dict[str, dict[str, str]] = {}
        for cid, home in directory.items():
            buckets.setdefault(self.keys.directory(cid), {})[cid] = str(home)

        def entries(pipe: Any) -> None:  # other hash tags: first (on a cluster, no MULTI)
            for bucket, mapping in buckets.items():
                pipe.hset(bucket, mapping=mapping)

        writes = {p: parts[p].queue for p in sorted(parts)}
        transactions(self.target, writes, before=entries if directory else None)


class _Homes:
    """Home partitions of ids read from the source (a state's home, else the home of the id it
    was merged into, else the legacy shard); cached."""

    def __init__(self, source: Any, old: LegacyKeys, shards: int) -> None:
        self.source, self.old, self.shards = source, old, shards
        self.known: dict[str, int] = {}

    def of(self, customer_ids: Iterable[str]) -> dict[str, int]:
        ids = list(customer_ids)
        if len(self.known) > 200_000:  # a cache, not a copy of every alias
            self.known.clear()
        wanted = [cid for cid in dict.fromkeys(ids) if cid not in self.known]
        chain: dict[str, str] = {cid: cid for cid in wanted}  # id -> where its chain got to
        for _ in range(64):
            if not chain:
                break
            asked = list(dict.fromkeys(chain.values()))
            pipe = self.source.pipeline(transaction=False)
            pipe.mget([self.old.state(cid) for cid in asked])
            pipe.hmget(self.old.alias, asked)
            raws, targets = pipe.execute()
            found: dict[str, int] = {}
            into: dict[str, str] = {}
            for cid, raw, target in zip(asked, raws, targets, strict=True):
                if raw is not None:
                    found[cid] = self._home(cid, raw)
                elif target is not None:
                    into[cid] = target.decode()
            moved: dict[str, str] = {}
            for cid, at in chain.items():
                if at in found:
                    self.known[cid] = found[at]
                elif at in into:
                    moved[cid] = into[at]
                else:
                    self.known[cid] = legacy_shard(at, self.shards)
            chain = moved
        for cid, at in chain.items():  # a chain longer than 64 hops: its last id's shard
            self.known[cid] = legacy_shard(at, self.shards)
        return {cid: self.known[cid] for cid in ids}

    def _home(self, cid: str, raw: bytes) -> int:
        try:
            home = CustomerState.decode(raw).home
        except Exception:
            home = None
        return legacy_shard(cid, self.shards) if home is None else home


class _Migration:
    def __init__(
        self,
        source: Any,
        target: Any,
        namespace: str,
        shards: int,
        dry_run: bool,
        page: int,
        progress: Callable[[MigrationReport], None] | None,
    ) -> None:
        self.source, self.target = source, target
        self.same = same_redis(source, target)
        self.old, self.keys = LegacyKeys(namespace), Keys(namespace)
        self.namespace, self.shards, self.page = namespace, shards, page
        self.dry_run, self.progress = dry_run, progress
        self.report = MigrationReport(namespace, shards, dry_run)
        self.homes = _Homes(source, self.old, shards)
        #: old due shards (from the ``ns:due:*`` keys found)
        self.due_shards: list[int] = []
        #: a dry run's populations (partition, field) -> count, counted in the state pass
        self.dry_pop: dict[tuple[int, str], int] = {}
        self.dry_states = 0
        self.bad_homes: dict[int, int] = {}
        #: migrated states whose bytes cannot be decoded (counted by :meth:`recount`)
        self.undecodable = 0
        #: the migration lock's key and this run's token while held
        self.lock_key = Keys(namespace).migrate_lock
        self.lock: str | None = None
        self.min_replicas, self.replica_timeout = 0, 30.0

    # -- helpers ---------------------------------------------------------------------------

    def _pattern(self, suffix: str) -> str:
        return self.old.pattern(suffix)

    def _scan(self, client: Any, pattern: str) -> Iterator[bytes]:
        yield from client.scan_iter(match=pattern, count=self.page)

    def _shard_keys(self, kind: str) -> dict[int, str]:
        """The old per-shard keys ``ns:<kind>:<n>`` found, by shard number."""
        out: dict[int, str] = {}
        prefix = self.old.prefix(kind)
        for raw in self._scan(self.source, self._pattern(f"{kind}:*")):
            key = raw.decode()
            suffix = key[len(prefix) :]
            if suffix.isdigit():
                out[int(suffix)] = key
            else:
                self.report.notes.append(f"{key}: not a shard number, not copied")
        return out

    def _get_meta(self, name: str) -> int:
        if self.dry_run:
            return 0
        value = self.target.hget(self.keys.meta, name)
        return 0 if value is None else int(value)

    def _set_meta(self, name: str, value: int) -> None:
        if not self.dry_run:
            self.target.hset(self.keys.meta, name, value)

    def tick(self) -> None:
        """The lock's holder is alive."""
        if self.lock is not None:
            self.target.pexpire(self.lock_key, LOCK_MS)

    def _tick(self) -> None:
        self.tick()
        if self.progress is not None:
            self.progress(self.report)

    def take_lock(self) -> None:
        """One migration of a namespace at a time (the lock expires if its holder dies)."""
        if self.dry_run:
            return
        token = uuid.uuid4().hex
        if not self.target.set(self.lock_key, token, nx=True, px=LOCK_MS):
            left = max(0, int(self.target.pttl(self.lock_key))) / 1000
            raise MigrationError(
                f"another `segmentflow migrate-layout` of {self.namespace!r} is running (its "
                f"lock {self.lock_key} expires in {left:.0f} s unless it goes on): wait for it; "
                "if it was killed, run again once the lock has expired"
            )
        self.lock = token

    def release_lock(self) -> None:
        if self.lock is not None and self.target.get(self.lock_key) == self.lock.encode():
            self.target.delete(self.lock_key)
        self.lock = None

    def _home_ok(self, home: int) -> None:
        if not 0 <= home < self.shards:
            self.bad_homes[home] = self.bad_homes.get(home, 0) + 1

    # -- the run ---------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse what would write a wrong layout (before any write)."""
        if self.shards < 1:
            raise MigrationError(f"the partition count must be 1 or more, not {self.shards}")
        if is_cluster(self.source):
            raise MigrationError(
                "the source must be one Redis (layout 1 never ran on a Redis Cluster): pass "
                "its redis:// URL as --from"
            )
        due, outboxes = self._shard_keys("due"), self._shard_keys("outbox")
        self.due_shards = sorted(due)
        beyond = sorted(n for n in {*due, *outboxes} if n >= self.shards)
        records = self.source.hkeys(self.old.partitions)
        named = [int(f.rpartition(b":")[2]) for f in records if f.rpartition(b":")[2].isdigit()]
        if named and max(named) >= self.shards:
            beyond.append(max(named))
        if beyond:
            raise MigrationError(
                f"namespace {self.namespace!r} holds shard {max(beyond)} (due index, outbox or "
                f"partition record) but the partition count given is {self.shards}: pass the "
                "input topics' real partition count (--partitions or SEGMENTFLOW_PARTITIONS)"
            )
        if named and max(named) + 1 < self.shards:
            self.report.notes.append(
                f"partition records name partitions up to {max(named)} only, "
                f"{self.shards} were given"
            )

    def run(self) -> MigrationReport:
        self.check()
        step = self._get_meta(META_STEP)
        self.report.resumed = step > 0 or self._get_meta(META_CURSOR) > 0
        earlier = self.report.resumed and self._get_meta(META_TO) != LAYOUT
        if earlier:  # its pages wrote layout 2's membership sets: every page again
            step = 0
            self._set_meta(META_CURSOR, 0)
            self.report.notes.append(
                "an interrupted migration of an earlier version (to layout 2) was started "
                "again from the beginning"
            )
        self._set_meta(META_TO, LAYOUT)
        self.copy_globals()
        if step < _STATE_STEP:
            self.copy_states()
            self._set_meta(META_STEP, _STATE_STEP)
        if step < _ALIAS_STEP:
            self.copy_quarantine()
            self.copy_aliases()
            self._set_meta(META_STEP, _ALIAS_STEP)
        if step < _MEMBER_STEP:
            self.copy_members()
            self._set_meta(META_STEP, _MEMBER_STEP)
        if step < _OUTBOX_STEP:
            self.copy_outboxes()
            self._set_meta(META_STEP, _OUTBOX_STEP)
        self.verify(self.recount())
        if self.report.differences:
            return self.report
        if not self.dry_run:
            if earlier:
                swept = sum(self._sweep_layout2(p) for p in self._parts())
                self.report.notes.append(f"{swept} layout-2 membership sets it left: deleted")
            self.wait_replicas()
            pipe = self.target.pipeline(transaction=False)
            pipe.set(self.keys.layout, LAYOUT)
            pipe.hdel(self.keys.meta, META_CURSOR, META_STEP, META_TO)
            pipe.execute()
        return self.report

    def _sweep_layout2(self, part: int) -> int:
        """Delete the layout-2 membership sets of a partition (written by an earlier version's
        interrupted migration; their members are in the layout-3 index now)."""
        found = list(layout2_sets(self.target, self.keys.part(part), self.page))
        for key in found:
            self.target.unlink(key)
        return len(found)

    def wait_replicas(self, parts: Iterable[int] | None = None) -> None:
        """Every primary written holds its data on ``min_replicas`` replicas (or raise);
        ``parts``: only those partitions were written (an upgrade from layout 2)."""
        if self.min_replicas <= 0:
            return
        touched = [self.keys.part(p).pop for p in (self._parts() if parts is None else parts)]
        if parts is None:
            touched += [self.keys.directory_bucket(b) for b in range(DIRECTORY_BUCKETS)]
        touched += [self.keys.meta, self.keys.persona_model]
        try:
            wait_replicas(self.target, touched, self.min_replicas, self.replica_timeout)
        except ReplicaLag:
            raise MigrationError(
                f"fewer than {self.min_replicas} replicas acknowledged the migrated keys within "
                f"{self.replica_timeout:g} s (SEGMENTFLOW_REDIS_MIN_REPLICAS): the layout is not "
                "switched; check the replicas (INFO replication) and run again",
                self.report,
            ) from None

    def copy_globals(self) -> None:
        src, old, keys, report = self.source, self.old, self.keys, self.report
        if not self.same:
            for name in ("meta", "partitions", "clv_fits", "clv_ready"):
                values = src.hgetall(getattr(old, name))
                if values:
                    report.add("globals")
                    if not self.dry_run:
                        self.target.hset(getattr(keys, name), mapping=values)
        model, version, samples = (
            src.get(old.persona_model),
            src.get(old.persona_version),
            src.lrange(old.persona_samples, 0, -1),
        )
        report.add("globals", (model is not None) + (version is not None) + bool(samples))
        if self.dry_run or (model is None and version is None and not samples):
            return
        pipe = self.target.pipeline(transaction=True)  # one hash tag: {ns:persona}
        if model is not None:
            pipe.set(keys.persona_model, model)
        if version is not None:
            pipe.set(keys.persona_version, version)
        pipe.delete(keys.persona_samples)
        for chunk in pages(samples, _CHUNK):
            pipe.rpush(keys.persona_samples, *chunk)
        pipe.execute()

    def copy_states(self) -> None:
        cursor = self._get_meta(META_CURSOR)
        pattern = self._pattern("s:*")
        while True:
            cursor, found = self.source.scan(cursor, match=pattern, count=self.page)
            cursor = int(cursor)
            if found:
                self._state_page(list(dict.fromkeys(self.old.customer_of(k) for k in found)))
            self._set_meta(META_CURSOR, cursor)
            self._tick()
            if cursor == 0:
                return

    def _state_page(self, ids: list[str]) -> None:
        old, keys, report = self.old, self.keys, self.report
        pipe = self.source.pipeline(transaction=False)
        pipe.mget([old.state(cid) for cid in ids])
        for shard in self.due_shards:
            pipe.zmscore(old.due(shard), ids)
        pipe.hmget(old.rfm, ids)
        by_bucket: dict[int, list[str]] = {}
        for cid in ids:
            by_bucket.setdefault(_bucket(cid), []).append(cid)
        for bucket, members in by_bucket.items():
            pipe.hmget(old.clv_rows(bucket), members)
        replies = pipe.execute()
        raws, dues = replies[0], replies[1 : 1 + len(self.due_shards)]
        rfm = replies[1 + len(self.due_shards)]
        clv: dict[str, bytes] = {}
        for (_, members), rows in zip(
            by_bucket.items(), replies[2 + len(self.due_shards) :], strict=True
        ):
            clv.update((cid, row) for cid, row in zip(members, rows, strict=True) if row)

        writes = _Writes(self.target, keys, self.dry_run)
        decoded: dict[str, tuple[CustomerState, int]] = {}
        for i, (cid, raw) in enumerate(zip(ids, raws, strict=True)):
            if raw is None:  # gone since the SCAN (nothing runs meanwhile: a stray delete)
                continue
            try:
                state: CustomerState | None = CustomerState.decode(raw)
            except Exception:  # bytes no codec reads: copied as they are, to the legacy shard
                state = None
                report.add("undecodable")
            home = legacy_shard(cid, self.shards)
            if state is not None and state.home is not None:
                home = state.home
            if self.dry_run:  # (a real run counts them from the directory)
                self._home_ok(home)
            part = keys.part(home)
            report.add("states")
            report.add("directory")
            writes.directory[cid] = home
            writes.set(home, part.state(cid), raw)
            score = next((d[i] for d in dues if d[i] is not None), None)
            if score is None and state is not None and state.next_due is not None:
                score = state.next_due
            if score is not None:
                report.add("due")
                writes.zadd(home, part.due, cid, score)
            if rfm[i] is not None:
                report.add("rfm")
                writes.hset(home, part.rfm, cid, rfm[i])
            if cid in clv:
                report.add("clv rows")
                writes.hset(home, part.clv_rows(_bucket(cid)), cid, clv[cid])
            if state is not None:
                decoded[cid] = (state, home)
        self._members_from_states(decoded, writes)
        writes.flush()

    def _members_from_states(
        self, decoded: dict[str, tuple[CustomerState, int]], writes: _Writes
    ) -> None:
        """The memberships the states' values imply: ``since`` from the old index, or the
        state's clock where the old index lacks the member (as ``members --rebuild``); a dry
        run also counts the populations here."""
        by_segment: dict[tuple[str, str], list[str]] = {}
        for cid, (state, home) in decoded.items():
            for dim, value in indexed_values(state).items():
                by_segment.setdefault((dim, value), []).append(cid)
                if self.dry_run:
                    slot = (home, f"{dim}{SEP}{value}")
                    self.dry_pop[slot] = self.dry_pop.get(slot, 0) + 1
        self.dry_states += len(decoded)
        if not by_segment:
            return
        pipe = self.source.pipeline(transaction=False)
        for (dim, value), ids in by_segment.items():
            pipe.zmscore(self.old.segment(dim, value), ids)
        for ((dim, value), ids), scores in zip(by_segment.items(), pipe.execute(), strict=True):
            for cid, since in zip(ids, scores, strict=True):
                state, home = decoded[cid]
                if since is None:
                    self.report.add("members from states")
                    since = state.clock or 0
                else:
                    self.report.add("members")
                writes.member(home, dim, value, cid, since)

    def copy_quarantine(self) -> None:
        for rows in pages(self.source.hscan_iter(self.old.quarantine, count=self.page), self.page):
            homes = self.homes.of(cid.decode() for cid, _ in rows)
            writes = _Writes(self.target, self.keys, self.dry_run)
            for cid, why in rows:
                home = homes[cid.decode()]
                self.report.add("quarantine")
                writes.hset(home, self.keys.part(home).quarantine, cid, why)
            writes.flush()

    def copy_aliases(self) -> None:
        src, old, keys, report = self.source, self.old, self.keys, self.report
        for rows in pages(src.hscan_iter(old.alias, count=self.page), self.page):
            pairs = [(a.decode(), s.decode()) for a, s in rows]
            homes = self.homes.of(a for a, _ in pairs)
            stated = src.pipeline(transaction=False)
            for merged, _ in pairs:
                stated.exists(old.state(merged))
            writes = _Writes(self.target, keys, self.dry_run)
            for (merged, survivor), has_state in zip(pairs, stated.execute(), strict=True):
                home = homes[merged]
                report.add("aliases")
                writes.hset(home, keys.part(home).alias, merged, survivor)
                if not has_state:  # its state went (merged): the directory still says where
                    writes.directory[merged] = home
                    report.add("directory")
            writes.flush()
        prefix = self.old.prefix("aliased")
        for raw in self._scan(src, self._pattern("aliased:*")):
            survivor = raw.decode()[len(prefix) :]
            for members in pages(src.sscan_iter(raw, count=self.page), self.page):
                ids = [m.decode() for m in members]
                homes = self.homes.of(ids)
                writes = _Writes(self.target, keys, self.dry_run)
                for cid in ids:
                    report.add("aliased")
                    writes.sadd(homes[cid], keys.part(homes[cid]).aliased(survivor), cid)
                writes.flush()
        prefix = self.old.prefix("handover")
        for raw in self._scan(src, self._pattern("handover:*")):
            survivor = raw.decode()[len(prefix) :]
            items = src.hgetall(raw)
            fields = {f: f.decode().partition(SEP)[2] for f in items}
            homes = self.homes.of(fields.values())
            writes = _Writes(self.target, keys, self.dry_run)
            for name, value in items.items():
                home = homes[fields[name]]
                report.add("handovers")
                writes.hset(home, keys.part(home).handover(survivor), name, value)
            writes.flush()

    def _directory(self, ids: Sequence[str]) -> dict[str, int]:
        """Homes of ids from the target's directory (the source's for those not listed)."""
        found: dict[str, int] = {}
        if not self.dry_run:
            pipe = self.target.pipeline(transaction=False)
            for cid in ids:
                pipe.hget(self.keys.directory(cid), cid)
            found = {c: int(h) for c, h in zip(ids, pipe.execute(), strict=True) if h is not None}
        missing = [cid for cid in ids if cid not in found]
        if missing:
            found.update(self.homes.of(missing))
        return found

    def _old_segments(self) -> Iterator[tuple[bytes, str, str]]:
        for raw in self._scan(self.source, self._pattern("m:*")):
            dim, value = self.old.segment_of(raw)
            yield raw, dim, value

    def _unindexed(self, dim: str, value: str, ids: list[str]) -> list[str]:
        """Which of ``ids`` no partition's new index of segment ``dim=value`` lists."""
        if not ids:
            return []
        pipe = self.target.pipeline(transaction=False)
        for part in self._parts():
            member_chunks.queue_since(pipe, self.keys.part(part), dim, value, ids)
        listed: set[str] = set()
        for reply in pipe.execute():
            found = member_chunks.since_of(reply)
            listed.update(cid for cid, since in zip(ids, found, strict=True) if since is not None)
        return [cid for cid in ids if cid not in listed]

    def _parts(self) -> range:
        return range(max(self.shards, max(self.bad_homes, default=-1) + 1))

    def copy_members(self) -> None:
        """The old memberships the states' values do not imply (stale entries: kept as they
        were, under the member's home)."""
        if self.dry_run:  # those the state pass did not count
            total = sum(int(self.source.zcard(raw)) for raw, _, _ in self._old_segments())
            self.report.add("members", max(0, total - self.report.counts["members"]))
            return
        for raw, dim, value in self._old_segments():
            for rows in pages(self.source.zscan_iter(raw, count=self.page), self.page):
                since = {m.decode(): score for m, score in rows}
                stale = self._unindexed(dim, value, list(since))
                homes = self._directory(stale)
                writes = _Writes(self.target, self.keys, self.dry_run)
                for cid in stale:
                    self.report.add("members")
                    writes.member(homes[cid], dim, value, cid, since[cid])
                writes.flush()
            self._tick()

    def copy_outboxes(self) -> None:
        for shard in range(self.shards):
            rows = self.source.lrange(self.old.outbox(shard), 0, -1)
            self.report.add("outbox", len(rows))
            if not rows:
                continue
            writes = _Writes(self.target, self.keys, self.dry_run)
            writes.replace_list(shard, self.keys.outbox(shard), rows)
            writes.flush()

    # -- recount and verify ----------------------------------------------------------------

    def recount(self) -> tuple[dict[tuple[int, str], int], np.ndarray[Any, Any]]:
        """Populations per (partition, field) counted from the migrated states (each listed
        once in the directory), written per partition; clv versions; the ids' hashes."""
        if self.dry_run:
            self.report.add("populations", sum(1 for n in self.dry_pop.values() if n))
            return self.dry_pop, np.zeros(0, dtype=np.uint64)
        target, keys = self.target, self.keys
        pop: dict[tuple[int, str], int] = {}
        hashes: list[np.ndarray[Any, Any]] = []
        buckets = [self.keys.directory_bucket(b) for b in range(DIRECTORY_BUCKETS)]
        for group in pages(buckets, 32):
            pipe = target.pipeline(transaction=False)
            for bucket_key in group:
                pipe.hgetall(bucket_key)
            entries = [(c, int(h)) for reply in pipe.execute() for c, h in reply.items()]
            for _, home in entries:
                self._home_ok(home)
            self._tick()
            for rows in pages(entries, self.page):
                by_home: dict[int, list[bytes]] = {}
                for cid, home in rows:
                    by_home.setdefault(home, []).append(cid)
                pipe = target.pipeline(transaction=False)
                for home, ids in by_home.items():  # one MGET per partition (one hash tag)
                    queue_mget(pipe, [keys.part(home).state(c.decode()) for c in ids])
                for (home, ids), raws in zip(by_home.items(), pipe.execute(), strict=True):
                    present = [c for c, raw in zip(ids, raws, strict=True) if raw is not None]
                    hashes.append(np.array([_id_hash(c) for c in present], dtype=np.uint64))
                    for raw in raws:
                        if raw is None:
                            continue  # an alias's entry (its state went with the merge)
                        try:
                            state = CustomerState.decode(raw)
                        except Exception:  # copied as it was: counted, its values unknown
                            self.undecodable += 1
                            continue
                        for dim, value in indexed_values(state).items():
                            slot = (home, f"{dim}{SEP}{value}")
                            pop[slot] = pop.get(slot, 0) + 1
        parts = sorted({p for p, _ in pop} | set(range(self.shards)))
        per_part: dict[int, dict[str, int]] = {p: {} for p in parts}
        for (part, name), count in pop.items():
            per_part[part][name] = count
        clv_pipe = target.pipeline(transaction=False)
        for part in parts:
            for bucket in range(CLV_BUCKETS):
                clv_pipe.hlen(keys.part(part).clv_rows(bucket))
        lengths = clv_pipe.execute()
        rows_of = {
            p: sum(lengths[i * CLV_BUCKETS : (i + 1) * CLV_BUCKETS]) for i, p in enumerate(parts)
        }
        old_version = int(self.source.get(self.old.clv_version) or 0)
        first = next((p for p in parts if rows_of[p]), None)

        def queue(part: int) -> Any:
            def run(pipe: Any) -> None:
                part_keys = keys.part(part)
                pipe.delete(part_keys.pop)
                if per_part[part]:
                    pipe.hset(part_keys.pop, mapping=per_part[part])
                if rows_of[part]:  # the sum exceeds the old version: the next refit runs
                    version = rows_of[part] + (old_version if part == first else 0)
                    pipe.set(part_keys.clv_version, version)

            return run

        transactions(target, {p: queue(p) for p in parts})
        # how many home partitions hold data (readers configured with fewer read them all)
        target.zadd(keys.span, {"partitions": max(parts) + 1}, gt=True)
        self.report.add("populations", sum(len(v) for v in per_part.values()))
        return pop, np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)

    def verify(self, counted: tuple[dict[tuple[int, str], int], np.ndarray[Any, Any]]) -> None:
        pop, new_ids = counted
        report, src, old = self.report, self.source, self.old
        if self.bad_homes:
            homes = ", ".join(f"{h} ({n} customers)" for h, n in sorted(self.bad_homes.items()))
            report.differences.append(
                f"customers homed outside partitions 0..{self.shards - 1}: {homes}; pass the "
                "input topics' real partition count (--partitions or SEGMENTFLOW_PARTITIONS)"
            )
        summed: dict[str, int] = {}
        for (_, name), count in pop.items():
            summed[name] = summed.get(name, 0) + count
        stored = {f.decode(): int(v) for f, v in src.hgetall(old.pop).items() if int(v)}
        more: list[str] = []
        fewer: list[str] = []
        shortfall: dict[str, int] = {}
        for name in sorted(set(stored) | {n for n, c in summed.items() if c}):
            was, now = stored.get(name, 0), summed.get(name, 0)
            if was != now:
                dim, _, value = name.partition(SEP)
                (more if now > was else fewer).append(
                    f"population {dim}={value}: {was} before, {now} migrated"
                )
                shortfall[dim] = shortfall.get(dim, 0) + max(0, was - now)
        undecodable = self.undecodable if not self.dry_run else report.counts["undecodable"]
        if fewer and not more and all(n <= undecodable for n in shortfall.values()):
            report.notes.extend(fewer)
            report.notes.append(
                f"the population shortfalls above are within the {undecodable} undecodable "
                "states (their values cannot be read): repair or forget those customers"
            )
        elif more or fewer:
            report.differences.extend(more + fewer)
            report.differences.append(
                "populations differ: were workers of the old version still running? Stop them "
                "and run `segmentflow migrate-layout` again"
            )
        if self.dry_run:
            return
        old_ids = self._old_state_hashes()
        missing = int(np.setdiff1d(old_ids, new_ids, assume_unique=True).size)
        extra = int(np.setdiff1d(new_ids, old_ids, assume_unique=True).size)
        if missing or extra:
            report.differences.append(
                f"states: {old_ids.size} before, {new_ids.size} migrated ({missing} missing, "
                f"{extra} not in the source)"
            )
        absent = self._absent_members()
        if absent:
            report.differences.append(f"{absent} old memberships are not in the new index")
        old_aliases = int(src.hlen(old.alias))
        pipe = self.target.pipeline(transaction=False)
        for part in range(self.shards):
            pipe.hlen(self.keys.part(part).alias)
        new_aliases = sum(int(n) for n in pipe.execute())
        if new_aliases != old_aliases:
            report.differences.append(f"aliases: {old_aliases} before, {new_aliases} migrated")
        pipe = self.target.pipeline(transaction=False)
        for part in range(self.shards):
            pipe.hlen(self.keys.part(part).rfm)
        was, now = int(src.hlen(old.rfm)), sum(int(n) for n in pipe.execute())
        if was > now:
            report.notes.append(f"{was - now} RFM entries of customers without a state: not copied")

    def _old_state_hashes(self) -> np.ndarray[Any, Any]:
        hashes = [
            np.array([_id_hash(self.old.customer_of(k).encode()) for k in keys], np.uint64)
            for keys in pages(self._scan(self.source, self._pattern("s:*")), self.page)
        ]
        return np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)

    def _absent_members(self) -> int:
        absent = 0
        for raw, dim, value in self._old_segments():
            for rows in pages(self.source.zscan_iter(raw, count=self.page), self.page):
                absent += len(self._unindexed(dim, value, [m.decode() for m, _ in rows]))
        return absent


def layout2_sets(client: Any, part: PartKeys, count: int) -> Iterator[bytes]:
    """The layout-2 membership sorted sets of one partition (``SCAN`` on the node of its tag;
    each key once)."""
    pattern = glob_escape(part.layout2_segment_prefix) + "*"
    cursor, seen = 0, set()
    while True:
        cursor, found = scan_keys(client, part.pop, pattern, cursor, count)
        for raw in found:
            if raw not in seen:  # (SCAN may return a key twice)
                seen.add(raw)
                yield raw
        if cursor == 0:
            return


#: the layout whose membership index :class:`_Upgrade` converts in place
UPGRADED = 2
#: the ``ns:meta`` field an in-place upgrade from layout 2 sets while it runs
META_UPGRADE = "migrate-layout:upgrade"
#: the kinds counted by an in-place upgrade from layout 2
UPGRADE_KINDS = ("segments", "members")


class _Upgrade:
    """Layout 2 -> 3 in place: each partition's membership sorted sets ``{ns:pP}:m:*`` become
    range-chunked hashes (:mod:`~segmentflow.state.member_chunks`) with the same since; each
    segment is verified, then its sorted set deleted. Every other key stays as it is. An
    interrupted run goes on with the sorted sets left (a segment converted twice is the
    same)."""

    def __init__(
        self,
        client: Any,
        namespace: str,
        shards: int,
        dry_run: bool,
        page: int,
        progress: Callable[[MigrationReport], None] | None,
        lock: _Migration,
    ) -> None:
        self.client, self.keys, self.page = client, Keys(namespace), page
        self.dry_run, self.progress = dry_run, progress
        #: holds the migration lock and waits for the replicas
        self.lock = lock
        self.report = MigrationReport(namespace, shards, dry_run, source_layout=UPGRADED)
        self.report.counts = dict.fromkeys(UPGRADE_KINDS, 0)
        span = client.zscore(self.keys.span, "partitions")
        self.parts = range(max(shards, int(span or 0)))

    def run(self) -> MigrationReport:
        """Convert every partition; mark the namespace once every segment verified."""
        if not self.dry_run:
            fresh = self.client.hsetnx(self.keys.meta, META_UPGRADE, 1)
            self.report.resumed = not fresh
        for part in self.parts:
            self.convert_partition(self.keys.part(part))
        if self.report.differences or self.dry_run:
            return self.report
        self.lock.wait_replicas(self.parts)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.layout, LAYOUT)
        pipe.hdel(self.keys.meta, META_UPGRADE)
        pipe.execute()
        return self.report

    def _tick(self) -> None:
        self.lock.tick()
        if self.progress is not None:
            self.progress(self.report)

    def convert_partition(self, part: PartKeys) -> None:
        for raw in layout2_sets(self.client, part, self.page):
            self.convert_segment(part, raw)
        self._tick()

    def convert_segment(self, part: PartKeys, raw: bytes) -> None:
        """Copy one sorted set into chunks, verify them, then delete it."""
        dim, _, value = raw.decode()[len(part.layout2_segment_prefix) :].partition(SEP)
        report, client = self.report, self.client
        report.add("segments")
        for rows in pages(client.zscan_iter(raw, count=self.page), self.page):
            report.add("members", len(rows))
            if not self.dry_run:
                adds = {m.decode(): int(since) for m, since in rows}
                pipe = client.pipeline(transaction=False)
                member_chunks.queue_writes(pipe, part, {(dim, value): ((), adds)})
                pipe.execute()
            self._tick()
        if self.dry_run:
            return
        was, now = int(client.zcard(raw)), member_chunks.count(client, part, dim, value)
        moved = 0
        for rows in pages(client.zscan_iter(raw, count=self.page), self.page):
            pipe = client.pipeline(transaction=False)
            member_chunks.queue_since(pipe, part, dim, value, [m.decode() for m, _ in rows])
            (reply,) = pipe.execute()
            listed = member_chunks.since_of(reply)
            moved += sum(1 for (_, s), got in zip(rows, listed, strict=True) if got != int(s))
        if was != now or moved:
            report.differences.append(
                f"partition {part.partition} segment {dim}={value}: {was} members in layout 2, "
                f"{now} converted, {moved} without the same since (its sorted set is kept): were "
                "workers of the previous version still running? Stop them and run "
                "`segmentflow migrate-layout` again"
            )
            return
        client.unlink(raw)


def migrate(
    source: RedisClient,
    target: RedisClient,
    namespace: str,
    shards: int,
    *,
    dry_run: bool = False,
    drop_old: bool = False,
    page: int = 1000,
    progress: Callable[[MigrationReport], None] | None = None,
    min_replicas: int = 0,
    replica_timeout: float = 30.0,
) -> MigrationReport:
    """Copy ``namespace`` from layout 1 on ``source`` to layout 3 on ``target``, or upgrade a
    ``target`` at layout 2 in place (see the module docstring); raise :class:`MigrationError`
    (with the report) when it cannot or when the verification finds differences (then
    ``ns:layout`` is not written), :class:`MigrationRefused` for a layout-2 namespace on
    another Redis than ``target``.

    Parameters
    ----------
    source, target
        One Redis holding layout 1; one Redis or a Redis Cluster (may be ``source`` itself;
        must be, for a namespace at layout 2).
    shards
        The input topics' partition count (home partitions; the legacy shards of states
        without a home).
    dry_run
        Read everything and count what would be copied; write nothing.
    drop_old
        After a successful migration (or on a target already at layout 3), delete the
        layout-1 keys (without it they stay for a rollback).
    page
        Keys per ``SCAN`` step and per transaction page.
    progress
        Called with the report after every page.
    min_replicas, replica_timeout
        Before the marker, wait until that many replicas of every primary written to hold
        the migrated keys (``SEGMENTFLOW_REDIS_MIN_REPLICAS``); not in time: the layout is not
        switched (:class:`MigrationError`).
    """
    src: Any = source
    dst: Any = target
    keys = Keys(namespace)
    marker = None if (raw := dst.get(keys.layout)) is None else int(raw)
    if marker not in (None, UPGRADED, LAYOUT):
        raise MigrationError(
            f"namespace {namespace!r} is at layout {marker}, written by another version "
            f"of segmentflow (this one reads layout {LAYOUT}): use that version's tools"
        )
    if shards < 1:
        raise MigrationError(f"the partition count must be 1 or more, not {shards}")
    same = same_redis(src, dst)
    held = None if same or (raw := src.get(keys.layout)) is None else int(raw)
    if (marker == UPGRADED and not same) or (marker is None and held == UPGRADED):
        raise MigrationRefused(
            f"namespace {namespace!r} is at layout {UPGRADED}, which is upgraded in place on "
            "the Redis that holds it: run `segmentflow migrate-layout` with --from and --to "
            "(or SEGMENTFLOW_REDIS_URL alone) naming that Redis; to move it to another Redis, "
            "upgrade it first, then copy it with Redis' own tools"
        )
    if marker is None and held is not None:
        raise MigrationError(
            f"the source already holds layout {held} of namespace {namespace!r}, so there is "
            "nothing to migrate: point --from at the Redis holding the old layout"
        )
    migration = _Migration(src, dst, namespace, shards, dry_run, max(1, page), progress)
    migration.min_replicas, migration.replica_timeout = min_replicas, replica_timeout
    if marker == LAYOUT:
        report = migration.report
        report.already = True
    else:
        migration.take_lock()
        try:
            if marker == UPGRADED:
                upgrade = _Upgrade(
                    dst, namespace, shards, dry_run, max(1, page), progress, migration
                )
                report = upgrade.run()
            else:
                report = migration.run()
        finally:
            migration.release_lock()
        if report.differences:
            raise MigrationError(
                f"the migration of {namespace!r} found differences (layout not switched):\n- "
                + "\n- ".join(report.differences),
                report,
            )
    if drop_old:
        report.dropped = _drop_old(src, namespace, same=same, dry_run=dry_run)
    return report


#: layout-2 keys that keep their layout-1 names (kept by ``drop_old`` on the target)
def _kept(keys: Keys) -> set[bytes]:
    names = (
        keys.meta,
        keys.partitions,
        keys.layout,
        keys.span,
        keys.clv_fits,
        keys.clv_ready,
        keys.clv_lock,
    )
    return {n.encode() for n in names}


def _drop_old(client: Any, namespace: str, *, same: bool, dry_run: bool) -> int:
    """Delete every layout-1 key of ``namespace`` (on the target itself: all but the global keys
    layout 2 shares); the number deleted (in a dry run: found)."""
    kept = _kept(Keys(namespace)) if same else set()
    dropped = 0
    found = client.scan_iter(match=LegacyKeys(namespace).pattern("*"), count=1000)
    for keys in pages((k for k in found if k not in kept), 500):
        dropped += len(keys)
        if not dry_run:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            pipe.execute()
    return dropped


def ensure_layout(client: RedisClient, namespace: str) -> None:
    """Make sure ``namespace`` is at layout 3 before a worker or tool uses it: a fresh namespace
    is marked; one at layout 2, or holding layout-1 keys without the marker, raises
    :class:`LayoutError`."""
    redis_client: Any = client
    keys, old = Keys(namespace), LegacyKeys(namespace)
    marker = redis_client.get(keys.layout)
    if marker is not None:
        if int(marker) == UPGRADED:
            raise LayoutError(
                f"namespace {namespace!r} is at layout {UPGRADED} (one membership sorted set "
                f"per segment); this version reads layout {LAYOUT}: stop every worker of the "
                f"previous version, then run `SEGMENTFLOW_NAMESPACE={namespace} segmentflow "
                "migrate-layout` (it converts the membership index in place; README "
                "'Upgrading to layout 3')"
            )
        if int(marker) != LAYOUT:
            raise LayoutError(
                f"namespace {namespace!r} is at layout {int(marker)}, which this version of "
                f"segmentflow cannot read (it reads layout {LAYOUT}): run the version that "
                "wrote it, or a newer one"
            )
        return
    names = [old.pop, old.rfm, old.alias, old.quarantine, old.clv_version, old.persona_model]
    pipe = redis_client.pipeline(transaction=False)  # one key each: any node of a cluster
    for name in names:
        pipe.exists(name)
    found = [name for name, n in zip(names, pipe.execute(), strict=True) if n]
    for kind in ("s", "due"):
        pattern = old.pattern(f"{kind}:*")
        if is_cluster(client):
            _, keys_found = redis_client.scan(0, match=pattern, count=1000)
        else:
            _, keys_found = redis_client.scan(0, match=pattern, count=1000)
        if keys_found:
            found.append(keys_found[0].decode())
    if found:
        raise LayoutError(
            f"namespace {namespace!r} holds keys of the old layout 1 ({', '.join(found[:3])}"
            f"{', ...' if len(found) > 3 else ''}) and "
            f"no {keys.layout} marker: stop every worker of the old version, then run "
            f"`SEGMENTFLOW_NAMESPACE={namespace} segmentflow migrate-layout` (README "
            "'Upgrading to layout 3')"
        )
    redis_client.set(keys.layout, LAYOUT, nx=True)
