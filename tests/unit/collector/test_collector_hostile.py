"""Hostile request bodies against the collector app (memory sink): never a 500, always a JSON
answer; a property-based fuzz over bodies, encodings and endpoints; the bounds of CONTRACT §2."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import segmentflow.collector.app as collector_app
from segmentflow.collector import Bounds, CollectorConfig, MemorySink, TrackMap, create_app
from segmentflow.collector.pressure import InflightBudget
from segmentflow.collector.requests import SHORT_PATHS, RequestError, check_depth, scan_write_keys

TOPICS = {"website": "web", "email": "mail", "purchase": "buy"}
KEY = "wk-test"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
ENDPOINTS = ["track", "identify", "page", "screen", "group", "alias", "batch", *SHORT_PATHS]
FUZZED: Counter[int] = Counter()  # fuzzed requests by status


@pytest.fixture(scope="module")
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture(scope="module")
def client(sink: MemorySink) -> Iterator[TestClient]:
    config = CollectorConfig(
        write_keys=frozenset({KEY}),
        topics=TOPICS,
        deadletter_topic="dead",
        tracks=TrackMap({"Button Clicked": "ignore"}),
        max_body_bytes=200_000,
        max_inflight_bytes=400_000,
    )
    with TestClient(create_app(config, sink), raise_server_exceptions=False) as c:
        yield c


def json_error(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["code"] and body["message"]
    return body


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


# -- the hostile bodies of issues 11 and 12 ----------------------------------------------------


@pytest.mark.parametrize("endpoint", ["track", "identify", "batch"])
@pytest.mark.parametrize("depth", [100, 1000, 5000])
def test_deep_nesting_is_400(client: TestClient, endpoint: str, depth: int) -> None:
    field = "traits" if endpoint == "identify" else "properties"
    deep = '{"deep": ' + '[{"k": ' * (depth // 2) + "1" + "}]" * (depth // 2) + "}"
    call = f'"userId": "u", "event": "Product Viewed", "{field}": {deep}'
    body = f'{{"batch": [{{"type": "track", {call}}}]}}' if endpoint == "batch" else f"{{{call}}}"
    r = client.post(f"/v1/{endpoint}", headers=AUTH, content=body.encode())
    assert json_error(r, 400)["code"] in ("too_deep", "bad_request")


def test_nesting_within_the_limit_is_accepted(client: TestClient) -> None:
    body = {"userId": "u", "traits": {"deep": nested(40)}}
    assert client.post("/v1/identify", headers=AUTH, json=body).status_code == 200


@pytest.mark.parametrize(
    ("body", "encoding", "status"),
    [
        (b"\x1f\x8b\x08\x00garbage", "gzip", 400),
        (gzip.compress(b'{"userId": "u"}', mtime=0)[:-6], "gzip", 400),
        (gzip.compress(b" " * 5_000_000, mtime=0), "gzip", 413),  # a gzip bomb
        (b'{"userId": "u"}', "br", 415),
        (zlib.compress(b"{}"), "gzip", 400),
        (b"x" * 300_000, None, 413),
        (b"", None, 400),
        (b"\xff\xfe{", None, 400),
        (b'{"userId": "u\\ud800", "event": "x"}', None, 400),
        (b'{"userId": 1e400, "event": "x"}', None, 400),
        (b"[1, 2]", None, 400),
        (b'"just a string"', None, 400),
        (b'{"userId": true, "event": "x"}', None, 400),
        (b'{"userId": "u", "event": 5}', None, 400),
        (b'{"userId": "u", "event": "x", "properties": "p"}', None, 400),
        (b'{"userId": "u", "event": "x", "timestamp": 17}', None, 400),
        (b'{"userId": "u", "event": "x", "originalTimestamp": []}', None, 400),
        (b'{"event": "x"}', None, 400),
        (b'{"userId": "u", "event": "x", "context": [1]}', None, 400),
    ],
)
def test_hostile_bodies_get_a_json_4xx(
    client: TestClient, body: bytes, encoding: str | None, status: int
) -> None:
    headers = {**AUTH, **({"Content-Encoding": encoding} if encoding else {})}
    json_error(client.post("/v1/track", headers=headers, content=body), status)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/group", {"userId": "u", "traits": {"a": 1}}),  # no groupId
        ("/v1/g", {"userId": "u", "groupId": {"x": 1}}),
        ("/v1/alias", {"userId": "u"}),  # nothing to merge
        ("/v1/a", {"userId": "u", "previousId": ["p"]}),
        ("/v1/batch", {"batch": [{"type": "merge", "userId": "u"}]}),
        ("/v1/batch", {"batch": "nope"}),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "x"}], "context": 3}),
    ],
)
def test_invalid_calls_are_400(client: TestClient, path: str, body: dict[str, Any]) -> None:
    json_error(client.post(path, headers=AUTH, json=body), 400)


def test_unknown_paths_and_methods_are_json(client: TestClient) -> None:
    assert json_error(client.post("/v1/merge", headers=AUTH, json={}), 404)["code"] == "not_found"
    assert json_error(client.get("/v1/g"), 405)["code"] == "method_not_allowed"
    assert json_error(client.get("/nothing"), 404)


# -- bounds (CONTRACT §2) ------------------------------------------------------------------


def test_money_over_max_money_is_400_naming_the_field(client: TestClient, sink: MemorySink) -> None:
    before = len(sink.records)
    order = {"order_id": "o", "revenue": 1.7e308, "currency": "EUR"}
    batch = [
        {
            "type": "track",
            "userId": "u",
            "event": "Products Searched",
            "properties": {"query": "q"},
        },
        {"type": "track", "userId": "u", "event": "Order Completed", "properties": order},
    ]
    r = client.post("/v1/batch", headers=AUTH, json={"batch": batch})
    body = json_error(r, 400)
    assert body["code"] == "out_of_range"
    assert body["field"] == "batch[1].properties.revenue"
    assert "max_money" in body["message"]
    assert len(sink.records) == before  # all or nothing


@pytest.mark.parametrize("stamp", ["2099-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-01-01Z"])
def test_timestamps_out_of_range_are_400(client: TestClient, stamp: str) -> None:
    for field in ("timestamp", "originalTimestamp"):
        call = {"userId": "u", "properties": {"url": "x"}, field: stamp}
        r = client.post("/v1/page", headers=AUTH, json=call)
        if stamp == "9999-01-01Z":  # not RFC 3339: accepted and dead-lettered (worker's reason)
            assert r.status_code == 200
            continue
        body = json_error(r, 400)
        assert body["field"] == "body.timestamp"


def test_bounds_come_from_the_config(sink: MemorySink) -> None:
    config = CollectorConfig(
        write_keys=frozenset({KEY}), topics=TOPICS, bounds=Bounds(max_money=10.0)
    )
    with TestClient(create_app(config, sink)) as c:
        order = {"order_id": "o", "revenue": "10.5", "currency": "EUR"}
        call = {"userId": "u", "event": "Order Completed", "properties": order}
        assert json_error(c.post("/v1/track", headers=AUTH, json=call), 400)["field"] == (
            "body.properties.revenue"
        )


# -- write key before parsing ----------------------------------------------------------------


def test_no_valid_write_key_is_401_without_parsing(
    sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_parse(body: bytes) -> Any:
        raise AssertionError("the body was parsed before the write key was checked")

    monkeypatch.setattr(collector_app, "parse_json", no_parse)
    config = CollectorConfig(write_keys=frozenset({KEY}), topics=TOPICS)  # 2 MiB bodies
    with TestClient(create_app(config, sink)) as client:
        _refused_unparsed(client)


def _refused_unparsed(client: TestClient) -> None:
    calls = [{"type": "track", "userId": f"u{i}", "event": "Products Searched"} for i in range(10)]
    small = {"batch": calls * 1000}  # 10k events
    raw = json.dumps(small).encode()
    assert json_error(client.post("/v1/batch", content=raw), 401)["code"] == "unauthorized"
    wrong = json.dumps({**small, "writeKey": "nope"}).encode()
    assert json_error(
        client.post(
            "/v1/batch", content=gzip.compress(wrong), headers={"Content-Encoding": "gzip"}
        ),
        401,
    )
    bad = {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}
    assert json_error(client.post("/v1/batch", content=raw, headers=bad), 401)


def test_scan_write_keys() -> None:
    assert scan_write_keys(b'{"writeKey" : "abc", "x": {"writeKey":"d"}}') == ["abc", "d"]
    assert scan_write_keys(b'{"writeKey": "a\\u0062"}') == []
    assert scan_write_keys(b"{}") == []


def test_body_write_key_must_be_the_top_level_one(client: TestClient) -> None:
    body = {"userId": "u", "event": "x", "properties": {"writeKey": KEY}}
    assert json_error(client.post("/v1/track", json=body), 401)


def test_check_depth_is_iterative() -> None:
    check_depth(nested(64))
    with pytest.raises(RequestError):
        check_depth(nested(65))
    with pytest.raises(RequestError):
        check_depth(nested(200_000))  # no RecursionError


# -- pressure ------------------------------------------------------------------------------------


def test_inflight_budget() -> None:
    budget = InflightBudget(100)
    a, b = budget.reservation(), budget.reservation()
    a.take(60)
    with pytest.raises(RequestError) as exc:
        b.take(50)
    assert exc.value.status == 503
    b.take(40)
    assert budget.used == 100
    a.release()
    a.release()
    b.take(50)
    assert (budget.used, budget.refused) == (90, 1)
    b.release()
    assert budget.used == 0


def test_health_follows_the_broker(client: TestClient, sink: MemorySink) -> None:
    sink.fail = True
    try:
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        call = {"userId": "u", "event": "Products Searched", "properties": {"query": "q"}}
        body = json_error(client.post("/v1/track", headers=AUTH, json=call), 503)
        assert body["code"] == "unavailable"
        assert r.headers.get("retry-after") is None
    finally:
        sink.fail = False
    assert client.get("/health").json() == {"status": "ok", "broker": "up"}


# -- property-based fuzz: no request body ever gets a 500 ------------------------------------

KEYS = [
    "userId", "anonymousId", "messageId", "timestamp", "originalTimestamp", "event", "type",
    "properties", "traits", "context", "groupId", "previousId", "name", "category", "batch",
    "writeKey", "url", "path", "revenue", "total", "products", "price", "quantity", "order_id",
    "product_id", "page", "address", "createdAt", "currency", "amount", "query", "campaign_id",
]  # fmt: skip
EVENTS = ["Order Completed", "Product Added", "Product Viewed", "Email Opened", "Signed Up", "x"]
TYPES = ["track", "identify", "page", "screen", "group", "alias", "nope"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["2026-03-01T10:15:00Z", "2099-01-01T00:00:00Z", "1.5", "-3", "", KEY]),
    st.sampled_from(EVENTS + TYPES),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5),
    ),
    max_leaves=25,
)
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
stamps = st.sampled_from(["2026-03-01T10:15:00Z", "2026-03-01T10:15:00", "2099-01-01Z"]) | scalars
ids = st.sampled_from(["u1", "anon-2", 42, "u1"]) | scalars
calls = st.fixed_dictionaries(
    {"userId": ids},
    optional={
        "anonymousId": ids,
        "groupId": ids,
        "previousId": ids,
        "type": st.sampled_from(TYPES),
        "event": st.sampled_from(EVENTS) | scalars,
        "timestamp": stamps,
        "originalTimestamp": stamps,
        "properties": objects | values,
        "traits": objects | values,
        "context": objects | values,
        "name": scalars,
        "messageId": scalars,
    },
)
bodies = st.one_of(
    calls,
    st.builds(
        lambda b, c: {"batch": b, "context": c}, st.lists(calls | values, max_size=5), values
    ),
    values,
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    endpoint=st.sampled_from(ENDPOINTS),
    gz=st.booleans(),
    auth=st.sampled_from(["header", "body", "none"]),
)
def test_fuzz_never_500(client: TestClient, body: Any, endpoint: str, gz: bool, auth: str) -> None:
    if auth == "body" and isinstance(body, dict):
        body = {**body, "writeKey": KEY}
    raw = json.dumps(body).encode()
    headers = dict(AUTH) if auth == "header" else {}
    if gz:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    r = client.post(f"/v1/{endpoint}", content=raw, headers=headers)
    FUZZED[r.status_code] += 1
    assert r.status_code != 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code != 200:
        json_error(r, r.status_code)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=300), endpoint=st.sampled_from(ENDPOINTS), gz=st.booleans())
def test_fuzz_raw_bytes_never_500(client: TestClient, raw: bytes, endpoint: str, gz: bool) -> None:
    headers = {**AUTH, **({"Content-Encoding": "gzip"} if gz else {})}
    r = client.post(f"/v1/{endpoint}", content=raw, headers=headers)
    FUZZED[r.status_code] += 1
    assert r.status_code != 500, r.text
    json_error(r, r.status_code) if r.status_code != 200 else None


def test_zz_fuzz_count() -> None:
    """Reports how many fuzzed requests ran in this module (all answered without a 500)."""
    print(f"fuzzed requests: {sum(FUZZED.values())} by status {dict(FUZZED)}, 0 x 500")
    assert FUZZED[200] > 0 and 500 not in FUZZED
