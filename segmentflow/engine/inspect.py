"""Explain a customer: its state, current value per dimension, and why (``inspect``)."""

from __future__ import annotations

from typing import Any

from segmentflow.engine.engine import LIFECYCLE, Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.timefmt import format_us
from segmentflow.segmenters import lifecycle
from segmentflow.segmenters.features import variables


def _time(us: int | None) -> str | None:
    return None if us is None else format_us(us)


def describe(state: CustomerState, engine: Engine) -> dict[str, Any]:
    """A JSON-able explanation of ``state`` at its clock."""
    t = state.clock if state.clock is not None else 0
    env = variables(state, t)
    dims: dict[str, Any] = {}
    for dim, value in sorted(state.values.items()):
        entry: dict[str, Any] = {"value": value, "sequence": state.seqs.get(dim, 0)}
        if dim == LIFECYCLE:
            entry["why"] = lifecycle.reason(state, value, t, engine.config.lifecycle)
        dims[dim] = entry
    for rule in engine.rules:
        entry = dims.setdefault(rule.dimension, {"value": "out", "sequence": 0})
        entry["why"] = {
            "when": rule.source,
            "variables": {name: env[name] for name in sorted(rule.references)},
        }
    return {
        "customer_id": state.customer_id,
        "clock": _time(state.clock),
        "next_due": _time(state.next_due),
        "first_seen": _time(state.first_seen),
        "last_seen": _time(state.last_seen),
        "first_order": _time(state.first_order),
        "last_order": _time(state.last_order),
        "dimensions": dims,
        "variables": {k: v for k, v in env.items() if k not in ("lifecycle", "rfm", "persona")},
    }
