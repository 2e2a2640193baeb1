"""The ``lifecycle`` dimension (CONTRACT §3 "Default lifecycle"), as pure functions of time.

A customer's stage at instant ``t`` depends only on its first and last order, the start of its
latest reactivation and the thresholds, so time-driven transitions can be computed exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from segmentflow.config import LifecycleConfig
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import Dimension, Emit, Getter, Moment

DAY_US = 86_400_000_000
PROSPECT, NEW, ACTIVE, AT_RISK, CHURNED, REACTIVATED = (
    "prospect",
    "new",
    "active",
    "at_risk",
    "churned",
    "reactivated",
)
STAGES = (PROSPECT, NEW, REACTIVATED, ACTIVE, AT_RISK, CHURNED)
LAPSED = (AT_RISK, CHURNED)


def stage_at(state: CustomerState, t: int, cfg: LifecycleConfig) -> str:
    """The lifecycle stage of ``state`` at instant ``t`` (no order after ``t`` is in ``state``).

    Examples
    --------
    >>> from segmentflow.engine.state import CustomerState
    >>> cfg = LifecycleConfig()
    >>> s = CustomerState("c", first_order=0, last_order=0)
    >>> stage_at(s, 29 * DAY_US, cfg), stage_at(s, 30 * DAY_US, cfg), stage_at(s, 90 * DAY_US, cfg)
    ('new', 'active', 'at_risk')
    """
    if state.first_order is None or state.last_order is None:
        return PROSPECT
    if t < state.first_order + cfg.new_us:
        return NEW
    if state.reactivated_at is not None and t < state.reactivated_at + cfg.reactivated_us:
        return REACTIVATED
    since = t - state.last_order
    if since < cfg.at_risk_us:
        return ACTIVE
    if since < cfg.churned_us:
        return AT_RISK
    return CHURNED


def next_threshold(state: CustomerState, after: int, cfg: LifecycleConfig) -> int | None:
    """The earliest threshold moment strictly after ``after`` where the stage may change."""
    if state.first_order is None or state.last_order is None:
        return None
    moments = [
        state.first_order + cfg.new_us,
        state.last_order + cfg.at_risk_us,
        state.last_order + cfg.churned_us,
    ]
    if state.reactivated_at is not None:
        moments.append(state.reactivated_at + cfg.reactivated_us)
    later = [m for m in moments if m > after]
    return min(later) if later else None


def record_order(state: CustomerState, ts: int, t: int, cfg: LifecycleConfig) -> None:
    """Record an order placed at ``ts`` (evaluated at ``t >= ts``) in the lifecycle fields."""
    if stage_at(state, t, cfg) in LAPSED:
        state.reactivated_at = ts
    state.first_order = ts if state.first_order is None else min(state.first_order, ts)
    state.last_order = ts if state.last_order is None else max(state.last_order, ts)


def reason(state: CustomerState, stage: str, t: int, cfg: LifecycleConfig) -> dict[str, Any]:
    """Why the customer is in ``stage`` at ``t``: the rule and the day counts behind it."""
    out: dict[str, Any] = {}
    if state.last_order is not None:
        out["days_since_last_order"] = (t - state.last_order) // DAY_US
    if state.first_order is not None:
        out["days_since_first_order"] = (t - state.first_order) // DAY_US
    n, r, a, c = cfg.new_days, cfg.reactivated_days, cfg.at_risk_days, cfg.churned_days
    out["rule"] = {
        PROSPECT: "events but no order yet",
        NEW: f"since_first_order < {n:g}d",
        REACTIVATED: f"order while at_risk or churned, for {r:g}d",
        ACTIVE: f"since_last_order < {a:g}d",
        AT_RISK: f"{a:g}d <= since_last_order < {c:g}d",
        CHURNED: f"since_last_order >= {c:g}d",
    }[stage]
    return out


class Lifecycle(Dimension):
    """The ``lifecycle`` dimension: :func:`stage_at` after each event and at each threshold.

    Its state is the customer's core first/last order and reactivation fields (no slice).

    Examples
    --------
    >>> from segmentflow.engine.state import CustomerState
    >>> dim = Lifecycle(LifecycleConfig())
    >>> s = CustomerState("c", first_order=0, last_order=0)
    >>> dim.names(), dim.next_due(s, 0) // DAY_US
    (['lifecycle'], 30)
    """

    kind = "lifecycle"
    Params = LifecycleConfig

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        assert isinstance(params, LifecycleConfig)
        self.cfg = params

    def names(self) -> list[str]:
        return [self.kind]

    def observe(self, state: CustomerState, event: Event, t: int) -> None:
        if event.type == "order_completed":
            record_order(state, event.ts, t, self.cfg)

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        stage = stage_at(state, at.t, self.cfg)
        if stage == state.values.get(self.kind):
            return []
        return [emit(state, self.kind, stage, at, reason(state, stage, at.t, self.cfg))]

    on_due = evaluate  # a stage only changes at a threshold: elsewhere this finds no change

    def next_due(self, state: CustomerState, after: int) -> int | None:
        return next_threshold(state, after, self.cfg)

    def variables(self) -> Mapping[str, Getter]:
        return {self.kind: lambda s, _today: s.values.get(self.kind)}

    def time_dependent(self) -> frozenset[str]:
        return frozenset({self.kind})

    def explain(
        self, state: CustomerState, name: str, value: str | None, t: int, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return None if value is None else reason(state, value, t, self.cfg)
