"""Segment call -> contract event mapping (pure functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from segmentflow.collector.mapping import (
    IGNORE,
    STANDARD_TRACKS,
    Bounds,
    Built,
    Failed,
    Ignored,
    Refused,
    TrackMap,
    TrackMapError,
    customer_id_of,
    event_id_of,
    map_call,
    normalize_name,
    timestamp_of,
)
from segmentflow.schemas.decode import Limits, decode_message

RECEIVED = datetime(2026, 3, 1, 10, 15, 0, 123000, tzinfo=UTC)
TRACKS = TrackMap()


def built(call: str, message: dict[str, Any], tracks: TrackMap = TRACKS) -> Built:
    outcome = map_call(call, message, RECEIVED, tracks)
    assert isinstance(outcome, Built), outcome
    # what the worker will do with the bytes and key: it must accept them
    decoded = decode_message(outcome.value, outcome.key.encode(), outcome.kind)
    assert not hasattr(decoded, "reason"), decoded
    return outcome


def failed(call: str, message: dict[str, Any], tracks: TrackMap = TRACKS) -> Failed:
    outcome = map_call(call, message, RECEIVED, tracks)
    assert isinstance(outcome, Failed), outcome
    return outcome


def track(event: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"userId": "u1", "event": event, "properties": properties, **extra}


# -- identity, ids, timestamps ----------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"userId": "u1", "anonymousId": "a1"}, "u1"),
        ({"anonymousId": "a1"}, "a1"),
        ({"userId": None, "anonymousId": "a1"}, "a1"),
        ({"userId": "", "anonymousId": "a1"}, "a1"),
        ({"userId": 42}, "42"),
        ({"userId": True, "anonymousId": "a1"}, "a1"),
        ({}, None),
    ],
)
def test_customer_id_prefers_user_id(message: dict[str, Any], expected: str | None) -> None:
    assert customer_id_of(message) == expected


def test_event_id_is_message_id_else_stable_uuid() -> None:
    assert event_id_of({"messageId": "m-1"}) == "m-1"
    assert event_id_of({"messageId": 7}) == "7"
    call = {"userId": "u", "event": "Product Viewed", "properties": {"product_id": "p"}}
    first = event_id_of(call)
    assert first == event_id_of(dict(reversed(list(call.items()))))  # key order irrelevant
    assert first == event_id_of({**call, "sentAt": "2026-01-01T00:00:00Z", "writeKey": "k"})
    assert first != event_id_of({**call, "properties": {"product_id": "q"}})
    assert len(first) == 36


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01T10:15:00.000+00:00", "2026-03-01T10:15:00Z"),
        ("2026-03-01T12:15:00+02:00", "2026-03-01T10:15:00Z"),
        ("2026-03-01T10:15:00.250Z", "2026-03-01T10:15:00.250000Z"),
        (None, "2026-03-01T10:15:00.123000Z"),
        ("", "2026-03-01T10:15:00.123000Z"),
        ("2026-03-01T10:15:00", "2026-03-01T10:15:00"),  # naive: left for the validator
        ("yesterday", "yesterday"),
    ],
)
def test_timestamp_normalised_to_utc_z(value: str | None, expected: str) -> None:
    assert timestamp_of({"timestamp": value}, RECEIVED) == expected


def test_naive_or_bad_timestamp_is_dead_lettered_with_worker_reason() -> None:
    naive = failed(
        "page",
        {"userId": "u", "timestamp": "2026-03-01T10:15:00", "properties": {"url": "https://x"}},
    )
    assert naive.reason == "naive_timestamp"
    assert naive.key == "u"
    assert (
        failed(
            "page", {"userId": "u", "timestamp": "soon", "properties": {"url": "https://x"}}
        ).reason
        == "invalid_timestamp"
    )
    old = map_call(
        "page",
        {"userId": "u", "timestamp": "1900-01-01T00:00:00Z", "properties": {"url": "https://x"}},
        RECEIVED,
        TRACKS,
    )
    assert isinstance(old, Refused) and old.field == "timestamp"


# -- page / identify ---------------------------------------------------------------------


def test_page_url_from_properties_or_context() -> None:
    out = built(
        "page",
        {
            "anonymousId": "a1",
            "messageId": "m1",
            "timestamp": "2026-03-01T10:15:00Z",
            "properties": {"url": "https://shop/x", "referrer": "https://g"},
        },
    )
    assert out.kind == "website"
    assert out.key == "a1"
    assert out.event == {
        "event_id": "m1",
        "customer_id": "a1",
        "type": "page_view",
        "timestamp": "2026-03-01T10:15:00Z",
        "properties": {"url": "https://shop/x", "referrer": "https://g"},
    }
    ctx = built(
        "page",
        {"userId": "u", "context": {"page": {"url": "https://c/y", "referrer": "https://r"}}},
    )
    assert ctx.event["properties"] == {"url": "https://c/y", "referrer": "https://r"}
    # never dead-lettered for a field an SDK may omit: path, then the page's name
    path = built("page", {"userId": "u", "context": {"page": {"path": "/p", "search": "?q=1"}}})
    assert path.event["properties"] == {"url": "/p?q=1"}
    named = built("page", {"userId": "u", "name": "Home", "category": "Shop"})
    assert named.event["properties"] == {"url": "page:Shop/Home"}
    assert built("page", {"userId": "u"}).event["properties"] == {"url": "page:"}
    odd = built("page", {"userId": "u", "properties": {"url": 7, "path": "/x"}})
    assert odd.event["properties"] == {"url": "/x"}


def test_identify_traits_flattened_with_reserved_names() -> None:
    out = built(
        "identify",
        {
            "userId": "u",
            "traits": {
                "email": "a@b.c",
                "age": 31,
                "vip": True,
                "nothing": None,
                "address": {"city": "Berlin", "country": "DE"},
                "createdAt": "2025-01-01T00:00:00Z",
                "tags": ["a", "b"],
            },
        },
    )
    traits = out.event["properties"]["traits"]
    assert traits["email"] == "a@b.c"
    assert traits["city"] == "Berlin"
    assert traits["country"] == "DE"
    assert traits["address.city"] == "Berlin"
    assert traits["signup_at"] == "2025-01-01T00:00:00Z"
    assert traits["tags"] == '["a","b"]'
    assert traits["nothing"] is None
    # an explicit contract trait wins over the alias; context.traits is the fallback
    assert (
        built(
            "identify", {"userId": "u", "traits": {"country": "FR", "address": {"country": "DE"}}}
        ).event["properties"]["traits"]["country"]
        == "FR"
    )
    assert built("identify", {"userId": "u", "context": {"traits": {"email": "x@y"}}}).event[
        "properties"
    ]["traits"] == {"email": "x@y"}
    assert built("identify", {"userId": "u"}).event["properties"] == {"traits": {}}


# -- e-commerce --------------------------------------------------------------------------


def test_product_events() -> None:
    view = built(
        "track",
        track(
            "Product Viewed",
            {"product_id": "p1", "category": "shoes", "price": 19.99, "name": "Runner"},
        ),
    )
    assert view.event["type"] == "product_view"
    assert view.event["properties"] == {"product_id": "p1", "category": "shoes", "price": 19.99}
    added = built("track", track("Product Added", {"sku": "S-1", "price": "5.50"}))
    assert added.event["properties"] == {"product_id": "S-1", "quantity": 1, "price": "5.50"}
    added2 = built("track", track("Product Added", {"id": 77, "price": 5, "quantity": 3.0}))
    assert added2.event["properties"] == {"product_id": "77", "quantity": 3, "price": 5}
    removed = built("track", track("Product Removed", {"product_id": "p1", "price": 3}))
    assert removed.event["properties"] == {"product_id": "p1"}
    assert failed("track", track("Product Added", {"product_id": "p1"})).reason == "missing_field"
    bad_price = failed("track", track("Product Added", {"product_id": "p", "price": -1}))
    assert bad_price.reason == "invalid_money"


def test_checkout_and_search() -> None:
    for field in ("value", "revenue", "total"):
        out = built("track", track("Checkout Started", {field: 42.5}))
        assert out.event["properties"] == {"cart_value": 42.5}
    assert built("track", track("Checkout Started", {})).event["properties"] == {}
    search = built("track", track("Products Searched", {"query": "red shoes"}))
    assert search.event["type"] == "search"
    assert search.event["properties"] == {"query": "red shoes"}


def test_order_completed() -> None:
    out = built(
        "track",
        track(
            "Order Completed",
            {
                "order_id": "o-1",
                "total": 30,
                "revenue": 25,
                "currency": "EUR",
                "products": [
                    {"product_id": "p1", "quantity": 2, "price": 10, "category": "a", "name": "x"},
                    {"sku": "s2", "price": "5"},
                    {"id": 3, "quantity": "1", "price": 0},
                ],
            },
        ),
    )
    assert out.kind == "purchase"
    assert out.event["properties"] == {
        "order_id": "o-1",
        "revenue": 25,
        "currency": "EUR",
        "items": [
            {"product_id": "p1", "category": "a", "quantity": 2, "price": 10},
            {"product_id": "s2", "quantity": 1, "price": "5"},
            {"product_id": "3", "quantity": 1, "price": 0},
        ],
    }
    minimal = built("track", track("Order Completed", {"order_id": 9, "total": 12}))
    assert minimal.event["properties"] == {"order_id": "9", "revenue": 12, "currency": "USD"}
    assert failed("track", track("Order Completed", {"total": 1})).reason == "missing_field"
    assert failed("track", track("Order Completed", {"order_id": "o"})).reason == "missing_field"
    no_price = failed(
        "track",
        track("Order Completed", {"order_id": "o", "total": 1, "products": [{"product_id": "p"}]}),
    )
    assert no_price.reason == "missing_field"
    assert "items" in no_price.detail


def test_order_refunded_amount_fallbacks() -> None:
    for field in ("amount", "total", "revenue", "value"):
        out = built("track", track("Order Refunded", {"order_id": "o", field: 7}))
        assert out.event["properties"] == {"order_id": "o", "amount": 7}
        assert out.kind == "purchase"


# -- email -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "etype"),
    [
        ("Email Sent", "email_sent"),
        ("Email Delivered", "email_delivered"),
        ("Email Opened", "email_opened"),
        ("Unsubscribed", "email_unsubscribed"),
        ("Email Marked as Spam", "email_complained"),
    ],
)
def test_email_events(name: str, etype: str) -> None:
    out = built("track", track(name, {"campaign_id": "c1", "email_subject": "Hi"}))
    assert out.kind == "email"
    assert out.event["type"] == etype
    assert out.event["properties"] == {"campaign_id": "c1"}


def test_email_campaign_fallbacks_click_and_bounce() -> None:
    by_name = built("track", track("Email Opened", {"campaign_name": "spring"}))
    assert by_name.event["properties"] == {"campaign_id": "spring"}
    by_email = built("track", track("Email Opened", {"email_id": 5}))
    assert by_email.event["properties"] == {"campaign_id": "5"}
    click = built(
        "track", track("Email Link Clicked", {"campaign_id": "c", "link_url": "https://l"})
    )
    assert click.event["properties"] == {"campaign_id": "c", "url": "https://l"}
    click2 = built("track", track("Email Link Clicked", {"campaign_id": "c", "url": "https://u"}))
    assert click2.event["properties"]["url"] == "https://u"
    bounce = built("track", track("Email Bounced", {"campaign_id": "c", "bounce_type": "hard"}))
    assert bounce.event["properties"] == {"campaign_id": "c", "bounce_type": "hard"}
    assert failed("track", track("Email Opened", {})).reason == "missing_field"


# -- track names and the custom map ------------------------------------------------------


def test_every_standard_name_maps_to_its_topic() -> None:
    topics = {"product_view": "website", "order_completed": "purchase", "email_opened": "email"}
    for name, etype in STANDARD_TRACKS.items():
        assert TRACKS.resolve(name) == etype
        if etype in topics:
            assert (
                built(
                    "track",
                    track(
                        name, {"product_id": "p", "order_id": "o", "total": 1, "campaign_id": "c"}
                    ),
                ).kind
                == topics[etype]
            )


def test_names_match_loosely() -> None:
    assert normalize_name(" Order_Completed ") == "order completed"
    assert TRACKS.resolve("order_completed") == "order_completed"
    assert TRACKS.resolve("ORDER COMPLETED") == "order_completed"
    assert TRACKS.resolve("product-viewed") == "product_view"
    assert TRACKS.resolve("add_to_cart") == "add_to_cart"
    assert TRACKS.resolve("Video Played") is None


def test_unmapped_track_is_dead_lettered() -> None:
    out = failed("track", track("Video Played", {}))
    assert out.reason == "unmapped_track"
    assert out.key == "u1"
    assert "Video Played" in out.detail


def test_custom_map() -> None:
    tracks = TrackMap(
        {
            "Added To Basket": "Product Added",
            "Signed Up": "identify",
            "Button Clicked": IGNORE,
            "Product Viewed": "ignore",
            "Cart Viewed": "checkout_started",
        }
    )
    basket = built("track", track("added to basket", {"product_id": "p", "price": 1}), tracks)
    assert basket.event["type"] == "add_to_cart"
    signup = built("track", track("Signed Up", {"plan": "pro"}), tracks)
    assert signup.event["properties"] == {"traits": {"plan": "pro"}}
    assert isinstance(map_call("track", track("Button Clicked", {}), RECEIVED, tracks), Ignored)
    assert isinstance(map_call("track", track("Product Viewed", {}), RECEIVED, tracks), Ignored)
    assert built("track", track("Cart Viewed", {}), tracks).event["type"] == "checkout_started"


@pytest.mark.parametrize(
    "custom",
    [{"X": "nope"}, {"": "search"}, {"X": 3}],
)
def test_custom_map_rejects_bad_entries(custom: dict[str, Any]) -> None:
    with pytest.raises(TrackMapError):
        TrackMap(custom)


# -- other calls and limits --------------------------------------------------------------


def test_screen_is_a_page_view() -> None:
    out = built("screen", {"userId": "u", "name": "Checkout", "properties": {"step": 2}})
    assert (out.kind, out.event["type"]) == ("website", "page_view")
    assert out.event["properties"] == {"url": "screen:Checkout"}
    given = built("screen", {"userId": "u", "name": "X", "properties": {"url": "app://x"}})
    assert given.event["properties"] == {"url": "app://x"}


def test_group_traits_become_group_traits_of_the_user() -> None:
    out = built(
        "group",
        {
            "userId": "u",
            "groupId": 42,
            "traits": {"name": "Acme", "plan": "pro", "address": {"city": "Berlin"}},
        },
    )
    assert (out.key, out.event["type"]) == ("u", "identify")
    assert out.event["properties"]["traits"] == {
        "group_id": "42",
        "group_name": "Acme",
        "group_plan": "pro",
        "group_address.city": "Berlin",
    }


def test_alias_and_anonymous_id() -> None:
    out = built("alias", {"userId": "u", "previousId": "anon-1", "messageId": "m"})
    assert out.event["type"] == "alias"
    assert out.event["properties"] == {"previous_id": "anon-1"}
    assert "anonymous_id" not in out.event
    fallback = built("alias", {"userId": "u", "anonymousId": "anon-2"})
    assert fallback.event["properties"] == {"previous_id": "anon-2"}
    both = built("identify", {"userId": "u", "anonymousId": 7, "traits": {"a": 1}})
    assert both.event["anonymous_id"] == "7"
    only_anon = built("page", {"anonymousId": "a", "properties": {"url": "x"}})
    assert "anonymous_id" not in only_anon.event


def test_original_timestamp_when_no_timestamp() -> None:
    out = built("page", {"userId": "u", "originalTimestamp": "2026-02-01T09:00:00.5+01:00"})
    assert out.event["timestamp"] == "2026-02-01T08:00:00.500000Z"
    both = built(
        "page",
        {"userId": "u", "timestamp": "2026-02-02T00:00:00Z", "originalTimestamp": "2020-01-01Z"},
    )
    assert both.event["timestamp"] == "2026-02-02T00:00:00Z"


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"order_id": "o", "revenue": 2e9, "currency": "EUR"}, "properties.revenue"),
        ({"order_id": "o", "total": "1000000000.01", "currency": "EUR"}, "properties.revenue"),
        (
            {"order_id": "o", "revenue": 1, "products": [{"product_id": "p", "price": 10**400}]},
            "properties.items[0].price",
        ),
    ],
)
def test_money_over_max_money_is_refused(properties: dict[str, Any], field: str) -> None:
    out = map_call("track", track("Order Completed", properties), RECEIVED, TRACKS)
    assert isinstance(out, Refused), out
    assert out.field == field
    assert "max_money" in out.detail


def test_bounds_are_configurable_and_inclusive() -> None:
    at_limit = track("Order Completed", {"order_id": "o", "revenue": 1e9, "currency": "EUR"})
    assert isinstance(map_call("track", at_limit, RECEIVED, TRACKS), Built)
    low = Bounds(max_money=100.0)
    assert isinstance(map_call("track", at_limit, RECEIVED, TRACKS, bounds=low), Refused)


def test_future_timestamps_beyond_the_skew_are_refused() -> None:
    soon = {"userId": "u", "timestamp": "2026-03-02T10:15:00Z", "properties": {"url": "x"}}
    assert isinstance(map_call("page", soon, RECEIVED, TRACKS), Built)  # 23h59m ahead
    later = {**soon, "timestamp": "2026-03-02T10:16:00Z"}
    out = map_call("page", later, RECEIVED, TRACKS)
    assert isinstance(out, Refused) and out.field == "timestamp"
    far = {**soon, "originalTimestamp": "2099-01-01T00:00:00Z", "timestamp": None}
    assert isinstance(map_call("page", far, RECEIVED, TRACKS), Refused)
    short = Bounds(max_future_skew_us=60_000_000)
    assert isinstance(map_call("page", soon, RECEIVED, TRACKS, bounds=short), Refused)


def test_oversized_and_limits() -> None:
    message = {"userId": "u", "traits": {f"t{i}": "x" * 50 for i in range(50)}}
    out = map_call("identify", message, RECEIVED, TRACKS, Limits(max_event_bytes=1000))
    assert isinstance(out, Failed)
    assert out.reason == "oversized"
    many = map_call("identify", message, RECEIVED, TRACKS, Limits(max_traits=10))
    assert isinstance(many, Failed)
    assert many.reason == "state_limit"


def test_long_customer_id_and_huge_numbers_are_dead_lettered_not_raised() -> None:
    assert failed("page", {"userId": "u" * 300, "properties": {"url": "x"}}).reason == (
        "invalid_field"
    )
    nan = failed("identify", {"userId": "u", "traits": {"x": float("nan")}})
    assert nan.reason == "invalid_field"
    lone = failed("page", {"userId": "u\ud800", "properties": {"url": "x"}})
    assert lone.reason in ("invalid_field", "invalid_utf8")


def test_value_bytes_are_compact_utf8_json() -> None:
    out = built("track", track("Products Searched", {"query": "schühe"}))
    assert json.loads(out.value) == out.event
    assert "schühe".encode() in out.value
