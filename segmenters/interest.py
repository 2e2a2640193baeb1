"""The ``interest`` dimension (issue 16): the product category a customer cares about.

Enable it in the config::

    dimensions:
      - class: "segmentflow.segmenters.interest:Interest"
        half_life_days: 30

Every ``product_view`` and ``add_to_cart`` with a ``category``, and every order item with one,
adds a weight (1, 3 and 5 by default) to the customer's score of that category; scores decay
exponentially in event time (``half_life_days``); only the ``top_n`` highest are kept. A
category's share is its score over the kept total. The value is:

- the top category once its share reaches ``enter_share`` (0.4); with hysteresis, a category
  keeps the value while its share stays at or above ``enter_share - margin`` and another one
  takes over only with a share ``margin`` (0.1) above it;
- ``mixed`` when no category qualifies (after the customer's first categorised event).

Decay scales every score alike, so shares (and the value) change only at events. CEL variables:
``interests`` (map category -> share) and ``top_interest`` (the value's category, ``""`` when
``mixed`` or none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import DAY_US, Dimension, Emit, Getter, Moment, StateSlice

MIXED = "mixed"


class InterestParams(BaseModel):
    """Decay, bounds, weights and hysteresis of the ``interest`` dimension."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_days: float = Field(default=30.0, gt=0)
    top_n: int = Field(default=8, ge=1, le=100)
    enter_share: float = Field(default=0.4, gt=0, le=1)
    margin: float = Field(default=0.1, ge=0, lt=1)
    view_weight: float = Field(default=1.0, ge=0)
    cart_weight: float = Field(default=3.0, ge=0)
    order_weight: float = Field(default=5.0, ge=0)


@dataclass(slots=True)
class InterestSlice(StateSlice):
    """Decayed category scores as of instant ``ref`` (µs)."""

    ref: int = 0
    scores: dict[str, float] = field(default_factory=dict)

    def dump(self) -> list[Any]:
        return [self.ref, [x for item in self.scores.items() for x in item]]

    @classmethod
    def load(cls, version: int, data: list[Any]) -> InterestSlice:
        ref, flat = data
        return cls(ref, {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)})

    def add(self, t: int, weights: Mapping[str, float], half_life_us: float, top_n: int) -> None:
        """Decay the scores to ``t`` (a late event is decayed to ``ref`` instead), add, prune.

        Examples
        --------
        >>> s = InterestSlice()
        >>> s.add(0, {"books": 1.0}, 10.0, 2); s.add(10, {"toys": 1.0}, 10.0, 2)
        >>> s.scores
        {'books': 0.5, 'toys': 1.0}
        >>> s.add(10, {"home": 2.0}, 10.0, 2); s.scores
        {'toys': 1.0, 'home': 2.0}
        """
        if t >= self.ref:
            if self.scores and t > self.ref:
                factor = 0.5 ** ((t - self.ref) / half_life_us)
                self.scores = {c: v * factor for c, v in self.scores.items()}
            self.ref = t
            scale = 1.0
        else:
            scale = 0.5 ** ((self.ref - t) / half_life_us)
        for category, weight in weights.items():
            self.scores[category] = self.scores.get(category, 0.0) + weight * scale
        if len(self.scores) > top_n:
            ranked = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))
            keep = {c for c, _ in ranked[:top_n]}
            self.scores = {c: v for c, v in self.scores.items() if c in keep}

    def shares(self) -> dict[str, float]:
        """Each kept category's share of the kept total."""
        total = sum(self.scores.values())
        return {c: v / total for c, v in self.scores.items()} if total > 0 else {}


class Interest(Dimension):
    """Category affinity with decay, a bounded top N and hysteresis (see the module docstring).

    Examples
    --------
    >>> dim = Interest(InterestParams())
    >>> s = CustomerState("c")
    >>> dim.observe(s, Event("e1", "c", "product_view", 0, categories=("books",)), 0)
    >>> dim.choose(s), dim.variables()["interests"](s, 0)
    ('books', {'books': 1.0})
    """

    kind = "interest"
    Params = InterestParams
    slice_type = InterestSlice

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        assert isinstance(params, InterestParams)
        self.cfg = params
        self.half_life_us = params.half_life_days * DAY_US
        self.weights = {
            "product_view": params.view_weight,
            "add_to_cart": params.cart_weight,
            "order_completed": params.order_weight,
        }

    def names(self) -> list[str]:
        return [self.kind]

    def observe(self, state: CustomerState, event: Event, t: int) -> None:
        if not event.categories:
            return
        weight = self.weights.get(event.type, 0.0)
        if weight <= 0:
            return
        added: dict[str, float] = {}
        for category in event.categories:
            added[category] = added.get(category, 0.0) + weight
        s: InterestSlice = self.slice(state)
        s.add(event.ts, added, self.half_life_us, self.cfg.top_n)

    def merge_slice(self, survivor: CustomerState, merged: CustomerState) -> None:
        """Add ``merged``'s decayed scores to ``survivor``'s, both decayed to the later of
        their reference instants (:meth:`InterestSlice.add` keeps the top N)."""
        if self.kind not in merged.slices:
            return
        theirs: InterestSlice = self.slice(merged)
        if self.kind not in survivor.slices:
            survivor.slices[self.kind] = InterestSlice(theirs.ref, dict(theirs.scores))
            return
        ours: InterestSlice = self.slice(survivor)
        ref = max(ours.ref, theirs.ref)
        factor = 0.5 ** ((ref - theirs.ref) / self.half_life_us)
        ours.add(
            ref,
            {c: v * factor for c, v in theirs.scores.items()},
            self.half_life_us,
            self.cfg.top_n,
        )

    def choose(self, state: CustomerState) -> str:
        """The value from the shares and the current value (hysteresis)."""
        shares = self.slice(state).shares()
        if not shares:
            return MIXED
        best = min(shares, key=lambda c: (-shares[c], c))
        current = state.values.get(self.kind)
        enter, margin = self.cfg.enter_share, self.cfg.margin
        if current is not None and current != MIXED and current in shares:
            held = shares[current]
            if held >= enter - margin and not (
                best != current and shares[best] >= max(enter, held + margin)
            ):
                return current
        return best if shares[best] >= enter else MIXED

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if self.kind not in state.slices:
            return []
        if at.event is not None and not at.event.categories:
            return []
        value = self.choose(state)
        if value == state.values.get(self.kind):
            return []
        return [emit(state, self.kind, value, at, self.reason(state, value))]

    def reason(self, state: CustomerState, value: str) -> dict[str, Any]:
        """The shares behind ``value``."""
        shares = self.slice(state).shares()
        top = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        rule = (
            f"no category has a share >= {self.cfg.enter_share:g}"
            if value == MIXED
            else f"share of {value} >= {self.cfg.enter_share:g} (hysteresis {self.cfg.margin:g})"
        )
        return {"rule": rule, "shares": {c: round(v, 4) for c, v in top}}

    def variables(self) -> Mapping[str, Getter]:
        def interests(s: CustomerState, _today: int) -> dict[str, float]:
            if self.kind not in s.slices:
                return {}
            return dict(self.slice(s).shares())

        def top(s: CustomerState, _today: int) -> str:
            value = s.values.get(self.kind)
            return "" if value is None or value == MIXED else value

        return {"interests": interests, "top_interest": top}

    def explain(
        self, state: CustomerState, name: str, value: str | None, t: int, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        if value is None or self.kind not in state.slices:
            return None
        return self.reason(state, value)
