"""The dashboard web app (aiohttp): static page + ``/api/state``, fed by two background tasks.

* a poller GETs the worker's ``/segments`` and ``/metrics`` every ``poll_s`` seconds
  (``SEGMENTFLOW_WORKER_URL``, bearer ``SEGMENTFLOW_API_TOKEN`` when set);
* a Kafka reader (no consumer group, nothing committed) follows ``segment-changes`` and the
  triggers' dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from segmentflow.config import Settings
from segmentflow.dashboard.state import DashboardState, WorkerSample, parse_metrics
from segmentflow.triggers import DEFAULT_DEADLETTER_TOPIC
from segmentflow.triggers.kafka import aiokafka_options

log = logging.getLogger("segmentflow.dashboard")

STATIC_FILES = {
    "index.html": "text/html",
    "app.js": "application/javascript",
    "app.css": "text/css",
}
STATE_KEY = web.AppKey("state", DashboardState)


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
    while True:
        consumer = AIOKafkaConsumer(
            *topics,
            **aiokafka_options(settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if options.from_beginning else "latest",
        )
        try:
            await consumer.start()
            state.kafka_ok, state.kafka_error = True, None
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
            log.warning("kafka: %s; retrying", state.kafka_error)
            await asyncio.sleep(2.0)
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


def create_app(settings: Settings, options: DashboardOptions) -> web.Application:
    """The aiohttp application with its background tasks."""
    app = web.Application()
    state = DashboardState()
    app[STATE_KEY] = state
    app[OPTIONS_KEY] = options
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/health", health)

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
