"""Every HTTP surface with ``SEGMENTFLOW_API_TOKEN`` set (CONTRACT §7; issue 12 finding 5): the
worker (Faust's own routes included), the dashboard (pages, static files, ``/api/state``), the
trigger dispatcher and the collector, as real processes. No token and a wrong token get 401 with
a JSON error; the right one gets 200; ``/health`` stays open."""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from segmentflow.devstack import DevStack
from segmentflow.embedded import free_port, stop_pid

pytestmark = pytest.mark.e2e
TOKEN = "auth-matrix-token"
WRITE_KEY = "wk-auth"


class Answer:
    """Status, headers and body of one request."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(
    port: int,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def assert_refused(answer: Answer, where: str) -> None:
    assert answer.status == 401, (where, answer.status, answer.body[:200])
    assert answer.headers.get("content-type", "").startswith("application/json"), where
    assert answer.json()["error"] == "unauthorized", where


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``path`` answers 200 (progress: the process must stay alive); generous limit."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if call(port, path).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{path} on :{port} not up; log:\n{log.read_text(errors='replace')}")


def spawn(stack: DevStack, args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "segmentflow.cli.main", *args],
        env=stack.env() | env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A worker, dashboard, trigger dispatcher and collector, all with the token set."""
    tmp = tmp_path_factory.mktemp("auth")
    triggers = tmp / "triggers.yaml"
    triggers.write_text(
        f"targets:\n  - name: sink\n    url: http://127.0.0.1:{free_port()}/hook\n"
        "    match: {dimension: lifecycle}\n    max_attempts: 1\n"
    )
    redis_url = os.environ.get("SEGMENTFLOW_REDIS_URL")
    procs: list[subprocess.Popen[bytes]] = []
    with DevStack(redis_url=redis_url, extra_env={"SEGMENTFLOW_API_TOKEN": TOKEN}) as stack:
        try:
            ports = {name: free_port() for name in ("dashboard", "triggers", "collector")}
            logs = {name: tmp / f"{name}.log" for name in ports}
            worker = f"http://127.0.0.1:{stack.web_ports[0]}"
            procs.append(
                spawn(
                    stack,
                    ["dashboard", "--port", str(ports["dashboard"]), "--worker-url", worker],
                    logs["dashboard"],
                )
            )
            procs.append(
                spawn(
                    stack,
                    ["triggers", "--port", str(ports["triggers"])],
                    logs["triggers"],
                    SEGMENTFLOW_TRIGGERS_CONFIG=str(triggers),
                )
            )
            procs.append(
                spawn(
                    stack,
                    ["collect", "--port", str(ports["collector"])],
                    logs["collector"],
                    SEGMENTFLOW_WRITE_KEYS=WRITE_KEY,
                )
            )
            for proc, name in zip(procs, ports, strict=True):
                wait_http(ports[name], "/health", proc, logs[name])
            yield {"stack": stack, "ports": ports | {"worker": stack.web_ports[0]}}
        finally:
            for proc in procs:
                stop_pid(proc, timeout=10)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


SEGMENT_CALLS = {
    "track": {
        "userId": "auth-u1",
        "event": "Order Completed",
        "properties": {"order_id": "o1", "revenue": 12.5, "currency": "EUR"},
        "timestamp": "2025-03-01T10:00:00Z",
    },
    "identify": {
        "userId": "auth-u1",
        "traits": {"country": "DE"},
        "timestamp": "2025-03-01T10:00:01Z",
    },
    "page": {
        "userId": "auth-u1",
        "properties": {"url": "https://shop.example/p/1"},
        "timestamp": "2025-03-01T10:00:02Z",
    },
}


def segment_body(endpoint: str, n: int) -> bytes:
    if endpoint in ("batch", "b"):
        batch = [
            {"type": kind, "messageId": f"auth-{endpoint}-{n}-{kind}", **message}
            for kind, message in SEGMENT_CALLS.items()
        ]
        return orjson.dumps({"batch": batch})
    kind = {"t": "track", "i": "identify", "p": "page"}.get(endpoint, endpoint)
    return orjson.dumps({"messageId": f"auth-{endpoint}-{n}", **SEGMENT_CALLS[kind]})


def test_collector_write_keys_on_every_endpoint(services: dict[str, Any]) -> None:
    port = services["ports"]["collector"]
    json_type = {"Content-Type": "application/json"}
    for n, endpoint in enumerate(["track", "identify", "page", "batch", "t", "i", "p", "b"]):
        path = f"/v1/{endpoint}"
        body = segment_body(endpoint, n)
        for headers in ({}, basic("wrong-key")):
            answer = call(port, path, "POST", json_type | headers, body)
            assert answer.status == 401, (path, answer.status, answer.body)
            assert answer.headers["content-type"].startswith("application/json")
        answer = call(port, path, "POST", json_type | basic(WRITE_KEY), body)
        assert answer.status == 200, (path, answer.body)
        assert answer.json() == {"success": True}
    assert call(port, "/health").status == 200


