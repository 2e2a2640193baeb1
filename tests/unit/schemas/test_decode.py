"""Decoding of input messages (CONTRACT §2): every valid event type decodes, every bad message
becomes a rejection with a reason code of ``schemas/reasons.py``, and nothing ever raises."""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentflow.schemas.decode import (
    DEFAULT_LIMITS,
    Event,
    Limits,
    Rejection,
    decode_message,
)
from segmentflow.schemas.events import EVENT_TYPES
from segmentflow.schemas.reasons import Reason
from segmentflow.schemas.timefmt import MAX_US, MIN_US

TS_TEXT = "2026-03-01T10:15:00Z"
TS_US = calendar.timegm((2026, 3, 1, 10, 15, 0)) * 1_000_000
TOPIC_OF = {
    "page_view": "website",
    "product_view": "website",
    "add_to_cart": "website",
    "remove_from_cart": "website",
    "checkout_started": "website",
    "search": "website",
    "identify": "website",
    "alias": "website",
    "email_sent": "email",
    "email_delivered": "email",
    "email_opened": "email",
    "email_clicked": "email",
    "email_bounced": "email",
    "email_unsubscribed": "email",
    "email_complained": "email",
    "order_completed": "purchase",
    "order_refunded": "purchase",
}
# minimal valid properties per type (CONTRACT §2)
MINIMAL: dict[str, dict[str, Any]] = {
    "page_view": {"url": "https://shop.example/"},
    "product_view": {"product_id": "p-1"},
    "add_to_cart": {"product_id": "p-1", "quantity": 2, "price": 9.99},
    "remove_from_cart": {"product_id": "p-1"},
    "checkout_started": {},
    "search": {"query": "shoes"},
    "identify": {"traits": {"email": "a@example.com"}},
    "alias": {"previous_id": "anon-1"},
    "email_sent": {"campaign_id": "cmp-1"},
    "email_delivered": {"campaign_id": "cmp-1"},
    "email_opened": {"campaign_id": "cmp-1"},
    "email_clicked": {"campaign_id": "cmp-1", "url": "https://shop.example/sale"},
    "email_bounced": {"campaign_id": "cmp-1"},
    "email_unsubscribed": {"campaign_id": "cmp-1"},
    "email_complained": {"campaign_id": "cmp-1"},
    "order_completed": {"order_id": "o-1", "revenue": 25, "currency": "EUR"},
    "order_refunded": {"order_id": "o-1", "amount": 5},
}
# with every optional field filled in
FULL: dict[str, dict[str, Any]] = {
    "page_view": {"url": "/x", "referrer": "https://search.example/"},
    "product_view": {"product_id": "p-1", "category": "shoes", "price": "19.90"},
    "checkout_started": {"cart_value": "59.70"},
    "identify": {
        "traits": {
            "email": "a@example.com",
            "country": "DE",
            "city": "Berlin",
            "age": 41,
            "gender": "f",
            "signup_at": "2025-01-01T00:00:00Z",
            "vip": True,
            "score": 0.75,
        }
    },
    "email_bounced": {"campaign_id": "cmp-1", "bounce_type": "hard"},
    "order_completed": {
        "order_id": "o-1",
        "revenue": "59.70",
        "currency": "EUR",
        "items": [
            {"product_id": "p-1", "category": "shoes", "quantity": 3, "price": "19.90"},
            {"product_id": "p-2", "quantity": 0, "price": 0},
        ],
    },
}


def event(type_: str = "page_view", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "type": type_,
        "timestamp": TS_TEXT,
        "properties": dict(MINIMAL[type_]) if type_ in MINIMAL else {},
    }
    data.update(overrides)
    return data


def decode(data: Any, kind: str | None = "website", key: bytes | None = b"c-1", **kw: Any) -> Any:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return decode_message(raw, key, kind, **kw)


def reason_of(result: Event | Rejection) -> Reason:
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.detail  # a human text always comes with the code
    return result.reason


# --------------------------------------------------------------------------- valid events
def test_type_table_matches_contract() -> None:
    assert {t: kind for t, (kind, _model) in EVENT_TYPES.items()} == TOPIC_OF


