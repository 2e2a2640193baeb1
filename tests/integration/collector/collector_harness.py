"""Helpers for the collector integration tests: the running collector and a reader of the
topics it produces to."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmentflow.config import Settings
from segmentflow.streams.kafka_clients import consumer

WRITE_KEY = "wk-integration"
TRACK_MAP = {"Signed Up": "identify", "Button Clicked": "ignore"}


@dataclass
class Collector:
    """The running collector: its URL, settings (topics) and a reader of what it produced."""

    url: str
    settings: Settings
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    @property
    def topics(self) -> dict[str, str]:
        topics = dict(self.settings.input_topics)
        topics["deadletter"] = self.settings.topic_segmentflow_deadletter
        return topics

    def read(
        self,
        accept: Callable[[bytes | None], bool],
        expect: int,
        timeout: float = 15.0,
    ) -> list[tuple[str, bytes | None, dict[str, Any]]]:
        """Messages of the four topics whose key ``accept`` s, as (kind, key, value JSON);
        returns once ``expect`` are read and nothing more arrives for 0.5 s."""
        names = {v: k for k, v in self.topics.items()}
        kafka = consumer(
            self.settings,
            *names,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=500,
            group_id=None,
        )
        out: list[tuple[str, bytes | None, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                before = len(out)
                for m in kafka:
                    if accept(m.key):
                        out.append((names[m.topic], m.key, json.loads(m.value)))
                if len(out) >= expect and len(out) == before:
                    break
        finally:
            kafka.close()
        return out
