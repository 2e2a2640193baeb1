"""Helpers for the collector integration tests: the running collector and a reader of the
topics it produces to."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmentflow.config import Settings
from segmentflow.embedded import free_port
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


def unique_settings(kafka_url: str) -> Settings:
    """Settings with topic names unique to this call."""
    tag = uuid.uuid4().hex[:6]
    return Settings(
        kafka_url=kafka_url,
        topic_website_events=f"col-{tag}-website",
        topic_email_events=f"col-{tag}-email",
        topic_purchase_events=f"col-{tag}-purchase",
        topic_segmentflow_deadletter=f"col-{tag}-deadletter",
    )


def topic_names(settings: Settings) -> list[str]:
    return [*settings.input_topics.values(), settings.topic_segmentflow_deadletter]


@dataclass
class Process:
    """A ``segmentflow collect`` process (stop it with ``stop_pid(proc)``)."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def launch(settings: Settings, args: Sequence[str] = ()) -> Process:
    """Start ``segmentflow collect`` on a free port with these settings (not waited for)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTFLOW_")}
    env.update(
        SEGMENTFLOW_KAFKA_URL=settings.kafka_url,
        SEGMENTFLOW_COLLECTOR_HOST="127.0.0.1",
        SEGMENTFLOW_COLLECTOR_PORT=str(port),
        SEGMENTFLOW_WRITE_KEYS=f"{WRITE_KEY}, another-key",
        SEGMENTFLOW_COLLECTOR_TRACK_MAP=json.dumps(TRACK_MAP),
        SEGMENTFLOW_TOPIC_WEBSITE_EVENTS=settings.topic_website_events,
        SEGMENTFLOW_TOPIC_EMAIL_EVENTS=settings.topic_email_events,
        SEGMENTFLOW_TOPIC_PURCHASE_EVENTS=settings.topic_purchase_events,
        SEGMENTFLOW_TOPIC_SEGMENTFLOW_DEADLETTER=settings.topic_segmentflow_deadletter,
    )
    fd, name = tempfile.mkstemp(prefix="segmentflow-collector-", suffix=".log")
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segmentflow.cli.main", "collect", "--loglevel", "info", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Process(proc, f"http://127.0.0.1:{port}", Path(name))


def health(url: str) -> int | None:
    """The status of ``GET /health`` (``None`` when nothing answers)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_health(process: Process, want: int, timeout: float = 60.0) -> None:
    """Wait until ``/health`` answers ``want`` (generous overall limit; fails on exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(
                f"collector exited ({process.proc.returncode}):\n{process.log.read_text()}"
            )
        if health(process.url) == want:
            return
        time.sleep(0.1)
    raise TimeoutError(f"/health never {want} in {timeout}s:\n{process.log.read_text()}")
