"""streams/web.py: the worker's views (CONTRACT §8) registered on a fake Faust app and called
directly: /health states and reasons, the bearer token on everything but /health, /metrics
bytes, /segments, /customers/{id} (404 for unknown and forgotten customers)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
import pytest
from support.fakes import FakeApp, FakeKafka
from support.metrics import parse

from segmentflow.config import Settings, config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.service.processor import FORGOTTEN, Processor
from segmentflow.state.memory import MemoryStore
from segmentflow.streams import web
from segmentflow.streams.runtime import SegmentWorker

TOKEN = "s3cret-token"
T0 = 1_767_225_600_000_000


class Request:
    def __init__(self, token: str | None = None) -> None:
        self.headers = {} if token is None else {"Authorization": f"Bearer {token}"}


def served(token: str | None = None) -> tuple[FakeApp, SegmentWorker]:
    config = config_from_dict({"rfm": {"enabled": False}, "persona": {"enabled": False}})
    processor = Processor(config, MemoryStore(outbox=True))
    kafka = FakeKafka()
    worker = SegmentWorker(Settings(api_token=token), processor, kafka.send, kafka.ack)
    app = FakeApp()
    web.register(cast(faust.App, app), worker)
    return app, worker


def call(app: FakeApp, path: str, token: str | None = None, **kw: str) -> Any:
    return asyncio.run(app.pages[path](app.web, Request(token), **kw))


def test_every_view_and_the_middleware_are_registered() -> None:
    app, _ = served(TOKEN)
    assert {"/health", "/metrics", "/segments", "/customers/{customer_id}"} <= set(app.pages)
    assert len(app.web.web_app.middlewares) == 1


def test_health_is_unavailable_until_ready_then_ok() -> None:
    app, worker = served()
    status, body = call(app, "/health")
    assert status == 503 and body["status"] == "unavailable" and body["ready"] is False
    worker.status.ready = True
    status, body = call(app, "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["last_error"] is None
    assert body["clock"]["watermark"] is None and body["clock"]["status"] == "ok"


@pytest.mark.parametrize(("part", "field"), [("broker_ok", "broker"), ("redis_ok", "redis")])
def test_health_names_an_unreachable_dependency(part: str, field: str) -> None:
    app, worker = served()
    worker.status.ready = True
    setattr(worker.status, part, False)
    worker.status.last_error = "connection refused"
    status, body = call(app, "/health")
    assert status == 503 and body["status"] == "unavailable"
    assert body[field] == "unreachable" and body["last_error"] == "connection refused"


def test_health_is_degraded_while_fetching_fails() -> None:
    app, worker = served()
    worker.status.ready = True
    worker.status.fetch_error = "CorruptRecordError: crc"
    status, body = call(app, "/health")
    assert status == 503 and body["status"] == "degraded" and body["fetch"] == "failing"
    assert "CorruptRecordError" in body["last_error"]


def test_health_needs_no_token_the_other_views_do() -> None:
    app, worker = served(TOKEN)
    worker.status.ready = True
    assert call(app, "/health")[0] == 200
    for path in ("/metrics", "/segments", "/customers/{customer_id}"):
        args = {"customer_id": "c"} if "{" in path else {}
        assert call(app, path, **args)[0] == 401
        assert call(app, path, "wrong", **args)[0] == 401
    assert call(app, "/segments", TOKEN) == (200, {})


def test_metrics_are_prometheus_text() -> None:
    app, worker = served()
    worker.processor.counters.received["website-events"] = 3
    status, data, content_type = call(app, "/metrics")
    assert status == 200 and content_type == "text/plain"
    assert parse(data.decode()).total("segmentflow_events_received_total") == 3


def test_segments_and_customers_come_from_the_store() -> None:
    app, worker = served()
    state = CustomerState("c-1", clock=T0, last_seen=T0, values={"lifecycle": "prospect"})
    state.seqs["lifecycle"] = 1
    gone = CustomerState("c-2", extra={FORGOTTEN: T0})
    worker.processor.store.commit(
        {"c-1": state, "c-2": gone}, [Change("c-1", "lifecycle", None, "prospect", 1, T0, "e1")]
    )
    assert call(app, "/segments") == (200, {"lifecycle": {"prospect": 1}})
    status, body = call(app, "/customers/{customer_id}", customer_id="c-1")
    assert status == 200 and body["customer_id"] == "c-1"
    lifecycle = body["dimensions"]["lifecycle"]
    assert (lifecycle["value"], lifecycle["sequence"]) == ("prospect", 1)
    for cid in ("c-2", "nobody"):  # forgotten, never seen
        status, body = call(app, "/customers/{customer_id}", customer_id=cid)
        assert status == 404 and cid in body["error"]
