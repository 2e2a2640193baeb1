"""The segmentation engine: apply one event or advance the clock for one customer. No I/O.

Order of work for an event at ``ts`` (CONTRACT §3, §6):

1. fire the customer's time-driven changes due at or before ``ts`` (lifecycle thresholds and
   midnight rule evaluations, in due order; lifecycle first at a shared instant);
2. apply the event to the state (counters, windows, traits, flags, orders);
3. re-evaluate the dimensions (lifecycle, then the other dimensions, then rule segments).

A late event (older than the customer's clock) is applied to the state, but its changes are
stamped with the customer's clock so change times never go backwards.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

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
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters import lifecycle
from segmentflow.segmenters.features import variables
from segmentflow.segmenters.persona import PersonaModel, explain, features, nearest
from segmentflow.segmenters.rfm import RankIndex, Scores, SegmentMap
from segmentflow.segmenters.rules import IN, OUT, RuleEvaluationError, compile_rules

DAY_US = 86_400_000_000
_MONEY_TYPES = ("order_completed", "order_refunded")
LIFECYCLE = "lifecycle"
RFM = "rfm"
PERSONA = "persona"
MAX_SAMPLES = 20_000
_FLAGS = {
    "email_unsubscribed": FLAG_UNSUBSCRIBED,
    "email_complained": FLAG_COMPLAINED,
}


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
    """

    def __init__(self, config: SegmentConfig, ranks: RankIndex | None = None) -> None:
        self.config = config
        self._life = config.lifecycle
        self.ranks = ranks if ranks is not None else RankIndex()
        self._rfm = config.rfm.enabled
        self._rfm_map = SegmentMap.parse(config.rfm.segments)
        persona = config.persona
        self.persona: PersonaModel | None = (
            PersonaModel(persona.algorithm, persona.clusters, persona.seed)
            if persona.enabled
            else None
        )
        #: train in-process (replay) or only collect samples for a separate trainer (worker)
        self.train_inline = True
        self._persona_warmup = 50 * config.persona.clusters
        self.persona_samples: list[dict[str, float]] = []
        self.rules = compile_rules(config.rules)
        self._rule_vars = sorted({name for rule in self.rules for name in rule.references})
        self._midnights = any(rule.time_dependent for rule in self.rules)
        self._horizon = config.dedup_horizon_us
        #: rule evaluation errors per rule name (counted, the rule counts as false)
        self.rule_errors: Counter[str] = Counter()

    @property
    def dimensions(self) -> list[str]:
        """Every dimension this engine emits."""
        return (
            [LIFECYCLE]
            + ([RFM] if self._rfm else [])
            + ([PERSONA] if self.persona is not None else [])
            + [r.dimension for r in self.rules]
        )

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
        changes.extend(self._evaluate(state, t, event.event_id))
        state.clock = t
        state.prune(t // DAY_US)
        state.next_due = self._next_due(state)
        return Outcome("applied", changes, late)

    def advance(self, state: CustomerState, now: int) -> list[Change]:
        """Fire every time-driven change of ``state`` due at or before ``now``, in due order."""
        changes: list[Change] = []
        if state.clock is None:
            return changes
        while state.next_due is not None and state.next_due <= now:
            t = state.next_due
            state.clock = t
            current = state.values.get(LIFECYCLE)
            stage = lifecycle.stage_at(state, t, self._life)
            if stage != current:
                changes.append(self._change(state, LIFECYCLE, stage, t, None, state))
            if self._midnights and t % DAY_US == 0:
                state.prune(t // DAY_US)
                changes.extend(self._evaluate_rules(state, t, None))
            state.next_due = self._next_due(state)
        return changes

    def sweep_change(self, state: CustomerState, at: int, scores: Scores) -> list[Change]:
        """Apply scores from a population sweep at ``at``: a time-caused ``rfm`` change when
        the segment differs (stamped no earlier than the customer's clock)."""
        when = at if state.clock is None else max(at, state.clock)
        return self._rfm_change(state, when, None, scores)

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
        assert state.clock is not None
        due = lifecycle.next_threshold(state, state.clock, self._life)
        if self._midnights:
            midnight = (state.clock // DAY_US + 1) * DAY_US
            due = midnight if due is None else min(due, midnight)
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
            lifecycle.record_order(state, ts, t, self._life)
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

    def _evaluate(self, state: CustomerState, t: int, event_id: str | None) -> list[Change]:
        changes = []
        current = state.values.get(LIFECYCLE)
        stage = lifecycle.stage_at(state, t, self._life)
        if stage != current:
            changes.append(self._change(state, LIFECYCLE, stage, t, event_id, state))
        if self._rfm:
            changes.extend(self._score_rfm(state, t, event_id))
        if self.persona is not None:
            changes.extend(self._place_persona(state, t, event_id))
        changes.extend(self._evaluate_rules(state, t, event_id))
        return changes

    def _place_persona(self, state: CustomerState, t: int, event_id: str | None) -> list[Change]:
        """Once per customer and UTC day: learn from (or sample) the customer's features and
        re-place it with hysteresis (a session's burst of events does not flip personas)."""
        model = self.persona
        assert model is not None
        today = t // DAY_US
        if state.extra.get("persona_day") == today:
            return []
        state.extra["persona_day"] = today
        vector = features(state, t)
        if self.train_inline:
            model.learn_one(vector)
            if model.learned % self.config.persona.snapshot_every == 0:
                model.snapshot()
        elif len(self.persona_samples) < MAX_SAMPLES:
            self.persona_samples.append(vector)
        snapshot = model.current
        if snapshot is None or not snapshot.centers or model.learned < self._persona_warmup:
            return []
        value = state.values.get(PERSONA)
        current = int(value.rsplit("-", 1)[1]) if value else None
        pid = nearest(snapshot, vector, current, self.config.persona.margin)
        name = f"persona-{pid}"
        if name == value:
            return []
        why = explain(snapshot, vector, pid)  # only for a change (most placements keep theirs)
        reason = {"label": snapshot.labels[pid], "features": why, "model_version": snapshot.version}
        return [self._change(state, PERSONA, name, t, event_id, None, reason)]

    def _score_rfm(self, state: CustomerState, t: int, event_id: str | None) -> list[Change]:
        """Re-score a customer against the population; a change when the segment differs."""
        if state.first_order is None or state.last_order is None:
            return []
        orders = int(state.totals[T["orders"]])
        revenue = float(state.totals[T["revenue"]])
        self.ranks.update(state.customer_id, (state.last_order, orders, revenue))
        scores = self.ranks.scores(state.customer_id)
        if scores is None:
            return []
        return self._rfm_change(state, t, event_id, scores)

    def _rfm_change(
        self, state: CustomerState, t: int, event_id: str | None, scores: Scores
    ) -> list[Change]:
        assert state.last_order is not None
        r, f, m = scores
        self.ranks.record(state.customer_id, scores)
        state.extra["rfm_scores"] = [r, f, m]
        name = self._rfm_map.name(r, f)
        if name == state.values.get(RFM):
            return []
        orders = int(state.totals[T["orders"]])
        revenue = float(state.totals[T["revenue"]])
        reason = {
            "r": r,
            "f": f,
            "m": m,
            "days_since_last_order": (t - state.last_order) // DAY_US,
            "orders": orders,
            "revenue": round(revenue, 2),
            "population": len(self.ranks),
        }
        return [self._change(state, RFM, name, t, event_id, None, reason)]

    def _evaluate_rules(self, state: CustomerState, t: int, event_id: str | None) -> list[Change]:
        if not self.rules:
            return []
        env = variables(state, t, self._rule_vars)
        changes = []
        for rule in self.rules:
            try:
                inside = rule.evaluate(env)
            except RuleEvaluationError:
                self.rule_errors[rule.name] += 1
                inside = False
            dim = rule.dimension
            was = state.values.get(dim, OUT)
            now = IN if inside else OUT
            if now != was:
                reason = {"rule": rule.name, "when": rule.source}
                changes.append(self._change(state, dim, now, t, event_id, None, reason, was))
        return changes

    def _change(
        self,
        state: CustomerState,
        dimension: str,
        value: str,
        t: int,
        event_id: str | None,
        life_state: CustomerState | None,
        reason: dict[str, Any] | None = None,
        previous: str | None = None,
    ) -> Change:
        if previous is None:
            previous = state.values.get(dimension)
        if reason is None and life_state is not None:
            reason = lifecycle.reason(life_state, value, t, self._life)
        sequence = state.seqs.get(dimension, 0) + 1
        state.seqs[dimension] = sequence
        state.values[dimension] = value
        return Change(
            state.customer_id, dimension, previous, value, sequence, t, event_id, reason or {}
        )
