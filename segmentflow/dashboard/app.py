"""The dashboard web app (aiohttp): static page + ``/api/state``, fed by two background tasks.

* a poller GETs the worker's ``/segments`` and ``/metrics`` every ``poll_s`` seconds
  (``SEGMENTFLOW_WORKER_URL``, bearer ``SEGMENTFLOW_API_TOKEN`` when set);
* a Kafka reader (no consumer group, nothing committed) follows ``segment-changes`` and the
  triggers' dead-letter topic.

With ``SEGMENTFLOW_API_TOKEN`` set (the token it polls the worker with), every page and API but
``/health`` and ``/login`` needs that token too: as ``Authorization: Bearer <token>``, or as the
session cookie the login form sets (HttpOnly, SameSite=Strict; derived from the token with a
per-process key, so it never holds the token itself and ends when the dashboard restarts). The
dashboard shows nobody more than the worker API would show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from segmentflow.auth import bearer_middleware, token_matches, unauthorized
from segmentflow.config import Settings
from segmentflow.dashboard import members
from segmentflow.dashboard.state import (
    DashboardState,
    WorkerSample,
    parse_config_walk,
    parse_metrics,
)
from segmentflow.kafka_options import KafkaOptions
from segmentflow.triggers import DEFAULT_DEADLETTER_TOPIC
from segmentflow.triggers.backoff import Backoff

log = logging.getLogger("segmentflow.dashboard")
#: reconnect waits of the Kafka follower (0.5 s doubling to 10 s; back to 0.5 s once connected)
KAFKA_RECONNECT = Backoff(base=0.5, cap=10.0, jitter=0.0)

STATIC_FILES = {
    "index.html": "text/html",
    "app.js": "application/javascript",
    "app.css": "text/css",
}
STATE_KEY = web.AppKey("state", DashboardState)
SESSION_COOKIE = "segmentflow_session"


@dataclass(frozen=True)
class DashboardOptions:
    """Where the data comes from; every field has an environment default."""

    worker_url: str = "http://127.0.0.1:6066"
    api_token: str | None = None
    poll_s: float = 2.0
    from_beginning: bool = False
    kafka: bool = True
    changes_topic: str = "segment-changes"
    trigger_deadletter_topic: str = DEFAULT_DEADLETTER_TOPIC

    @classmethod
    def from_env(cls, settings: Settings, **overrides: Any) -> DashboardOptions:
        env = os.environ
        values: dict[str, Any] = {
            "worker_url": env.get("SEGMENTFLOW_WORKER_URL", cls.worker_url).rstrip("/"),
            "api_token": settings.api_token,
            "poll_s": float(env.get("SEGMENTFLOW_DASHBOARD_POLL_S", cls.poll_s)),
            "changes_topic": settings.topic_segment_changes,
            "trigger_deadletter_topic": env.get(
                "SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER", DEFAULT_DEADLETTER_TOPIC
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


OPTIONS_KEY = web.AppKey("options", DashboardOptions)


def _static(name: str) -> bytes:
    return resources.files("segmentflow.dashboard").joinpath("static", name).read_bytes()


async def poll_worker(
    state: DashboardState, options: DashboardOptions, session: aiohttp.ClientSession
) -> None:
    """Sample ``/segments`` and ``/metrics`` forever."""
    headers = {"Authorization": f"Bearer {options.api_token}"} if options.api_token else {}
    timeout = aiohttp.ClientTimeout(total=max(2.0, options.poll_s * 2))
    while True:
        try:
            async with session.get(
                f"{options.worker_url}/segments", headers=headers, timeout=timeout
            ) as response:
                response.raise_for_status()
                populations = orjson.loads(await response.read())
            sample = WorkerSample(time.time(), populations)
            try:
                async with session.get(
                    f"{options.worker_url}/metrics", headers=headers, timeout=timeout
                ) as response:
                    response.raise_for_status()
                    text = (await response.read()).decode("utf-8", "replace")
                sample.received, sample.deadlettered, sample.reasons = parse_metrics(text)
                sample.config_walk = parse_config_walk(text)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("metrics unavailable: %s", exc)
            state.add_sample(sample)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            state.worker_failed(f"{options.worker_url}: {exc.__class__.__name__}: {exc}")
        await asyncio.sleep(options.poll_s)


async def follow_kafka(
    state: DashboardState, options: DashboardOptions, settings: Settings
) -> None:
    """Read change events and trigger dead letters forever (reconnecting on errors)."""
    from aiokafka import AIOKafkaConsumer

    topics = [options.changes_topic, options.trigger_deadletter_topic]
    failures = 0
    while True:
        consumer = AIOKafkaConsumer(
            *topics,
            **KafkaOptions.from_settings(settings).aiokafka(client_id="segmentflow-dashboard"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if options.from_beginning else "latest",
        )
        try:
            await consumer.start()
            state.kafka_ok, state.kafka_error, failures = True, None, 0
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        try:
                            value = orjson.loads(record.value)
                        except orjson.JSONDecodeError:
                            continue
                        if not isinstance(value, dict):
                            continue
                        if record.topic == options.changes_topic:
                            state.add_change(value, now)
                        else:
                            state.add_trigger_deadletter(value, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.kafka_ok = False
            state.kafka_error = f"{settings.kafka_url}: {exc.__class__.__name__}: {exc}"
            failures += 1
            delay = KAFKA_RECONNECT.delay(failures)
            log.warning("kafka: %s; retry %d in %.1fs", state.kafka_error, failures, delay)
            await asyncio.sleep(delay)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=STATIC_FILES[name], charset="utf-8")


async def api_state(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    options = request.app[OPTIONS_KEY]
    body = state.snapshot(time.time())
    body["worker"]["url"] = options.worker_url
    body["poll_s"] = options.poll_s
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response({"status": "ok", "worker": state.worker_ok, "kafka": state.kafka_ok})


class Sessions:
    """The login form's session cookie: ``HMAC(per-process key, token)``, checked in constant
    time (the token never travels in the cookie)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.value = hmac.new(os.urandom(32), token.encode(), hashlib.sha256).hexdigest()

    def valid(self, request: web.Request) -> bool:
        """Whether the request carries the session cookie."""
        cookie = request.cookies.get(SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.value.encode())


