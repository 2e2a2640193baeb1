"""Rule segments (CONTRACT §6): compile-time errors name the rule; an erroring expression counts
as false and is counted; the memo cache keeps values of different types apart."""

from __future__ import annotations

from typing import Any

import pytest

from segmentflow.config import ConfigError, RuleConfig, SegmentConfig, config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.features import GETTERS
from segmentflow.segmenters.registry import builtin_variables
from segmentflow.segmenters.rules import RuleEvaluationError, compile_rules

DAY = 86_400_000_000
T0 = 20_000 * DAY + 9 * 3_600_000_000


def one(when: str, name: str = "r") -> Any:
    (rule,) = compile_rules([RuleConfig(name=name, when=when)])
    return rule


# --------------------------------------------------------------------------- compile errors
@pytest.mark.parametrize("when", ["orders >", "1 +", "orders >= (2", "traits.", "&& orders"])
def test_syntax_error_raises_config_error_naming_rule(when: str) -> None:
    with pytest.raises(ConfigError, match="broken_rule"):
        compile_rules(
            [RuleConfig(name="fine", when="orders >= 1"), RuleConfig(name="broken_rule", when=when)]
        )


def test_unknown_variable_names_rule_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        compile_rules([RuleConfig(name="typo", when="order_count >= 2 && orders_7d >= 1")])
    assert "typo" in str(info.value) and "order_count" in str(info.value)


def test_config_loading_compiles_rules() -> None:
    with pytest.raises(ConfigError, match="bad_expr"):
        config_from_dict({"rules": [{"name": "bad_expr", "when": "orders >"}]})


def test_engine_refuses_broken_rules_even_if_config_was_not_compiled() -> None:
    config = SegmentConfig.model_validate({"rules": [{"name": "nope", "when": "foo == 1"}]})
    with pytest.raises(ConfigError, match="nope"):
        Engine(config)


@pytest.mark.parametrize("name", ["Bad", "with-dash", "", "spaced name", "ümlaut"])
def test_bad_rule_name_stops_start_up_naming_it(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"rules": [{"name": name, "when": "orders >= 1"}]})
    assert repr(name) in str(info.value)


def test_duplicate_rule_name_rejected() -> None:
    rules = [{"name": "twice", "when": "orders >= 1"}, {"name": "twice", "when": "orders >= 2"}]
    with pytest.raises(ConfigError, match="twice"):
        config_from_dict({"rules": rules})


def test_unknown_key_named() -> None:
    with pytest.raises(ConfigError, match="lifecylce"):
        config_from_dict({"lifecylce": {"new_days": 3}})
    with pytest.raises(ConfigError, match="unless"):
        config_from_dict({"rules": [{"name": "x", "when": "orders >= 1", "unless": "true"}]})


def test_every_contract_variable_is_known() -> None:
    totals = [
        "orders",
        "revenue",
        "refunds",
        "page_views",
        "product_views",
        "cart_adds",
        "searches",
        "checkouts",
        "emails_delivered",
        "email_opens",
        "email_clicks",
        "avg_order_value",
    ]
    windowed = [
        f"{m}_{n}d"
        for m in (
            "orders",
            "revenue",
            "page_views",
            "product_views",
            "cart_adds",
            "searches",
            "checkouts",
            "email_opens",
            "email_clicks",
        )
        for n in (7, 30, 90)
    ]
    other = [
        "traits",
        "days_since_last_order",
        "days_since_first_order",
        "days_since_first_seen",
        "days_since_last_seen",
        "email_unsubscribed",
        "email_complained",
        "email_hard_bounced",
        "lifecycle",
        "rfm",
        "persona",
    ]
    known, _ = builtin_variables()  # core §6 variables and the built-in dimensions'
    assert set(totals + windowed + other) <= set(known)
    assert {"lifecycle", "rfm", "persona", "r_score"}.isdisjoint(GETTERS)  # contributed
    # and each compiles as a rule reference
    compile_rules([RuleConfig(name=f"v{i}", when=f"{v} != null") for i, v in enumerate(other)])


# --------------------------------------------------------------------------- evaluation
def test_erroring_expression_raises_rule_evaluation_error() -> None:
    rule = one("avg_order_value > 50.0", "aov")
    with pytest.raises(RuleEvaluationError) as info:
        rule.evaluate({"avg_order_value": None})
    assert info.value.rule == "aov"
    assert rule.evaluate({"avg_order_value": 60.0}) is True
    assert rule.evaluate({"avg_order_value": 10.0}) is False


def test_non_boolean_result_is_an_error() -> None:
    rule = one("orders", "count")
    with pytest.raises(RuleEvaluationError):
        rule.evaluate({"orders": 3})


def _event(eid: str, type_: str, ts: int, amount: float = 0.0) -> Event:
    return Event(eid, "c-1", type_, ts, amount)


