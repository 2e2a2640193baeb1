"""The ``clv`` dimension (issue 16): P(alive), expected orders and value from BG/NBD + Gamma-Gamma.

Enable it in the config (parameters from ``segmentflow fit-clv FILE --until T --json``; the
defaults are the CDNOW estimates of Fader, Hardie & Lee 2005)::

    dimensions:
      - class: "segmentflow.segmenters.clv:Clv"
        r: 0.243
        alpha: 4.414
        a: 0.793
        b: 2.426
        p: 6.25
        q: 3.74
        gamma: 15.44
        high_value_min: 40.0

Per customer it keeps ``(first day, last repeat day, x, spend)`` as the papers count them
(UTC days; orders on the same day are one transaction; a late order on a day between the first
and the last is counted as a new day). At each order, and when P(alive) falls below
``lost_below`` (a time-driven change at the exact microsecond, in closed form), the value is:

- ``likely_lost``: P(alive) < ``lost_below`` (0.3). BG/NBD never drops a customer without a
  repeat purchase (P(alive) = 1 when x = 0): lifecycle's ``churned`` covers those;
- ``high_value``: 90-day value (expected orders x expected spend) >= ``high_value_min``;
- ``growing``: expected orders in the horizon >= ``growing_ratio`` x the customer's past rate
  (orders per horizon since the first order, over at least one horizon);
- ``steady``: otherwise.

CEL variables (at the evaluation instant; 0 for customers without an order): ``p_alive``,
``expected_orders_90d``, ``clv_90d``. The population parameters are fixed by the config; a
refit is ``fit-clv`` offline (an in-stream refit needs a generic population sweep).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from scipy.special import hyp2f1

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import DAY_US, Dimension, Emit, Getter, Moment, StateSlice

WEEK_US = 7 * DAY_US


class ClvParams(BaseModel):
    """Population parameters (BG/NBD in weeks, Gamma-Gamma) and the segment thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: float = Field(default=0.2426, gt=0)
    alpha: float = Field(default=4.4135, gt=0)
    a: float = Field(default=0.7929, gt=0)
    b: float = Field(default=2.4258, gt=0)
    p: float = Field(default=6.2488, gt=0)
    q: float = Field(default=3.7446, gt=1)
    gamma: float = Field(default=15.4478, gt=0)
    horizon_days: int = Field(default=90, ge=1)
    lost_below: float = Field(default=0.3, gt=0, lt=1)
    high_value_min: float = Field(default=40.0, ge=0)
    growing_ratio: float = Field(default=1.2, gt=0)


@dataclass(slots=True)
class ClvSlice(StateSlice):
    """The papers' summary of a customer's orders (UTC day numbers, money)."""

    first_day: int = 0
    last_day: int = 0
    x: int = 0
    first_spend: float = 0.0
    repeat_spend: float = 0.0

    def dump(self) -> list[Any]:
        return [self.first_day, self.last_day, self.x, self.first_spend, self.repeat_spend]

    @classmethod
    def load(cls, version: int, data: list[Any]) -> ClvSlice:
        return cls(*data)

    def add(self, day: int, amount: float) -> None:
        """Record an order of ``amount`` on UTC ``day`` (the slice has a first order).

        Examples
        --------
        >>> s = ClvSlice(10, 10, 0, 5.0, 0.0)
        >>> s.add(10, 1.0); s.add(12, 2.0); s.add(12, 3.0); s.add(8, 4.0)
        >>> s
        ClvSlice(first_day=8, last_day=12, x=2, first_spend=4.0, repeat_spend=11.0)
        """
        if day == self.first_day:
            self.first_spend += amount
        elif day < self.first_day:  # a late earlier first order: the old first is a repeat
            self.x += 1
            self.repeat_spend += self.first_spend
            self.first_day, self.first_spend = day, amount
        else:
            if day != self.last_day or self.x == 0:
                self.x += 1
            self.last_day = max(self.last_day, day)
            self.repeat_spend += amount


@dataclass(frozen=True, slots=True)
class Figures:
    """A customer's model figures at one instant."""

    p_alive: float
    expected_orders: float
    expected_spend: float
    clv: float
    past_rate: float


