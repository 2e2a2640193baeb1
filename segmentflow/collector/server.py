"""Serving the collector with uvicorn, with timeouts that close slow or idle connections.

uvicorn's ``timeout_keep_alive`` only covers the pause between two requests, and is cancelled by
the first byte of the next one: a client trickling its request headers (slow-loris) or never
sending any keeps its connection for ever. :func:`guarded_protocol` adds a header deadline: a
connection that has not sent complete request headers within ``header_timeout`` seconds of
connecting (or of its previous response) is closed. Slow bodies are bounded in the app
(``body_timeout``, answered 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("segmentflow.collector")

#: Largest request line + headers h11 buffers before answering 400.
MAX_HEADER_BYTES = 16 * 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request headers (see the module)."""

    header_timeout: float = 10.0
    closed_slow = 0  # connections this class closed for slow headers (diagnostics)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        waiting = self.conn.their_state is h11.IDLE
        if waiting and (self.cycle is None or self.cycle.response_complete):
            type(self).closed_slow += 1
            log.info("closing a connection without complete headers after %gs", self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with this header deadline (seconds)."""
    if header_timeout <= 0:
        raise ValueError("header_timeout must be > 0")
    return type("GuardedH11", (GuardedH11Protocol,), {"header_timeout": header_timeout})


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = 10.0,
    keep_alive: int = 5,
    max_connections: int | None = None,
    log_level: str = "warning",
) -> Any:
    """The uvicorn config the collector runs with (h11, header deadline, keep-alive timeout)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(header_timeout),
        timeout_keep_alive=keep_alive,
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_level=log_level,
        lifespan="on",
        server_header=False,
    )