def login_page(error: str = "", status: int = 200) -> web.Response:
    """The sign-in form (self-contained: nothing else is served without the token)."""
    body = _static("login.html").decode().replace("{error}", html.escape(error))
    return web.Response(
        text=body,
        content_type="text/html",
        status=status,
        headers={"Cache-Control": "no-store"},
    )


def _refuse(request: web.Request) -> web.StreamResponse:
    """401: the sign-in form for a browser asking for a page, else a JSON error."""
    if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
        return login_page(status=401)
    return unauthorized(request)


def _add_login(app: web.Application, sessions: Sessions) -> None:
    async def form(request: web.Request) -> web.Response:
        return login_page()

    async def submit(request: web.Request) -> web.StreamResponse:
        data = await request.post()
        token = data.get("token")
        if not isinstance(token, str) or not token_matches(token, sessions.token):
            log.warning("dashboard: refused a sign-in from %s", request.remote)
            return login_page("wrong token", status=401)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            SESSION_COOKIE,
            sessions.value,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    app.router.add_get("/login", form)
    app.router.add_post("/login", submit)
    app.router.add_post("/logout", logout)


def create_app(settings: Settings, options: DashboardOptions) -> web.Application:
    """The aiohttp application with its background tasks (and the token check when set)."""
    middlewares = []
    sessions = Sessions(options.api_token) if options.api_token else None
    if sessions is not None:
        middlewares.append(
            bearer_middleware(
                options.api_token,
                open_paths={"/health", "/login"},
                also=sessions.valid,
                denied=_refuse,
            )
        )
    app = web.Application(middlewares=middlewares)
    if sessions is not None:
        _add_login(app, sessions)
    state = DashboardState()
    app[STATE_KEY] = state
    app[OPTIONS_KEY] = options
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/health", health)
    members.add_routes(app, options.worker_url, options.api_token)  # member lists

    async def background(app: web.Application) -> Any:
        session = aiohttp.ClientSession()
        tasks = [asyncio.create_task(poll_worker(state, options, session))]
        if options.kafka:
            tasks.append(asyncio.create_task(follow_kafka(state, options, settings)))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()

    app.cleanup_ctx.append(background)
    return app
