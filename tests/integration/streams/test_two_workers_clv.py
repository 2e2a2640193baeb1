"""The clv refit shared by two workers (issue 16; real Tansu broker, real Redis, worker
processes): a CDNOW-like backlog on ``purchase-events`` over four partitions, consumed by two
workers. Every refit moment has one record in Redis that both adopt (the barrier: neither
refits before both reached the moment), so the change topic equals ``replay`` (each customer's
time-driven changes cut at its owner's clock, as in test_two_workers_one_topic.py), the stored
parameters are replay's, and a restarted worker's processor starts from them."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
import redis
import yaml
from support.streams import (
    ChangeReader,
    compare,
    expected_changes,
    expected_per_owner,
    metric_sum,
    owner_clocks,
    partitions_of,
    produce_kafka_python,
    purchases,
    wait_applied,
    write_config,
)

from segmentflow.bootstrap import worker_parts
from segmentflow.config import load_config
from segmentflow.devstack import DevStack
from segmentflow.segmenters.checks import Case
from segmentflow.segmenters.checks import replay as replay_case
from segmentflow.segmenters.clv import Clv
from segmentflow.segmenters.clv_model import WEEK_US
from segmentflow.state.redis_clv import RedisClvPopulation

pytestmark = pytest.mark.integration

CONFIG = """\
rfm: {enabled: false}
persona: {enabled: false}
dimensions:
  - {kind: clv, refit_min_customers: 10, refit_wait_seconds: 8}
"""


def test_two_workers_share_the_clv_refit_and_equal_replay(tmp_path: Path, redis_url: str) -> None:
    started = time.monotonic()
    config = write_config(tmp_path, CONFIG)
    events = purchases(300, seed=31, days=240)
    # as on the wire (a figure the model cannot compute, NaN, is JSON null)
    full = [orjson.loads(orjson.dumps(c)) for c in expected_changes(events, config)]
    with DevStack(workers=0, config=str(config), redis_url=redis_url) as stack:
        topic = stack.settings.topic_purchase_events
        produce_kafka_python(stack.settings, events)
        where = partitions_of(stack.settings, topic, len(events))
        reader = ChangeReader(stack.settings)
        stack.start_worker()
        stack.start_worker()
        stack.wait_healthy(90)
        texts = wait_applied(stack, len(events), reader, quiet=10)  # > a refit's barrier limit
        applied = [metric_sum(t, "segmentflow_events_applied_total") for t in texts]
        owner_clock = owner_clocks(texts, topic)
        expected = expected_per_owner(full, lambda cid: owner_clock[where[cid]])
        reader.wait_complete(expected, timeout=60)
        reader.close()
        client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
        population = RedisClvPopulation(client, stack.settings.namespace)
        latest = population.latest_fit()
        records = client.hlen(f"{stack.settings.namespace}:clv:fits")
        # a restarted worker: its processor adopts the stored record before any event
        parts = worker_parts(stack.settings, load_config(config))
        restarted = parts.processor
        parts.redis.close()
        client.close()
    outcome = compare(reader.values, expected)
    print(
        f"\n[two-workers clv] events={len(events)} replay={len(full)} expected={len(expected)} "
        f"delivered={outcome.deliveries} records={records} applied={applied} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert sum(applied) == len(events)
    assert not outcome.problems, "\n".join(outcome.problems)
    refits = [c for c in expected if c["data"]["dimension"] == "clv"]
    assert any(c["data"]["cause"]["kind"] == "time" for c in refits)

    # the stored record of the latest refit is replay's at that moment (events before it)
    assert latest is not None and latest.refits >= 5 and latest.at % WEEK_US == 0
    case = Case("clv", yaml.safe_load(CONFIG), [e.event for e in events], latest.at)
    _, reference = replay_case(case)
    ref = reference.engine.by_kind("clv")
    assert isinstance(ref, Clv)
    assert latest.fitted == {k: getattr(ref.cfg, k) for k in latest.fitted}
    assert latest.high_value_min == ref.high_value_min and latest.refits == ref.refits
    dim = restarted.engine.by_kind("clv")
    assert isinstance(dim, Clv) and dim.cfg == ref.cfg and dim.refits == latest.refits
    assert dim.high_value_min == latest.high_value_min
