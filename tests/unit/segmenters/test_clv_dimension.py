"""The ``clv`` dimension (segmenters/clv.py): figures equal the vectorised model's, P(alive)
crosses the threshold at the computed microsecond, replay emits every value with the numbers,
rules read its variables, and the shared check suite passes."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segmentflow.config import ConfigError, config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.segmenters.checks import Case, Check, builtin_case, checks_for, synthetic_events
from segmentflow.segmenters.clv import Clv, ClvParams, ClvSlice
from segmentflow.segmenters.clv_model import DAY_US, BgNbd, GammaGamma
from segmentflow.service.replay import replay_events
from segmentflow.state.memory import MemoryStore

CLASS = "segmentflow.segmenters.clv:Clv"
EVENTS = synthetic_events(60, 200)


def config(**params: Any) -> dict[str, Any]:
    return {"persona": {"enabled": False}, "dimensions": [{"class": CLASS, **params}]}


def test_figures_equal_the_vectorised_model() -> None:
    cfg = ClvParams()
    dim = Clv(cfg)
    model = BgNbd(cfg.r, cfg.alpha, cfg.a, cfg.b)
    spend = GammaGamma(cfg.p, cfg.q, cfg.gamma)
    rng = random.Random(16)
    for _ in range(200):
        first = rng.randrange(0, 400)
        x = rng.choice([0, 1, 2, 3, 8, 25])
        last = first + (rng.randrange(1, 300) if x else 0)
        t = (last + rng.randrange(0, 400)) * DAY_US + rng.randrange(DAY_US)
        state = CustomerState("c", slices={"clv": ClvSlice(first, last, x, 10.0, 30.0 * x)})
        f = dim.figures(state, t)
        cols = (np.array([x]), np.array([(last - first) / 7]), np.array([(t / DAY_US - first) / 7]))
        assert f.p_alive == pytest.approx(model.p_alive(*cols)[0], rel=1e-9)
        expected = model.expected_orders(90 / 7, *cols)[0]
        assert f.expected_orders == pytest.approx(expected, rel=1e-9)
        mean = np.array([30.0 if x else 0.0])
        assert f.clv == pytest.approx(expected * spend.expected_spend(cols[0], mean)[0], rel=1e-9)


def test_lost_at_is_the_first_microsecond_below_the_threshold() -> None:
    dim = Clv(ClvParams(lost_below=0.3))
    for x, span in ((1, 3), (2, 40), (6, 100), (30, 200)):
        state = CustomerState("c", slices={"clv": ClvSlice(50, 50 + span, x, 1.0, 2.0)})
        lost = dim.lost_at(state.slices["clv"])
        assert lost is not None
        assert dim.figures(state, lost).p_alive < 0.3 <= dim.figures(state, lost - 1).p_alive
        assert (
            dim.value(state, lost - 1) != "likely_lost" and dim.value(state, lost) == "likely_lost"
        )
    assert dim.lost_at(ClvSlice(5, 5, 0, 1.0, 0.0)) is None  # BG/NBD: no repeat, never lost


def replay(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    until = builtin_case("lifecycle", EVENTS).until
    out = replay_events(EVENTS, config_from_dict(cfg), until, MemoryStore())
    return [change["data"] for change in out]


def test_replay_emits_values_with_their_numbers_and_time_driven_losses() -> None:
    changes = replay(
        config(high_value_min=60.0)
        | {"rules": [{"name": "fading", "when": "p_alive < 0.5 && clv_90d < 20.0"}]}
    )
    clv = [c for c in changes if c["dimension"] == "clv"]
    values = Counter(c["current"] for c in clv)
    assert {"likely_lost", "high_value", "steady"} <= set(values)
    timed = [c for c in clv if c["cause"]["kind"] == "time"]
    assert timed and all(c["current"] == "likely_lost" for c in timed)
    for c in clv:
        assert set(c["reason"]) >= {"rule", "p_alive", "expected_orders_90d", "clv_90d"}
        if c["current"] == "likely_lost":
            assert c["reason"]["p_alive"] <= 0.3  # rounded to 6 digits at the crossing
        if c["current"] == "high_value":
            assert c["reason"]["clv_90d"] >= 60.0
    assert any(c["dimension"] == "rule:fading" for c in changes)


def test_default_config_is_untouched_by_the_module() -> None:
    changes = replay({"persona": {"enabled": False}})
    assert not any(c["dimension"] == "clv" for c in changes)


def test_bad_parameters_name_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"dimensions\[0\].*lost_below"):
        config_from_dict(config(lost_below=1.5))
    with pytest.raises(ConfigError, match=r"dimensions\[0\]"):
        config_from_dict(config(unknown_key=1))


def test_inspect_explains_with_the_numbers() -> None:
    dim = Clv(ClvParams())
    state = CustomerState("c", slices={"clv": ClvSlice(0, 70, 3, 20.0, 60.0)})
    why = dim.explain(state, "clv", "steady", 100 * DAY_US, {})
    assert why is not None and why["repeat_transactions"] == 3
    assert why["p_alive"] == pytest.approx(0.7059, abs=1e-4)
    assert dim.explain(CustomerState("d"), "clv", None, 0, {}) is None
    getters = dim.variables()
    assert getters["p_alive"](CustomerState("d"), 10) == 0.0  # no order yet
    assert getters["clv_90d"](state, 100) == pytest.approx(dim.figures(state, 100 * DAY_US).clv)


CASE = Case("clv", config(), EVENTS, builtin_case("lifecycle", EVENTS).until)


@pytest.mark.parametrize("check", list(checks_for(CASE)), ids=str)
def test_clv_passes_the_shared_checks(check: Check, tmp_path: Path) -> None:
    check(tmp_path)
