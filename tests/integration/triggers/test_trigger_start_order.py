"""Start in any order: ``segmentflow triggers`` started before its broker waits (``/health`` 503,
one log line per retry, no traceback, capped backoff) and delivers once the broker appears on
that address. The dispatcher uses no Redis, so Kafka is its only dependency."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker, free_port, stop_pid
from segmentflow.streams.kafka_clients import create_topics, producer

pytestmark = pytest.mark.integration

RETRY = re.compile(
    r"triggers: Kafka at kafka://127\.0\.0\.1:\d+ unavailable \((.+)\); retry (\d+) in ([\d.]+)s$",
    re.MULTILINE,
)


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def test_dispatcher_started_before_its_broker_waits_then_delivers(
    receiver: Any, real_changes: list[dict[str, Any]], tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"changes-{run}"
    kafka_port, http_port = free_port(), free_port()
    kafka_url = f"kafka://127.0.0.1:{kafka_port}"
    config = tmp_path / "triggers.yaml"
    config.write_text(
        "targets:\n"
        "  - name: lifecycle\n"
        f"    url: {receiver.url}/hook\n"
        "    match: {dimension: lifecycle}\n"
    )
    expected = {c["id"] for c in real_changes if c["data"]["dimension"] == "lifecycle"}
    env = dict(os.environ)
    env.update(
        SEGMENTFLOW_KAFKA_URL=kafka_url,
        SEGMENTFLOW_NAMESPACE=f"order-{run}",
        SEGMENTFLOW_TOPIC_SEGMENT_CHANGES=topic,
        SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER=f"trg-dl-{run}",
        SEGMENTFLOW_TRIGGERS_CONFIG=str(config),
    )
    log = tmp_path / "triggers.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segmentflow.cli.main", "triggers", "--port", str(http_port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    broker: EmbeddedBroker | None = None
    try:
        # no broker yet: it waits, says so once per retry, and /health is 503
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            retries = [m for line in log.read_text().splitlines() if (m := RETRY.search(line))]
            status, body = health(http_port)
            if len(retries) >= 4 and status == 503:
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert (
            body["status"] == "waiting for kafka" and "KafkaConnectionError" in body["last_error"]
        )
        assert [int(m.group(2)) for m in retries] == list(range(1, len(retries) + 1))
        delays = [float(m.group(3)) for m in retries]
        assert delays[3] > delays[0] and max(delays) <= 10.0  # growing, capped
        text = log.read_text()
        assert "Traceback" not in text
        assert "Unable connect" not in text  # aiokafka's own per-attempt errors are not repeated

        broker = EmbeddedBroker(port=kafka_port).start()
        create_topics(broker.bootstrap, [topic], 4)
        kafka = producer(Settings(kafka_url=broker.url, topic_segment_changes=topic))
        for change in real_changes:
            kafka.send(topic, key=change["subject"].encode(), value=orjson.dumps(change))
        kafka.flush()
        kafka.close()

        deadline = time.monotonic() + 120
        while receiver.delivered_keys("/hook") < expected:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (
                f"{len(receiver.delivered_keys('/hook'))} of {len(expected)} delivered\n"
                + log.read_text()
            )
            time.sleep(0.3)
        assert receiver.delivered_keys("/hook") == expected
        assert health(http_port)[0] == 200
        text = log.read_text()
        assert "connected to Kafka" in text and "Traceback" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        stop_pid(proc, timeout=10)  # type: ignore[arg-type]
        if broker is not None:
            broker.stop()


def test_dispatcher_stopped_while_waiting_exits_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "triggers.yaml"
    config.write_text(
        "targets:\n  - name: t\n    url: http://127.0.0.1:9/hook\n"
        "    match: {dimension: lifecycle}\n"
    )
    env = dict(os.environ)
    env.update(
        SEGMENTFLOW_KAFKA_URL=f"kafka://127.0.0.1:{free_port()}",
        SEGMENTFLOW_TRIGGERS_CONFIG=str(config),
    )
    log = tmp_path / "triggers.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segmentflow.cli.main", "triggers", "--port", "0"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not RETRY.search(log.read_text()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        stop_pid(proc, timeout=10)  # type: ignore[arg-type]
