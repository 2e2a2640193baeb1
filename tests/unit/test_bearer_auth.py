"""The shared bearer check (segmentflow.auth): header parsing, constant-time match, and the
aiohttp middleware (open paths, another credential, custom refusal)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from segmentflow.auth import (
    CHALLENGE,
    authorized,
    bearer_middleware,
    bearer_token,
    refusal,
    token_matches,
)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer wrong", False),
        ("Basic dG9rOg==", False),
        ("tok", False),
        ("Bearer tok", True),
        ("bearer tok", True),  # the scheme is case-insensitive (RFC 7235)
        ("Bearer  tok ", True),
        ("Bearer tokx", False),
    ],
)
def test_authorized(header: str | None, ok: bool) -> None:
    assert authorized(header, "tok") is ok
    assert authorized(header, None) and authorized(header, "")  # no token: open


def test_bearer_token_and_match() -> None:
    assert bearer_token("Bearer a b") == "a b"
    assert token_matches("t", "t") and not token_matches(None, "t") and token_matches(None, None)


def test_middleware() -> None:
    async def main() -> dict[str, int]:
        async def ok(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        def cookie(request: web.Request) -> bool:
            return request.cookies.get("s") == "yes"

        app = web.Application(middlewares=[bearer_middleware("tok", also=cookie)])
        for path in ("/health", "/data"):
            app.router.add_get(path, ok)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            seen = {}
            for name, path, headers in [
                ("health", "/health", {}),
                ("none", "/data", {}),
                ("wrong", "/data", {"Authorization": "Bearer nope"}),
                ("right", "/data", {"Authorization": "Bearer tok"}),
                ("cookie", "/data", {"Cookie": "s=yes"}),
                ("unknown path", "/nothing", {}),
                ("unknown path, token", "/nothing", {"Authorization": "Bearer tok"}),
            ]:
                response = await client.get(path, headers=headers)
                seen[name] = response.status
                if response.status == 401:
                    body = await response.json()
                    assert body["error"] == "unauthorized"
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
            return seen
        finally:
            await client.close()

    assert asyncio.run(main()) == {
        "health": 200,
        "none": 401,
        "wrong": 401,
        "right": 200,
        "cookie": 200,
        "unknown path": 401,
        "unknown path, token": 404,
    }


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "this endpoint needs a token"),
        ("Basic dG9rOg==", "this endpoint needs a token"),
        ("Bearer wrong", "wrong token"),
    ],
)
def test_refusal_is_the_same_body_for_every_server(header: str | None, message: str) -> None:
    body = refusal(header, "tok")
    assert body is not None and body["error"] == "unauthorized"
    assert body["message"].startswith(message) and "SEGMENTFLOW_API_TOKEN" in body["message"]
    assert refusal("Bearer tok", "tok") is None and refusal(header, None) is None


def test_collector_refuses_with_the_shared_body_and_challenge() -> None:
    from starlette.testclient import TestClient as StarletteClient

    from segmentflow.collector.app import CollectorConfig, create_app
    from segmentflow.collector.sink import MemorySink

    topics = {"website": "w", "email": "e", "purchase": "p"}
    config = CollectorConfig(write_keys=frozenset({"k"}), topics=topics, api_token="tok")
    app = create_app(config, MemorySink())
    with StarletteClient(app) as client:
        response = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == CHALLENGE["WWW-Authenticate"]
        assert response.json() == refusal("Bearer wrong", "tok")
        assert client.get("/metrics", headers={"Authorization": "Bearer tok"}).status_code == 200
