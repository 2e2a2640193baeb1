"""The hand-written fast path of ``validate_event`` agrees with the pydantic models: same Event
for every input it accepts, and it declines everything else (the models then decide)."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentflow.schemas.decode import Limits, _fast_event, validate_event, validate_event_full
from segmentflow.schemas.events import EVENT_TYPES
from segmentflow.synthetic import generate

LIMITS = Limits(max_event_bytes=65536, max_traits=5, max_trait_length=12)
#: small money and skew limits, so both bite on the synthetic events (issue 12)
TIGHT = Limits(max_money=50.0, max_future_skew_us=3_600_000_000)
#: a wall clock in the middle of the synthetic events' 60 days
NOW_US = int(datetime(2025, 10, 1, tzinfo=UTC).timestamp() * 1_000_000)
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63 - 1,
    1.5,
    -0.5,
    1e308,
    "",
    "x",
    "1.50",
    "-1",
    "1e3",
    " 1",
    "hard",
    [],
    {},
    [1],
    {"a": 1},
    "2025-09-01T10:15:00Z",
    "2025-09-01T10:15:00",
    "2099-01-01T00:00:00Z",
    "9" * 300,
    1e9,
    1e9 + 1,
    "1000000000.01",
]


def _valid() -> list[dict[str, Any]]:
    messages = generate(40, seed=3, start=datetime(2025, 9, 1, tzinfo=UTC), days=60)
    return [m.event for m in messages if m.event is not None]


VALID = _valid()
ALL_TYPES = sorted(EVENT_TYPES)


def _mutations(event: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for _ in range(6):
        e = copy.deepcopy(event)
        target = e if rng.random() < 0.4 or not e.get("properties") else e["properties"]
        keys = [*list(target), "traits", "items", "price", "bounce_type", "referrer"]
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.25:
            target.pop(key, None)
        elif roll < 0.8:
            target[key] = rng.choice(ODD_VALUES)
        else:
            e["type"] = rng.choice(ALL_TYPES)
        out.append(e)
    return out


def _same(data: Any, kind: str | None) -> None:
    for limits in (LIMITS, Limits(), TIGHT):
        for now in (None, NOW_US):
            fast = validate_event(data, kind, limits, now)
            full = validate_event_full(data, kind, limits, now)
            assert fast == full, (data, kind, limits, now)


@pytest.mark.parametrize("kind", [None, "website", "email", "purchase"])
def test_fast_path_agrees_on_synthetic_and_mutated_events(kind: str | None) -> None:
    rng = random.Random(7)
    accepted = 0
    for event in VALID:
        accepted += _fast_event(event, kind, Limits()) is not None
        _same(event, kind)
        for mutated in _mutations(event, rng):
            _same(mutated, kind)
    if kind is None:
        assert accepted > 0.9 * len(VALID)  # the fast path takes the common case


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(VALID[:200]),
    field=st.sampled_from(["event_id", "customer_id", "type", "timestamp", "properties"]),
    prop=st.sampled_from(
        [
            "url",
            "traits",
            "items",
            "price",
            "revenue",
            "amount",
            "quantity",
            "campaign_id",
            "bounce_type",
            "product_id",
            "currency",
            "order_id",
        ]
    ),
    value=JSON,
    where=st.booleans(),
)
def test_fast_path_agrees_on_arbitrary_values(
    base: dict[str, Any], field: str, prop: str, value: Any, where: bool
) -> None:
    event = copy.deepcopy(base)
    if where and isinstance(event.get("properties"), dict):
        event["properties"][prop] = value
    else:
        event[field] = value
    event = orjson.loads(orjson.dumps(event))
    for kind in (None, "website", "email", "purchase"):
        _same(event, kind)
