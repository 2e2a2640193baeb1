"""The collector's ASGI app (Starlette): the Segment HTTP Tracking API in front of Kafka.

``POST /v1/track``, ``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``,
``/v1/alias`` and ``/v1/batch`` (plus analytics.js's short forms ``/v1/t`` ``/v1/i`` ``/v1/p``
``/v1/s`` ``/v1/g`` ``/v1/a`` ``/v1/b``); ``GET /health`` (503 while the broker is unreachable),
``GET /metrics`` (Prometheus) and ``GET /openapi.json``. A request is answered 200
``{"success": true}`` only once the broker has acknowledged every message it produced; every
other answer is a JSON error ``{"success": false, "code", "message"}``.

Order of the checks, cheapest first: the Authorization header's write key (401 before the body is
read), the declared size (413), the in-flight byte budget (503), the body within
``body_timeout`` (408), gzip (400/413), a body ``writeKey`` found by a scan of the raw bytes
(401 before the JSON is parsed), then JSON, depth and shape (400), bounds (400), the broker (503).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from segmentflow.auth import CHALLENGE, refusal
from segmentflow.collector.mapping import (
    DEFAULT_BOUNDS,
    Bounds,
    Built,
    Failed,
    Ignored,
    Refused,
    TrackMap,
    map_call,
)
from segmentflow.collector.openapi import openapi_document
from segmentflow.collector.pressure import InflightBudget, Reservation
from segmentflow.collector.requests import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DEPTH,
    ENDPOINT_CALLS,
    SHORT_PATHS,
    RequestError,
    bad_request,
    basic_auth_key,
    check_depth,
    decompress,
    parse_calls,
    parse_json,
    scan_write_keys,
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
    bounds
        ``max_money`` and ``max_future_skew`` (CONTRACT §2): beyond them a request gets 400.
    max_depth
        Deepest JSON nesting accepted (400 beyond).
    max_inflight_bytes
        Most body bytes held by all requests at once (503 beyond, SDKs retry).
    body_timeout
        Seconds a request's body may take to arrive (408 beyond; slow bodies are closed).
    """

    write_keys: frozenset[str]
    topics: Mapping[str, str]
    deadletter_topic: str = "segmentflow-deadletter"
    tracks: TrackMap = field(default_factory=TrackMap)
    limits: Limits = DEFAULT_LIMITS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    bounds: Bounds = DEFAULT_BOUNDS
    max_depth: int = DEFAULT_MAX_DEPTH
    max_inflight_bytes: int = 32 * 1024 * 1024
    body_timeout: float = 30.0
    #: ``SEGMENTFLOW_API_TOKEN``: when set, ``/metrics`` and ``/openapi.json`` need it as a
    #: bearer token (the tracking endpoints use write keys; ``/health`` stays open)
    api_token: str | None = None

    def __post_init__(self) -> None:
        if not self.write_keys:
            raise ConfigError("no write keys configured: set SEGMENTFLOW_WRITE_KEYS=key1,key2")
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ConfigError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                f"max_body_bytes ({self.max_body_bytes})"
            )


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
        self.inflight = Gauge(
            "segmentflow_collector_inflight_bytes",
            "Body bytes held by requests being handled",
            registry=self.registry,
        )
        self.broker_up = Gauge(
            "segmentflow_collector_broker_up",
            "1 when the last broker check succeeded",
            registry=self.registry,
        )


#: Answers after which the connection is closed (the body may be unread; sheds load).
_CLOSE_AFTER = frozenset({401, 408, 413, 503})


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    # "code" and "message" are what Segment's SDKs read from an error body
    content: dict[str, Any] = {"success": False, "code": code, "message": message}
    if field is not None:
        content["field"] = field
    headers = {"Connection": "close"} if status in _CLOSE_AFTER else {}
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(content, status_code=status, headers=headers)


