"""The shared bearer check (segmentflow.auth): header parsing, constant-time match, and the
aiohttp middleware (open paths, another credential, custom refusal)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from segmentflow.auth import authorized, bearer_middleware, bearer_token, token_matches


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
