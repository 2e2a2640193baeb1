"""The ``clv`` dimension (issue 16): P(alive), expected orders and value from BG/NBD + Gamma-Gamma.

Enable it in the config (``kind: clv``, or ``class: "segmentflow.segmenters.clv:Clv"``). The
population parameters given (from ``segmentflow fit-clv FILE --until T --json``; the defaults
are the CDNOW estimates of Fader, Hardie & Lee 2005) are the starting point: every
``refit_every_days`` of event time (at whole multiples since the epoch, like RFM's sweep) the
dimension refits BG/NBD and Gamma-Gamma to every customer's ``(x, t_x, T)`` at that moment
(when orders arrived since the previous refit and at least ``refit_min_customers`` customers
have ordered) and re-values every customer; ``refit_every_days: 0`` keeps the given ones::

    dimensions:
      - kind: clv
        r: 0.243
        alpha: 4.414
        a: 0.793
        b: 2.426
        p: 6.25
        q: 3.74
        gamma: 15.44
        refit_every_days: 7
        high_value_top: 0.2

Per customer it keeps ``(first day, last repeat day, x, spend)`` as the papers count them
(UTC days; orders on the same day are one transaction; a late order on a day between the first
and the last is counted as a new day). At each order, and when P(alive) falls below
``lost_below`` (a time-driven change at the exact microsecond, in closed form), the value is:

- ``likely_lost``: P(alive) < ``lost_below`` (0.3). BG/NBD never drops a customer without a
  repeat purchase (P(alive) = 1 when x = 0): lifecycle's ``churned`` covers those;
- ``high_value``: 90-day value (expected orders x expected spend) in the top ``high_value_top``
  (20%) of the customers not ``likely_lost`` at the last refit (a population quantile the refit
  maintains; ``high_value_min`` until the first refit);
- ``growing``: expected orders in the horizon >= ``growing_ratio`` x the customer's past rate
  (orders per horizon since the first order, over at least one horizon);
- ``steady``: otherwise.

CEL variables (at the evaluation instant; 0 for customers without an order): ``p_alive``,
``expected_orders_90d``, ``clv_90d``. A refit emits a change, stamped with the refit moment
(time-caused), for every customer whose value moved, and brings forward the due moment of those
whose ``likely_lost`` instant came earlier.

The refit population is this process's index (``replay``, one process) unless a shared
population is wired (several workers: :mod:`segmentflow.service.clv_share` over
:mod:`segmentflow.state.clv_population`, Redis in the worker): then every customer's summary is
stored with its state and every worker adopts the same :class:`ClvFit` at each refit moment.
The building blocks are pure: :meth:`Clv.fit_for` (rows -> the parameters in force from a
moment), :meth:`Clv.adopt`, :meth:`Clv.moved_mask`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import hyp2f1

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import (
    DAY_US,
    Dimension,
    Emit,
    Getter,
    Moment,
    PopulationWork,
    StateSlice,
)

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
    #: the high_value threshold until the first refit sets the quantile
    high_value_min: float = Field(default=40.0, ge=0)
    #: high_value: this top share of the alive customers' 90-day value (at each refit)
    high_value_top: float = Field(default=0.2, gt=0, lt=1)
    growing_ratio: float = Field(default=1.2, gt=0)
    #: event-time period of the population refit, in days (0: keep the given parameters)
    refit_every_days: int = Field(default=7, ge=0)
    #: fewer customers with an order than this: the refit keeps the current parameters
    refit_min_customers: int = Field(default=100, ge=2)
    #: several workers: how long one at a refit moment waits for the others to reach it before
    #: the refit goes on without them (wall seconds; see segmentflow.service.clv_share)
    refit_wait_seconds: float = Field(default=60.0, gt=0)


#: the parameters a refit sets
FITTED = ("r", "alpha", "a", "b", "p", "q", "gamma")
#: the values, coded 1.. in stored population rows (0: none given yet)
VALUES = ("likely_lost", "high_value", "growing", "steady")
CODE = {value: i + 1 for i, value in enumerate(VALUES)}


def _number(value: float) -> float | str:
    """A float for JSON: non-finite ones as text (``float()`` reads them back)."""
    return value if math.isfinite(value) else repr(value)


@dataclass(frozen=True, slots=True)
class ClvFit:
    """The population parameters in force from refit moment ``at`` (also when that refit kept
    the previous ones: ``refits`` counts the refits that changed them).

    Examples
    --------
    >>> fit = ClvFit(7 * DAY_US, 3, 1, {"r": 0.25}, 40.0, 120)
    >>> ClvFit.loads(fit.dumps()) == fit
    True
    >>> ClvFit.loads(ClvFit(0, 0, 0, {}, math.inf, 0).dumps()).high_value_min
    inf
    """

    at: int
    #: the population version it was computed from (unchanged at the next moment: no refit)
    population_version: int
    refits: int
    fitted: dict[str, float]
    high_value_min: float
    customers: int

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "at": self.at,
                "population_version": self.population_version,
                "refits": self.refits,
                "fitted": {k: _number(v) for k, v in self.fitted.items()},
                "high_value_min": _number(self.high_value_min),
                "customers": self.customers,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def loads(cls, data: bytes) -> ClvFit:
        held = orjson.loads(data)
        return cls(
            int(held["at"]),
            int(held["population_version"]),
            int(held["refits"]),
            {k: float(v) for k, v in held["fitted"].items()},
            float(held["high_value_min"]),
            int(held["customers"]),
        )


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

    def merge(self, other: ClvSlice) -> None:
        """Fold another customer's summary into this one (an identity merge): order days are
        counted apart except the first and last days both know (the slices keep no other days;
        two histories with orders on another common day count it twice).

        Examples
        --------
        >>> s = ClvSlice(10, 20, 2, 5.0, 7.0)
        >>> s.merge(ClvSlice(4, 20, 1, 3.0, 1.0)); s
        ClvSlice(first_day=4, last_day=20, x=3, first_spend=3.0, repeat_spend=13.0)
        """
        common = {self.first_day, self.last_day} & {other.first_day, other.last_day}
        days = (self.x + 1) + (other.x + 1) - len(common)
        total = self.first_spend + self.repeat_spend + other.first_spend + other.repeat_spend
        if other.first_day < self.first_day:
            first_spend = other.first_spend
        elif other.first_day == self.first_day:
            first_spend = self.first_spend + other.first_spend
        else:
            first_spend = self.first_spend
        self.first_day = min(self.first_day, other.first_day)
        self.last_day = max(self.last_day, other.last_day)
        self.x = days - 1
        self.first_spend = first_spend
        self.repeat_spend = total - first_spend


@dataclass(frozen=True, slots=True)
class Figures:
    """A customer's model figures at one instant."""

    p_alive: float
    expected_orders: float
    expected_spend: float
    clv: float
    past_rate: float


