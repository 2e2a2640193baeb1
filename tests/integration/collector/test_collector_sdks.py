"""Real tracking SDKs, unmodified but for their host setting, against a running collector on a
real broker: the events reach the right topics, keyed by customer_id, and pass the worker's
validation; unmapped calls reach the dead-letter topic; bad write keys and bodies are refused."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
from collector_harness import WRITE_KEY, Collector
from rudderstack.analytics.request import APIError as RudderAPIError
from segment.analytics.request import APIError as SegmentAPIError

from segmentflow.schemas.decode import Event, decode_message, validate_event

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


def drive(sdk: Any, tag: str) -> None:
    """The same storefront journey through any Segment-style SDK."""
    user, anon = f"{tag}user", f"{tag}anon"
    sdk.page(
        anonymous_id=anon,
        category="Shop",
        name="Home",
        properties={"url": "https://shop.example/", "referrer": "https://search.example/"},
        timestamp=WHEN,
    )
    sdk.track(
        anonymous_id=anon,
        event="Product Viewed",
        properties={"product_id": "p-1", "category": "shoes", "price": 59.9},
    )
    sdk.identify(
        user_id=user,
        anonymous_id=anon,
        traits={"email": "ada@example.com", "address": {"country": "DE"}, "age": 36},
    )
    sdk.track(
        user_id=user,
        event="Product Added",
        properties={"product_id": "p-1", "price": 59.9, "quantity": 2},
    )
    sdk.track(
        user_id=user,
        event="Order Completed",
        message_id=f"{tag}order-1",
        properties={
            "order_id": "o-1",
            "total": 119.8,
            "currency": "EUR",
            "products": [{"product_id": "p-1", "quantity": 2, "price": 59.9}],
        },
    )
    sdk.track(
        user_id=user,
        event="Email Link Clicked",
        properties={"campaign_id": "spring", "link_url": "https://shop.example/sale"},
    )
    sdk.track(user_id=user, event="Signed Up", properties={"plan": "pro"})  # mapped to identify
    sdk.track(user_id=user, event="Button Clicked")  # ignored by the configured map
    sdk.track(user_id=user, event="Video Played", properties={"title": "x"})  # dead-lettered


def check_journey(collector: Collector, tag: str) -> None:
    got = collector.read(lambda k: k is not None and k.startswith(tag.encode()), expect=8)
    assert len(got) == 8  # 7 events + 1 dead letter; "Button Clicked" is ignored
    by_type: dict[str, tuple[str, bytes | None, dict[str, Any]]] = {}
    letters = []
    for kind, key, value in got:
        if kind == "deadletter":
            letters.append((key, value))
            continue
        # exactly what the worker checks: topic, key == customer_id, schema
        decoded = decode_message(json.dumps(value).encode(), key, kind)
        assert isinstance(decoded, Event), (decoded, value)
        assert isinstance(validate_event(value, kind), Event)
        by_type.setdefault(value["type"], (kind, key, value))
    assert sorted(v["type"] for k, _, v in got if k != "deadletter") == sorted(
        [
            "page_view",
            "product_view",
            "identify",
            "add_to_cart",
            "order_completed",
            "email_clicked",
            "identify",
        ]
    )
    anon, user = f"{tag}anon".encode(), f"{tag}user".encode()
    assert by_type["page_view"][:2] == ("website", anon)
    page = by_type["page_view"][2]
    assert page["timestamp"] == "2026-03-01T10:15:00Z"
    assert page["properties"] == {
        "url": "https://shop.example/",
        "referrer": "https://search.example/",
    }
    assert by_type["product_view"][:2] == ("website", anon)
    identify = by_type["identify"]
    assert identify[:2] == ("website", user)
    assert identify[2]["properties"]["traits"]["country"] == "DE"
    assert by_type["add_to_cart"][2]["properties"] == {
        "product_id": "p-1",
        "quantity": 2,
        "price": 59.9,
    }
    kind, key, order = by_type["order_completed"]
    assert (kind, key) == ("purchase", user)
    assert order["event_id"] == f"{tag}order-1"
    assert order["properties"] == {
        "order_id": "o-1",
        "revenue": 119.8,
        "currency": "EUR",
        "items": [{"product_id": "p-1", "quantity": 2, "price": 59.9}],
    }
    assert order["timestamp"].endswith("Z")
    kind, key, click = by_type["email_clicked"]
    assert (kind, key) == ("email", user)
    assert click["properties"] == {"campaign_id": "spring", "url": "https://shop.example/sale"}
    [(key, letter)] = letters
    assert key == user
    assert letter["reason"] == "unmapped_track"
    assert letter["topic"] == "collector"
    original = json.loads(base64.b64decode(letter["payload"]))
    assert original["event"] == "Video Played"
    assert original["context"]["library"]["name"] == "analytics-python"


def test_segment_sdk(segment: Any, collector: Collector, tag: str) -> None:
    drive(segment, tag)
    check_journey(collector, tag)


def test_rudderstack_sdk_gzip(rudder: Any, collector: Collector, tag: str) -> None:
    assert rudder_analytics.gzip is True  # RudderStack compresses by default
    drive(rudder, tag)
    check_journey(collector, tag)


def test_segment_sdk_batches_in_background(collector: Collector, tag: str) -> None:
    """The SDK's default mode: a queue and a consumer thread posting /v1/batch, gzip on."""
    client = segment_analytics.Client(
        WRITE_KEY, host=collector.url, gzip=True, max_retries=0, upload_interval=0.05
    )
    errors: list[Exception] = []
    client.on_error = lambda exc, batch: errors.append(exc)
    for i in range(40):
        client.track(
            user_id=f"{tag}{i % 4}", event="Products Searched", properties={"query": f"q{i}"}
        )
    client.flush()
    client.join()
    assert errors == []
    got = collector.read(lambda k: k is not None and k.startswith(tag.encode()), expect=40)
    assert len(got) == 40
    for kind, key, value in got:
        assert kind == "website"
        assert key == value["customer_id"].encode()
        assert isinstance(validate_event(value, "website"), Event)
    # per-customer order is kept (same key, same partition)
    first = [v["properties"]["query"] for _, k, v in got if k == f"{tag}1".encode()]
    assert first == [f"q{i}" for i in range(1, 40, 4)]


