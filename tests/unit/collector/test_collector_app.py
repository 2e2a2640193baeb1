"""The collector app over a memory sink: status codes, auth, gzip, batches, dead letters."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support.metrics import parse

from segmentflow.collector import (
    CollectorConfig,
    MemorySink,
    TrackMap,
    create_app,
    load_track_map,
    parse_write_keys,
)
from segmentflow.collector.openapi import openapi_document
from segmentflow.config import ConfigError
from segmentflow.schemas.decode import decode_message

TOPICS = {"website": "web", "email": "mail", "purchase": "buy"}
KEY = "wk-test"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
DOCS = Path(__file__).resolve().parents[3] / "docs" / "openapi-collector.json"


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def client(sink: MemorySink) -> Iterator[TestClient]:
    config = CollectorConfig(
        write_keys=frozenset({KEY, "other"}),
        topics=TOPICS,
        deadletter_topic="dead",
        tracks=TrackMap({"Button Clicked": "ignore"}),
        max_body_bytes=50_000,
    )
    with TestClient(create_app(config, sink)) as c:
        yield c
    assert not sink.started


def page(**extra: Any) -> dict[str, Any]:
    return {"userId": "u1", "properties": {"url": "https://shop/"}, **extra}


def records(sink: MemorySink, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in sink.records if r.topic == topic]


def assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    return body


def test_track_with_basic_auth(client: TestClient, sink: MemorySink) -> None:
    r = client.post(
        "/v1/track",
        headers=AUTH,
        json={
            "userId": "u1",
            "event": "Order Completed",
            "messageId": "m1",
            "timestamp": "2026-03-01T10:15:00.000+00:00",
            "properties": {"order_id": "o1", "revenue": 10, "currency": "EUR"},
        },
    )
    assert r.status_code == 200
    assert r.json() == {"success": True}
    [record] = sink.records
    assert record.topic == "buy"
    assert record.key == b"u1"
    event = json.loads(record.value)
    assert event["event_id"] == "m1"
    assert event["timestamp"] == "2026-03-01T10:15:00Z"
    assert not hasattr(decode_message(record.value, record.key, "purchase"), "reason")


def test_write_key_in_body_and_short_paths(client: TestClient, sink: MemorySink) -> None:
    assert client.post("/v1/page", json=page(writeKey=KEY)).status_code == 200
    assert client.post("/v1/p", json=page(writeKey="other")).status_code == 200
    assert client.post("/v1/i", json={"anonymousId": "a", "writeKey": KEY}).status_code == 200
    assert [r.topic for r in sink.records] == ["web", "web", "web"]
    # the header wins over the body's writeKey
    assert client.post("/v1/page", headers=AUTH, json=page(writeKey="bad")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()},
        {"Authorization": "Basic " + base64.b64encode(b":").decode()},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer " + KEY},
    ],
)
def test_unknown_or_missing_write_key_is_401(
    client: TestClient, sink: MemorySink, headers: dict[str, str]
) -> None:
    assert_error(client.post("/v1/page", headers=headers, json=page()), 401)
    assert_error(client.post("/v1/batch", headers=headers, json={"batch": []}), 401)
    assert sink.records == []


def test_wrong_body_write_key_is_401(client: TestClient) -> None:
    assert_error(client.post("/v1/page", json=page(writeKey="nope")), 401)


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/track", b"{not json", "JSON"),
        ("/v1/track", b"", "empty"),
        ("/v1/track", b"[1]", "object"),
        ("/v1/track", b'{"userId": "u", "event": NaN}', "JSON"),
        ("/v1/track", json.dumps({"userId": "u"}).encode(), "event"),
        ("/v1/track", json.dumps({"userId": "u", "event": ""}).encode(), "event"),
        ("/v1/track", json.dumps({"event": "x"}).encode(), "anonymousId"),
        ("/v1/track", json.dumps({"userId": "", "event": "x"}).encode(), "anonymousId"),
        ("/v1/page", json.dumps({"userId": True}).encode(), "userId"),
        ("/v1/page", json.dumps({"userId": 1.5}).encode(), "userId"),
        ("/v1/page", json.dumps({"userId": "u", "timestamp": 5}).encode(), "timestamp"),
        ("/v1/page", json.dumps({"userId": "u", "properties": []}).encode(), "properties"),
        ("/v1/identify", json.dumps({"userId": "u", "traits": "x"}).encode(), "traits"),
        ("/v1/identify", json.dumps({"userId": "u", "context": 1}).encode(), "context"),
        ("/v1/identify", json.dumps({"userId": "u", "messageId": {}}).encode(), "messageId"),
        ("/v1/batch", json.dumps({"batch": {}}).encode(), "batch"),
        ("/v1/batch", json.dumps({}).encode(), "batch"),
        ("/v1/batch", json.dumps({"batch": [1]}).encode(), "batch[0]"),
        ("/v1/batch", json.dumps({"batch": [{"type": "nope", "userId": "u"}]}).encode(), "type"),
        (
            "/v1/batch",
            json.dumps({"batch": [page(type="page"), {"type": "track", "userId": "u"}]}).encode(),
            "batch[1].event",
        ),
        ("/v1/batch", json.dumps({"batch": [], "context": 3}).encode(), "context"),
        ("/v1/batch", json.dumps({"batch": [], "writeKey": 3}).encode(), "writeKey"),
    ],
)
def test_bad_bodies_are_400_and_produce_nothing(
    client: TestClient, sink: MemorySink, path: str, body: bytes, where: str
) -> None:
    error = assert_error(client.post(path, headers=AUTH, content=body), 400)
    assert where in error["message"]
    assert sink.records == []


def test_gzip_bodies(client: TestClient, sink: MemorySink) -> None:
    body = gzip.compress(json.dumps({"batch": [page(type="page")] * 3}).encode())
    headers = {**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert client.post("/v1/batch", headers=headers, content=body).status_code == 200
    assert len(sink.records) == 3
    # writeKey inside a gzip body
    body = gzip.compress(json.dumps({**page(), "writeKey": KEY}).encode())
    assert (
        client.post("/v1/page", headers={"Content-Encoding": "gzip"}, content=body).status_code
        == 200
    )
    assert_error(
        client.post("/v1/page", headers={**AUTH, "Content-Encoding": "gzip"}, content=b"not gzip"),
        400,
    )
    assert_error(
        client.post("/v1/page", headers={**AUTH, "Content-Encoding": "gzip"}, content=body[:-8]),
        400,
    )
    assert_error(
        client.post("/v1/page", headers={**AUTH, "Content-Encoding": "br"}, content=b"{}"), 415
    )


def test_size_limits(client: TestClient, sink: MemorySink) -> None:
    big = json.dumps({"batch": [page(type="page", pad="x" * 60_000)]}).encode()
    assert_error(client.post("/v1/batch", headers=AUTH, content=big), 413)
    bomb = gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}")
    assert len(bomb) < 50_000
    assert_error(
        client.post("/v1/batch", headers={**AUTH, "Content-Encoding": "gzip"}, content=bomb), 413
    )
    assert sink.records == []


def test_batch_mixes_events_and_dead_letters(client: TestClient, sink: MemorySink) -> None:
    batch = [
        {
            "type": "track",
            "userId": "u1",
            "event": "Product Viewed",
            "properties": {"product_id": "p1"},
            "messageId": "m1",
        },
        {"type": "track", "anonymousId": "a1", "event": "Video Played", "messageId": "m2"},
        {"type": "track", "userId": "u2", "event": "Order Refunded"},  # no order_id
        {
            "type": "track",
            "userId": "u3",
            "event": "Product Added",
            "properties": {"product_id": "p"},
        },  # no price
        {"type": "track", "userId": "u4", "event": "Button Clicked"},  # ignored by the map
        {
            "type": "track",
            "userId": "u5",
            "event": "Email Opened",
            "properties": {"campaign_id": "c"},
        },
        {"type": "identify", "userId": "u6", "traits": {"email": "x@y"}},
    ]
    r = client.post("/v1/batch", headers=AUTH, json={"batch": batch, "sentAt": "x"})
    assert r.status_code == 200
    assert r.json() == {"success": True}
    assert [(rec.topic, rec.key) for rec in sink.records] == [
        ("web", b"u1"),
        ("dead", b"a1"),
        ("dead", b"u2"),
        ("dead", b"u3"),
        ("mail", b"u5"),
        ("web", b"u6"),
    ]
    letters = records(sink, "dead")
    assert [d["reason"] for d in letters] == ["unmapped_track", "missing_field", "missing_field"]
    for letter, original in zip(letters, [batch[1], batch[2], batch[3]], strict=True):
        assert set(letter) == {
            "reason",
            "detail",
            "topic",
            "partition",
            "offset",
            "received_at",
            "payload",
        }
        assert letter["topic"] == "collector"
        assert letter["received_at"].endswith("Z")
        assert json.loads(base64.b64decode(letter["payload"])) == original
    metrics = parse(client.get("/metrics").text)
    assert metrics.total("segmentflow_collector_deadlettered_total", reason="unmapped_track") == 1
    assert metrics.total("segmentflow_collector_events_total", topic="web") == 2
    assert metrics.total("segmentflow_collector_ignored_total") == 1


def test_batch_context_is_merged(client: TestClient, sink: MemorySink) -> None:
    body = {
        "context": {"page": {"url": "https://shared"}},
        "batch": [
            {"type": "page", "userId": "u"},
            {"type": "page", "userId": "v", "context": {"page": {"url": "https://own"}}},
        ],
    }
    assert client.post("/v1/batch", headers=AUTH, json=body).status_code == 200
    assert [e["properties"]["url"] for e in records(sink, "web")] == [
        "https://shared",
        "https://own",
    ]


def test_retried_call_without_message_id_keeps_its_event_id(
    client: TestClient, sink: MemorySink
) -> None:
    call = {
        "userId": "u",
        "event": "Products Searched",
        "properties": {"query": "q"},
        "timestamp": "2026-01-01T00:00:00Z",
    }
    for sent in ("2026-01-01T00:00:01Z", "2026-01-01T00:00:09Z"):
        client.post("/v1/track", headers=AUTH, json={**call, "sentAt": sent})
    ids = [e["event_id"] for e in records(sink, "web")]
    assert len(ids) == 2
    assert ids[0] == ids[1]


def test_broker_failure_is_503(client: TestClient, sink: MemorySink) -> None:
    sink.fail = True
    assert_error(client.post("/v1/page", headers=AUTH, json=page()), 503)


def test_health_openapi_methods_and_cors(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "broker": "up"}
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {"/v1/track", "/v1/identify", "/v1/page", "/v1/batch"}
    assert client.get("/v1/track").status_code == 405
    pre = client.options(
        "/v1/batch", headers={"Origin": "https://shop", "Access-Control-Request-Method": "POST"}
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"


def test_docs_copy_matches_the_served_document() -> None:
    served = openapi_document()
    docs = json.loads(DOCS.read_text())
    docs["info"]["version"] = served["info"]["version"]
    assert docs == served, (
        "regenerate with: python -m segmentflow.collector.openapi > docs/openapi-collector.json"
    )


def test_config_helpers(tmp_path: Path) -> None:
    assert parse_write_keys(" a, b,,a ") == frozenset({"a", "b"})
    with pytest.raises(ConfigError, match="SEGMENTFLOW_WRITE_KEYS"):
        CollectorConfig(write_keys=frozenset(), topics=TOPICS)
    assert load_track_map(None) == {}
    assert load_track_map('{"A": "search"}') == {"A": "search"}
    file = tmp_path / "map.yaml"
    file.write_text("Cart Viewed: checkout_started\n")
    assert load_track_map(str(file)) == {"Cart Viewed": "checkout_started"}
    for bad in ("/no/such/file", "{broken", "[1]"):
        with pytest.raises(ConfigError):
            load_track_map(bad)
