"""Fakes for unit tests of the worker runtime: Kafka's send and ack as recording coroutines."""

from __future__ import annotations

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
