"""In-memory backends: the state store (replay, backtests, unit tests) and the persona model
store (one process, no Redis)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.state.base import StateStore, population_deltas
from segmentflow.state.members import MemberIndex
from segmentflow.state.personas import PersonaModelStore


class MemoryStore(StateStore):
    """Keeps state objects in a dict and the due index in a heap (stale entries skipped).

    States are stored by reference: what the engine mutates is what the store holds, which is
    what makes replay fast. ``copy=True`` stores encoded copies instead (to mimic Redis).
    ``outbox=True`` also keeps every committed change (encoded as on the wire) until
    :meth:`outbox_done` (one shard: 0), as the worker's Redis store does.

    Examples
    --------
    >>> from segmentflow.engine.state import CustomerState
    >>> store = MemoryStore(outbox=True)
    >>> store.commit({"c-1": CustomerState("c-1")}, [])
    >>> store.customer_count(), store.outbox_pending()
    (1, [])
    """

    def __init__(self, copy: bool = False, outbox: bool = False) -> None:
        self._copy = copy
        self._outbox: list[bytes] | None = [] if outbox else None
        self._partitions: dict[str, dict[str, Any]] = {}
        self._states: dict[str, CustomerState | bytes] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._populations: dict[tuple[str, str], int] = {}
        self._meta: dict[str, int] = {}
        self.members = MemberIndex()  # who is in each segment (state/members.py)
        #: merged-away id -> the id it was merged into, and the reverse (CONTRACT §3 Identity)
        self._alias: dict[str, str] = {}
        self._aliased: dict[str, set[str]] = {}
        #: survivor -> (merge id, merged-away id) -> encoded state handed over
        self._handovers: dict[str, dict[tuple[str, str], bytes]] = {}

    def get_meta(self, key: str) -> int | None:
        return self._meta.get(key)

    def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        ids = sorted(self._states)[cursor : cursor + count]  # O(n log n) a page: tests, replay
        after = cursor + len(ids)
        return (0 if len(ids) < count else after), ids

    def set_meta(self, key: str, value: int) -> None:
        self._meta[key] = value

    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        out = {}
        for cid in customer_ids:
            stored = self._states.get(cid)
            if stored is not None:
                out[cid] = CustomerState.decode(stored) if isinstance(stored, bytes) else stored
        return out

    def commit(
        self,
        states: Mapping[str, CustomerState],
        changes: Sequence[Change],
        aliases: Mapping[str, str] | None = None,
        handovers: Mapping[tuple[str, str, str], bytes | None] | None = None,
    ) -> None:
        for (survivor_id, merge_id, gone), raw in (handovers or {}).items():
            box = self._handovers.setdefault(survivor_id, {})
            if raw is None:
                box.pop((merge_id, gone), None)
            else:
                box[(merge_id, gone)] = raw
        for previous, survivor in (aliases or {}).items():
            self._unlink(previous)
            self._alias[previous] = survivor
            self._aliased.setdefault(survivor, set()).add(previous)
        for cid, state in states.items():
            self._states[cid] = state.encode() if self._copy else state
            due = state.next_due
            if due is None:
                self._due.pop(cid, None)
            elif self._due.get(cid) != due:
                self._due[cid] = due
                heapq.heappush(self._heap, (due, cid))
        for key, delta in population_deltas(changes).items():
            self._populations[key] = self._populations.get(key, 0) + delta
        self.members.apply(changes)
        if self._outbox is not None:
            self._outbox.extend(change.to_json() for change in changes)

    def resolve_aliases(self, customer_ids: Iterable[str]) -> dict[str, str]:
        if not self._alias:
            return {}
        out: dict[str, str] = {}
        for cid in customer_ids:
            target, hops = self._alias.get(cid), 0
            while target is not None and target in self._alias and hops < 64:
                target, hops = self._alias[target], hops + 1
            if target is not None:
                out[cid] = target
        return out

    def handovers(self, survivor: str, merge_id: str) -> dict[str, CustomerState]:
        box = self._handovers.get(survivor, {})
        return {g: CustomerState.decode(raw) for (m, g), raw in box.items() if m == merge_id}

    def _unlink(self, previous: str) -> None:
        old = self._alias.pop(previous, None)
        if old is not None:
            self._aliased.get(old, set()).discard(previous)

    def erase(self, customer_id: str, tomb: CustomerState, changes: Sequence[Change]) -> None:
        self.commit({customer_id: tomb}, changes)
        self._handovers.pop(customer_id, None)
        self._unlink(customer_id)
        pending = [customer_id]
        while pending:  # every alias resolving to it (a chain points through others)
            for previous in self._aliased.pop(pending.pop(), set()):
                self._alias.pop(previous, None)
                pending.append(previous)

    @property
    def has_outbox(self) -> bool:
        return self._outbox is not None

    def outbox_pending(self) -> list[tuple[int, list[bytes]]]:
        return [(0, list(self._outbox))] if self._outbox else []

    def outbox_done(self, published: Mapping[int, int]) -> None:
        if self._outbox is not None:
            del self._outbox[: published.get(0, 0)]

    def partition_records(self, sources: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {s: dict(self._partitions[s]) for s in sources if s in self._partitions}

    def save_partition_records(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        self._partitions.update({k: dict(v) for k, v in records.items()})

    def due(self, upto: int, limit: int) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        heap = self._heap
        while heap and len(out) < limit:
            due, cid = heap[0]
            if due > upto:
                break
            heapq.heappop(heap)
            if self._due.get(cid) == due and cid not in seen:
                seen.add(cid)
                out.append(cid)
        for cid in out:  # still due until committed with a new moment
            heapq.heappush(heap, (self._due[cid], cid))
        return out

    def next_due(self) -> int | None:
        """The earliest due moment of any customer (for replay's fast path)."""
        while self._heap:
            due, cid = self._heap[0]
            if self._due.get(cid) == due:
                return due
            heapq.heappop(self._heap)
        return None

    def populations(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (dim, value), count in sorted(self._populations.items()):
            if count:
                out.setdefault(dim, {})[value] = count
        return out

    def delete(self, customer_id: str) -> CustomerState | None:
        state = self.load_many([customer_id]).get(customer_id)
        self._states.pop(customer_id, None)
        self._due.pop(customer_id, None)
        return state

    def customer_count(self) -> int:
        return len(self._states)


class MemoryPersonaStore(PersonaModelStore):
    """Persona samples and model versions in this process (unit tests, one-process tools).

    Examples
    --------
    >>> store = MemoryPersonaStore()
    >>> store.push_samples([{"x": 1.0}, {"x": 2.0}], cap=1)
    >>> store.take_samples(5)
    [{'x': 2.0}]
    >>> store.save_model(b"model", 1)
    >>> store.model_version(), store.load_model()
    (1, b'model')
    """

    def __init__(self) -> None:
        self._samples: list[dict[str, float]] = []
        self._model: tuple[bytes, int] | None = None

    def push_samples(self, vectors: Sequence[Mapping[str, float]], cap: int = 50_000) -> None:
        self._samples.extend(dict(v) for v in vectors)
        del self._samples[: max(0, len(self._samples) - cap)]

    def take_samples(self, count: int) -> list[dict[str, float]]:
        taken, self._samples = self._samples[:count], self._samples[count:]
        return taken

    def save_model(self, data: bytes, version: int) -> None:
        self._model = (data, version)

    def model_version(self) -> int:
        return 0 if self._model is None else self._model[1]

    def load_model(self) -> bytes | None:
        return None if self._model is None else self._model[0]
