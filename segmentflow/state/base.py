"""The state-store interface: per-customer state, the due index, segment populations and
the transactional outbox.

Backends: :class:`~segmentflow.state.memory.MemoryStore` (replay, unit tests) and
:class:`~segmentflow.state.redis_store.RedisStore` (the worker); the bootstrap
(:mod:`segmentflow.bootstrap`) picks one. A store only moves data; the engine decides what the
data means. This module imports only the domain's data (``engine.state``, ``schemas``), never
the engine or the service layer (PLAN.md "Layout").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change


class StoreUnavailable(RuntimeError):
    """The store's backend cannot be reached or read (e.g. Redis is down); the message is the
    backend's reason. Readers above the store layer catch this, not the backend's errors."""


class StateQuarantined(RuntimeError):
    """Stored states that cannot be decoded; their customers' events are dead-lettered until an
    operator repairs or deletes the state (the store logged and counted each)."""

    def __init__(self, customer_ids: Sequence[str]) -> None:
        self.customer_ids = list(dict.fromkeys(customer_ids))
        shown = ", ".join(self.customer_ids[:3])
        super().__init__(
            f"stored state of {shown} cannot be decoded: quarantined (see the store's "
            "quarantine record; repair it or delete the customer with `segmentflow forget`)"
        )


class StateStore(ABC):
    """Per-customer state with an index of due moments, written atomically per commit.

    Partition ownership is explicit (like Quix Streams' ``Store``): a worker calls
    :meth:`assign_partitions` when its input partitions are assigned and
    :meth:`revoke_partitions` when a rebalance starts; before the first assignment the store
    owns every shard (tools, replay). Sharded stores fire and publish only for owned shards.
    """

    #: customers whose stored state could not be decoded so far (``/metrics``)
    corrupt_states: int = 0
    _owned: frozenset[int] | None = None

    @property
    def owned_partitions(self) -> frozenset[int] | None:
        """The shards (input partitions) owned now; ``None``: all (no assignment yet)."""
        return self._owned

    def assign_partitions(self, partitions: Iterable[int]) -> None:
        """Own exactly ``partitions`` from now on (an assignment)."""
        self._owned = frozenset(partitions)

    def revoke_partitions(self) -> None:
        """Own nothing until the next :meth:`assign_partitions` (a rebalance started)."""
        self._owned = frozenset()

    @property
    def atomic_commits(self) -> bool:
        """Whether one commit is one transaction whatever home partitions it touches (else
        one per home partition: Redis Cluster; the processor then merges profiles of two
        partitions by hand-over, each step in one partition)."""
        return True

    @property
    def has_outbox(self) -> bool:
        """Whether commits also append their changes to the outbox (:meth:`outbox_pending`)."""
        return False

    @abstractmethod
    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """The stored states of those customers that have one (one round trip)."""

    @abstractmethod
    def commit(
        self,
        states: Mapping[str, CustomerState],
        changes: Sequence[Change],
        aliases: Mapping[str, str] | None = None,
        handovers: Mapping[tuple[str, str, str], bytes | None] | None = None,
    ) -> None:
        """Atomically write ``states``, their due moments, the population deltas of
        ``changes``, ``aliases`` (merged-away id -> the id it was merged into; CONTRACT §3
        "Identity") and ``handovers`` ((survivor, merge id, merged-away id) -> the encoded
        state handed over to the survivor's owner, or ``None``: taken, delete it)."""

    def handovers(self, survivor: str, merge_id: str) -> dict[str, CustomerState]:
        """The states handed over to ``survivor`` by the merge ``merge_id`` and not taken yet
        (merged-away id -> state; notes/identity.md)."""
        return {}

    def load_resolved(
        self, customer_ids: Iterable[str]
    ) -> tuple[dict[str, CustomerState], dict[str, str]]:
        """The alias resolution of ``customer_ids`` (:meth:`resolve_aliases`) and the stored
        states of the ids they resolve to (an id without alias resolves to itself); the result
        may hold the merged-away ids' states too. Backends may share round trips."""
        ids = list(dict.fromkeys(customer_ids))
        resolved = self.resolve_aliases(ids)
        return self.load_many(dict.fromkeys(resolved.get(c, c) for c in ids)), resolved

    def resolve_aliases(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """For each of ``customer_ids`` that was merged away, the profile it counts for now:
        the end of its chain of aliases (merges chain: ``a -> b``, ``b -> c`` resolves ``a`` to
        ``c``). Ids never merged away are absent (one round trip per hop)."""
        return {}

    @abstractmethod
    def due(self, upto: int, limit: int) -> list[str]:
        """Up to ``limit`` customer ids whose next due moment is ``<= upto``, earliest first."""

    @abstractmethod
    def next_due(self) -> int | None:
        """The earliest due moment of any (owned) customer, or ``None``."""

    def drop_due(self, customer_ids: Sequence[str]) -> None:
        """Remove the due entries of customers that have no state (left by a state deleted
        outside segmentflow: due and never loadable, they would hold the clock there forever).
        Stores whose due index only commits write keep none (the default)."""
        return None

    @abstractmethod
    def populations(self) -> dict[str, dict[str, int]]:
        """Customers per value per dimension."""

    @abstractmethod
    def delete(self, customer_id: str) -> CustomerState | None:
        """Remove a customer's state (and due entry); return what was stored."""

    @abstractmethod
    def customer_count(self) -> int:
        """How many customers have state."""

    def claim_homes(self, wanted: Mapping[str, int]) -> dict[str, int]:
        """Claim home partitions for customers without state (customer -> the partition its
        event arrived on); return each one's home: the claimed one, or another worker's earlier
        claim (race-free across workers in shared stores; one round trip)."""
        return dict(wanted)

    def erase(self, customer_id: str, tomb: CustomerState, changes: Sequence[Change]) -> None:
        """Atomically replace a customer's state by its tombstone and commit its final
        ``changes`` (stores with RFM metrics drop them too; stores with an alias map drop the
        aliases from the id and every alias that resolves to it)."""
        self.commit({customer_id: tomb}, changes)

    def is_quarantined(self, customer_id: str) -> bool:
        """Whether the customer's stored state could not be decoded at the last load."""
        return False

    def owns(self, customer_id: str) -> bool:
        """Whether this process handles the customer (its shard is owned)."""
        return True

    @abstractmethod
    def get_meta(self, key: str) -> int | None:
        """A small persisted integer (e.g. the last RFM sweep moment)."""

    @abstractmethod
    def set_meta(self, key: str, value: int) -> None:
        """Persist a small integer."""

    def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """About ``count`` customer ids with state from ``cursor`` (start with 0) and the
        cursor of the next page (0: done). An id present throughout a walk is returned at
        least once; it may come twice, so a walk must be idempotent (config re-evaluation)."""
        raise NotImplementedError(f"{type(self).__name__} cannot walk its customers")

    def shard_of(self, customer_id: str) -> int:
        """The due-index/outbox shard of a customer (one shard unless the backend shards)."""
        return 0

    def outbox_pending(self) -> list[tuple[int, list[bytes]]]:
        """Change events committed but not yet marked published, per shard (oldest first).
        Stores without an outbox return nothing."""
        return []

    def outbox_done(self, published: Mapping[int, int]) -> None:  # noqa: B027 - optional hook
        """Mark the first ``n`` pending change events of each shard as published."""

    @abstractmethod
    def partition_records(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored incarnation record (``cluster``, ``epoch``, ``high``) of each input
        ``topic:partition`` in ``sources`` that has one."""

    @abstractmethod
    def save_partition_records(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Store incarnation records (the owner of each topic-partition writes its own)."""

    def get(self, customer_id: str) -> CustomerState | None:
        """One customer's state, or ``None``."""
        return self.load_many([customer_id]).get(customer_id)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def begin_batch(self, on_flush: Callable[[], None] | None = None) -> bool:
        """Open a batch session: commits may be held and written together at a flush
        (``on_flush`` is called after each one). ``False``: not supported, nothing held."""
        return False

    def flush_batch(self, over: int = 0) -> None:  # noqa: B027 - optional hook
        """Write what the open session holds (one transaction), if it holds at least
        ``over`` states and changes (``0``: always)."""

    def end_batch(self, ok: bool) -> None:  # noqa: B027 - optional hook
        """Close the session: flush it when ``ok``, else drop what it held and cached."""


def population_deltas(changes: Iterable[Change]) -> dict[tuple[str, str], int]:
    """(dimension, value) -> count delta implied by ``changes``.

    Rule segments count their members only: ``out`` is not a population.
    """
    deltas: dict[tuple[str, str], int] = {}
    for change in changes:
        if change.dimension.startswith("rule:"):
            delta = (change.current == "in") - (change.previous == "in")
            key = (change.dimension, "in")
            deltas[key] = deltas.get(key, 0) + delta
            continue
        if change.previous is not None:
            key = (change.dimension, change.previous)
            deltas[key] = deltas.get(key, 0) - 1
        if change.current is not None:
            key = (change.dimension, change.current)
            deltas[key] = deltas.get(key, 0) + 1
    return deltas