@pytest.mark.parametrize("type_", sorted(TOPIC_OF))
def test_every_event_type_decodes_minimal(type_: str) -> None:
    result = decode(event(type_), TOPIC_OF[type_])
    assert isinstance(result, Event), result
    assert (result.event_id, result.customer_id, result.type, result.ts) == (
        "e-1",
        "c-1",
        type_,
        TS_US,
    )


@pytest.mark.parametrize("type_", sorted(FULL))
def test_every_event_type_decodes_with_optional_fields(type_: str) -> None:
    result = decode(event(type_, properties=FULL[type_]), TOPIC_OF[type_])
    assert isinstance(result, Event), result


def test_order_amounts_and_refund_amounts() -> None:
    order = decode(event("order_completed", properties=FULL["order_completed"]), "purchase")
    assert isinstance(order, Event) and order.amount == pytest.approx(59.70)
    refund = decode(event("order_refunded"), "purchase")
    assert isinstance(refund, Event) and refund.amount == 5.0


@pytest.mark.parametrize(
    ("money", "expected"),
    [(0, 0.0), (12, 12.0), (12.5, 12.5), ("12.50", 12.5), ("0", 0.0), ("0.99", 0.99)],
)
def test_money_as_number_or_decimal_string(money: Any, expected: float) -> None:
    props = {"order_id": "o", "revenue": money, "currency": "EUR"}
    result = decode(event("order_completed", properties=props), "purchase")
    assert isinstance(result, Event), result
    assert result.amount == pytest.approx(expected)


def test_identify_traits_and_hard_bounce() -> None:
    ident = decode(event("identify", properties=FULL["identify"]))
    assert isinstance(ident, Event)
    assert ident.traits == FULL["identify"]["traits"]
    hard = decode(event("email_bounced", properties=FULL["email_bounced"]), "email")
    soft = decode(
        event("email_bounced", properties={"campaign_id": "c", "bounce_type": "soft"}), "email"
    )
    assert isinstance(hard, Event) and hard.hard_bounce
    assert isinstance(soft, Event) and not soft.hard_bounce


@pytest.mark.parametrize(
    ("text", "delta_us"),
    [
        ("2026-03-01T10:15:00Z", 0),
        ("2026-03-01T10:15:00+00:00", 0),
        ("2026-03-01T12:15:00+02:00", 0),
        ("2026-03-01T04:45:00-05:30", 0),
        ("2026-03-02T00:15:00+14:00", 0),
        ("2026-03-01T10:15:00.5Z", 500_000),
        ("2026-03-01T10:15:00.000001Z", 1),
        ("2026-03-01T11:15:00.123456+01:00", 123_456),
    ],
)
def test_timestamps_with_offsets_and_fractions(text: str, delta_us: int) -> None:
    result = decode(event(timestamp=text))
    assert isinstance(result, Event), result
    assert result.ts == TS_US + delta_us


def test_timestamp_range_edges_accepted() -> None:
    first = decode(event(timestamp="1970-01-01T00:00:00Z"))
    last = decode(event(timestamp="2100-12-31T23:59:59Z"))
    assert isinstance(first, Event) and first.ts == 0
    assert isinstance(last, Event)
    assert last.ts == calendar.timegm((2100, 12, 31, 23, 59, 59)) * 1_000_000


def test_unknown_extra_fields_ignored() -> None:
    data = event("add_to_cart")
    data["schema_version"] = 3
    data["context"] = {"ip": "10.0.0.1", "nested": [1, {"a": None}]}
    data["properties"] |= {"color": "red", "coupon": {"code": "X"}}
    result = decode(data)
    assert isinstance(result, Event) and result.type == "add_to_cart"


def test_properties_may_be_omitted_when_nothing_required() -> None:
    data = event("email_sent", properties={"campaign_id": "x"})
    assert isinstance(decode(data, "email"), Event)
    data = event("checkout_started")
    del data["properties"]
    assert isinstance(decode(data), Event)


