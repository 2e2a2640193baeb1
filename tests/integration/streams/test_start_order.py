"""Finding 5 of issue 11 and the partition-count check: a worker started before its broker, or
before its Redis, waits (``/health`` 503 with what it waits for, one log line per retry, no
traceback) and goes to work when the dependency appears, losing nothing; input topics with
unequal partition counts stop start-up with a message saying what to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.streams import (
    ChangeReader,
    compare,
    expected_changes,
    produce_kafka_python,
    purchases,
    write_config,
)

from segmentflow.config import Settings
from segmentflow.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    free_port,
    stop_pid,
)
from segmentflow.streams.kafka_clients import create_topics

pytestmark = pytest.mark.integration


def _health(port: int) -> tuple[int, dict[str, Any] | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except OSError:
        return 0, None


def _wait_health(
    port: int, want: int, proc: subprocess.Popen[bytes], timeout: float, retried: bool = False
) -> dict[str, Any]:
    """Wait until ``/health`` answers ``want`` (and, with ``retried``, after a failed try)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited"
        code, body = _health(port)
        if code == want and body is not None and (not retried or body.get("attempts")):
            return body
        time.sleep(0.3)
    raise AssertionError(f"/health did not answer {want} within {timeout} s")


@contextmanager
def _worker(settings: Settings, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env.update(
        SEGMENTFLOW_KAFKA_URL=settings.kafka_url,
        SEGMENTFLOW_REDIS_URL=settings.redis_url,
        SEGMENTFLOW_NAMESPACE=settings.namespace,
        SEGMENTFLOW_CONFIG=str(config),
        SEGMENTFLOW_WEB_PORT=str(settings.web_port),
        SEGMENTFLOW_WEB_HOST="127.0.0.1",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segmentflow.cli.main", "worker"],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            stop_pid(proc, timeout=10)


def _topics(broker: EmbeddedBroker, settings: Settings, partitions: int = 4) -> None:
    outputs = [
        settings.topic_segment_changes,
        settings.topic_segmentflow_deadletter,
        settings.topic_segmentflow_metrics,
    ]
    create_topics(broker.bootstrap, [*settings.input_topics.values(), *outputs], partitions)


def _run_backlog(settings: Settings, config: Path, proc: subprocess.Popen[bytes]) -> None:
    """Produce a backlog, then: healthy, and the change topic equals replay."""
    events = purchases(300, seed=55)
    expected = expected_changes(events, config)
    produce_kafka_python(settings, events)
    reader = ChangeReader(settings)
    _wait_health(settings.web_port, 200, proc, timeout=90)
    reader.wait_complete(expected, timeout=60)
    reader.close()
    outcome = compare(reader.values, expected)
    print(f"\n[start order] events={len(events)} changes={outcome.distinct}/{len(expected)}")
    assert not outcome.problems, "\n".join(outcome.problems)


def test_worker_started_15s_before_its_broker(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    config = write_config(tmp_path)
    port = free_port()
    settings = Settings(
        kafka_url=f"kafka://127.0.0.1:{port}",
        redis_url=redis_url,
        namespace=namespace,
        web_port=free_port(),
    )
    log = tmp_path / "worker.log"
    with _worker(settings, config, log) as proc:
        body = _wait_health(settings.web_port, 503, proc, timeout=60, retried=True)
        assert body["waiting_for"] == "kafka" and "127.0.0.1" in body["last_error"]
        time.sleep(15)  # the scenario: the broker comes up 15 s later
        assert proc.poll() is None, "the worker waits for its broker"
        with EmbeddedBroker(port=port) as broker:
            _topics(broker, settings)
            _run_backlog(settings, config, proc)
            stop_pid(proc, timeout=10)  # before its broker goes
    text = log.read_text()
    assert "Traceback" not in text
    waits = [line for line in text.splitlines() if "waiting for kafka" in line]
    assert len(waits) >= 3, text  # one line per retry, capped backoff (0.5 s doubling to 10 s)
    assert "kafka is reachable" in text


def test_worker_started_before_its_redis(tmp_path: Path, broker: EmbeddedBroker) -> None:
    config = write_config(tmp_path)
    redis_port = free_port()
    settings = Settings(
        kafka_url=broker.url,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        namespace=f"sf-order-{redis_port}",
        web_port=free_port(),
        topic_website_events=f"web-{redis_port}",
        topic_email_events=f"email-{redis_port}",
        topic_purchase_events=f"buy-{redis_port}",
        topic_segment_changes=f"changes-{redis_port}",
        topic_segmentflow_deadletter=f"dead-{redis_port}",
        topic_segmentflow_metrics=f"metrics-{redis_port}",
    )
    _topics(broker, settings)
    log = tmp_path / "worker.log"
    env_topics = {
        f"SEGMENTFLOW_TOPIC_{name.upper()}": getattr(settings, f"topic_{name}")
        for name in (
            "website_events",
            "email_events",
            "purchase_events",
            "segment_changes",
            "segmentflow_deadletter",
            "segmentflow_metrics",
        )
    }
    os.environ.update(env_topics)  # inherited by the worker process
    try:
        with _worker(settings, config, log) as proc:
            body = _wait_health(settings.web_port, 503, proc, timeout=60, retried=True)
            assert body["waiting_for"] == "redis"
            time.sleep(5)
            assert proc.poll() is None, "the worker waits for its Redis"
            with EmbeddedRedis(port=redis_port):
                _run_backlog(settings, config, proc)
                stop_pid(proc, timeout=10)  # before its Redis goes
    finally:
        for name in env_topics:
            os.environ.pop(name, None)
    text = log.read_text()
    assert "Traceback" not in text
    assert any("waiting for redis" in line for line in text.splitlines())


def test_unequal_partition_counts_refuse_to_start(
    tmp_path: Path, broker: EmbeddedBroker, redis_url: str, namespace: str
) -> None:
    tag = namespace[-8:]
    settings = Settings(
        kafka_url=broker.url,
        redis_url=redis_url,
        namespace=namespace,
        web_port=free_port(),
        topic_website_events=f"web-{tag}",
        topic_email_events=f"email-{tag}",
        topic_purchase_events=f"buy-{tag}",
    )
    create_topics(broker.bootstrap, [settings.topic_website_events], 4)
    create_topics(broker.bootstrap, [settings.topic_email_events], 4)
    create_topics(broker.bootstrap, [settings.topic_purchase_events], 6)
    env = dict(os.environ)
    env.update(
        SEGMENTFLOW_KAFKA_URL=settings.kafka_url,
        SEGMENTFLOW_REDIS_URL=redis_url,
        SEGMENTFLOW_NAMESPACE=namespace,
        SEGMENTFLOW_WEB_PORT=str(settings.web_port),
        SEGMENTFLOW_TOPIC_WEBSITE_EVENTS=settings.topic_website_events,
        SEGMENTFLOW_TOPIC_EMAIL_EVENTS=settings.topic_email_events,
        SEGMENTFLOW_TOPIC_PURCHASE_EVENTS=settings.topic_purchase_events,
    )
    done = subprocess.run(
        [sys.executable, "-m", "segmentflow.cli.main", "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 2, out
    assert "Traceback" not in out
    assert f"{settings.topic_purchase_events}=6" in out and f"web-{tag}=4" in out
    assert f"Add partitions to web-{tag}, email-{tag}" in out