def test_error_counts_as_false_and_is_counted_per_rule() -> None:
    engine = Engine(
        config_from_dict({"rules": [{"name": "aov", "when": "avg_order_value > 50.0"}]})
    )
    state = engine.new_state("c-1")
    first = engine.apply(state, _event("e1", "page_view", T0))
    second = engine.apply(state, _event("e2", "page_view", T0 + 1))
    # never in, so nothing for the rule (only lifecycle: prospect)
    assert [c.dimension for c in first.changes + second.changes] == ["lifecycle"]
    assert engine.rule_errors["aov"] == 2
    order = engine.apply(state, _event("e3", "order_completed", T0 + 2, 100.0))
    rule_changes = [c for c in order.changes if c.dimension == "rule:aov"]
    assert [(c.previous, c.current, c.sequence, c.event_id) for c in rule_changes] == [
        ("out", "in", 1, "e3")
    ]
    assert engine.rule_errors["aov"] == 2  # no new error once avg_order_value is a number
    refund = engine.apply(state, _event("e4", "order_refunded", T0 + 3, 80.0))
    assert [(c.previous, c.current, c.sequence) for c in refund.changes] == [("in", "out", 2)]


def test_erroring_rule_turns_a_member_out() -> None:
    # traits.vip missing -> error -> false: a member leaves the segment
    engine = Engine(config_from_dict({"rules": [{"name": "vip", "when": "traits.vip == true"}]}))
    state = engine.new_state("c-1")
    engine.apply(state, Event("e1", "c-1", "identify", T0, traits={"vip": True}))
    assert state.values["rule:vip"] == "in"
    out = engine.apply(state, Event("e2", "c-1", "identify", T0 + 1, traits={"vip": None}))
    assert [(c.dimension, c.previous, c.current) for c in out.changes] == [
        ("rule:vip", "in", "out")
    ]
    assert engine.rule_errors["vip"] == 1


# --------------------------------------------------------------------------- memo cache
def verdict(rule: Any, variables: dict[str, Any]) -> bool | str:
    try:
        return bool(rule.evaluate(variables))
    except RuleEvaluationError:
        return "error"


def test_cache_keeps_true_apart_from_1_and_1_0() -> None:
    # CEL: true == true, but 1 == true and 1.0 == true are no match (false or error)
    rule = one("traits.vip == true", "vip")
    assert verdict(rule, {"traits": {"vip": True}}) is True
    for value in (1, 1.0):
        assert verdict(rule, {"traits": {"vip": value}}) in (False, "error")
    assert verdict(rule, {"traits": {"vip": True}}) is True


def test_cache_keeps_1_apart_from_true() -> None:
    rule = one("traits.n == 1", "n")
    assert verdict(rule, {"traits": {"n": 1}}) is True
    assert verdict(rule, {"traits": {"n": True}}) in (False, "error")
    assert verdict(rule, {"traits": {"n": 1}}) is True


def test_cache_keeps_string_apart_from_number() -> None:
    rule = one('traits.age == "30"', "age")
    assert verdict(rule, {"traits": {"age": "30"}}) is True
    assert verdict(rule, {"traits": {"age": 30}}) in (False, "error")


def test_cache_remembers_errors_per_value() -> None:
    rule = one("avg_order_value > 50.0", "aov")
    for _ in range(2):  # second round served from the cache
        assert verdict(rule, {"avg_order_value": None}) == "error"
        assert verdict(rule, {"avg_order_value": 60.0}) is True
        assert verdict(rule, {"avg_order_value": 0.0}) is False


def test_cache_keeps_top_level_types_apart() -> None:
    rule = one("lifecycle == null", "nolc")
    assert rule.evaluate({"lifecycle": None}) is True
    assert rule.evaluate({"lifecycle": "new"}) is False
    assert rule.evaluate({"lifecycle": None}) is True


def test_trait_subset_and_whole_map_rules_agree() -> None:
    named = one('traits.country == "DE"', "a")
    whole = one('"country" in traits && traits["country"] == "DE"', "b")
    assert named.trait_keys == ("country",)
    assert whole.trait_keys is None
    for traits, expected in [
        ({"country": "DE", "x": 1}, True),
        ({"country": "DE", "x": 2}, True),
        ({"country": "FR"}, False),
    ]:
        assert named.evaluate({"traits": traits}) is expected
        assert whole.evaluate({"traits": traits}) is expected
    assert whole.evaluate({"traits": {}}) is False
    with pytest.raises(RuleEvaluationError):  # no such key
        named.evaluate({"traits": {}})


def test_time_dependent_flag() -> None:
    assert one("orders_7d >= 1").time_dependent
    assert one("days_since_last_seen > 3").time_dependent
    assert one('lifecycle == "new"').time_dependent
    assert not one("orders >= 2 && revenue > 10.0").time_dependent
    assert not one('traits.country == "DE"').time_dependent
