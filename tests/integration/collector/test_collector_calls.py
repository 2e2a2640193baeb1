"""Every Segment call type through the real SDK and raw HTTP (short paths, RudderStack's
``originalTimestamp``) into a running collector on Tansu: each event passes the worker's
decoder; hostile and out-of-bounds bodies get a JSON 4xx and produce nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
from collector_harness import WRITE_KEY, Collector

from segmentflow.schemas.decode import Event, decode_message

pytestmark = pytest.mark.integration


@pytest.fixture(params=["segment", "rudderstack"])
def sdk(request: pytest.FixtureRequest, collector: Collector) -> Iterator[Any]:
    """The real SDK clients in sync mode (no thread to stop); RudderStack gzips."""
    if request.param == "segment":
        yield segment_analytics.Client(WRITE_KEY, host=collector.url, sync_mode=True, max_retries=0)
    else:
        yield rudder_analytics.Client(WRITE_KEY, host=collector.url, sync_mode=True, gzip=True)


def decoded(collector: Collector, tag: str, expect: int) -> list[tuple[Event, dict[str, Any]]]:
    got = collector.read(lambda k: k is not None and k.startswith(tag.encode()), expect=expect)
    out = []
    for kind, key, value in got:
        assert kind != "deadletter", value
        event = decode_message(json.dumps(value).encode(), key, kind)
        assert isinstance(event, Event), (event, value)
        out.append((event, value))
    assert len(out) == expect
    return out


def test_page_screen_group_alias_through_the_sdk(sdk: Any, collector: Collector, tag: str) -> None:
    user, anon = f"{tag}user", f"{tag}anon"
    sdk.page(anonymous_id=anon, name="Home")  # no properties.url: the SDK may omit it
    sdk.page(user_id=user, category="Shop", name="Shoes", properties={"path": "/shoes"})
    sdk.screen(user_id=user, name="Checkout")
    sdk.group(user_id=user, group_id="acme", traits={"name": "Acme", "plan": "pro"})
    sdk.alias(previous_id=anon, user_id=user)
    sdk.identify(user_id=user, anonymous_id=anon, traits={"email": "a@example.com"})
    events = decoded(collector, tag, expect=6)
    urls = sorted(v["properties"]["url"] for e, v in events if e.type == "page_view")
    assert urls == ["/shoes", "page:Home", "screen:Checkout"]
    [(group, _)] = [(e, v) for e, v in events if e.traits and "group_id" in e.traits]
    assert group.customer_id == user
    assert group.traits == {"group_id": "acme", "group_name": "Acme", "group_plan": "pro"}
    [(alias, _)] = [(e, v) for e, v in events if e.type == "alias"]
    assert (alias.customer_id, alias.previous_id) == (user, anon)
    [(ident, _)] = [(e, v) for e, v in events if e.traits and "email" in e.traits]
    assert ident.anonymous_id == anon


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/v1/t", {"event": "Products Searched", "properties": {"query": "q"}}),
        ("/v1/i", {"traits": {"plan": "pro"}}),
        ("/v1/p", {"name": "Pricing"}),
        ("/v1/s", {"name": "Cart"}),
        ("/v1/g", {"groupId": "g-1"}),
        ("/v1/a", {"previousId": "old-id"}),
        ("/v1/b", {"batch": [{"type": "page", "properties": {"url": "https://x/"}}]}),
    ],
)
def test_analytics_js_short_paths(
    collector: Collector, tag: str, path: str, call: dict[str, Any]
) -> None:
    if path == "/v1/b":
        call = {"batch": [{**c, "userId": f"{tag}u"} for c in call["batch"]]}
    else:
        call = {**call, "userId": f"{tag}u"}
    r = requests.post(collector.url + path, json=call, headers=collector.auth, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    [(event, _)] = decoded(collector, tag, expect=1)
    assert event.customer_id == f"{tag}u"


def test_rudderstack_original_timestamp_only(collector: Collector, tag: str) -> None:
    """RudderStack's JS SDKs send originalTimestamp (and sentAt), never timestamp."""
    batch: list[dict[str, Any]] = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": f"{tag}u",
            "anonymousId": f"{tag}a",
            "messageId": f"{tag}m{i}",
            "originalTimestamp": f"2026-02-0{i + 1}T08:30:00.250+01:00",
            "sentAt": "2026-02-09T08:30:00.000Z",
            "properties": {"order_id": f"o{i}", "revenue": 10 + i, "currency": "EUR"},
        }
        for i in range(3)
    ]
    r = requests.post(
        collector.url + "/v1/batch", json={"batch": batch}, headers=collector.auth, timeout=10
    )
    assert r.status_code == 200, r.text
    events = decoded(collector, tag, expect=3)
    stamps = sorted(v["timestamp"] for _, v in events)
    assert stamps == [f"2026-02-0{i + 1}T07:30:00.250000Z" for i in range(3)]
    assert {e.anonymous_id for e, _ in events} == {f"{tag}a"}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            '{"userId": "U", "event": "x", "properties": {"deep": '
            + '{"k": ' * 1000
            + "1"
            + "}" * 1000
            + "}}",
            400,
            "too_deep",
        ),
        (
            '{"userId": "U", "event": "Order Completed", "properties": '
            '{"order_id": "o", "revenue": 1.7e308, "currency": "EUR"}}',
            400,
            "out_of_range",
        ),
        (
            '{"userId": "U", "event": "Products Searched", "timestamp": "2099-01-01T00:00:00Z",'
            ' "properties": {"query": "q"}}',
            400,
            "out_of_range",
        ),
        ('{"userId": "U", "event": "x", "properties": []}', 400, "bad_request"),
        ('{"userId": "U"', 400, "bad_request"),
    ],
)
def test_hostile_and_out_of_bounds_bodies(
    collector: Collector, tag: str, body: str, status: int, code: str
) -> None:
    raw = body.replace('"U"', json.dumps(f"{tag}u")).encode()
    r = requests.post(collector.url + "/v1/track", data=raw, headers=collector.auth, timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["code"] == code
    if code == "out_of_range":
        assert r.json()["field"].startswith("body.")
    gz = requests.post(
        collector.url + "/v1/batch",
        data=b"\x1f\x8b\x08\x00\x00\x00not gzip",
        headers={**collector.auth, "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert gz.status_code == 400 and gz.json()["success"] is False
    nothing = collector.read(lambda k: k is not None and k.startswith(tag.encode()), 0, 2)
    assert nothing == []


def test_unsupported_paths_are_json(collector: Collector) -> None:
    for method, path, status in [("POST", "/v1/x", 404), ("GET", "/v1/track", 405)]:
        r = requests.request(method, collector.url + path, headers=collector.auth, timeout=10)
        assert r.status_code == status
        assert r.json()["success"] is False
