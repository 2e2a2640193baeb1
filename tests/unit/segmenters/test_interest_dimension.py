"""The ``interest`` dimension (segmenters/interest.py): decay, bound, hysteresis, the categories
the decoder reads, accuracy against the synthetic generator's preferences, and the shared check
suite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from segmentflow.config import config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.decode import Event, validate_event, validate_event_full
from segmentflow.segmenters.checks import Case, Check, builtin_case, checks_for, synthetic_events
from segmentflow.segmenters.dimension import DAY_US
from segmentflow.segmenters.interest import MIXED, Interest, InterestParams, InterestSlice
from segmentflow.service.replay import replay_events
from segmentflow.state.memory import MemoryStore
from segmentflow.synthetic import generate, preference_of

CLASS = "segmentflow.segmenters.interest:Interest"


def view(n: int, category: str, day: float) -> Event:
    return Event(f"e{n}", "c", "product_view", int(day * DAY_US), categories=(category,))


def test_half_life_halves_an_old_view() -> None:
    s = InterestSlice()
    s.add(0, {"books": 1.0}, 30 * DAY_US, 8)
    s.add(30 * DAY_US, {"toys": 1.0}, 30 * DAY_US, 8)
    assert s.scores == {"books": pytest.approx(0.5), "toys": 1.0}
    s.add(0, {"home": 1.0}, 30 * DAY_US, 8)  # late: decayed to the slice's instant
    assert s.scores["home"] == pytest.approx(0.5)
    assert InterestSlice.load(1, s.dump()) == s


def test_only_top_n_are_kept() -> None:
    s = InterestSlice()
    for n, category in enumerate("abcdefghij"):
        s.add(0, {category: float(n + 1)}, DAY_US, 3)
    assert set(s.scores) == {"h", "i", "j"}


def test_hysteresis_keeps_the_value_until_another_category_clearly_leads() -> None:
    dim = Interest(InterestParams(enter_share=0.4, margin=0.1, half_life_days=1e6))
    state = CustomerState("c")
    values = []
    plan = ["books"] * 4 + ["toys"] * 3 + ["books", "toys", "toys", "toys", "toys"]
    for n, category in enumerate(plan):
        dim.observe(state, view(n, category, n / 100), 0)
        state.values["interest"] = dim.choose(state)
        values.append(state.values["interest"])
    # books holds through 5 vs 6 (toys 0.545 < 0.455 + margin); toys takes over at 5 vs 7
    assert values[:10] == ["books"] * 10
    assert values[-1] == "toys"
    fresh = CustomerState("d")
    for n, category in enumerate(["a", "b", "c", "d"]):
        dim.observe(fresh, view(n, category, 0), 0)
    assert dim.choose(fresh) == MIXED


def test_decoder_reads_categories_on_both_paths() -> None:
    base = {"event_id": "e1", "customer_id": "c", "timestamp": "2026-01-01T00:00:00Z"}
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"type": "product_view", "properties": {"product_id": "p", "category": "books"}},
         ("books",)),
        ({"type": "add_to_cart",
          "properties": {"product_id": "p", "quantity": 1, "price": 2, "category": "toys"}},
         ("toys",)),
        ({"type": "order_completed", "properties": {
            "order_id": "o", "revenue": 3, "currency": "EUR", "items": [
                {"product_id": "p", "category": "home", "quantity": 1, "price": 1},
                {"product_id": "q", "quantity": 1, "price": 2},
                {"product_id": "r", "category": "books", "quantity": 1, "price": 0}]}},
         ("home", "books")),
        ({"type": "page_view", "properties": {"url": "/c/books"}}, ()),
    ]  # fmt: skip
    for extra, expected in cases:
        data = base | extra
        fast, full = validate_event(data, None), validate_event_full(data, None)
        assert isinstance(fast, Event) and fast == full
        assert fast.categories == expected


def test_synthetic_preferences_are_opt_in() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    plain = [m.value for m in generate(40, 3, start, 60)]
    assert plain == [m.value for m in generate(40, 3, start, 60, preferences=False)]
    assert plain != [m.value for m in generate(40, 3, start, 60, preferences=True)]


def test_top_interest_matches_the_generated_preference() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    messages = generate(150, 7, start, 120, preferences=True)
    events = [m.event for m in messages if m.event is not None and not m.duplicate]
    config = config_from_dict(
        {
            "persona": {"enabled": False},
            "dimensions": [{"class": CLASS}],
            "rules": [{"name": "books_fan", "when": 'top_interest == "books"'}],
        }
    )
    out = [c["data"] for c in replay_events(events, config, None, MemoryStore())]
    final = {c["customer_id"]: c["current"] for c in out if c["dimension"] == "interest"}
    assert len(final) > 100
    accuracy = sum(v == preference_of(c, 7) for c, v in final.items()) / len(final)
    assert accuracy > 0.85, accuracy
    rule = {c["customer_id"]: c["current"] for c in out if c["dimension"] == "rule:books_fan"}
    fans = {c for c, v in rule.items() if v == "in"}
    assert fans and fans == {c for c, v in final.items() if v == "books"}


EVENTS = synthetic_events(40, 150)
CASE = Case(
    "interest",
    {"persona": {"enabled": False}, "dimensions": [{"class": CLASS}]},
    EVENTS,
    builtin_case("lifecycle", EVENTS).until,
)


@pytest.mark.parametrize("check", list(checks_for(CASE)), ids=str)
def test_interest_passes_the_shared_checks(check: Check, tmp_path: Path) -> None:
    check(tmp_path)
