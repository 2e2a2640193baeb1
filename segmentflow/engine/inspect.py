"""Explain a customer: its state, current value per dimension, and why (``inspect``)."""

from __future__ import annotations

from typing import Any

from segmentflow.engine.engine import Engine
from segmentflow.engine.identity import MERGED, MERGED_INTO
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.timefmt import format_us
from segmentflow.segmenters.features import GETTERS, variables


def _time(us: int | None) -> str | None:
    return None if us is None else format_us(us)


def describe(state: CustomerState, engine: Engine) -> dict[str, Any]:
    """A JSON-able explanation of ``state`` at its clock: per dimension (of every registered
    dimension) the value, sequence and the dimension's own ``explain``, and the variables.

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> engine = Engine(config_from_dict({"rules": [{"name": "buyer", "when": "orders >= 1"}]}))
    >>> out = describe(CustomerState("c", clock=0), engine)
    >>> out["dimensions"]["rule:buyer"]["why"]
    {'when': 'orders >= 1', 'variables': {'orders': 0}}
    """
    t = state.clock if state.clock is not None else 0
    env = variables(state, t, None, engine.getters)
    dims: dict[str, Any] = {}
    for dim in engine.registry:
        for name in dim.names():
            value = state.values.get(name)
            if value is None and not name.startswith("rule:"):
                continue
            entry: dict[str, Any] = {
                "value": "out" if value is None else value,
                "sequence": state.seqs.get(name, 0),
            }
            why = dim.explain(state, name, value, t, env)
            if why is not None:
                entry["why"] = why
            dims[name] = entry
    for name, value in state.values.items():  # a dimension no longer configured
        dims.setdefault(name, {"value": value, "sequence": state.seqs.get(name, 0)})
    out: dict[str, Any] = {
        "customer_id": state.customer_id,
        "clock": _time(state.clock),
        "next_due": _time(state.next_due),
        "first_seen": _time(state.first_seen),
        "last_seen": _time(state.last_seen),
        "first_order": _time(state.first_order),
        "last_order": _time(state.last_order),
        "dimensions": dict(sorted(dims.items())),
        "variables": {k: v for k, v in env.items() if k in GETTERS},
    }
    if MERGED_INTO in state.extra:  # identity merges, only when there was one
        out["merged_into"] = state.extra[MERGED_INTO]
    if state.extra.get(MERGED):
        out["merged"] = list(state.extra[MERGED])
    return out
