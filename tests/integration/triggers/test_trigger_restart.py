"""Crash safety: the ``segmentflow triggers`` process is SIGKILLed mid-stream and restarted; every
matching change is still delivered at least once (same Idempotency-Key), and the restart resumes
from the last committed batch rather than from scratch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker, stop_pid
from segmentflow.streams.kafka_clients import create_topics, producer

pytestmark = pytest.mark.integration

RATE = 40
#: a dispatcher that delivers nothing new for this long has stalled (its start-up included)
STALL_S = 90.0


class Stall:
    """True once ``progress`` (a count) stopped moving for ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit, self.last, self.since = limit, -1, time.monotonic()

    def __call__(self, progress: int) -> bool:
        if progress != self.last:
            self.last, self.since = progress, time.monotonic()
        return time.monotonic() - self.since > self.limit


def test_sigkill_mid_stream_then_restart_delivers_everything(
    broker: EmbeddedBroker, receiver: Any, real_changes: list[dict[str, Any]], tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"changes-{run}"
    create_topics(broker.bootstrap, [topic], 4)
    config = tmp_path / "triggers.yaml"
    config.write_text(
        "targets:\n"
        "  - name: all-lifecycle\n"
        f"    url: {receiver.url}/hook\n"
        "    match: {dimension: lifecycle}\n"
        f"    rate_limit_per_s: {RATE}\n"
    )
    expected = {c["id"] for c in real_changes if c["data"]["dimension"] == "lifecycle"}
    assert len(expected) > 60

    settings = Settings(kafka_url=broker.url, topic_segment_changes=topic)
    kafka = producer(settings)
    for change in real_changes:
        kafka.send(topic, key=change["subject"].encode(), value=orjson.dumps(change))
    kafka.flush()
    kafka.close()

    env = dict(os.environ)
    env.update(
        SEGMENTFLOW_KAFKA_URL=broker.url,
        SEGMENTFLOW_NAMESPACE=f"restart-{run}",
        SEGMENTFLOW_TOPIC_SEGMENT_CHANGES=topic,
        SEGMENTFLOW_TOPIC_SEGMENTFLOW_TRIGGERS_DEADLETTER=f"trg-dl-{run}",
        SEGMENTFLOW_TRIGGERS_CONFIG=str(config),
    )
    argv = [
        sys.executable,
        "-m",
        "segmentflow.cli.main",
        "triggers",
        "--port",
        "0",
        "--max-records",
        "20",
        "--loglevel",
        "INFO",
    ]

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def logs() -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*.log"))

    first = start("first")
    try:
        stalled = Stall(STALL_S)  # progress-based: gives up after STALL_S s without a delivery
        while len(receiver.on("/hook")) < len(expected) // 3:
            assert not stalled(len(receiver.on("/hook"))), "first dispatcher stalls\n" + logs()
            assert first.poll() is None, logs()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        stop_pid(first)
    before_kill = len(receiver.on("/hook"))
    assert before_kill < len(expected), "killed too late to prove anything"

    second = start("second")
    try:
        stalled = Stall(STALL_S)
        while receiver.delivered_keys("/hook") != expected:
            assert not stalled(len(receiver.on("/hook"))), (
                f"{len(receiver.delivered_keys('/hook'))}/{len(expected)} delivered\n" + logs()
            )
            assert second.poll() is None, logs()
            time.sleep(0.1)
        time.sleep(1.0)  # let it settle: nothing unexpected arrives
    finally:
        stop_pid(second)

    hits = receiver.on("/hook")
    assert {h.key for h in hits} == expected  # nothing that does not match
    assert all(orjson.loads(h.body)["id"] == h.key for h in hits)
    copies = Counter(h.key for h in hits)
    duplicates = sum(n - 1 for n in copies.values())
    # redelivery is limited to the uncommitted batches, not the whole topic
    assert duplicates < before_kill, (duplicates, before_kill)