def test_wrong_write_key_is_refused_by_both_sdks(collector: Collector, tag: str) -> None:
    seg = segment_analytics.Client("not-a-key", host=collector.url, sync_mode=True, max_retries=0)
    with pytest.raises(SegmentAPIError) as exc:
        seg.track(user_id=f"{tag}x", event="Products Searched", properties={"query": "q"})
    assert exc.value.status == 401
    assert exc.value.code == "unauthorized"
    rud = rudder_analytics.Client("not-a-key", host=collector.url, sync_mode=True)
    with pytest.raises(RudderAPIError) as rexc:
        rud.track(user_id=f"{tag}x", event="Products Searched", properties={"query": "q"})
    assert rexc.value.status == 401
    assert (
        collector.read(lambda k: k is not None and k.startswith(tag.encode()), expect=0, timeout=2)
        == []
    )


def test_raw_http_400_401_and_gzip(collector: Collector, tag: str) -> None:
    url = collector.url
    bad = requests.post(f"{url}/v1/track", data=b"{oops", headers=collector.auth, timeout=5)
    assert bad.status_code == 400
    assert bad.json()["success"] is False
    assert "JSON" in bad.json()["message"]
    missing = requests.post(
        f"{url}/v1/batch",
        json={"batch": [{"type": "track", "userId": "u"}]},
        headers=collector.auth,
        timeout=5,
    )
    assert missing.status_code == 400
    assert "batch[0].event" in missing.json()["message"]
    nokey = requests.post(f"{url}/v1/track", json={"userId": "u", "event": "x"}, timeout=5)
    assert nokey.status_code == 401
    assert nokey.json()["code"] == "unauthorized"
    badkey = requests.post(
        f"{url}/v1/track", auth=("nope", ""), timeout=5, json={"userId": "u", "event": "x"}
    )
    assert badkey.status_code == 401
    body = {
        "writeKey": "another-key",
        "batch": [
            {
                "type": "track",
                "userId": f"{tag}g",
                "event": "Order Refunded",
                "properties": {"order_id": "o-9", "amount": "12.50"},
                "messageId": f"{tag}r",
            }
        ],
    }
    ok = requests.post(
        f"{url}/v1/batch",
        data=gzip.compress(json.dumps(body).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=5,
    )
    assert ok.status_code == 200
    assert ok.json() == {"success": True}
    [(kind, key, value)] = collector.read(lambda k: k == f"{tag}g".encode(), expect=1)
    assert (kind, key) == ("purchase", f"{tag}g".encode())
    assert value["type"] == "order_refunded"
    assert value["properties"] == {"order_id": "o-9", "amount": "12.50"}
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert "segmentflow_collector_events_total" in metrics
