"""The dimension registry: built-in order, custom classes from the config, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from segmentflow.config import ConfigError, config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.inspect import describe
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.registry import REGISTRY, load_class

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
DAY = 86_400_000_000
T0 = 20_000 * DAY


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def churn(**params: object) -> dict[str, object]:
    return {"dimensions": [{"class": "churn_risk:ChurnRisk", **params}]}


def test_builtins_run_in_contract_order() -> None:
    engine = Engine(config_from_dict({"rules": [{"name": "b", "when": "orders >= 1"}]}))
    assert [d.kind for d in engine.registry] == ["lifecycle", "rfm", "persona", "rules"]
    assert engine.dimensions == ["lifecycle", "rfm", "persona", "rule:b"]
    assert set(REGISTRY) >= {"lifecycle", "rfm", "persona", "rules", "clv", "interest"}


def test_custom_dimension_runs_before_rules_and_feeds_them() -> None:
    config = churn(medium_days=2, high_days=4) | {
        "rules": [{"name": "gone", "when": 'churn_risk == "high"'}]
    }
    engine = Engine(config_from_dict(config))
    assert [d.kind for d in engine.registry][-2:] == ["churn_risk", "rules"]
    state = engine.new_state("c")
    out = engine.apply(state, Event("e1", "c", "page_view", T0))
    assert [(c.dimension, c.current) for c in out.changes] == [
        ("lifecycle", "prospect"),
        ("churn_risk", "low"),
    ]
    assert state.next_due == T0 + DAY  # the rule reads a time-dependent variable: midnight
    later = engine.advance(state, T0 + 10 * DAY)
    assert [(c.dimension, c.current, c.at) for c in later] == [
        ("churn_risk", "medium", T0 + 2 * DAY),
        ("churn_risk", "high", T0 + 4 * DAY),
        ("rule:gone", "in", T0 + 4 * DAY),  # a midnight: after churn_risk at the same moment
    ]
    why = describe(state, engine)["dimensions"]["churn_risk"]["why"]
    assert why == {"days_inactive": 10, "thresholds_days": [2.0, 4.0]}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"class": "no_such_pkg.mod:X"}, "cannot import module 'no_such_pkg.mod'"),
        ({"class": "churn_risk:Nope"}, "has no attribute 'Nope'"),
        ({"class": "churn_risk:ChurnParams"}, "not a subclass of"),
        ({"class": "churn_risk"}, "'package.module:ClassName'"),
        ({"class": "churn_risk:ChurnRisk", "high_days": 1}, "high_days must be greater"),
        ({"class": "churn_risk:ChurnRisk", "typo": 1}, "typo"),
        ({"class": "segmentflow.segmenters.rfm:Rfm"}, "kind 'rfm' is already taken"),
    ],
)
def test_bad_entries_name_the_entry_and_the_fix(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"dimensions": [entry]})
    assert f"dimensions[0] (class {entry['class']!r})" in str(info.value)
    assert message in str(info.value)


def test_entry_without_class_or_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"dimensions\.0: .*either `kind`.* or `class`"):
        config_from_dict({"dimensions": [{"medium_days": 3}]})


def test_rule_using_an_unloaded_dimension_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown variable.*days_inactive"):
        config_from_dict({"rules": [{"name": "x", "when": "days_inactive > 3"}]})
    config_from_dict(churn() | {"rules": [{"name": "x", "when": "days_inactive > 3"}]})


def test_load_class_imports_a_user_module() -> None:
    cls = load_class("churn_risk:ChurnRisk")
    assert cls.kind == "churn_risk" and "churn_risk" in sys.modules
