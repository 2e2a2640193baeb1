"""Worker HTTP views (CONTRACT §8): /health, /metrics, /customers/{id}, /segments.

``SEGMENTFLOW_API_TOKEN`` protects everything but ``/health`` (bearer token, compared in
constant time): a middleware on the whole web server, so Faust's own routes (``/``,
``/router/``, ``/table/``...) need the token too.
"""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from segmentflow.auth import CHALLENGE, bearer_middleware, refusal
from segmentflow.engine.inspect import describe
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.audience import members_response
from segmentflow.service.processor import is_tombstone
from segmentflow.state.base import StoreUnavailable
from segmentflow.state.members import reader_for
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.redis_health import REDIS_ERRORS
from segmentflow.streams.runtime import SegmentWorker

#: a read the store cannot answer now (Redis or one cluster node down): 503, never a 500
READ_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, StoreUnavailable)


def unavailable(web: Any, exc: Exception) -> Any:
    """503 with the reason (the error's class only: redis-py quotes keys in its messages)."""
    body = {"error": f"the state store cannot be read ({type(exc).__name__}); retry shortly"}
    return web.json(body, status=503)


def register(app: faust.App, worker: SegmentWorker) -> None:
    """Add the views to ``app``'s web server."""
    token = worker.settings.api_token
    registry = registry_for(worker)
    # every route of the server (Faust's included); the views' own checks below stay as a
    # second line should the server be mounted elsewhere
    app.web.web_app.middlewares.append(bearer_middleware(token))  # type: ignore[attr-defined]

    def denied(web: Any, request: Any) -> Any:
        body = refusal(request.headers.get("Authorization"), token)
        return None if body is None else web.json(body, status=401, headers=CHALLENGE)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        status = worker.status
        ok = status.ready and status.broker_ok and status.redis_ok
        # a cluster primary that does not answer (last memory sample): its slots are not
        # served until it returns or its replica takes over; degraded like a Redis outage
        sample = worker.memory.sample
        down = sample.unreachable if sample is not None and status.redis_ok else ()
        held, held_seconds = worker.clock_held()
        # the clock stands still while events wait for it: degraded (503), see README "/health"
        clock_ok = held_seconds <= worker.settings.clock_alert
        fetch_ok = status.fetch_error is None
        healthy = ok and clock_ok and fetch_ok and not down
        mark = worker.current_watermark()
        holding = sorted("/".join(map(str, tp)) for tp in worker.watermark.holding())  # type: ignore[call-overload]
        body: dict[str, Any] = {
            "status": "ok" if healthy else ("degraded" if ok else "unavailable"),
            "ready": status.ready,
            "broker": "ok" if status.broker_ok else "unreachable",
            "redis": "unreachable" if not status.redis_ok else "degraded" if down else "ok",
            "fetch": "ok" if fetch_ok else "failing",
            "batches": status.batches,
            "clock": {
                "watermark": None if mark is None else format_us(mark),
                "held_events": held,
                "held_seconds": round(held_seconds, 1),
                "holding": holding,
                "status": "ok" if clock_ok else "stalled",
            },
            "last_error": None if healthy else status.last_error,
        }
        if down:
            body["redis_unreachable_nodes"] = list(down)
        if ok and down:
            body["last_error"] = (
                f"redis: Redis Cluster primaries {', '.join(down)} do not answer: their slots "
                "are not served until they return or their replicas take over (retrying)"
            )
        elif ok and not fetch_ok:
            body["last_error"] = f"fetching input fails (retrying): {status.fetch_error}"
        elif ok and not clock_ok:
            body["last_error"] = (
                f"{held} events have waited {held_seconds:.0f} s for the event-time clock, "
                f"held back by {', '.join(holding) or 'no partition'} (README: Clock)"
            )
        return web.json(body, status=200 if healthy else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        return web.bytes(render(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/segments")
    async def segments(web: Any, request: Any) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        try:
            return web.json(worker.processor.store.populations())
        except READ_ERRORS as exc:
            return unavailable(web, exc)

    @app.page("/segments/{dimension}/{value}/members")  # state/members.py, service/audience.py
    async def members(web: Any, request: Any, dimension: str, value: str) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        reader = reader_for(worker.processor.store)
        try:
            status, body = members_response(reader, dimension, value, request.query)
        except READ_ERRORS as exc:  # one not wrapped as StoreUnavailable (a cluster's own)
            return unavailable(web, exc)
        return web.json(body, status=status)

    @app.page("/customers/{customer_id}")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        try:
            state = worker.processor.store.get(customer_id)
        except READ_ERRORS as exc:
            return unavailable(web, exc)
        if state is None or is_tombstone(state):  # erased (README "forget")
            return web.json({"error": f"no state for customer {customer_id!r}"}, status=404)
        return web.json(describe(state, worker.processor.engine))
