"""Worker HTTP views (CONTRACT §8): /health, /metrics, /customers/{id}, /segments.

``SEGMENTFLOW_API_TOKEN`` protects everything but ``/health`` (bearer token, compared in
constant time): a middleware on the whole web server, so Faust's own routes (``/``,
``/router/``, ``/table/``...) need the token too.
"""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST

from segmentflow.auth import authorized, bearer_middleware, unauthorized_body
from segmentflow.engine.inspect import describe
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.runtime import SegmentWorker


def register(app: faust.App, worker: SegmentWorker) -> None:
    """Add the views to ``app``'s web server."""
    token = worker.settings.api_token
    registry = registry_for(worker)
    # every route of the server (Faust's included); the views' own checks below stay as a
    # second line should the server be mounted elsewhere
    app.web.web_app.middlewares.append(bearer_middleware(token))  # type: ignore[attr-defined]

    def denied(web: Any, request: Any) -> Any:
        if authorized(request.headers.get("Authorization"), token):
            return None
        wrong = request.headers.get("Authorization") is not None
        return web.json(unauthorized_body(wrong), status=401)

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