class Clv(Dimension):
    """BG/NBD + Gamma-Gamma segments (see the module docstring).

    Examples
    --------
    >>> dim = Clv(ClvParams())
    >>> s = CustomerState("c")
    >>> s.slices["clv"] = ClvSlice(0, 70, 3, 20.0, 60.0)
    >>> f = dim.figures(s, 100 * DAY_US)
    >>> round(f.p_alive, 3), round(f.expected_orders, 3), round(f.clv, 2)
    (0.706, 1.346, 29.52)
    >>> dim.value(s, 100 * DAY_US), dim.lost_at(s.slices["clv"]) // DAY_US
    ('steady', 191)
    """

    kind = "clv"
    Params = ClvParams
    slice_type = ClvSlice

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        assert isinstance(params, ClvParams)
        self.cfg = params
        self.horizon_weeks = params.horizon_days / 7
        suffix = f"{params.horizon_days}d"
        self.orders_var, self.clv_var = f"expected_orders_{suffix}", f"clv_{suffix}"

    def names(self) -> list[str]:
        return [self.kind]

    # -- the model --------------------------------------------------------------------------

    def figures(self, state: CustomerState, t: int) -> Figures:
        """P(alive), expected orders and value over the horizon, at instant ``t``."""
        s: ClvSlice = self.slice(state)
        c = self.cfg
        x = float(s.x)
        T = max(t - s.first_day * DAY_US, 0) / WEEK_US
        t_x = (s.last_day - s.first_day) / 7 if s.x else 0.0
        if s.x:
            odds = c.a / (c.b + x - 1) * ((c.alpha + T) / (c.alpha + t_x)) ** (c.r + x)
            alive = 1.0 / (1.0 + odds)
        else:
            alive = 1.0
        h = self.horizon_weeks
        head = (c.a + c.b + x - 1) / (c.a - 1)
        z = h / (c.alpha + T + h)
        tail = ((c.alpha + T) / (c.alpha + T + h)) ** (c.r + x) * float(
            hyp2f1(c.r + x, c.b + x, c.a + c.b + x - 1, z)
        )
        expected = max(head * (1 - tail) * alive, 0.0)
        mean = s.repeat_spend / s.x if s.x else 0.0
        spend = (c.gamma + mean * x) * c.p / (c.p * x + c.q - 1)
        age_weeks = max(T, h)
        return Figures(alive, expected, spend, expected * spend, (x + 1) * h / age_weeks)

    def lost_at(self, s: ClvSlice) -> int | None:
        """The first instant (µs) at which P(alive) < ``lost_below`` (closed form), or ``None``
        for a customer without a repeat purchase."""
        if not s.x:
            return None
        c = self.cfg
        x = float(s.x)
        t_x = (s.last_day - s.first_day) / 7
        k = (1 / c.lost_below - 1) * (c.b + x - 1) / c.a
        T: float = (c.alpha + t_x) * math.pow(k, 1 / (c.r + x)) - c.alpha
        return s.first_day * DAY_US + max(math.floor(T * WEEK_US) + 1, 0)

    def value(self, state: CustomerState, t: int) -> str:
        """The segment at ``t`` (the customer has an order)."""
        lost = self.lost_at(self.slice(state))
        if lost is not None and t >= lost:
            return "likely_lost"
        f = self.figures(state, t)
        if f.clv >= self.cfg.high_value_min:
            return "high_value"
        if f.expected_orders >= self.cfg.growing_ratio * f.past_rate:
            return "growing"
        return "steady"

    # -- hooks ------------------------------------------------------------------------------

    def observe(self, state: CustomerState, event: Event, t: int) -> None:
        if event.type != "order_completed":
            return
        day = event.ts // DAY_US
        if self.kind not in state.slices:
            state.slices[self.kind] = ClvSlice(day, day, 0, event.amount, 0.0)
        else:
            self.slice(state).add(day, event.amount)

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if self.kind not in state.slices:
            return []
        if at.event is None:  # time alone moves only the P(alive) threshold
            return self.on_due(state, at, emit)
        if at.event.type != "order_completed":
            return []
        return self._set(state, self.value(state, at.t), at, emit)

    def on_due(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if self.kind not in state.slices or state.values.get(self.kind) == "likely_lost":
            return []
        lost = self.lost_at(self.slice(state))
        if lost is None or at.t < lost:
            return []
        return self._set(state, "likely_lost", at, emit)

    def _set(self, state: CustomerState, value: str, at: Moment, emit: Emit) -> list[Change]:
        if value == state.values.get(self.kind):
            return []
        return [emit(state, self.kind, value, at, self.reason(state, value, at.t))]

    def next_due(self, state: CustomerState, after: int) -> int | None:
        if self.kind not in state.slices or state.values.get(self.kind) == "likely_lost":
            return None
        lost = self.lost_at(self.slice(state))
        return None if lost is None else max(lost, after + 1)

    def reason(self, state: CustomerState, value: str, t: int) -> dict[str, Any]:
        """The numbers behind ``value`` at ``t``."""
        s: ClvSlice = self.slice(state)
        f = self.figures(state, t)
        c = self.cfg
        why = {
            "likely_lost": f"p_alive < {c.lost_below:g}",
            "high_value": f"{self.clv_var} >= {c.high_value_min:g}",
            "growing": f"{self.orders_var} >= {c.growing_ratio:g} x past rate",
            "steady": "none of likely_lost, high_value, growing",
        }[value]
        return {
            "rule": why,
            "p_alive": round(f.p_alive, 6),
            self.orders_var: round(f.expected_orders, 6),
            self.clv_var: round(f.clv, 2),
            "expected_spend": round(f.expected_spend, 2),
            "past_rate": round(f.past_rate, 6),
            "repeat_transactions": s.x,
            "weeks_observed": round(max(t - s.first_day * DAY_US, 0) / WEEK_US, 4),
            "weeks_to_last_repeat": round((s.last_day - s.first_day) / 7, 4),
        }

    # -- CEL and inspect --------------------------------------------------------------------

    def _at(self, state: CustomerState, today: int) -> Figures | None:
        if self.kind not in state.slices:
            return None
        return self.figures(state, max(state.clock or 0, today * DAY_US))

    def variables(self) -> Mapping[str, Getter]:
        def alive(s: CustomerState, today: int) -> float:
            f = self._at(s, today)
            return 0.0 if f is None else f.p_alive

        def orders(s: CustomerState, today: int) -> float:
            f = self._at(s, today)
            return 0.0 if f is None else f.expected_orders

        def value(s: CustomerState, today: int) -> float:
            f = self._at(s, today)
            return 0.0 if f is None else f.clv

        return {"p_alive": alive, self.orders_var: orders, self.clv_var: value}

    def time_dependent(self) -> frozenset[str]:
        return frozenset({"p_alive", self.orders_var, self.clv_var})

    def explain(
        self, state: CustomerState, name: str, value: str | None, t: int, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        if value is None or self.kind not in state.slices:
            return None
        return self.reason(state, value, t)
