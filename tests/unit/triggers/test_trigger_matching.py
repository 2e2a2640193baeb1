"""Match clauses: dimension names and patterns, from/to values, first values."""

from __future__ import annotations

from typing import Any

from segmentflow.triggers.matching import Match


def change(dimension: str, previous: str | None, current: str) -> dict[str, Any]:
    return {
        "id": "c-1/x/1",
        "data": {"dimension": dimension, "previous": previous, "current": current},
    }


def test_dimension_only_matches_every_value() -> None:
    m = Match.build("lifecycle")
    assert m.matches(change("lifecycle", None, "prospect"))
    assert m.matches(change("lifecycle", "active", "at_risk"))
    assert not m.matches(change("rfm", None, "champions"))


def test_to_and_from_scalars_and_lists() -> None:
    m = Match.build("lifecycle", from_=["active", "new"], to="at_risk")
    assert m.matches(change("lifecycle", "active", "at_risk"))
    assert not m.matches(change("lifecycle", "reactivated", "at_risk"))
    assert not m.matches(change("lifecycle", "active", "churned"))


def test_rule_segment_enter_and_leave() -> None:
    enter = Match.build("rule:vip", to="in")
    leave = Match.build("rule:vip", from_="in", to="out")
    assert enter.matches(change("rule:vip", "out", "in"))
    assert not enter.matches(change("rule:vip", "in", "out"))
    assert leave.matches(change("rule:vip", "in", "out"))
    assert not enter.matches(change("rule:other", "out", "in"))


def test_null_in_from_list_matches_first_values_only() -> None:
    first = Match.build("persona", from_=[None])
    assert first.matches(change("persona", None, "persona-1"))
    assert not first.matches(change("persona", "persona-2", "persona-1"))


def test_patterns() -> None:
    assert Match.build("rule:*", to="in").matches(change("rule:de_buyers", "out", "in"))
    assert not Match.build("rule:*").matches(change("lifecycle", None, "new"))
    assert Match.build("*").matches(change("rfm", None, "champions"))


def test_malformed_changes_never_match() -> None:
    m = Match.build("*")
    assert not m.matches({})
    assert not m.matches({"data": "x"})
    assert not m.matches({"data": {"dimension": 3}})