class Clv(Dimension, PopulationWork):
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
        days = params.refit_every_days
        self.sweep_every_us = days * DAY_US if days else None
        #: the high_value threshold in use (the refit's quantile after the first refit)
        self.high_value_min = params.high_value_min
        #: customer -> (first_day, last_day, x, repeat_spend) of everyone with an order
        self.population: dict[str, tuple[int, int, int, float]] = {}
        #: customer -> the value it was last given
        self.given: dict[str, str] = {}
        #: bumped by every order and forget; ``fitted_version``: its value at the last refit
        self.version = 0
        self.fitted_version = -1
        self.refits = 0
        self._moved: list[tuple[str, Any]] = []
        #: keep the population in this process (``False`` once a shared population is wired:
        #: the rows live with the states, refits are scheduled from the first event)
        self.local_index = True
        #: customers whose order summary changed (order, merge, forget) since their state was
        #: last committed (``None``: not tracked; a shared population counts them into its
        #: version and drops the rows of those left without a summary, at each commit)
        self.changed: set[str] | None = None

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
        if f.clv >= self.high_value_min:
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
        if self.changed is not None:
            self.changed.add(state.customer_id)
        if not self.local_index:
            return
        s: ClvSlice = self.slice(state)
        self.population[state.customer_id] = (s.first_day, s.last_day, s.x, s.repeat_spend)
        self.version += 1

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if self.kind not in state.slices:
            return []
        if at.cause == "merge":  # merged histories: a full evaluation, as after an order
            return self._set(state, self.value(state, at.t), at, emit)
        if at.event is None:  # time alone moves only the P(alive) threshold
            return self.on_due(state, at, emit)
        if at.event.type != "order_completed":
            return []
        return self._set(state, self.value(state, at.t), at, emit)

    def merge_slice(self, survivor: CustomerState, merged: CustomerState) -> None:
        """Combine both order summaries (:meth:`ClvSlice.merge`); the survivor's enters the
        population (the engine drops the merged-away id from it)."""
        if self.kind in merged.slices:
            theirs: ClvSlice = self.slice(merged)
            if self.kind in survivor.slices:
                self.slice(survivor).merge(theirs)
            else:
                survivor.slices[self.kind] = ClvSlice(*theirs.dump())
        if self.kind in survivor.slices:
            if self.changed is not None:
                self.changed.add(survivor.customer_id)
            if not self.local_index:
                return
            s: ClvSlice = self.slice(survivor)
            self.population[survivor.customer_id] = (s.first_day, s.last_day, s.x, s.repeat_spend)
            self.version += 1

    def on_due(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if self.kind not in state.slices or state.values.get(self.kind) == "likely_lost":
            return []
        lost = self.lost_at(self.slice(state))
        if lost is None or at.t < lost:
            return []
        return self._set(state, "likely_lost", at, emit)

    def _set(self, state: CustomerState, value: str, at: Moment, emit: Emit) -> list[Change]:
        if self.local_index:
            self.given[state.customer_id] = value
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
            "high_value": f"{self.clv_var} >= {self.high_value_min:g}"
            + (f" (top {c.high_value_top:.0%} of the alive)" if self.refits else ""),
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

    # -- population refit (PopulationWork) --------------------------------------------------

    def population_version(self) -> object:
        return self.version

    def population_size(self) -> int:
        return len(self.population) if self.local_index else 1

    def forget(self, customer_id: str) -> None:
        if self.changed is not None:
            self.changed.add(customer_id)
        self.population.pop(customer_id, None)
        self.given.pop(customer_id, None)
        self.version += 1

    def prepare_sweep(self, at: int) -> None:
        """Refit this process's population at ``at`` (unless no order arrived since the last
        refit) and find the customers it moves (:meth:`moved`)."""
        self._moved = []
        ids = sorted(self.population)
        rows = np.array([self.population[cid] for cid in ids], dtype=np.float64).reshape(-1, 4)
        fit = self.fit_for(rows, self.version, at)
        refits, before = self.refits, self.adopt(fit)
        if fit.refits == refits:
            return
        given = np.array([CODE.get(self.given.get(cid, ""), 0) for cid in ids], dtype=np.uint8)
        mask = self.moved_mask(before, rows, given, at)
        self._moved = [(ids[i], None) for i in np.flatnonzero(mask).tolist()]

    def current_fit(self, at: int, population_version: int) -> ClvFit:
        """The parameters in force now, as the record of a refit at ``at`` that kept them."""
        fitted = {name: float(getattr(self.cfg, name)) for name in FITTED}
        return ClvFit(at, population_version, self.refits, fitted, self.high_value_min, 0)

    def fit_for(
        self, rows: np.ndarray[Any, np.dtype[np.float64]], population_version: int, at: int
    ) -> ClvFit:
        """The parameters in force from ``at`` (pure): a refit to ``rows`` (first_day, last_day,
        x, repeat_spend; customers whose first order is at or after ``at`` left out; order
        irrelevant: sorted by value), or the current ones when the population version is the
        one of the last refit, fewer than ``refit_min_customers`` ordered or the fit failed."""
        keep = self.current_fit(at, population_version)
        if population_version == self.fitted_version:
            return keep
        rows = rows[rows[:, 0] * DAY_US < at]
        if len(rows) < self.cfg.refit_min_customers:
            return keep
        rows = rows[np.lexsort(rows.T[::-1])]
        cols = Columns.of(rows, at)
        fitted = fit_population(cols, self.cfg)
        if fitted is None:
            return keep
        new = population_figures(fitted, cols, self.horizon_weeks)
        if not new.finite():
            return keep  # extreme parameters (a tiny population): no usable figures
        alive = new.lost > at
        threshold = self.high_value_min
        if alive.any():
            threshold = top_share_threshold(new.clv[alive], fitted.high_value_top)
        params = {name: float(getattr(fitted, name)) for name in FITTED}
        return ClvFit(at, population_version, self.refits + 1, params, threshold, len(rows))

    def adopt(self, fit: ClvFit) -> ClvParams:
        """Use ``fit``'s parameters and threshold from now on; return the parameters before."""
        before = self.cfg
        self.cfg = self.cfg.model_copy(update=fit.fitted)
        self.high_value_min = fit.high_value_min
        self.refits = fit.refits
        self.fitted_version = fit.population_version
        return before

    def moved_mask(
        self,
        before: ClvParams,
        rows: np.ndarray[Any, np.dtype[np.float64]],
        given: np.ndarray[Any, np.dtype[np.uint8]],
        at: int,
    ) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Which of ``rows`` a refit from ``before`` to the current parameters moves at ``at``:
        their value differs from the one given (``given``: :data:`CODE`, 0 = none) or their
        ``likely_lost`` instant came earlier."""
        cols = Columns.of(rows, at)
        new = population_figures(self.cfg, cols, self.horizon_weeks)
        codes = classify_codes(new, at, self.high_value_min, self.cfg.growing_ratio)
        earlier: np.ndarray[Any, np.dtype[np.bool_]] = new.lost < lost_instants(before, cols)
        moved: np.ndarray[Any, np.dtype[np.bool_]] = (codes != given) | earlier
        return moved

    def set_moved(self, moved: list[tuple[str, Any]]) -> None:
        """The customers the next :meth:`moved` returns (set by a shared population)."""
        self._moved = moved

    def moved(self, include: Callable[[str], bool] | None) -> list[tuple[str, Any]]:
        if include is None:
            return list(self._moved)
        return [(cid, p) for cid, p in self._moved if include(cid)]

    def on_sweep(self, state: CustomerState, at: Moment, payload: Any, emit: Emit) -> list[Change]:
        """Re-value the customer after a refit; bring its due moment forward if its
        ``likely_lost`` instant is now earlier."""
        if self.kind not in state.slices:
            return []
        changes = self._set(state, self.value(state, at.t), at, emit)
        lost = self.lost_at(self.slice(state))
        if lost is not None and state.values.get(self.kind) != "likely_lost":
            due = max(lost, at.t + 1)
            if state.next_due is None or due < state.next_due:
                state.next_due = due
        return changes

    def dump_population(self) -> bytes | None:
        fitted = {name: getattr(self.cfg, name) for name in FITTED}
        return orjson.dumps(
            {
                "fitted": fitted,
                "high_value_min": self.high_value_min,
                "version": self.version,
                "fitted_version": self.fitted_version,
                "refits": self.refits,
                "population": self.population,
                "given": self.given,
            },
            option=orjson.OPT_SORT_KEYS,
        )

    def load_population(self, data: bytes) -> None:
        held = orjson.loads(data)
        self.cfg = self.cfg.model_copy(update=held["fitted"])
        self.high_value_min = held["high_value_min"]
        self.version, self.fitted_version = held["version"], held["fitted_version"]
        self.refits = held["refits"]
        self.population = {
            cid: (int(first), int(last), int(x), float(spend))
            for cid, (first, last, x, spend) in held["population"].items()
        }
        self.given = dict(held["given"])


# -- the refit, vectorised -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Columns:
    """The population at instant ``at``: first day and the papers' ``(x, t_x, T)`` in weeks,
    with each customer's mean repeat spend."""

    first_day: np.ndarray[Any, np.dtype[np.float64]]
    x: np.ndarray[Any, np.dtype[np.float64]]
    t_x: np.ndarray[Any, np.dtype[np.float64]]
    T: np.ndarray[Any, np.dtype[np.float64]]
    monetary: np.ndarray[Any, np.dtype[np.float64]]

    @classmethod
    def of(cls, rows: np.ndarray[Any, np.dtype[np.float64]], at: int) -> Columns:
        """From rows ``(first_day, last_day, x, repeat_spend)``.

        Examples
        --------
        >>> c = Columns.of(np.array([[0.0, 14.0, 2.0, 30.0], [7.0, 7.0, 0.0, 0.0]]), 28 * DAY_US)
        >>> c.x.tolist(), c.t_x.tolist(), c.T.tolist(), c.monetary.tolist()
        ([2.0, 0.0], [2.0, 0.0], [4.0, 3.0], [15.0, 0.0])
        """
        first, last, x, spend = rows.T
        T = np.maximum((at - first * DAY_US) / WEEK_US, 1e-9)
        t_x = np.minimum(np.where(x > 0, (last - first) / 7, 0.0), T)
        monetary = np.where(x > 0, spend / np.maximum(x, 1), 0.0)
        return cls(first, x, t_x, T, monetary)


@dataclass(frozen=True, slots=True)
class PopulationFigures:
    """Per-customer figures of a refit, as arrays (``lost``: the likely_lost instant, µs)."""

    p_alive: np.ndarray[Any, np.dtype[np.float64]]
    expected_orders: np.ndarray[Any, np.dtype[np.float64]]
    clv: np.ndarray[Any, np.dtype[np.float64]]
    past_rate: np.ndarray[Any, np.dtype[np.float64]]
    lost: np.ndarray[Any, np.dtype[np.float64]]

    def finite(self) -> bool:
        """Whether every P(alive), expected order count and value is a finite number."""
        return all(
            bool(np.isfinite(a).all()) for a in (self.p_alive, self.expected_orders, self.clv)
        )


def fit_population(cols: Columns, current: ClvParams) -> ClvParams | None:
    """BG/NBD and Gamma-Gamma fitted to ``cols`` as new parameters (thresholds kept), or
    ``None`` when a fit fails or gives parameters the model cannot use (then nothing changes)."""
    from segmentflow.segmenters.clv_model import FitError, fit_bgnbd, fit_gamma_gamma

    try:
        bg = fit_bgnbd(cols.x, cols.t_x, cols.T)
        gg = fit_gamma_gamma(cols.x, cols.monetary)
    except FitError:
        return None
    found = {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "p": gg.p, "q": gg.q}
    found["gamma"] = gg.gamma
    if not all(math.isfinite(v) and v > 0 for v in found.values()) or gg.q <= 1:
        return None
    return current.model_copy(update=found)


def lost_instants(c: ClvParams, cols: Columns) -> np.ndarray[Any, np.dtype[np.float64]]:
    """:meth:`Clv.lost_at` for every customer (``inf`` without a repeat purchase)."""
    x = np.maximum(cols.x, 1.0)
    with np.errstate(over="ignore"):  # extreme parameters: an instant beyond any time (inf)
        k = (1 / c.lost_below - 1) * (c.b + x - 1) / c.a
        T = (c.alpha + cols.t_x) * np.power(k, 1 / (c.r + x)) - c.alpha
        lost = cols.first_day * DAY_US + np.maximum(np.floor(T * WEEK_US) + 1, 0)
    return np.where(cols.x > 0, lost, np.inf)


def population_figures(c: ClvParams, cols: Columns, horizon_weeks: float) -> PopulationFigures:
    """:meth:`Clv.figures` for every customer at the columns' instant."""
    from segmentflow.segmenters.clv_model import BgNbd, GammaGamma

    model = BgNbd(c.r, c.alpha, c.a, c.b)
    with np.errstate(all="ignore"):
        alive = model.p_alive(cols.x, cols.t_x, cols.T)
        orders = np.maximum(model.expected_orders(horizon_weeks, cols.x, cols.t_x, cols.T), 0.0)
        spend = GammaGamma(c.p, c.q, c.gamma).expected_spend(cols.x, cols.monetary)
    past = (cols.x + 1) * horizon_weeks / np.maximum(cols.T, horizon_weeks)
    return PopulationFigures(alive, orders, orders * spend, past, lost_instants(c, cols))


def top_share_threshold(values: np.ndarray[Any, np.dtype[np.float64]], share: float) -> float:
    """The smallest value of the top ``share`` of ``values`` (at least one value).

    Examples
    --------
    >>> top_share_threshold(np.arange(10.0), 0.2), top_share_threshold(np.arange(3.0), 0.2)
    (8.0, 2.0)
    """
    ordered = np.sort(values)[::-1]
    k = max(1, math.floor(len(ordered) * share + 1e-9))
    return float(ordered[k - 1])


def classify_codes(
    f: PopulationFigures, at: int, high_min: float, growing_ratio: float
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """:meth:`Clv.value` of every customer at ``at``, as :data:`CODE` numbers."""
    lost = at >= f.lost
    high = f.clv >= high_min
    growing = f.expected_orders >= growing_ratio * f.past_rate
    codes = np.select(
        [lost, high, growing],
        [CODE["likely_lost"], CODE["high_value"], CODE["growing"]],
        CODE["steady"],
    )
    return codes.astype(np.uint8)


def classify(f: PopulationFigures, at: int, high_min: float, growing_ratio: float) -> list[str]:
    """:meth:`Clv.value` of every customer at ``at``."""
    lost = at >= f.lost
    high = f.clv >= high_min
    growing = f.expected_orders >= growing_ratio * f.past_rate
    return [
        "likely_lost" if lo else "high_value" if hi else "growing" if gr else "steady"
        for lo, hi, gr in zip(lost.tolist(), high.tolist(), growing.tolist(), strict=True)
    ]
