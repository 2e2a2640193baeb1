"""The collector's ASGI app (Starlette): the Segment HTTP Tracking API in front of Kafka.

``POST /v1/track``, ``/v1/identify``, ``/v1/page`` and ``/v1/batch`` (plus analytics.js's short
forms ``/v1/t``, ``/v1/i``, ``/v1/p``, ``/v1/b``); ``GET /health``, ``GET /metrics``
(Prometheus) and ``GET /openapi.json``. A request is answered 200 ``{"success": true}`` only
once the broker has acknowledged every message it produced.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from segmentflow.collector.mapping import Built, Failed, Ignored, TrackMap, map_call
from segmentflow.collector.openapi import openapi_document
from segmentflow.collector.requests import (
    DEFAULT_MAX_BODY_BYTES,
    RequestError,
    basic_auth_key,
    decompress,
    parse_calls,
    parse_json,
)
from segmentflow.collector.sink import Record, Sink, SinkError
from segmentflow.config import ConfigError
from segmentflow.schemas.decode import DEFAULT_LIMITS, Limits

log = logging.getLogger("segmentflow.collector")

#: Value of the dead letters' ``topic`` field for calls refused by the collector.
DEADLETTER_SOURCE = "collector"


@dataclass
class CollectorConfig:
    """Everything the app needs besides its sink.

    Parameters
    ----------
    write_keys
        Accepted write keys (non-empty).
    topics
        Input topic name per topic kind (``website``/``email``/``purchase``).
    deadletter_topic
        Topic of the dead letters (CONTRACT §4).
    tracks
        Track-name resolution (standard names plus the configured map).
    limits
        The worker's input limits (``max_event_bytes``...), checked before producing.
    max_body_bytes
        Largest accepted body (after gzip decompression); larger gets 413.
    """

    write_keys: frozenset[str]
    topics: Mapping[str, str]
    deadletter_topic: str = "segmentflow-deadletter"
    tracks: TrackMap = field(default_factory=TrackMap)
    limits: Limits = DEFAULT_LIMITS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not self.write_keys:
            raise ConfigError("no write keys configured: set SEGMENTFLOW_WRITE_KEYS=key1,key2")


def parse_write_keys(text: str | Iterable[str]) -> frozenset[str]:
    """Write keys from ``"k1, k2"`` (or an iterable), blanks dropped."""
    parts = text.split(",") if isinstance(text, str) else text
    return frozenset(p.strip() for p in parts if p.strip())


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "segmentflow_collector_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "segmentflow_collector_events",
            "Events produced per topic",
            ["topic"],
            registry=self.registry,
        )
        self.deadletters = Counter(
            "segmentflow_collector_deadlettered",
            "Calls dead-lettered per reason",
            ["reason"],
            registry=self.registry,
        )
        self.ignored = Counter(
            "segmentflow_collector_ignored",
            "Calls ignored by the track map",
            registry=self.registry,
        )


def _error(status: int, code: str, message: str) -> JSONResponse:
    # "code" and "message" are what Segment's SDKs read from an error body
    return JSONResponse({"success": False, "code": code, "message": message}, status_code=status)


def dead_letter_value(
    failed: Failed, payload: bytes, received_at: datetime, max_event_bytes: int = 65536
) -> dict[str, Any]:
    """The CONTRACT §4 dead letter of a refused call: ``payload`` is the call's JSON (its first
    ``max_event_bytes`` bytes, then ``"truncated": true``); ``partition`` and ``offset`` are -1
    as the call did not come from Kafka."""
    letter: dict[str, Any] = {
        "reason": failed.reason,
        "detail": failed.detail,
        "topic": DEADLETTER_SOURCE,
        "partition": -1,
        "offset": -1,
        "received_at": received_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "payload": base64.b64encode(payload[:max_event_bytes]).decode("ascii"),
    }
    if len(payload) > max_event_bytes:
        letter["truncated"] = True
    return letter


def create_app(config: CollectorConfig, sink: Sink) -> Starlette:
    """The collector app; ``sink`` is started and stopped with the app's lifespan."""
    metrics = _Metrics()
    schema = openapi_document()

    async def _read_body(request: Request) -> bytes:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, "too_large", f"body is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "too_large", f"body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _authorize(key: str | None) -> None:
        if key is None:
            raise RequestError(
                401, "unauthorized", "no write key: use HTTP Basic auth or writeKey in the body"
            )
        if key not in config.write_keys:
            raise RequestError(401, "unauthorized", "unknown write key")

    async def _handle(request: Request, endpoint: str) -> Response:
        received_at = datetime.now(UTC)
        header_key = basic_auth_key(request.headers.get("authorization"))
        if header_key is not None:
            _authorize(header_key)
        raw = await _read_body(request)
        body = parse_json(
            decompress(raw, request.headers.get("content-encoding"), config.max_body_bytes)
        )
        calls, body_key = parse_calls(endpoint, body)
        if header_key is None:
            _authorize(body_key)
        records: list[Record] = []
        produced: list[str] = []
        reasons: list[str] = []
        ignored = 0
        for call in calls:
            outcome = map_call(call.type, call.message, received_at, config.tracks, config.limits)
            if isinstance(outcome, Built):
                topic = config.topics[outcome.kind]
                records.append(Record(topic, outcome.key.encode("utf-8"), outcome.value))
                produced.append(topic)
            elif isinstance(outcome, Failed):
                payload = json.dumps(call.message, separators=(",", ":")).encode("utf-8")
                letter = dead_letter_value(
                    outcome, payload, received_at, config.limits.max_event_bytes
                )
                key = outcome.key.encode("utf-8", "backslashreplace") if outcome.key else None
                records.append(
                    Record(config.deadletter_topic, key, json.dumps(letter).encode("utf-8"))
                )
                reasons.append(outcome.reason)
            elif isinstance(outcome, Ignored):
                ignored += 1
        await sink.send(records)
        for topic in produced:
            metrics.events.labels(topic).inc()
        for reason in reasons:
            metrics.deadletters.labels(reason).inc()
        if ignored:
            metrics.ignored.inc(ignored)
        return JSONResponse({"success": True})

    def endpoint_view(endpoint: str) -> Any:
        async def view(request: Request) -> Response:
            try:
                response = await _handle(request, endpoint)
            except RequestError as exc:
                response = _error(exc.status, exc.code, exc.message)
            except SinkError as exc:
                log.error("produce failed: %s", exc)
                response = _error(503, "unavailable", "the event broker is unavailable; retry")
            except ClientDisconnect:
                response = _error(400, "bad_request", "client disconnected")
            metrics.requests.labels(endpoint, str(response.status_code)).inc()
            return response

        return view

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_: Request) -> Response:
        return JSONResponse(schema)

    routes = [Route("/health", health), Route("/metrics", prometheus)]
    routes.append(Route("/openapi.json", openapi))
    for endpoint, short in (("track", "t"), ("identify", "i"), ("page", "p"), ("batch", "b")):
        view = endpoint_view(endpoint)
        routes.append(Route(f"/v1/{endpoint}", view, methods=["POST"]))
        routes.append(Route(f"/v1/{short}", view, methods=["POST"], include_in_schema=False))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await sink.start()
        try:
            yield
        finally:
            await sink.stop()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["POST"],
                allow_headers=["*"],
                max_age=3600,
            )
        ],
    )
    app.state.metrics = metrics
    app.state.sink = sink
    return app
