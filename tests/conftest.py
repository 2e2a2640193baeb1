"""Shared fixtures: a Redis (real one at 127.0.0.1:6379 if reachable, else embedded), a
session-wide embedded Tansu broker, and per-test namespaces whose keys are removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from segmentflow.embedded import EmbeddedBroker, EmbeddedRedis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python loads its protocol schemas with deprecated importlib.resources calls
    for msg in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{msg}:DeprecationWarning")


@pytest.fixture(scope="session")
def _session_redis() -> Iterator[EmbeddedRedis]:
    url = os.environ.get("SEGMENTFLOW_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    server = EmbeddedRedis(url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(_session_redis: EmbeddedRedis) -> str:
    """URL of a Redis shared by the session; isolate tests with the `namespace` fixture."""
    return _session_redis.url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A unique key prefix / consumer group for one test; its Redis keys are deleted after."""
    ns = f"sftest-{uuid.uuid4().hex[:12]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [
            key
            for pattern in (f"{ns}*", f"{{{ns}*")  # layout 2 keys start with a hash tag
            for key in client.scan_iter(match=pattern, count=1000)
        ]
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A memory-only Tansu broker on a free port for the whole session."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server with AOF (appendfsync always) in ``tmp_path``; `restart()` reloads."""
    with EmbeddedRedis(appendonly=True, data_dir=tmp_path / "redis") as server:
        yield server
