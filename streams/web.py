"""Worker HTTP views (CONTRACT §8): /health, /metrics, /customers/{id}, /segments.

``SEGMENTFLOW_API_TOKEN`` protects everything but ``/health`` (bearer token, compared in
constant time).
"""

from __future__ import annotations

import hmac
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from segmentflow.engine.inspect import describe
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.runtime import SegmentWorker


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries the bearer ``token`` (always when unset)."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


def register(app: faust.App, worker: SegmentWorker) -> None:
    """Add the views to ``app``'s web server."""
    token = worker.settings.api_token
    registry = registry_for(worker)

    def denied(web: Any, request: Any) -> Any:
        if authorized(request.headers.get("Authorization"), token):
            return None
        return web.json({"error": "unauthorized: send Authorization: Bearer <token>"}, status=401)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        status = worker.status
        ok = status.ready and status.broker_ok and status.redis_ok
        body = {
            "status": "ok" if ok else "unavailable",
            "ready": status.ready,
            "broker": "ok" if status.broker_ok else "unreachable",
            "redis": "ok" if status.redis_ok else "unreachable",
            "batches": status.batches,
            "last_error": None if ok else status.last_error,
        }
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        return web.bytes(render(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/segments")
    async def segments(web: Any, request: Any) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        return web.json(worker.processor.store.populations())

    @app.page("/customers/{customer_id}")
    async def customer(web: Any, request: Any, customer_id: str) -> Any:
        if (response := denied(web, request)) is not None:
            return response
        state = worker.processor.store.get(customer_id)
        if state is None:
            return web.json({"error": f"no state for customer {customer_id!r}"}, status=404)
        return web.json(describe(state, worker.processor.engine))