def test_limits_at_the_boundary_are_accepted() -> None:
    assert isinstance(decode(event(customer_id="c" * 256), key=b"c" * 256), Event)
    traits = {f"t{i}": i for i in range(DEFAULT_LIMITS.max_traits)}
    assert isinstance(decode(event("identify", properties={"traits": traits})), Event)
    long = {"bio": "x" * DEFAULT_LIMITS.max_trait_length}
    assert isinstance(decode(event("identify", properties={"traits": long})), Event)


def test_message_of_exactly_max_event_bytes_is_accepted() -> None:
    base = orjson.dumps(event(pad=""))
    pad = DEFAULT_LIMITS.max_event_bytes - len(base)
    raw = orjson.dumps(event(pad="p" * pad))
    assert len(raw) == DEFAULT_LIMITS.max_event_bytes
    assert isinstance(decode(raw), Event)
    over = orjson.dumps(event(pad="p" * (pad + 1)))
    assert reason_of(decode(over)) is Reason.OVERSIZED


def test_non_ascii_customer_id_key_is_utf8() -> None:
    cid = "kunde-ü-日本"
    assert isinstance(decode(event(customer_id=cid), key=cid.encode("utf-8")), Event)
    assert reason_of(decode(event(customer_id=cid), key=cid.encode("utf-16"))) is (
        Reason.KEY_MISMATCH
    )


# --------------------------------------------------------------------------- rejections
def _deep(levels: int) -> bytes:
    inner = b"[" * levels + b"]" * levels
    return orjson.dumps(event())[:-1] + b',"deep":' + inner + b"}"


def _with_props(type_: str, **props: Any) -> dict[str, Any]:
    return event(type_, properties={**MINIMAL[type_], **props})


def _without(field: str) -> dict[str, Any]:
    data = event()
    del data[field]
    return data


def _traits(n: int) -> dict[str, Any]:
    return event("identify", properties={"traits": {f"t{i}": "v" for i in range(n)}})


