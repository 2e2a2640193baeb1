"""The CLI as processes against a live worker (real Tansu broker, real Redis): produce, tail,
inspect, segments, forget; the worker's HTTP token protection; the ops snapshot topic; and the
README's demo command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from support.http import get
from support.metrics import fetch

from segmentflow.devstack import DevStack
from segmentflow.streams.kafka_clients import consumer
from segmentflow.synthetic import generate, write_jsonl

pytestmark = pytest.mark.e2e
TOKEN = "s3cret-token"


def cli(stack: DevStack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segmentflow.cli.main", *args],
        env=stack.env() | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(stack: DevStack, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.web_ports[0]}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    deadline = time.monotonic() + 120  # the worker answers between batches: wait for it
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def received(stack: DevStack) -> float:
    return fetch(stack, token=TOKEN).total("segmentflow_events_received_total")


def test_cli_against_a_live_worker(tmp_path: Path, redis_url: str) -> None:
    messages = generate(40, seed=21, start=datetime(2025, 5, 1, tzinfo=UTC), days=60)
    events = tmp_path / "events.jsonl"
    write_jsonl(messages, events)
    lines = len(events.read_text().splitlines())
    env = {"SEGMENTFLOW_API_TOKEN": TOKEN, "SEGMENTFLOW_METRICS_EVERY": "1"}
    with DevStack(redis_url=redis_url, extra_env=env) as stack:
        # the token protects everything but /health, compared exactly
        assert status(stack, "/health") == 200
        assert status(stack, "/metrics") == 401
        assert status(stack, "/segments", "wrong") == 401
        assert status(stack, "/metrics", TOKEN) == 200

        done = cli(stack, "produce", str(events))
        assert done.returncode == 0, done.stderr
        assert f"sent {lines} events" in done.stdout
        deadline = time.monotonic() + 60
        while received(stack) < lines and time.monotonic() < deadline:
            time.sleep(0.5)
        assert received(stack) == lines

        tail = cli(stack, "tail", "--from-beginning", "--json", "--max", "5", "--timeout", "30")
        assert tail.returncode == 0, tail.stderr
        changes = [json.loads(line) for line in tail.stdout.splitlines()]
        assert len(changes) == 5 and all(
            c["type"] == "segmentflow.segment.changed" for c in changes
        )

        segments = cli(stack, "segments", "--json")
        populations = json.loads(segments.stdout)
        customers = {m.event["customer_id"] for m in messages if m.event}
        assert sum(populations["lifecycle"].values()) == len(customers)
        assert populations == json.loads(get(stack, "/segments", token=TOKEN))

        who = sorted(customers)[0]
        inspect = cli(stack, "inspect", who, "--json")
        assert inspect.returncode == 0, inspect.stderr
        info = json.loads(inspect.stdout)
        assert info["customer_id"] == who and "lifecycle" in info["dimensions"]
        assert "email" not in inspect.stderr  # no PII in logs

        forget = cli(stack, "forget", who)
        assert forget.returncode == 0, forget.stderr
        assert cli(stack, "inspect", who).returncode == 1
        reader = consumer(
            stack.settings,
            stack.settings.topic_segment_changes,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        final = [orjson.loads(m.value) for m in reader if m.key == who.encode()]
        reader.close()
        nulls = [c for c in final if c["data"]["current"] is None]
        assert {c["data"]["dimension"] for c in nulls} >= {"lifecycle"}
        for change in nulls:  # the final change continues the dimension's sequence
            same = [c for c in final if c["data"]["dimension"] == change["data"]["dimension"]]
            assert change["data"]["sequence"] == max(c["data"]["sequence"] for c in same)
            assert change["data"]["sequence"] == len(same)

        ops = consumer(
            stack.settings,
            stack.settings.topic_segmentflow_metrics,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=5000,
        )
        for message in ops:  # one arrives every second; the latest ones count the events
            snapshot = orjson.loads(message.value)
            assert {"worker_id", "counters", "populations", "lag"} <= set(snapshot)
            if sum(snapshot["counters"]["received"].values()) == lines:
                break
        else:
            raise AssertionError("no ops snapshot counted the events")
        ops.close()


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    env_down = {"SEGMENTFLOW_KAFKA_URL": "kafka://127.0.0.1:1"}
    events = tmp_path / "e.jsonl"
    events.write_text('{"type": "page_view", "customer_id": "c"}\n')
    done = subprocess.run(
        [sys.executable, "-m", "segmentflow.cli.main", "produce", str(events)],
        env={**__import__("os").environ, **env_down},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert "kafka://127.0.0.1:1" in done.stderr + done.stdout
    assert "segmentflow dev" in done.stderr + done.stdout


def test_demo_runs_end_to_end() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segmentflow.cli.main",
            "demo",
            "--customers",
            "60",
            "--days",
            "90",
            "--show",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "Segment populations" in out and "lifecycle" in out
    assert "dead letter:" in out and "received" in out
    counts = {
        name: int(value.replace(",", ""))
        for name, value in re.findall(
            r"│ (received|applied|deadlettered|duplicates|late) +│ +([\d,]+) │", out
        )
    }
    assert counts["received"] == counts["applied"] + counts["deadlettered"] + counts["duplicates"]
    assert counts["late"] == 0, "the demo's worker starts on a backlog: nothing is late"
