"""The walk that re-evaluates every stored customer after a config change (CONTRACT §6).

:class:`ConfigWalk` compares the running configuration's fingerprints with those the store
recorded (per owned shard, so each worker re-evaluates the customers it owns, whenever it comes
to own them), then :meth:`ConfigWalk.step` takes one bounded page of customer ids
(:meth:`StateStore.scan_ids`), re-evaluates them (:func:`~segmentflow.service.reevaluate.
reevaluate`) and commits states and changes through the normal commit (outbox, populations,
members index in one transaction). The page cursor is persisted after each page, so a crash
resumes there; a page done twice changes nothing. At the end of the walk the new fingerprints
are recorded. The worker calls :meth:`step` under its lock between batches, so the stream goes
on. Meta keys: ``config:<scope>:<key>`` with scope ``all`` (no shard assignment) or ``s<n>``.
A shard without recorded fingerprints (a new store, or one written before they existed) is
taken to follow the running configuration: its fingerprints are recorded, nobody is walked.
A cursor is resumed only by a walk for the same configuration (``target``); a walk for another
one (a SIGHUP reload during a walk) starts again and, since the shard's state then mixes
configurations, re-evaluates every dimension and rule (``full``, until that walk ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.service.processor import Processor
from segmentflow.service.reevaluate import ConfigDiff, diff, fingerprints, overall, reevaluate

CURSOR = "cursor"
#: the fingerprint of the configuration the scope's cursor walks for (a cursor of another
#: walk, e.g. one a reload interrupted, is not resumed: its customers before it were not
#: evaluated for this configuration)
TARGET = "target"
#: 1 while the scope's walk re-evaluates every dimension and rule: a walk for another
#: configuration was interrupted (a reload during a walk), so the state mixes configurations
FULL = "full"
#: customers re-evaluated in the scope's current (or last) walk, for ``segmentflow segments``
DONE = "done"
#: 1 while the scope's state follows an older configuration
PENDING = "pending"
ALL = "all"


@dataclass(slots=True)
class WalkProgress:
    """What ``segments`` and ``/metrics`` show of a re-evaluation."""

    running: bool = False
    #: customers re-evaluated (in owned shards) since the walk started
    customers: int = 0
    #: changes the walk emitted
    changes: int = 0
    #: owned shards whose state still follows an older configuration
    pending_shards: int = 0


class ConfigWalk:
    """Re-evaluate the stored customers of a processor's store for its configuration.

    Parameters
    ----------
    processor
        The worker's processor (its engine holds the running configuration).
    batch
        Customer ids per :meth:`step` (bounds the time the worker lock is held).
    progress
        The previous walk's progress (a reload): its counts go on (``/metrics`` counters).

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> from segmentflow.state.memory import MemoryStore
    >>> walk = ConfigWalk(Processor(config_from_dict({}), MemoryStore()))
    >>> walk.step(0), walk.progress.running
    ([], False)
    """

    def __init__(
        self, processor: Processor, batch: int = 500, progress: WalkProgress | None = None
    ) -> None:
        self.processor = processor
        self.batch = batch
        #: the clock the worker paces its pages by (a fake one in tests)
        self.clock: Callable[[], float] = time.monotonic
        self.progress = WalkProgress()
        if progress is not None:
            self.progress.customers, self.progress.changes = progress.customers, progress.changes
        self._prints = fingerprints(processor.engine)
        self._target = overall(self._prints)
        self._planned_for: object = ()
        self._pending: dict[str, ConfigDiff] = {}
        self._cursor = 0
        self._done: dict[str, int] = {}

    def _scopes(self) -> list[str]:
        owned = self.processor.store.owned_partitions
        return [ALL] if owned is None else [f"s{shard}" for shard in sorted(owned)]

    def _key(self, scope: str, key: str) -> str:
        return f"config:{scope}:{key}"

    def plan(self) -> None:
        """Find the owned shards whose state follows another configuration (a few meta reads;
        again whenever the owned shards change)."""
        store = self.processor.store
        engine = self.processor.engine
        self._planned_for = store.owned_partitions
        self._pending = {}
        for scope in self._scopes():
            stored_all = store.get_meta(self._key(scope, ALL))
            if stored_all is None:  # a new store, or one from before fingerprints: adopt
                self._record(scope)
                continue
            target = store.get_meta(self._key(scope, TARGET))
            mixed = store.get_meta(self._key(scope, PENDING)) and target != self._target
            if mixed or store.get_meta(self._key(scope, FULL)):
                store.set_meta(self._key(scope, FULL), 1)
                self._pending[scope] = diff({}, None, engine)
                continue
            stored = {k: store.get_meta(self._key(scope, k)) for k in self._prints}
            change = diff(stored, stored_all, engine)
            if change.changed:
                self._pending[scope] = change
        cursors = {
            store.get_meta(self._key(s, CURSOR)) or 0
            if store.get_meta(self._key(s, TARGET)) == self._target
            else 0
            for s in self._pending
        }
        self._cursor = cursors.pop() if len(cursors) == 1 else 0  # else: start again (idempotent)
        self._done = {s: store.get_meta(self._key(s, DONE)) or 0 for s in self._pending}
        for scope in self._pending:
            store.set_meta(self._key(scope, PENDING), 1)
            store.set_meta(self._key(scope, TARGET), self._target)
            store.set_meta(self._key(scope, CURSOR), self._cursor)
            if not self._cursor:
                self._done[scope] = 0
        self.progress.pending_shards = len(self._pending)
        self.progress.running = bool(self._pending)

    def ensure_planned(self) -> None:
        """:meth:`plan` unless planned for the shards owned now (cheap when it was): before
        events are applied under this configuration, so a shard without fingerprints records
        the one they follow."""
        if self._planned_for != self.processor.store.owned_partitions:
            self.plan()

    @property
    def done(self) -> bool:
        """Whether every owned shard follows the running configuration."""
        self.ensure_planned()
        return not self._pending

    def step(self, watermark: int) -> list[Change]:
        """Re-evaluate one page of customers at ``watermark`` and commit; the changes (already
        in the outbox when the store has one). ``[]`` once :attr:`done`."""
        if self.done:
            return []
        store = self.processor.store
        after, ids = store.scan_ids(self._cursor, self.batch)
        scope_of: dict[str, str] = {}
        for cid in ids:
            scope = ALL if store.owned_partitions is None else f"s{store.shard_of(cid)}"
            if scope in self._pending:
                scope_of[cid] = scope
        states = store.load_many(scope_of)
        states = {c: s for c, s in states.items() if not store.is_quarantined(c)}
        groups: dict[ConfigDiff, list[CustomerState]] = {}
        for cid, state in states.items():
            groups.setdefault(self._pending[scope_of[cid]], []).append(state)
            self._done[scope_of[cid]] += 1
        changes: list[Change] = []
        for change, group in groups.items():
            changes.extend(reevaluate(self.processor.engine, change, group, watermark))
        if states:
            self.processor.store.commit(states, changes)
            self.processor._count(changes)
        self.progress.customers += len(states)
        self.progress.changes += len(changes)
        self._cursor = after
        for scope in self._pending:
            store.set_meta(self._key(scope, CURSOR), after)
            store.set_meta(self._key(scope, DONE), self._done[scope])
        if after == 0:
            self._finish()
        return changes

    def _record(self, scope: str) -> None:
        store = self.processor.store
        for key, value in self._prints.items():
            store.set_meta(self._key(scope, key), value)
        store.set_meta(self._key(scope, ALL), self._target)
        store.set_meta(self._key(scope, PENDING), 0)
        store.set_meta(self._key(scope, FULL), 0)

    def _finish(self) -> None:
        for scope in self._pending:
            self._record(scope)
        self._pending = {}
        self.progress.pending_shards = 0
        self.progress.running = False


def status_from_meta(meta: Mapping[str, int]) -> dict[str, int | bool]:
    """The walk's progress over every worker from the store's meta fields (``segments``).

    Examples
    --------
    >>> status_from_meta({"config:s0:pending": 1, "config:s0:done": 40, "config:s1:pending": 0,
    ...                   "config:s1:done": 99, "rfm_swept": 5})
    {'running': True, 'pending_shards': 1, 'customers': 40}
    """
    scopes = {k.split(":")[1] for k in meta if k.startswith("config:") and k.count(":") == 2}
    pending = [s for s in sorted(scopes) if meta.get(f"config:{s}:{PENDING}")]
    customers = sum(meta.get(f"config:{s}:{DONE}", 0) for s in pending)
    return {"running": bool(pending), "pending_shards": len(pending), "customers": customers}