def test_collector_operational_endpoints_need_the_token(services: dict[str, Any]) -> None:
    port = services["ports"]["collector"]
    for path in ("/metrics", "/openapi.json"):
        assert_refused(call(port, path), f"collector {path} without token")
        assert_refused(call(port, path, headers=bearer("wrong")), f"collector {path} wrong")
        assert call(port, path, headers=bearer(TOKEN)).status == 200, path


def test_worker_every_route_needs_the_token(services: dict[str, Any]) -> None:
    stack: DevStack = services["stack"]
    port = services["ports"]["worker"]
    # a customer the worker knows (through the collector), so /customers/{id} can answer 200
    collector = services["ports"]["collector"]
    body = segment_body("track", 99)
    headers = {"Content-Type": "application/json"} | basic(WRITE_KEY)
    assert call(collector, "/v1/track", "POST", headers, body).status == 200
    deadline = time.monotonic() + 120
    while call(port, "/customers/auth-u1", headers=bearer(TOKEN)).status != 200:
        assert time.monotonic() < deadline, "the worker never applied the collector's event"
        assert stack.workers[0].poll() is None
        time.sleep(0.5)
    ours = ["/metrics", "/segments", "/customers/auth-u1", "/customers/nobody"]
    faust = ["/", "/router/", "/router/topics", "/table/", "/graph/", "/assignment/"]
    for path in ours + faust + ["/no-such-path"]:
        assert_refused(call(port, path), f"worker {path} without token")
        assert_refused(call(port, path, headers=bearer("wrong")), f"worker {path} wrong token")
        assert_refused(
            call(port, path, headers={"Authorization": TOKEN}), f"worker {path} not bearer"
        )
    for path in ["/metrics", "/segments", "/customers/auth-u1", "/", "/router/", "/table/"]:
        answer = call(port, path, headers=bearer(TOKEN))
        assert answer.status == 200, (path, answer.status, answer.body[:200])
    assert call(port, "/customers/nobody", headers=bearer(TOKEN)).status == 404
    health = call(port, "/health")
    assert health.status == 200 and health.json()["status"] == "ok"


def test_dashboard_pages_and_api_need_the_token(services: dict[str, Any]) -> None:
    port = services["ports"]["dashboard"]
    paths = ["/", "/api/state", "/static/app.js", "/static/app.css", "/static/index.html"]
    for path in paths:
        assert_refused(call(port, path), f"dashboard {path} without token")
        assert_refused(call(port, path, headers=bearer("wrong")), f"dashboard {path} wrong")
        forged = {"Cookie": "segmentflow_session=" + "0" * 64}
        assert_refused(call(port, path, headers=forged), f"dashboard {path} forged cookie")
        answer = call(port, path, headers=bearer(TOKEN))
        assert answer.status == 200, (path, answer.status)
    state = call(port, "/api/state", headers=bearer(TOKEN)).json()
    assert "populations" in state and "recent" in state

    # a browser gets the sign-in form instead of data, then a session cookie
    page = call(port, "/", headers={"Accept": "text/html"})
    assert page.status == 401 and b'name="token"' in page.body and b"populations" not in page.body
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = call(port, "/login", "POST", form, b"token=nope")
    assert wrong.status == 401 and b"wrong token" in wrong.body
    assert "set-cookie" not in wrong.headers
    good = call(port, "/login", "POST", form, f"token={TOKEN}".encode())
    assert good.status == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = {"Cookie": cookie.split(";", 1)[0]}
    for path in paths:
        assert call(port, path, headers=session).status == 200, path
    out = call(port, "/logout", "POST", session)
    assert out.status == 303 and 'segmentflow_session=""' in out.headers["set-cookie"]
    assert call(port, "/login").status == 200
    assert call(port, "/health").status == 200


def test_trigger_dispatcher_needs_the_token(services: dict[str, Any]) -> None:
    port = services["ports"]["triggers"]
    for path in ("/metrics", "/", "/no-such-path"):
        assert_refused(call(port, path), f"triggers {path} without token")
        assert_refused(call(port, path, headers=bearer("wrong")), f"triggers {path} wrong")
    assert call(port, "/metrics", headers=bearer(TOKEN)).status == 200
    assert call(port, "/health").status == 200
