"""The segmentation engine: apply one event or advance the clock for one customer. No I/O.

The engine knows no dimension: it runs the registry's (``segmentflow.segmenters.registry``,
``docs/dimensions.md``) in order. For an event at ``ts`` (CONTRACT §3, §6):

1. fire the customer's time-driven changes due at or before ``ts`` (each due moment in order;
   at one moment every dimension's ``on_due`` in registry order, so lifecycle first);
2. apply the event to the core state (counters, windows, traits, flags) and ``observe`` it in
   each dimension;
3. ``evaluate`` each dimension (lifecycle, rfm, persona, custom ones, then rule segments).

A late event (older than the customer's clock) is applied to the state, but its changes are
stamped with the customer's clock so change times never go backwards.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from segmentflow.config import SegmentConfig
from segmentflow.engine.state import (
    COUNTED,
    FLAG_COMPLAINED,
    FLAG_HARD_BOUNCED,
    FLAG_UNSUBSCRIBED,
    CustomerState,
    T,
    W,
    event_id_hash,
)
from segmentflow.schemas.changes import Change, make_change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import Dimension, Getter, Moment, PopulationWork
from segmentflow.segmenters.persona import MAX_SAMPLES, Persona, PersonaModel
from segmentflow.segmenters.registry import build_dimensions
from segmentflow.segmenters.rfm import RankIndex, Rfm, Scores
from segmentflow.segmenters.rules import CompiledRule, Rules

DAY_US = 86_400_000_000
_MONEY_TYPES = ("order_completed", "order_refunded")
LIFECYCLE = "lifecycle"
RFM = "rfm"
PERSONA = "persona"
__all__ = ["LIFECYCLE", "MAX_SAMPLES", "PERSONA", "RFM", "Engine", "Outcome"]
D = TypeVar("D", bound=Dimension)
_FLAGS = {
    "email_unsubscribed": FLAG_UNSUBSCRIBED,
    "email_complained": FLAG_COMPLAINED,
}


def _overrides(dim: Dimension, hook: str) -> bool:
    return getattr(type(dim), hook) is not getattr(Dimension, hook)


@dataclass(slots=True)
class Outcome:
    """The result of applying one event."""

    status: Literal["applied", "duplicate"]
    changes: list[Change] = field(default_factory=list)
    late: bool = False


class Engine:
    """Pure per-customer segmentation logic, shared by the worker, ``replay`` and backtests.

    Parameters
    ----------
    config
        The segmentation config (CONTRACT §6).
    ranks
        The population's RFM metrics (shared by every customer); a fresh one by default.

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> engine = Engine(config_from_dict({"persona": {"enabled": False}}))
    >>> [d.kind for d in engine.registry], engine.dimensions
    (['lifecycle', 'rfm', 'persona', 'rules'], ['lifecycle', 'rfm'])
    """

    def __init__(self, config: SegmentConfig, ranks: RankIndex | None = None) -> None:
        self.config = config
        #: every dimension, in the order the engine runs them
        self.registry: list[Dimension] = build_dimensions(config)
        self._kinds = {dim.kind: dim for dim in self.registry}
        self._rfm = self.dimension(Rfm)
        if ranks is not None:
            self._rfm.ranks = ranks
        self._persona = self.dimension(Persona)
        self._rules = self.dimension(Rules)
        self._observers = [d for d in self.registry if _overrides(d, "observe")]
        self._timed = [
            d for d in self.registry if _overrides(d, "next_due") or _overrides(d, "on_due")
        ]
        #: population-wide dimensions (sweeps), in registry order
        self.populations: list[PopulationWork] = [
            d for d in self.registry if isinstance(d, PopulationWork)
        ]
        self._horizon = config.dedup_horizon_us
        self._sweep_moment: Moment | None = None  # the latest sweep's (a Moment is immutable)

    def dimension(self, kind: type[D]) -> D:
        """The engine's dimension of class ``kind`` (``KeyError`` if it has none)."""
        dim = self._kinds[kind.kind]
        assert isinstance(dim, kind)
        return dim

    def by_kind(self, kind: str) -> Dimension:
        """The engine's dimension registered as ``kind`` (``KeyError`` if it has none)."""
        return self._kinds[kind]

    # -- the stream adapters' view (kept from before the registry) ----------------------------

    @property
    def dimensions(self) -> list[str]:
        """Every dimension this engine emits."""
        return [name for dim in self.registry for name in dim.names()]

    @property
    def ranks(self) -> RankIndex:
        """The population's RFM metrics."""
        return self._rfm.ranks

    @ranks.setter
    def ranks(self, ranks: RankIndex) -> None:
        self._rfm.ranks = ranks

    @property
    def persona(self) -> PersonaModel | None:
        """The persona model (``None`` when disabled); a worker swaps in trained ones."""
        return self._persona.model

    @persona.setter
    def persona(self, model: PersonaModel | None) -> None:
        self._persona.model = model

    @property
    def train_inline(self) -> bool:
        """Train personas in-process (replay) or only collect samples (worker)."""
        return self._persona.train_inline

    @train_inline.setter
    def train_inline(self, value: bool) -> None:
        self._persona.train_inline = value

    @property
    def persona_samples(self) -> list[dict[str, float]]:
        """Feature vectors collected for a separate persona trainer."""
        return self._persona.samples

    @persona_samples.setter
    def persona_samples(self, samples: list[dict[str, float]]) -> None:
        self._persona.samples = samples

    @property
    def rules(self) -> list[CompiledRule]:
        """The compiled rule segments."""
        return self._rules.compiled

    @property
    def rule_errors(self) -> Counter[str]:
        """Rule evaluation errors per rule name (counted, the rule counts as false)."""
        return self._rules.errors

    @property
    def getters(self) -> dict[str, Getter]:
        """Every CEL variable: the core §6 ones and the dimensions'."""
        return dict(self._rules.getters)

    # -- public API ---------------------------------------------------------------------------

    def new_state(self, customer_id: str) -> CustomerState:
        """A blank state for a customer never seen before."""
        return CustomerState(customer_id)

    def apply(self, state: CustomerState, event: Event) -> Outcome:
        """Apply ``event`` to ``state`` (mutated in place) and return the changes it causes."""
        id_hash = event_id_hash(event.event_id)
        if self.seen(state, id_hash):
            return Outcome("duplicate")
        if event.amount and event.type in _MONEY_TYPES:  # refused before any state is touched
            sign = 1 if event.type == "order_completed" else -1
            if not math.isfinite(state.totals[T["revenue"]] + sign * event.amount):
                raise ValueError("the revenue total would overflow (check max_money)")
        changes = self.advance(state, event.ts) if state.clock is not None else []
        late = state.clock is not None and event.ts < state.clock
        t = event.ts if state.clock is None else max(event.ts, state.clock)
        self._record(state, event, t, id_hash)
        for dim in self._observers:
            dim.observe(state, event, t)
        at = Moment(t, event.event_id, event)
        emit = self.emit
        for dim in self.registry:
            changes.extend(dim.evaluate(state, at, emit))
        state.clock = t
        state.prune(t // DAY_US)
        state.next_due = self._next_due(state)
        return Outcome("applied", changes, late)

    def advance(self, state: CustomerState, now: int) -> list[Change]:
        """Fire every time-driven change of ``state`` due at or before ``now``, in due order."""
        changes: list[Change] = []
        if state.clock is None:
            return changes
        emit = self.emit
        while state.next_due is not None and state.next_due <= now:
            t = state.next_due
            state.clock = t
            at = Moment(t)
            for dim in self._timed:
                changes.extend(dim.on_due(state, at, emit))
            state.next_due = self._next_due(state)
        return changes

    def sweep_change(self, state: CustomerState, at: int, scores: Scores) -> list[Change]:
        """Apply scores from a population sweep at ``at``: a time-caused ``rfm`` change when
        the segment differs (stamped no earlier than the customer's clock)."""
        return self.sweep_apply(self._rfm, state, at, scores)

    def sweep_apply(
        self, dim: PopulationWork, state: CustomerState, at: int, payload: Any
    ) -> list[Change]:
        """Apply one customer's payload of ``dim``'s population sweep at ``at`` (stamped no
        earlier than the customer's clock)."""
        when = at if state.clock is None or at >= state.clock else state.clock
        moment = self._sweep_moment
        if moment is None or moment.t != when:  # one per sweep, unless a clock is ahead
            moment = self._sweep_moment = Moment(when)
        return dim.on_sweep(state, moment, payload, self.emit)

    def seen(self, state: CustomerState, id_hash: int) -> bool:
        """Whether an event with this id hash was applied at an event time within
        ``dedup_horizon`` of the customer's latest applied event (CONTRACT §2: exact)."""
        ts = state.recent.get(id_hash)
        return ts is not None and state.last_seen is not None and ts >= self.horizon_floor(state)

    def horizon_floor(self, state: CustomerState) -> int:
        """Event times at or after this are within the dedup horizon (ids kept exactly)."""
        return (state.last_seen or 0) - self._horizon

    def beyond_horizon(self, state: CustomerState, ts: int) -> bool:
        """Whether an event at ``ts`` is too old for the exact id set to decide (its id may
        have been pruned): only then may a source offset mark it as a redelivery."""
        return state.last_seen is not None and ts < self.horizon_floor(state)

    # -- internals ----------------------------------------------------------------------------

    def _remember(self, state: CustomerState, id_hash: int, ts: int) -> None:
        """Keep the id with its event time; drop ids older than the horizon. Pruning is
        amortised (a rebuild only when the oldest-applied entry is an eighth of a horizon past
        it), so every kept time is within ``17/8`` horizons of ``last_seen``; :meth:`seen`
        checks the time, so lingering entries change nothing."""
        recent = state.recent
        recent.pop(id_hash, None)  # an id re-applied beyond the horizon moves to the end
        floor = self.horizon_floor(state)
        if ts >= floor:  # an older one could never match again (``last_seen`` only grows)
            recent[id_hash] = ts
        if not recent:
            return
        oldest = next(iter(recent.values()))
        if oldest < floor - self._horizon // 8:
            state.recent = {h: t for h, t in recent.items() if t >= floor}

    def _next_due(self, state: CustomerState) -> int | None:
        clock = state.clock
        assert clock is not None
        due: int | None = None
        for dim in self._timed:
            moment = dim.next_due(state, clock)
            if moment is not None and (due is None or moment < due):
                due = moment
        return due

    def _record(self, state: CustomerState, event: Event, t: int, id_hash: int) -> None:
        ts = event.ts
        state.first_seen = ts if state.first_seen is None else min(state.first_seen, ts)
        state.last_seen = ts if state.last_seen is None else max(state.last_seen, ts)
        self._remember(state, id_hash, ts)
        kind = event.type
        metric = COUNTED.get(kind)
        if metric is not None:
            state.totals[T[metric]] += 1
        if kind == "order_completed":
            state.totals[T["revenue"]] += event.amount
        elif kind == "order_refunded":
            state.totals[T["revenue"]] -= event.amount
        elif kind == "identify" and event.traits is not None:
            for key, value in event.traits.items():
                if value is None:
                    state.traits.pop(key, None)
                else:
                    state.traits[key] = value
        elif kind in _FLAGS:
            state.flags |= _FLAGS[kind]
        elif kind == "email_bounced" and event.hard_bounce:
            state.flags |= FLAG_HARD_BOUNCED
        self._record_day(state, event, metric)

    @staticmethod
    def _record_day(state: CustomerState, event: Event, metric: str | None) -> None:
        windowed = metric if metric in W else None
        money = event.type in ("order_completed", "order_refunded")
        if windowed is None and not money:
            return
        day = event.ts // DAY_US
        bucket = state.days.get(day)
        if bucket is None:
            bucket = state.days[day] = [0] * len(W)
        if windowed is not None:
            bucket[W[windowed]] += 1
        if event.type == "order_completed":
            bucket[W["revenue"]] += event.amount
        elif event.type == "order_refunded":
            bucket[W["revenue"]] -= event.amount

    @staticmethod
    def emit(
        state: CustomerState,
        dimension: str,
        value: str,
        at: Moment,
        reason: dict[str, Any],
        previous: str | None = None,
    ) -> Change:
        """The change factory handed to the dimensions (``Emit``): numbers the change, records
        the value, stamps it ``at``."""
        if previous is None:
            previous = state.values.get(dimension)
        sequence = state.seqs.get(dimension, 0) + 1
        state.seqs[dimension] = sequence
        state.values[dimension] = value
        return make_change(
            state.customer_id, dimension, previous, value, sequence, at.t, at.event_id, reason
        )
