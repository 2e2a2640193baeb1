"""A real worker process (Tansu broker, Redis) gets SIGHUP after its config file gained a rule:
the rule is filled for the customers already stored (``cause.kind`` ``config``), exactly those
a fresh replay under the new config puts in it; a broken file on the next SIGHUP is logged and
the worker goes on with the config it has (CONTRACT §6)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.metrics import fetch
from support.streams import (
    ChangeReader,
    Event,
    expected_changes,
    produce_kafka_python,
    purchases,
)

from segmentflow.devstack import DevStack

pytestmark = pytest.mark.integration

#: overall limit of one wait (a loaded machine is slow; each wait ends once its condition holds)
LIMIT_S = 240.0
EXACT = "rfm: {enabled: false}\npersona: {enabled: false}\n"
RULE = "rules:\n  - name: big\n    when: 'revenue >= 150.0'\n"


def _wait(condition: Callable[[], bool], what: str, limit: float = LIMIT_S) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _big(reader: ChangeReader) -> list[dict[str, Any]]:
    changes = (orjson.loads(v)["data"] for v in reader.values)
    return [d for d in changes if d["dimension"] == "rule:big"]


@pytest.mark.parametrize("base", [EXACT, ""], ids=["rfm-personas-off", "defaults"])
def test_sighup_fills_a_new_rule_and_a_broken_file_keeps_the_old_config(
    tmp_path: Path, redis_url: str, base: str
) -> None:
    """With the defaults, RFM (its rank sync) and personas (their model store) are on."""
    config = tmp_path / "segmentflow.yaml"
    config.write_text(base)
    events = purchases(40, seed=21, days=200)
    with DevStack(workers=1, config=str(config), redis_url=redis_url) as stack:
        produce_kafka_python(stack.settings, events)

        def applied() -> bool:
            return fetch(stack).total("segmentflow_events_applied_total") >= len(events)

        _wait(applied, "the backlog applied")
        reader = ChangeReader(stack.settings)
        worker = stack.workers[0]

        config.write_text(base + RULE)
        os.kill(worker.pid, signal.SIGHUP)
        expected = [
            c["data"]
            for c in expected_changes(events, config)
            if c["data"]["dimension"] == "rule:big" and c["data"]["current"] == "in"
        ]
        assert expected, "the backlog must put some customers in the new rule"
        want = sorted(d["customer_id"] for d in expected)

        def filled() -> bool:
            reader.poll(0.5)
            return len(_big(reader)) >= len(want)

        _wait(filled, "the new rule filled")
        got = _big(reader)
        assert sorted(d["customer_id"] for d in got) == want
        # a rule's first entry says it was ``out`` before (as replay's does)
        assert {(d["previous"], d["current"], d["cause"]["kind"]) for d in got} == {
            ("out", "in", "config")
        }
        assert {d["previous"] for d in expected} == {"out"}
        metrics = fetch(stack)
        assert metrics.total("segmentflow_config_reevaluated_customers_total") == 40
        assert metrics.total("segmentflow_config_reevaluation_running") == 0
        populations = orjson.loads(stack.get("/segments"))
        assert populations["rule:big"].get("in") == len(want)

        config.write_text("rules: [name: big\n")  # broken YAML
        os.kill(worker.pid, signal.SIGHUP)
        log = next(stack.log_dir.glob("worker-*.log"))
        _wait(lambda: b"not applied" in log.read_bytes(), "the bad config logged")
        assert worker.poll() is None, "a bad config file must not stop the worker"
        assert str(config).encode() in log.read_bytes()
        stack.wait_healthy(LIMIT_S)

        # still the config with the rule: a new big customer enters it by its event
        body = {
            "event_id": "late-big-1",
            "customer_id": "cd-new-big",
            "type": "order_completed",
            "timestamp": "2025-07-21T12:00:00Z",
            "properties": {"order_id": "nb1", "revenue": 400.0, "currency": "USD"},
        }
        late = Event("purchase", b"cd-new-big", orjson.dumps(body), body)
        produce_kafka_python(stack.settings, [late])

        def entered() -> bool:
            reader.poll(0.5)
            return any(d["customer_id"] == "cd-new-big" for d in _big(reader))

        _wait(entered, "the new customer's change")
        new = [d for d in _big(reader) if d["customer_id"] == "cd-new-big"]
        assert [(d["current"], d["cause"]["kind"]) for d in new] == [("in", "event")]
        assert worker.poll() is None
        reader.close()
