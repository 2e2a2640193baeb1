"""A real ``segmentflow collect`` process on a real (embedded Tansu) broker, for the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_harness import TRACK_MAP, WRITE_KEY, Collector

from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker, create_topics, free_port, stop_pid


def _wait_health(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"collector exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"collector not healthy after {timeout}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def collector(broker: EmbeddedBroker) -> Iterator[Collector]:
    tag = uuid.uuid4().hex[:6]
    settings = Settings(
        kafka_url=broker.url,
        topic_website_events=f"col-{tag}-website",
        topic_email_events=f"col-{tag}-email",
        topic_purchase_events=f"col-{tag}-purchase",
        topic_segmentflow_deadletter=f"col-{tag}-deadletter",
    )
    create_topics(
        broker.bootstrap,
        [
            settings.topic_website_events,
            settings.topic_email_events,
            settings.topic_purchase_events,
            settings.topic_segmentflow_deadletter,
        ],
        partitions=2,
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTFLOW_")}
    env.update(
        SEGMENTFLOW_KAFKA_URL=broker.url,
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
    log = Path(name)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segmentflow.cli.main", "collect", "--loglevel", "info"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc, log, timeout=30)
        yield Collector(url, settings, log)
    finally:
        stop_pid(proc)
        log.unlink(missing_ok=True)


@pytest.fixture
def tag() -> str:
    """A prefix making this test's customer ids (and so its Kafka keys) unique."""
    return f"t{uuid.uuid4().hex[:8]}-"
