"""In-memory state store (replay, backtests, unit tests)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.state.base import StateStore, population_deltas
from segmentflow.state.members import MemberIndex


class MemoryStore(StateStore):
    """Keeps state objects in a dict and the due index in a heap (stale entries skipped).

    States are stored by reference: what the engine mutates is what the store holds, which is
    what makes replay fast. ``copy=True`` stores encoded copies instead (to mimic Redis).
    """

    def __init__(self, copy: bool = False) -> None:
        self._copy = copy
        self._states: dict[str, CustomerState | bytes] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._populations: dict[tuple[str, str], int] = {}
        self._meta: dict[str, int] = {}
        self.members = MemberIndex()  # who is in each segment (state/members.py)

    def get_meta(self, key: str) -> int | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: int) -> None:
        self._meta[key] = value

    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        out = {}
        for cid in customer_ids:
            stored = self._states.get(cid)
            if stored is not None:
                out[cid] = CustomerState.decode(stored) if isinstance(stored, bytes) else stored
        return out

    def commit(self, states: Mapping[str, CustomerState], changes: Sequence[Change]) -> None:
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
