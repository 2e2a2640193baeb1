"""Four workers on a Redis Cluster (issue 17): 3 primaries with a replica each, all on
127.0.0.1, started by the test and stopped by PID. The workers share a backlog of purchases;
the change topic must equal ``replay`` (same ids, no conflicting duplicate, no gap):

- undisturbed;
- with a primary killed (SIGKILL) mid-stream while the workers write to it: its replica takes
  over and the workers ride it out with their retries. Redis replicates asynchronously, so the
  workers run with ``SEGMENTFLOW_REDIS_MIN_REPLICAS=1``: a commit counts only once a replica
  holds it, and nothing acknowledged dies with the primary. The promoted replica has no
  replica of its own, so its partitions wait (retrying, ``/health`` degraded) until the killed
  node is started again and rejoins as its replica, as an operator would do;
- with the slot of a busy partition's hash tag migrated to another primary mid-stream, the
  workers running (ASK and TRYAGAIN while it is half moved, MOVED after).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack import Stack
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

from segmentflow.embedded_cluster import EmbeddedRedisCluster, slot_of
from segmentflow.state.keys import Keys

pytestmark = pytest.mark.integration

WORKERS = 4


@pytest.fixture
def cluster() -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(primaries=3, replicas=1) as c:
        yield c


def _applied(stack: Stack) -> float:
    total = 0.0
    for i in range(WORKERS):
        try:
            text = stack.get("/metrics", i).decode()
            total += metric_sum(text, "segmentflow_events_applied_total")
        except Exception:  # a worker busy retrying may not answer this moment
            continue
    return total


def _when_applied(stack: Stack, share: float, count: int, reader: ChangeReader) -> float:
    """Wait (on progress) until the workers applied ``share`` of ``count`` events; how many."""
    moved, last = time.monotonic(), -1.0
    while time.monotonic() - moved < 120:
        reader.poll(0.2)
        now = _applied(stack)
        if now >= share * count:
            return now
        if now != last:
            moved, last = time.monotonic(), now
    raise AssertionError(f"workers stalled at {last} of {count} events")


@pytest.mark.parametrize("fault", ["none", "failover", "reshard"])
def test_four_workers_on_a_cluster_equal_replay(
    fault: str, cluster: EmbeddedRedisCluster, tmp_path: Path, redis_url: str
) -> None:
    """The backlog arrives in two halves: the fault starts once the first is applied, and the
    second half is produced while it lasts, so the workers write through it."""
    started = time.monotonic()
    config = write_config(tmp_path)
    events = purchases(2000, seed=1700)  # a few thousand customers, ~6k orders
    half = len(events) // 2
    env = {"SEGMENTFLOW_REDIS_URL": cluster.url, "SEGMENTFLOW_REDIS_MIN_REPLICAS": "1"}
    with Stack(workers=0, config=str(config), redis_url=redis_url, extra_env=env) as stack:
        topic = stack.settings.topic_purchase_events
        produce_kafka_python(stack.settings, events[:half])
        reader = ChangeReader(stack.settings)
        for _ in range(WORKERS):
            stack.start_worker()
        full = expected_changes(events, config)
        stack.wait_healthy(120)
        at_fault = _when_applied(stack, 1.0, half, reader)
        what, after_fault = "", 0.0
        tag = Keys(stack.namespace).part(0).due
        if fault == "failover":
            busy = cluster.primary_for(tag)
            cluster.kill(busy)
            produce_kafka_python(stack.settings, events[half:])
            primaries = cluster.wait_failover()
            waiting = _applied(stack)
            cluster.restart(busy)
            after_fault = _applied(stack)
            what = (
                f"killed a primary; primaries then {[p.address for p in primaries]}; applied "
                f"{waiting:.0f} before it rejoined as {busy.address};"
            )
        elif fault == "reshard":
            source = cluster.primary_for(tag)
            target = next(p for p in cluster.primaries() if p.port != source.port)
            moving = threading.Thread(
                target=cluster.move_slot,
                args=(slot_of(tag), target),
                kwargs={"batch": 10, "between": lambda: time.sleep(0.05)},
            )
            moving.start()
            produce_kafka_python(stack.settings, events[half:])
            moving.join()
            after_fault = _applied(stack)
            what = f"moved slot {slot_of(tag)} {source.address} -> {target.address};"
        else:
            produce_kafka_python(stack.settings, events[half:])
        where = partitions_of(stack.settings, topic, len(events))
        # a batch whose commit landed but was not acknowledged by a replica in time (while the
        # promoted primary has none) is retried: its events then count as duplicates
        done = ("applied", "duplicates")
        texts = wait_applied(stack, len(events), reader, workers=WORKERS, counted=done)
        applied = [metric_sum(t, "segmentflow_events_applied_total") for t in texts]
        duplicates = sum(metric_sum(t, "segmentflow_events_duplicates_total") for t in texts)
        dead = sum(metric_sum(t, "segmentflow_events_deadlettered_total") for t in texts)
        owner_clock = owner_clocks(texts, topic)
        expected = expected_per_owner(full, lambda cid: owner_clock[where[cid]])
        reader.wait_complete(expected, timeout=60)
        reader.close()
        health = [stack.health(i) for i in range(WORKERS)]
    outcome = compare(reader.values, expected)
    print(
        f"\n[cluster {fault}] {what} applied when it began {at_fault:.0f}, when it ended "
        f"{after_fault:.0f}; events={len(events)} replay={len(full)} "
        f"expected={len(expected)} delivered={outcome.deliveries} distinct={outcome.distinct} "
        f"applied={applied} duplicates={duplicates:.0f} seconds={time.monotonic() - started:.1f}"
    )
    assert sum(applied) + duplicates == len(events) and dead == 0
    if fault == "none":  # a fault may make a batch retry after its commit landed
        assert duplicates == 0
    assert at_fault < len(events), "the second half came during the fault"
    assert not outcome.problems, "\n".join(outcome.problems)
    assert health == [200] * WORKERS
