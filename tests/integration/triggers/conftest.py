"""A local webhook receiver on 127.0.0.1 that fails on purpose, and change-event fixtures."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from segmentflow.bootstrap import replay_events
from segmentflow.config import config_from_dict
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.synthetic import generate
from segmentflow.triggers.cloudevents import decode, decode_header


@dataclass
class Hit:
    """One request as the receiver saw it."""

    path: str
    key: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return decode(self.headers, self.body)


def _always_ok(attempt: int) -> tuple[int, float]:
    return 200, 0.0


class Receiver:
    """Threaded HTTP server; ``behaviour[path](receiver, key, attempt) -> (status, delay_s)``."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.behaviour: dict[str, Callable[[int], tuple[int, float]]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                key = decode_header(self.headers.get("Idempotency-Key", ""))
                with receiver.lock:
                    receiver.attempts[(self.path, key)] += 1
                    attempt = receiver.attempts[(self.path, key)]
                rule = receiver.behaviour.get(self.path, _always_ok)
                status, delay = rule(attempt)
                hit = Hit(
                    self.path, key, dict(self.headers.items()), body, time.monotonic(), status
                )
                with receiver.lock:
                    receiver.hits.append(hit)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def on(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def delivered_keys(self, path: str) -> set[str]:
        return {h.key for h in self.on(path) if 200 <= h.status < 300}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


RULES = {"rules": [{"name": "big", "when": "orders >= 2"}]}


@pytest.fixture(scope="session")
def real_changes() -> list[dict[str, Any]]:
    """Contract change events from the real engine (replay of a synthetic stream)."""
    messages = generate(30, seed=3, start=datetime(2025, 1, 1, tzinfo=UTC), days=200)
    events = [m.event for m in messages if m.event is not None]
    last = max(e["timestamp"] for e in events)
    return replay_events(events, config_from_dict(RULES), parse_rfc3339(last))
