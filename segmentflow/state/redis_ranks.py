"""RFM rank sync through Redis: per home partition, ``{ns:pP}:rfm`` (hash customer_id ->
packed metrics) and ``{ns:pP}:rfm:log`` (a stream of metric updates).

Every worker keeps an exact local :class:`RankIndex` of the whole population, loaded from the
hash at start (:meth:`RedisRankSync.attach`, in bulk) and kept current by reading the stream
with each batch. Each entry also holds the scores the customer was last given (its state's RFM
slice, committed in the same transaction), so a restarted worker's index knows who was given
what: its first sweep moves only the customers whose scores really changed, as an
uninterrupted worker's would, and other workers' customers are not re-walked at every sweep.

The :class:`~segmentflow.state.redis_store.RedisStore` drives it: its loads queue the stream
read (:meth:`RedisRankSync.queue_read`) in their round trip, and its commits queue the metric
writes (:meth:`RedisRankSync.queue_commit`) in their transaction. Each partition's metrics and
log live under its hash tag (issue 17): a commit writes its own partition's, and every worker
reads every partition's log (one ``XREAD`` per partition, in the same round trip), so no
single stream is a write hot spot on a cluster.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from segmentflow.engine.state import CustomerState, T
from segmentflow.segmenters.rfm import Metrics, RankIndex, Scores, given_scores
from segmentflow.state.client import RedisClient
from segmentflow.state.keys import Keys
from segmentflow.state.ranks import RankSync

#: how long ``rfm:log`` keeps an entry (ms of Redis server time)
RANK_LOG_RETENTION_MS = 600_000
log = logging.getLogger("segmentflow.store")


class RedisRankSync(RankSync):
    """A worker's view of the population's RFM metrics in Redis.

    Parameters
    ----------
    client
        The Redis client (the state store's: reads and writes join its pipelines).
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
        self.ranks: RankIndex | None = None
        #: home partition of the customers whose metrics were read (the store's shards)
        self.homes: dict[str, int] = {}
        self._log_ids: dict[int, str] = {p: "0-0" for p in partitions}
        self._read_at = 0.0
        self._corrupt = 0

    @property
    def corrupt_metrics(self) -> int:
        return self._corrupt

    def attach(self, ranks: RankIndex) -> None:
        pipe = self.client.pipeline(transaction=False)
        for p in self.partitions:
            pipe.xrevrange(self.keys.part(p).rfm_log, count=1)
        for p, last in zip(self.partitions, pipe.execute(), strict=True):
            self._log_ids[p] = last[0][0].decode() if last else "0-0"
        reload = len(ranks) > 0
        stored: set[str] = set()
        ids: list[str] = []
        metrics: list[Metrics] = []
        given: list[Scores | None] = []
        homes = self.homes
        for p in self.partitions:
            for cid, packed in self.client.hscan_iter(self.keys.part(p).rfm, count=10_000):
                customer = cid.decode("utf-8", "replace")
                if reload:
                    stored.add(customer)
                try:
                    values, home, scores = unpack_entry(packed)
                except Exception as exc:
                    self._unreadable(cid, exc)
                    continue
                homes[customer] = p if home is None else home
                if values is None:  # a deletion marker
                    ranks.update(customer, None)
                    continue
                ids.append(customer)
                metrics.append(values)
                given.append(scores)
        if reload:
            for gone in [cid for cid in ranks.customers() if cid not in stored]:
                ranks.update(gone, None)
        ranks.load(ids, metrics, given)  # in bulk at start (one by one on a reload)
        self.ranks = ranks
        self._read_at = time.monotonic()

    def queue_read(self, pipe: Any) -> int:
        """Queue the reads of the updates logged since the last one on ``pipe`` (one per
        partition); how many were queued (none while no index is attached). A worker that has
        not read for half the log's retention reloads from the hashes first (entries may have
        been trimmed)."""
        if self.ranks is None:
            return 0
        if time.monotonic() - self._read_at > RANK_LOG_RETENTION_MS / 2000:
            self.attach(self.ranks)
        for p in self.partitions:
            pipe.xread({self.keys.part(p).rfm_log: self._log_ids[p]}, count=1_000_000)
        return len(self.partitions)

    def apply_read(self, replies: Sequence[Any]) -> None:
        """Apply the replies of the reads :meth:`queue_read` queued."""
        assert self.ranks is not None
        for p, reply in zip(self.partitions, replies, strict=True):
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self._log_ids[p] = entry_id.decode()
                    for cid, packed in fields.items():
                        self._update(self.ranks, cid, packed)
        self._read_at = time.monotonic()

    def queue_commit(self, pipe: Any, home: int, states: Mapping[str, CustomerState]) -> None:
        """Queue the metric writes of committed ``states`` homed in partition ``home`` (while
        an index is attached)."""
        if self.ranks is None:
            return
        packed = {cid: pack_metrics(s) for cid, s in states.items() if s.last_order is not None}
        if packed:
            part = self.keys.part(home)
            pipe.hset(part.rfm, mapping=packed)
            pipe.xadd(part.rfm_log, packed, **self.log_trim(home))

    def queue_forget(self, pipe: Any, home: int, customer_id: str) -> None:
        """Queue the removal of a customer's metrics (every worker's index drops it)."""
        part = self.keys.part(home)
        pipe.hdel(part.rfm, customer_id)
        pipe.xadd(part.rfm_log, {customer_id: b""}, **self.log_trim(home))

    def stored(self, homes: Mapping[str, int]) -> dict[str, bytes]:
        """The stored entries of customers (id -> home), one round trip."""
        by_home: dict[int, list[str]] = {}
        for cid, home in homes.items():
            by_home.setdefault(home, []).append(cid)
        pipe = self.client.pipeline(transaction=False)
        for home, ids in by_home.items():
            pipe.hmget(self.keys.part(home).rfm, ids)
        out: dict[str, bytes] = {}
        for ids, values in zip(by_home.values(), pipe.execute(), strict=True):
            out.update({cid: v for cid, v in zip(ids, values, strict=True) if v is not None})
        return out

    def _unreadable(self, cid: bytes, exc: Exception) -> None:
        """Count and log an entry that cannot be read: it is skipped (the customer's next
        commit rewrites it from its state)."""
        self._corrupt += 1
        log.error("RFM metrics of %r unreadable (%s): skipped", cid[:64], exc)

    def _update(self, ranks: RankIndex, cid: bytes, packed: bytes) -> None:
        """Apply one packed entry: the metrics, the home, and the scores last given where it
        has them."""
        try:
            metrics, home, given = unpack_entry(packed)
        except Exception as exc:
            self._unreadable(cid, exc)
            return
        customer = cid.decode("utf-8", "replace")
        if home is not None:
            self.homes[customer] = home
        ranks.update(customer, metrics)
        if given is not None:
            ranks.record(customer, given)

    def log_trim(self, home: int) -> dict[str, Any]:
        """Trim a partition's log to about :data:`RANK_LOG_RETENTION_MS` before the newest
        entry this worker read from it (server time), so customer ids and metrics do not linger
        in it (issue 12: erasure); a worker that has not read it for half that long reloads
        from the hashes."""
        newest_ms = int(self._log_ids.get(home, "0-0").split("-", 1)[0])
        if not newest_ms:
            return {"maxlen": 1_000_000, "approximate": True}
        return {"minid": newest_ms - RANK_LOG_RETENTION_MS, "approximate": True}


#: the stored code ``100 r + 10 f + m`` of every valid score triple
_GIVEN: dict[int, Scores] = {
    100 * r + 10 * f + m: (r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)
}


def pack_metrics(state: CustomerState) -> bytes:
    """A customer's RFM metrics, home and (once it has them) the scores it was last given, as
    stored in ``ns:rfm`` (JSON array; the scores as one number ``100 r + 10 f + m``)."""
    revenue = state.totals[T["revenue"]]
    if not math.isfinite(revenue):  # JSON would store null: refuse rather than poison readers
        raise ValueError(f"customer {state.customer_id[:64]!r}: revenue is not finite")
    packed = [state.last_order, int(state.totals[T["orders"]]), revenue, state.home]
    given = given_scores(state)
    if given is not None:
        r, f, m = given
        packed.append(100 * r + 10 * f + m)
    return orjson.dumps(packed)


def unpack_entry(packed: bytes) -> tuple[Metrics | None, int | None, Scores | None]:
    """The metrics in ``packed`` (``None`` for the empty deletion marker), the customer's home
    partition (``None`` in entries written before homes) and the scores last given (``None``
    in entries written before scores were stored, or before the first); raises for bytes that
    are no metrics (e.g. a null written by an older version).

    Examples
    --------
    >>> unpack_entry(b"[1700000000000000, 2, 30.5, 3, 425]")
    ((1700000000000000, 2, 30.5), 3, (4, 2, 5))
    >>> unpack_entry(b"[1700000000000000, 2, 30.5, null, 425]")
    ((1700000000000000, 2, 30.5), None, (4, 2, 5))
    >>> unpack_entry(b"[1700000000000000, 2, 30.5, 3]")
    ((1700000000000000, 2, 30.5), 3, None)
    >>> unpack_entry(b"")
    (None, None, None)
    """
    if not packed:
        return None, None, None
    values = orjson.loads(packed)
    last, orders, revenue = values[:3]
    metrics = (int(last), int(orders), float(revenue))
    if not math.isfinite(metrics[2]):
        raise ValueError("revenue is not finite")
    size = len(values)
    home = values[3] if size > 3 and isinstance(values[3], int) else None
    # an unknown code gives no scores (the next sweep re-scores the customer)
    given = _GIVEN.get(values[4]) if size > 4 and isinstance(values[4], int) else None
    return metrics, home, given


def unpack_metrics(packed: bytes) -> tuple[Metrics | None, int | None]:
    """The metrics and home in ``packed`` (see :func:`unpack_entry`).

    Examples
    --------
    >>> unpack_metrics(b"[1700000000000000, 2, 30.5, 3]")
    ((1700000000000000, 2, 30.5), 3)
    >>> unpack_metrics(b"")
    (None, None)
    """
    metrics, home, _ = unpack_entry(packed)
    return metrics, home
