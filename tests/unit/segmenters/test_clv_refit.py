"""The ``clv`` population refit (segmenters/clv.py, issue 16): fitted parameters from every
customer's ``(x, t_x, T)``, high_value as the top share of the alive, re-valued customers and
earlier due moments, the processor's own refit schedule, and ``kind: clv`` in the config."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from segmentflow.config import ConfigError, config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.segmenters.checks import builtin_case, replay, synthetic_events
from segmentflow.segmenters.clv import (
    Clv,
    ClvParams,
    ClvSlice,
    Columns,
    classify,
    population_figures,
)
from segmentflow.segmenters.clv_model import DAY_US, WEEK_US, BgNbd
from segmentflow.segmenters.dimension import Moment
from segmentflow.service.processor import Processor
from segmentflow.state.memory import MemoryStore

TRUE = BgNbd(r=0.5, alpha=6.0, a=0.8, b=3.0)
AT = 400 * DAY_US


def sampled(n: int, seed: int = 3) -> dict[str, tuple[int, int, int, float]]:
    """A population drawn from :data:`TRUE`: customers first seen 10-52 weeks before ``AT``."""
    rng = np.random.default_rng(seed)
    weeks = rng.integers(10, 53, n)
    x, t_x = TRUE.sample(weeks.astype(np.float64), rng)
    first = AT // DAY_US - weeks * 7
    spend = rng.gamma(4.0, 10.0, n) * x
    return {
        f"c{i}": (int(first[i]), int(first[i] + np.floor(t_x[i] * 7)), int(x[i]), float(spend[i]))
        for i in range(n)
    }


def refitted(n: int = 20_000, **params: Any) -> Clv:
    dim = Clv(ClvParams(refit_min_customers=10, **params))
    dim.population = sampled(n)
    dim.version = 1
    dim.prepare_sweep(AT)
    return dim


def test_refit_recovers_the_population_parameters() -> None:
    dim = refitted()
    assert dim.refits == 1
    got = (dim.cfg.r, dim.cfg.alpha, dim.cfg.a, dim.cfg.b)
    assert got == pytest.approx((TRUE.r, TRUE.alpha, TRUE.a, TRUE.b), rel=0.25)
    assert dim.params == ClvParams(refit_min_customers=10)  # the config stays as given


def test_high_value_is_the_top_share_of_the_alive() -> None:
    dim = refitted(high_value_top=0.2)
    rows = np.array([dim.population[c] for c in sorted(dim.population)], dtype=np.float64)
    figures = population_figures(dim.cfg, Columns.of(rows, AT), dim.horizon_weeks)
    values = Counter(classify(figures, AT, dim.high_value_min, dim.cfg.growing_ratio))
    alive = len(rows) - values["likely_lost"]
    assert values["high_value"] <= 0.2 * alive + 1
    # the top 20% by value among the alive, whatever else they are
    top = int((figures.clv[figures.lost > AT] >= dim.high_value_min).sum())
    assert top == int(0.2 * alive)
    assert dim.high_value_min != ClvParams().high_value_min


def test_a_refit_without_new_orders_moves_nobody() -> None:
    dim = refitted(2_000)
    dim.given = {}  # every customer now differs from what it was given: moved
    assert len(dim.moved(None)) == 2_000
    dim.prepare_sweep(AT + 7 * DAY_US)
    assert dim.refits == 1 and dim.moved(None) == []


def test_too_small_a_population_keeps_the_parameters() -> None:
    dim = Clv(ClvParams(refit_min_customers=50))
    dim.population = dict(list(sampled(200).items())[:49])
    dim.version = 1
    dim.prepare_sweep(AT)
    assert dim.refits == 0 and dim.cfg == dim.params


def test_a_fit_without_finite_figures_keeps_the_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # extreme parameters (seen on tiny populations): expected orders overflow to NaN
    import segmentflow.segmenters.clv as clv_module

    extreme = ClvParams().model_copy(update={"r": 1e-300, "alpha": 1e300, "a": 1.0, "b": 1e300})
    monkeypatch.setattr(clv_module, "fit_population", lambda cols, current: extreme)
    dim = Clv(ClvParams(refit_min_customers=10))
    dim.population = sampled(200)
    dim.version = 1
    dim.prepare_sweep(AT)
    assert dim.refits == 0 and dim.cfg == dim.params


def test_on_sweep_revalues_and_brings_the_due_moment_forward() -> None:
    dim = Clv(ClvParams())
    state = CustomerState("c", slices={"clv": ClvSlice(0, 70, 3, 20.0, 60.0)})
    old_lost = dim.lost_at(state.slices["clv"])
    state.values["clv"], state.next_due, state.clock = "steady", old_lost, 100 * DAY_US
    dim.cfg = dim.cfg.model_copy(update={"a": 2.0})  # a higher dropout: lost earlier
    lost = dim.lost_at(state.slices["clv"])
    assert lost is not None and old_lost is not None and 100 * DAY_US < lost < old_lost
    assert dim.on_sweep(state, Moment(100 * DAY_US), None, Engine.emit) == []  # still steady
    assert state.next_due == lost
    dim.cfg = dim.cfg.model_copy(update={"a": 8.0})  # lost before the refit moment
    (change,) = dim.on_sweep(state, Moment(100 * DAY_US), None, Engine.emit)
    assert (change.previous, change.current) == ("steady", "likely_lost")
    assert change.event_id is None and change.at == 100 * DAY_US


def test_population_round_trips_through_dump() -> None:
    dim = refitted(2_000)
    again = Clv(ClvParams(refit_min_customers=10))
    data = dim.dump_population()
    assert data is not None
    again.load_population(data)
    assert again.cfg == dim.cfg and again.high_value_min == dim.high_value_min
    assert again.population == dim.population and again.dump_population() == data


def test_replay_refits_weekly_with_time_caused_changes_at_the_refit_moment() -> None:
    case = builtin_case("clv", synthetic_events(60, 200))
    changes, processor = replay(case)
    dim = processor.engine.by_kind("clv")
    assert isinstance(dim, Clv) and dim.refits >= 10
    assert processor.next_refit["clv"] is not None and processor.next_refit["clv"] % WEEK_US == 0
    refit = [c for c in changes if c.dimension == "clv" and c.at % WEEK_US == 0]
    assert refit and all(c.event_id is None for c in refit)
    assert {c.current for c in refit} >= {"steady", "growing"}


def test_refit_every_days_zero_keeps_the_given_parameters() -> None:
    events = synthetic_events(60, 200)
    case = builtin_case("clv", events)
    fixed = type(case)(
        "clv",
        {"persona": {"enabled": False}, "dimensions": [{"kind": "clv", "refit_every_days": 0}]},
        events,
        case.until,
    )
    _, processor = replay(fixed)
    dim = processor.engine.by_kind("clv")
    assert isinstance(dim, Clv) and dim.refits == 0 and processor.next_refit == {}


def test_a_config_without_clv_has_no_refit_schedule() -> None:
    processor = Processor(config_from_dict({"persona": {"enabled": False}}), MemoryStore())
    assert processor.next_refit == {}


def test_kind_entries_enable_registered_dimensions() -> None:
    config = config_from_dict({"dimensions": [{"kind": "clv", "horizon_days": 30}]})
    kinds = [d.kind for d in Engine(config).registry]
    assert kinds == ["lifecycle", "rfm", "persona", "clv", "rules"]
    with pytest.raises(ConfigError, match="either `kind`"):
        config_from_dict({"dimensions": [{"kind": "clv", "class": "a.b:C"}]})
    with pytest.raises(ConfigError, match=r"dimensions\[0\] \(kind 'rfm'\)"):
        config_from_dict({"dimensions": [{"kind": "rfm"}]})
    with pytest.raises(ConfigError, match="already taken"):
        config_from_dict({"dimensions": [{"kind": "clv"}, {"kind": "clv"}]})
