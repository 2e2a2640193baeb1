"""engine/inspect.py: ``describe`` explains a customer from its state and the engine (pure):
times as contract strings, one entry per dimension value with its sequence, rule segments with
their variables, values of dimensions no longer configured kept."""

from __future__ import annotations

from typing import Any

import orjson

from segmentflow.config import config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.inspect import describe
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.decode import Event

DAY = 86_400_000_000
T0 = 20_000 * DAY  # 2024-10-04T00:00:00Z


def engine(**config: Any) -> Engine:
    config.setdefault("rfm", {"enabled": False})
    config.setdefault("persona", {"enabled": False})
    return Engine(config_from_dict(config))


def bought(e: Engine, cid: str = "c-1", revenue: float = 120.0) -> CustomerState:
    state = e.new_state(cid)
    e.apply(state, Event("e1", cid, "order_completed", T0, revenue))
    return state


def test_an_empty_state_has_no_values_but_its_rules_are_out() -> None:
    e = engine(rules=[{"name": "big", "when": "revenue >= 100"}])
    out = describe(CustomerState("nobody", clock=0), e)
    assert out["customer_id"] == "nobody"
    assert out["clock"] == "1970-01-01T00:00:00Z"
    assert out["last_seen"] is None and out["next_due"] is None
    assert "lifecycle" not in out["dimensions"]
    assert out["dimensions"]["rule:big"]["value"] == "out"
    assert out["dimensions"]["rule:big"]["sequence"] == 0


def test_a_buyer_is_explained_with_times_values_sequences_and_variables() -> None:
    e = engine(rules=[{"name": "big", "when": "revenue >= 100"}])
    out = describe(bought(e), e)
    assert out["first_order"] == out["last_order"] == "2024-10-04T00:00:00Z"
    assert out["clock"] == "2024-10-04T00:00:00Z"
    assert out["next_due"] is not None  # lifecycle moves on by time
    assert out["dimensions"]["lifecycle"]["value"] == "new"
    assert out["dimensions"]["lifecycle"]["sequence"] == 1
    big = out["dimensions"]["rule:big"]
    assert big["value"] == "in" and big["sequence"] == 1
    assert big["why"]["when"] == "revenue >= 100"
    assert big["why"]["variables"]["revenue"] == 120.0
    assert out["variables"]["orders"] == 1
    assert out["variables"]["revenue"] == 120.0


def test_dimensions_are_sorted_and_the_result_is_json() -> None:
    e = engine(rules=[{"name": "zz", "when": "orders >= 1"}, {"name": "aa", "when": "orders > 5"}])
    out = describe(bought(e), e)
    assert list(out["dimensions"]) == sorted(out["dimensions"])
    assert orjson.loads(orjson.dumps(out)) == out


def test_a_value_of_a_dimension_no_longer_configured_is_kept() -> None:
    e = engine()
    state = bought(e)
    state.values["rule:retired"] = "in"
    state.seqs["rule:retired"] = 4
    out = describe(state, e)
    assert out["dimensions"]["rule:retired"] == {"value": "in", "sequence": 4}
