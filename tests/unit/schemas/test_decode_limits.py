"""Bounded money and time (CONTRACT §2, issue 12): ``max_money`` and ``max_future_skew`` on the
worker's decoder, and the ``forget`` control record that only the worker accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from segmentflow.config import ConfigError, config_from_dict
from segmentflow.schemas.decode import Event, Limits, Rejection, decode_message, validate_event
from segmentflow.schemas.reasons import Reason

NOW_US = int(datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp() * 1_000_000)
HOUR_US = 3_600_000_000


def order(revenue: Any, ts: str = "2026-03-01T10:00:00Z", **props: Any) -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "customer_id": "c-1",
        "type": "order_completed",
        "timestamp": ts,
        "properties": {"order_id": "o-1", "revenue": revenue, "currency": "EUR", **props},
    }


def reason(result: Event | Rejection) -> Reason | None:
    return result.reason if isinstance(result, Rejection) else None


@pytest.mark.parametrize("revenue", [1.7e308, 1e9 + 1, "1000000000.5", "9" * 400])
def test_money_above_max_money_is_invalid_money(revenue: Any) -> None:
    result = decode_message(orjson.dumps(order(revenue)), b"c-1", "purchase")
    assert reason(result) is Reason.INVALID_MONEY, result
    assert "max_money" in result.detail  # type: ignore[union-attr]


def test_max_money_is_inclusive_and_configurable() -> None:
    assert isinstance(validate_event(order(1e9), "purchase"), Event)
    tight = Limits(max_money=100.0)
    assert isinstance(validate_event(order(100), "purchase", tight), Event)
    assert reason(validate_event(order(100.01), "purchase", tight)) is Reason.INVALID_MONEY
    item = {"product_id": "p", "quantity": 1, "price": 101}
    assert reason(validate_event(order(1, items=[item]), "purchase", tight)) is Reason.INVALID_MONEY
    refund = order(0) | {"type": "order_refunded", "properties": {"order_id": "o", "amount": 1e300}}
    assert reason(validate_event(refund, "purchase")) is Reason.INVALID_MONEY


def test_future_skew_rejects_relative_to_the_given_wall_clock() -> None:
    limits = Limits()
    inside = order(5, "2026-03-02T11:59:59Z")  # 24 h minus 1 s after NOW
    beyond = order(5, "2026-03-02T12:00:01Z")
    assert isinstance(validate_event(inside, "purchase", limits, NOW_US), Event)
    got = validate_event(beyond, "purchase", limits, NOW_US)
    assert reason(got) is Reason.TIMESTAMP_OUT_OF_RANGE
    assert "max_future_skew" in got.detail  # type: ignore[union-attr]
    year_2099 = order(5, "2099-01-01T00:00:00Z")
    assert reason(validate_event(year_2099, "purchase", limits, NOW_US)) is (
        Reason.TIMESTAMP_OUT_OF_RANGE
    )
    # replay passes no wall clock: exempt
    assert isinstance(validate_event(year_2099, "purchase", limits), Event)
    one_hour = Limits(max_future_skew_us=HOUR_US)
    assert reason(validate_event(inside, "purchase", one_hour, NOW_US)) is (
        Reason.TIMESTAMP_OUT_OF_RANGE
    )


def test_limits_from_config() -> None:
    config = config_from_dict({"max_money": "1e6", "max_future_skew": "2h"})
    limits = Limits.of(config)
    assert limits.max_money == 1e6 and limits.max_future_skew_us == 2 * HOUR_US
    defaults = Limits.of(config_from_dict({}))
    assert defaults.max_money == 1e9 and defaults.max_future_skew_us == 24 * HOUR_US
    with pytest.raises(ConfigError, match="max_future_skew"):
        config_from_dict({"max_future_skew": "soon"})
    with pytest.raises(ConfigError, match="max_money"):
        config_from_dict({"max_money": 1e300})  # sums of such amounts could overflow


def test_forget_is_a_control_record_for_the_worker_only() -> None:
    forget = {
        "event_id": "f-1",
        "customer_id": "c-1",
        "type": "forget",
        "timestamp": "2026-03-01T10:00:00Z",
    }
    raw = orjson.dumps(forget)
    assert reason(decode_message(raw, b"c-1", "website")) is Reason.UNKNOWN_TYPE
    event = decode_message(raw, b"c-1", "website", control=True)
    assert isinstance(event, Event) and event.type == "forget"
    assert reason(decode_message(raw, b"c-1", "email", control=True)) is Reason.WRONG_TOPIC
