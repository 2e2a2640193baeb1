"""Fakes for unit tests of the worker runtime: Kafka's send and ack as recording coroutines, and
the parts of a Faust app the web views are registered on."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson


class FakeKafka:
    """Records what the worker sends (topic, key, value) and acknowledges (tokens), in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.acked: list[Any] = []

    async def send(self, topic: str, key: bytes | None, value: bytes) -> object:
        self.sent.append((topic, key, value))
        return None

    async def ack(self, token: Any) -> object:
        self.acked.append(token)
        return None

    def on(self, topic: str) -> list[dict[str, Any]]:
        """The JSON values sent to ``topic``."""
        return [orjson.loads(v) for t, _, v in self.sent if t == topic]


#: a Faust page view (what ``app.page`` decorates)
View = Callable[..., Coroutine[Any, Any, Any]]


class FakeWebApp:
    def __init__(self) -> None:
        self.middlewares: list[object] = []


class FakeWeb:
    """What the views use of Faust's ``web``: JSON and bytes responses, kept as tuples."""

    def __init__(self) -> None:
        self.web_app = FakeWebApp()

    def json(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return status, body

    def bytes(self, data: bytes, content_type: str = "") -> tuple[int, bytes, str]:
        return 200, data, content_type


class FakeApp:
    """What ``web.register`` uses of a Faust app: it records the pages it adds
    (``app.page(path)`` decorator) and offers ``app.web`` (:class:`FakeWeb`)."""

    def __init__(self) -> None:
        self.web = FakeWeb()
        self.pages: dict[str, View] = {}

    def page(self, path: str) -> Callable[[View], View]:
        def add(view: View) -> View:
            self.pages[path] = view
            return view

        return add