ORDER = "order_completed"
# (case id, raw message or dict, topic kind, key, expected reason)
BAD: list[tuple[str, Any, str, bytes | None, Reason]] = [
    ("invalid_utf8", b'{"event_id": "e-\xff\xfe"}', "website", b"c-1", Reason.INVALID_UTF8),
    (
        "invalid_utf8_in_valid_json_shape",
        orjson.dumps(event()).replace(b"c-1", b"c-\xc3\x28", 1),
        "website",
        b"c-1",
        Reason.INVALID_UTF8,
    ),
    ("invalid_json", b'{"event_id": "e-1", ', "website", b"c-1", Reason.INVALID_JSON),
    ("empty_value", b"", "website", b"c-1", Reason.INVALID_JSON),
    ("tombstone", None, "website", b"c-1", Reason.INVALID_JSON),
    (
        "nan_literal",
        orjson.dumps(_with_props(ORDER, revenue=1)).replace(b'"revenue":1', b'"revenue":NaN'),
        "purchase",
        b"c-1",
        Reason.INVALID_JSON,
    ),
    (
        "infinity_literal",
        orjson.dumps(_with_props(ORDER, revenue=1)).replace(b'"revenue":1', b'"revenue":Infinity'),
        "purchase",
        b"c-1",
        Reason.INVALID_JSON,
    ),
    ("deep_nesting_10000", _deep(10_000), "website", b"c-1", Reason.INVALID_JSON),
    ("array", b"[1, 2]", "website", b"c-1", Reason.NOT_AN_OBJECT),
    ("string", b'"page_view"', "website", b"c-1", Reason.NOT_AN_OBJECT),
    ("null", b"null", "website", b"c-1", Reason.NOT_AN_OBJECT),
    ("number", b"42", "website", b"c-1", Reason.NOT_AN_OBJECT),
    ("missing_event_id", _without("event_id"), "website", b"c-1", Reason.MISSING_FIELD),
    ("missing_customer_id", _without("customer_id"), "website", b"c-1", Reason.MISSING_FIELD),
    ("missing_type", _without("type"), "website", b"c-1", Reason.MISSING_FIELD),
    ("missing_timestamp", _without("timestamp"), "website", b"c-1", Reason.MISSING_FIELD),
    (
        "missing_property",
        event("page_view", properties={"referrer": "x"}),
        "website",
        b"c-1",
        Reason.MISSING_FIELD,
    ),
    (
        "missing_campaign_id",
        event("email_opened", properties={}),
        "email",
        b"c-1",
        Reason.MISSING_FIELD,
    ),
    ("number_customer_id", event(customer_id=1042), "website", b"1042", Reason.INVALID_FIELD),
    ("number_event_id", event(event_id=7), "website", b"c-1", Reason.INVALID_FIELD),
    ("empty_event_id", event(event_id=""), "website", b"c-1", Reason.INVALID_FIELD),
    ("empty_customer_id", event(customer_id=""), "website", b"c-1", Reason.INVALID_FIELD),
    ("customer_id_257", event(customer_id="c" * 257), "website", b"c" * 257, Reason.INVALID_FIELD),
    ("properties_not_object", event(properties=[1]), "website", b"c-1", Reason.INVALID_FIELD),
    (
        "number_url",
        event("page_view", properties={"url": 5}),
        "website",
        b"c-1",
        Reason.INVALID_FIELD,
    ),
    ("bool_money", _with_props(ORDER, revenue=True), "purchase", b"c-1", Reason.INVALID_MONEY),
    ("negative_money", _with_props(ORDER, revenue=-1), "purchase", b"c-1", Reason.INVALID_MONEY),
    (
        "negative_money_string",
        _with_props(ORDER, revenue="-1.00"),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "exp_money_string",
        _with_props(ORDER, revenue="1e3"),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    ("word_money", _with_props(ORDER, revenue="ten"), "purchase", b"c-1", Reason.INVALID_MONEY),
    (
        "nan_money_string",
        _with_props(ORDER, revenue="NaN"),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "overflowing_money_string",
        _with_props(ORDER, revenue="9" * 400),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "money_string_trailing_newline",
        _with_props(ORDER, revenue="12\n"),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "money_non_ascii_digits",
        _with_props(ORDER, revenue="١٢"),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "object_money",
        _with_props(ORDER, revenue={"v": 1}),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "negative_refund",
        _with_props("order_refunded", amount=-0.01),
        "purchase",
        b"c-1",
        Reason.INVALID_MONEY,
    ),
    (
        "float_quantity",
        _with_props("add_to_cart", quantity=1.5),
        "website",
        b"c-1",
        Reason.INVALID_FIELD,
    ),
    (
        "integral_float_quantity",
        _with_props("add_to_cart", quantity=2.0),
        "website",
        b"c-1",
        Reason.INVALID_FIELD,
    ),
    (
        "negative_quantity",
        _with_props("add_to_cart", quantity=-1),
        "website",
        b"c-1",
        Reason.INVALID_FIELD,
    ),
    (
        "string_quantity",
        _with_props("add_to_cart", quantity="2"),
        "website",
        b"c-1",
        Reason.INVALID_FIELD,
    ),
    (
        "float_item_quantity",
        _with_props(ORDER, items=[{"product_id": "p", "quantity": 0.5, "price": 1}]),
        "purchase",
        b"c-1",
        Reason.INVALID_FIELD,
    ),
    (
        "naive_timestamp",
        event(timestamp="2026-03-01T10:15:00"),
        "website",
        b"c-1",
        Reason.NAIVE_TIMESTAMP,
    ),
    ("date_only", event(timestamp="2026-03-01"), "website", b"c-1", Reason.INVALID_TIMESTAMP),
    (
        "not_a_date",
        event(timestamp="yesterday"),
        "website",
        b"c-1",
        Reason.INVALID_TIMESTAMP,
    ),
    (
        "february_30",
        event(timestamp="2026-02-30T00:00:00Z"),
        "website",
        b"c-1",
        Reason.INVALID_TIMESTAMP,
    ),
    ("epoch_number", event(timestamp=1772360100), "website", b"c-1", Reason.INVALID_FIELD),
    (
        "year_1969",
        event(timestamp="1969-12-31T23:59:59Z"),
        "website",
        b"c-1",
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ),
    (
        "year_2101",
        event(timestamp="2101-01-01T00:00:00Z"),
        "website",
        b"c-1",
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ),
    (
        "year_9999_west_of_utc",
        event(timestamp="9999-12-31T23:59:59-01:00"),
        "website",
        b"c-1",
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ),
    (
        "year_0001_east_of_utc",
        event(timestamp="0001-01-01T00:00:00+01:00"),
        "website",
        b"c-1",
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ),
    ("unknown_type", event("page_view", type="login"), "website", b"c-1", Reason.UNKNOWN_TYPE),
    ("type_not_string", event("page_view", type=3), "website", b"c-1", Reason.INVALID_FIELD),
    ("order_on_website", event(ORDER), "website", b"c-1", Reason.WRONG_TOPIC),
    ("page_view_on_email", event("page_view"), "email", b"c-1", Reason.WRONG_TOPIC),
    ("email_on_purchase", event("email_opened"), "purchase", b"c-1", Reason.WRONG_TOPIC),
    ("missing_key", event(), "website", None, Reason.MISSING_KEY),
    ("empty_key", event(), "website", b"", Reason.MISSING_KEY),
    ("key_mismatch", event(), "website", b"c-2", Reason.KEY_MISMATCH),
    ("key_prefix", event(), "website", b"c-", Reason.KEY_MISMATCH),
    (
        "oversized",
        orjson.dumps(event(pad="x" * DEFAULT_LIMITS.max_event_bytes)),
        "website",
        b"c-1",
        Reason.OVERSIZED,
    ),
    (
        "too_many_traits",
        _traits(DEFAULT_LIMITS.max_traits + 1),
        "website",
        b"c-1",
        Reason.STATE_LIMIT,
    ),
    (
        "trait_string_too_long",
        event("identify", properties={"traits": {"bio": "x" * 1025}}),
        "website",
        b"c-1",
        Reason.STATE_LIMIT,
    ),
    (
        "trait_name_too_long",
        event("identify", properties={"traits": {"k" * 1025: 1}}),
        "website",
        b"c-1",
        Reason.STATE_LIMIT,
    ),
]


@pytest.mark.parametrize(
    ("raw", "kind", "key", "expected"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_message_is_rejected_with_reason(
    raw: Any, kind: str, key: bytes | None, expected: Reason
) -> None:
    value = raw if isinstance(raw, bytes) or raw is None else orjson.dumps(raw)
    result = decode_message(value, key, kind)
    assert reason_of(result) is expected, result


def test_every_reason_code_is_covered() -> None:
    # processing_error and corrupt_state come from the worker's runtime (a broken engine, a
    # stored state that cannot be read: tests/unit/streams/test_runtime.py, e2e/test_poison.py)
    worker_only = {Reason.PROCESSING_ERROR, Reason.CORRUPT_STATE}
    assert {case[-1] for case in BAD} == set(Reason) - worker_only


def test_oversized_is_flagged_truncated_and_checked_first() -> None:
    # oversized wins even over garbage: the size check needs no parsing
    result = decode_message(b"\xff" * 70_000, None, "website")
    assert isinstance(result, Rejection)
    assert result.reason is Reason.OVERSIZED and result.truncated


def test_limits_are_configurable() -> None:
    limits = Limits(max_event_bytes=100, max_traits=2, max_trait_length=3)
    raw = orjson.dumps(event())
    assert len(raw) > 100
    assert reason_of(decode_message(raw, b"c-1", "website", limits)) is Reason.OVERSIZED
    assert isinstance(decode_message(raw, b"c-1", "website", Limits(len(raw), 2, 3)), Event)
    roomy = Limits(max_event_bytes=10_000, max_traits=2, max_trait_length=3)
    three = orjson.dumps(event("identify", properties={"traits": {"a": 1, "b": 2, "c": 3}}))
    assert reason_of(decode_message(three, b"c-1", "website", roomy)) is Reason.STATE_LIMIT
    long = orjson.dumps(event("identify", properties={"traits": {"a": "abcd"}}))
    assert reason_of(decode_message(long, b"c-1", "website", roomy)) is Reason.STATE_LIMIT
    fits = orjson.dumps(event("identify", properties={"traits": {"a": "abc", "b": 2}}))
    assert isinstance(decode_message(fits, b"c-1", "website", roomy), Event)


def test_topic_and_key_checks_can_be_skipped_for_replay() -> None:
    raw = orjson.dumps(event(ORDER))
    assert isinstance(decode_message(raw, None, None, check_key=False), Event)


# --------------------------------------------------------------------------- fuzzing
def _check_total(result: object) -> None:
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert isinstance(result.reason, Reason)
        assert isinstance(result.detail, str) and result.detail
        return
    # whatever gets through satisfies the contract's strict types
    assert isinstance(result.event_id, str) and result.event_id
    assert isinstance(result.customer_id, str) and 1 <= len(result.customer_id) <= 256
    assert result.type in TOPIC_OF
    assert MIN_US <= result.ts <= MAX_US
    assert math.isfinite(result.amount) and result.amount >= 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
timestamps = st.one_of(
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        offsets,
    ),
    st.datetimes(min_value=datetime(1, 1, 1)).map(lambda d: d.isoformat()),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,20}(Z|[+-][0-9]{2}:[0-9]{2})?\Z"),
    st.text(max_size=30),
    json_values,
)
money = st.one_of(
    st.floats(),
    st.integers(),
    st.booleans(),
    st.from_regex(r"\A-?[0-9]{0,400}(\.[0-9]{0,4})?([eE][0-9]{1,3})?\Z"),
    st.text(max_size=10),
)
properties = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "url": st.text(max_size=5) | json_values,
            "product_id": st.text(max_size=5),
            "quantity": st.integers(-3, 3) | st.floats(-3, 3) | st.booleans(),
            "price": money,
            "revenue": money,
            "amount": money,
            "currency": st.just("EUR"),
            "order_id": st.text(max_size=5),
            "campaign_id": st.text(max_size=5),
            "query": st.text(max_size=5),
            "traits": st.dictionaries(st.text(max_size=5), json_values, max_size=4),
            "items": json_values,
        },
    ),
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=8) | json_values,
        "customer_id": st.sampled_from(["c-1", "", "c" * 257]) | st.text(max_size=8) | json_values,
        "type": st.sampled_from(sorted(TOPIC_OF)) | json_values,
        "timestamp": timestamps,
        "properties": properties,
        "extra": json_values,
    },
)
kinds = st.sampled_from(["website", "email", "purchase", None])
keys = st.none() | st.just(b"c-1") | st.binary(max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300), kind=kinds, key=keys)
def test_fuzz_arbitrary_bytes_never_raise(raw: bytes, kind: str | None, key: bytes | None) -> None:
    _check_total(decode_message(raw, key, kind))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, kind=kinds, key=keys)
def test_fuzz_arbitrary_json_never_raise(value: Any, kind: str | None, key: bytes | None) -> None:
    _check_total(decode_message(orjson.dumps(value), key, kind))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=envelopes, kind=kinds, key=keys)
def test_fuzz_event_shaped_objects_never_raise(
    data: dict[str, Any], kind: str | None, key: bytes | None
) -> None:
    try:
        raw = orjson.dumps(data)
    except TypeError:  # e.g. integers over 64 bits: not a message a producer can send
        return
    _check_total(decode_message(raw, key, kind))


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2100, 12, 30), timezones=st.just(UTC)
    ),
    tz=offsets,
)
def test_fuzz_valid_timestamp_any_offset_decodes_to_same_instant(
    moment: datetime, tz: timezone
) -> None:
    text = moment.astimezone(tz).isoformat()
    result = decode(event(timestamp=text))
    assert isinstance(result, Event), (text, result)
    expected = calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond
    assert result.ts == expected