@dataclass
class _Prepared:
    """What a request body becomes: the records to produce and what to count."""

    records: list[Record]
    produced: list[str]
    reasons: list[str]
    ignored: int


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
    budget = InflightBudget(config.max_inflight_bytes)
    limit = config.max_body_bytes

    async def _read_body(request: Request, reservation: Reservation) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise bad_request("Content-Length is not a number")
            if int(declared) > limit:
                raise RequestError(413, "too_large", f"body is over {limit} bytes")
        # bytes are reserved as they arrive (not as declared: a slow client that announces 2 MB
        # and sends nothing must not hold the budget for its whole body timeout)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(config.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise RequestError(413, "too_large", f"body is over {limit} bytes")
                    reservation.take(size - reservation.held)
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(
                408, "timeout", f"the body did not arrive within {config.body_timeout:g}s"
            ) from None
        return b"".join(chunks)

    def _authorize(key: str | None) -> None:
        if key is None:
            raise RequestError(
                401, "unauthorized", "no write key: use HTTP Basic auth or writeKey in the body"
            )
        if key not in config.write_keys:
            raise RequestError(401, "unauthorized", "unknown write key")

    def _prepare(
        endpoint: str,
        raw: bytes,
        encoding: str | None,
        header_key: str | None,
        received_at: datetime,
        reservation: Reservation,
    ) -> _Prepared:
        """Decode, check and map a body (runs in a worker thread: the event loop keeps serving
        /health and timing out slow connections meanwhile)."""
        body_bytes = decompress(raw, encoding, limit)
        if body_bytes is not raw:
            reservation.take(len(body_bytes))
        if header_key is None:  # refuse before the costly parse when no body key is valid
            keys = scan_write_keys(body_bytes)
            if not any(k in config.write_keys for k in keys):
                _authorize(keys[0] if keys else None)
        body = parse_json(body_bytes)
        check_depth(body, config.max_depth)
        calls, body_key = parse_calls(endpoint, body)
        if header_key is None:
            _authorize(body_key)
        out = _Prepared([], [], [], 0)
        for call in calls:
            outcome = map_call(
                call.type, call.message, received_at, config.tracks, config.limits, config.bounds
            )
            if isinstance(outcome, Built):
                topic = config.topics[outcome.kind]
                out.records.append(Record(topic, outcome.key.encode("utf-8"), outcome.value))
                out.produced.append(topic)
            elif isinstance(outcome, Refused):
                where = "body" if endpoint != "batch" else f"batch[{call.index}]"
                raise RequestError(
                    400, "out_of_range", f"{where}.{outcome.detail}", f"{where}.{outcome.field}"
                )
            elif isinstance(outcome, Failed):
                payload = json.dumps(call.message, separators=(",", ":")).encode("utf-8")
                letter = dead_letter_value(
                    outcome, payload, received_at, config.limits.max_event_bytes
                )
                key = outcome.key.encode("utf-8", "backslashreplace") if outcome.key else None
                out.records.append(
                    Record(config.deadletter_topic, key, json.dumps(letter).encode("utf-8"))
                )
                out.reasons.append(outcome.reason)
            elif isinstance(outcome, Ignored):
                out.ignored += 1
        return out

    async def _handle(request: Request, endpoint: str, reservation: Reservation) -> Response:
        received_at = datetime.now(UTC)
        header_key = basic_auth_key(request.headers.get("authorization"))
        if header_key is not None:
            _authorize(header_key)  # before a byte of the body is read
        raw = await _read_body(request, reservation)
        metrics.inflight.set(budget.used)
        encoding = request.headers.get("content-encoding")
        prepared = await to_thread.run_sync(
            _prepare, endpoint, raw, encoding, header_key, received_at, reservation
        )
        del raw
        await sink.send(prepared.records)
        for topic in prepared.produced:
            metrics.events.labels(topic).inc()
        for reason in prepared.reasons:
            metrics.deadletters.labels(reason).inc()
        if prepared.ignored:
            metrics.ignored.inc(prepared.ignored)
        return JSONResponse({"success": True})

    def endpoint_view(endpoint: str) -> Any:
        async def view(request: Request) -> Response:
            reservation = budget.reservation()
            try:
                response = await _handle(request, endpoint, reservation)
            except RequestError as exc:
                response = _error(exc.status, exc.code, exc.message, exc.field)
            except SinkError as exc:
                if getattr(sink, "connected", True):  # else the connect loop already says
                    log.warning("produce failed: %s", exc)
                response = _error(
                    503,
                    "unavailable",
                    f"the event broker is unavailable ({exc}); retry (events of this request "
                    "may already be on Kafka: a retry with the same messageIds is applied once)",
                )
            except ClientDisconnect:
                response = _error(400, "bad_request", "client disconnected")
            except Exception:  # a bug: logged with its traceback, still a JSON answer
                log.exception("unexpected error handling /v1/%s", endpoint)
                response = _error(500, "internal_error", "unexpected error; see the collector log")
            finally:
                reservation.release()
                metrics.inflight.set(budget.used)
            metrics.requests.labels(endpoint, str(response.status_code)).inc()
            return response

        return view

    async def health(_: Request) -> Response:
        why = await sink.health()
        metrics.broker_up.set(0 if why else 1)
        if why is None:
            return JSONResponse({"status": "ok", "broker": "up"})
        return JSONResponse(
            {"status": "unavailable", "broker": "down", "detail": why}, status_code=503
        )

    def _token_refused(request: Request) -> Response | None:
        body = refusal(request.headers.get("authorization"), config.api_token)
        return None if body is None else JSONResponse(body, status_code=401, headers=CHALLENGE)

    async def prometheus(request: Request) -> Response:
        refused = _token_refused(request)
        if refused is not None:
            return refused
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return _token_refused(request) or JSONResponse(schema)

    routes = [Route("/health", health), Route("/metrics", prometheus)]
    routes.append(Route("/openapi.json", openapi))
    views = {name: endpoint_view(name) for name in [*ENDPOINT_CALLS, "batch"]}
    for endpoint, view in views.items():
        routes.append(Route(f"/v1/{endpoint}", view, methods=["POST"]))
    for short, endpoint in SHORT_PATHS.items():
        routes.append(Route(f"/v1/{short}", views[endpoint], methods=["POST"]))
    known = ", ".join(f"/v1/{e}" for e in views)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path}: use POST {known}"
            return _error(404, "not_found", message)
        if exc.status_code == 405:
            response = _error(405, "method_not_allowed", f"{request.method} is not allowed here")
            response.headers.update(exc.headers or {})  # Allow: the methods that are
            return response
        return _error(exc.status_code, "http_error", str(exc.detail))

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
        exception_handlers={HTTPException: http_error},
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
    app.state.budget = budget
    return app
