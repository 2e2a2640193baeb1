"""Bearer-token check of the dispatcher's HTTP endpoints (the shared :mod:`segmentflow.auth`)."""

from __future__ import annotations

from segmentflow.auth import authorized, bearer_middleware

__all__ = ["authorized", "bearer_middleware"]
