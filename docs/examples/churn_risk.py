"""A custom dimension, complete: ``churn_risk`` (the worked example of ``docs/dimensions.md``).

A customer's churn risk is ``low``, ``medium`` or ``high`` by the days since its last website
or purchase activity (email events alone do not count). It changes on events and, with time
alone, exactly at ``last_active + medium_days`` and ``last_active + high_days``. It keeps its
own typed state slice (the last activity time) and contributes two CEL variables,
``churn_risk`` and ``days_inactive``.

Use it from a config (with this folder on ``PYTHONPATH``)::

    dimensions:
      - class: "churn_risk:ChurnRisk"
        medium_days: 30
        high_days: 60
    rules:
      - name: winback
        when: 'churn_risk == "high" && orders >= 2'

Examples
--------
>>> from segmentflow.engine.state import CustomerState
>>> from segmentflow.schemas.decode import Event
>>> dim = ChurnRisk(ChurnParams(medium_days=30, high_days=60))
>>> state = CustomerState("c")
>>> dim.observe(state, Event("e1", "c", "page_view", 0), 0)
>>> dim.level(state, 29 * DAY_US), dim.level(state, 30 * DAY_US), dim.level(state, 60 * DAY_US)
('low', 'medium', 'high')
>>> dim.next_due(state, 0) == 30 * DAY_US
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import (
    DAY_US,
    Dimension,
    Emit,
    Getter,
    Moment,
    StateSlice,
)

#: event types that count as activity
ACTIVE = frozenset(
    {"page_view", "product_view", "add_to_cart", "search", "checkout_started", "order_completed"}
)


class ChurnParams(BaseModel):
    """The parameters of a ``dimensions:`` entry naming :class:`ChurnRisk`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    medium_days: float = Field(default=30, gt=0)
    high_days: float = Field(default=60, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ChurnParams:
        if self.high_days <= self.medium_days:
            raise ValueError("high_days must be greater than medium_days")
        return self


@dataclass(slots=True)
class ChurnSlice(StateSlice):
    """The customer's latest activity (epoch µs), stored as ``[1, last_active]``."""

    last_active: int | None = None

    def dump(self) -> list[Any]:
        return [self.last_active]

    @classmethod
    def load(cls, version: int, data: list[Any]) -> ChurnSlice:
        return cls(*data)


class ChurnRisk(Dimension):
    """The ``churn_risk`` dimension (see the module docstring)."""

    kind = "churn_risk"
    Params = ChurnParams
    slice_type = ChurnSlice

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        assert isinstance(params, ChurnParams)
        self.cfg = params
        self.medium_us = int(params.medium_days * DAY_US)
        self.high_us = int(params.high_days * DAY_US)

    def names(self) -> list[str]:
        return [self.kind]

    def observe(self, state: CustomerState, event: Event, t: int) -> None:
        if event.type in ACTIVE:
            held = self.slice(state)
            # a late event never moves the activity back
            held.last_active = max(event.ts, held.last_active or event.ts)

    def last_active(self, state: CustomerState) -> int | None:
        """The latest activity, without creating a slice for an inactive customer."""
        if self.kind not in state.slices:
            return None
        last: int | None = self.slice(state).last_active
        return last

    def level(self, state: CustomerState, t: int) -> str | None:
        """``low``/``medium``/``high`` at ``t`` (``None`` before any activity)."""
        last = self.last_active(state)
        if last is None:
            return None
        idle = t - last
        return "high" if idle >= self.high_us else "medium" if idle >= self.medium_us else "low"

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        level = self.level(state, at.t)
        if level is None or level == state.values.get(self.kind):
            return []
        return [emit(state, self.kind, level, at, self._reason(state, at.t))]

    on_due = evaluate  # the level only moves at a threshold: elsewhere nothing changes

    def next_due(self, state: CustomerState, after: int) -> int | None:
        last = self.last_active(state)
        if last is None:
            return None
        later = [m for m in (last + self.medium_us, last + self.high_us) if m > after]
        return min(later) if later else None

    def variables(self) -> Mapping[str, Getter]:
        def days_inactive(state: CustomerState, today: int) -> int | None:
            last = self.last_active(state)
            return None if last is None else today - last // DAY_US

        return {
            self.kind: lambda s, _today: s.values.get(self.kind),
            "days_inactive": days_inactive,
        }

    def time_dependent(self) -> frozenset[str]:
        return frozenset({self.kind, "days_inactive"})

    def explain(
        self, state: CustomerState, name: str, value: str | None, t: int, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return self._reason(state, t)

    def _reason(self, state: CustomerState, t: int) -> dict[str, Any]:
        last = self.last_active(state)
        assert last is not None
        thresholds = [self.cfg.medium_days, self.cfg.high_days]
        return {"days_inactive": (t - last) // DAY_US, "thresholds_days": thresholds}
