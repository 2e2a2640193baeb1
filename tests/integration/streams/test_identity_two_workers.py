"""Identity merges across two workers (real Tansu broker, real Redis, worker processes): each
anonymous id and its user live on partitions owned by different workers. Anonymous views, then
``identify(user, anonymous_id)``, then an order and a late event keyed by the anonymous id: the
change topic equals ``replay`` (merges included) and every event is applied once
(notes/identity.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from support.identity import IDENTITY_CONFIG as CONFIG
from support.identity import identity_event as _event
from support.metrics import fetch_text
from support.streams import (
    ChangeReader,
    compare,
    expected_changes,
    metric_sum,
    produce_kafka_python,
    wait_applied,
    worker_clock,
    write_config,
)

from segmentflow.devstack import DevStack
from segmentflow.engine.identity import has_merged
from segmentflow.state.redis_store import RedisStore, kafka_partition

pytestmark = pytest.mark.integration


def _merged(redis_url: str, namespace: str, pairs: list[tuple[str, str]], views: int) -> bool:
    """Whether every user's stored state has merged its anonymous id and counts ``views``."""
    store = RedisStore(redis_url, namespace)
    try:
        users = store.load_many([user for user, _ in pairs])
    finally:
        store.close()
    return len(users) == len(pairs) and all(
        has_merged(users[user], anon) and users[user].totals[4] == views for user, anon in pairs
    )


def _wait(check: Callable[[], bool], reader: ChangeReader, limit: float = 180) -> None:
    """Wait until ``check()`` holds (generous overall limit; the assertions then say what)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not check():
        reader.poll(0.5)


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "sigkill"])
def test_merges_across_two_workers_equal_replay(
    tmp_path: Path, redis_url: str, crash: bool
) -> None:
    config = write_config(tmp_path, CONFIG)
    with DevStack(workers=0, config=str(config), redis_url=redis_url) as stack:
        namespace = stack.settings.namespace
        reader = ChangeReader(stack.settings)
        stack.start_worker()
        stack.start_worker()
        stack.wait_healthy(90)
        website = stack.settings.topic_website_events
        deadline = time.monotonic() + 120
        owner: dict[int, int] = {}
        while time.monotonic() < deadline and len(owner) < stack.partitions:
            for index in range(2):
                _, owned = worker_clock(fetch_text(stack, index))
                owner.update({p: index for t, p in owned if t == website})
            time.sleep(0.5)
        assert len(owner) == stack.partitions and set(owner.values()) == {0, 1}
        pairs = []
        for n in range(200):
            user, anon = f"user-{n}", f"anon-{n}"
            pu, pa = (
                kafka_partition(user, stack.partitions),
                kafka_partition(anon, stack.partitions),
            )
            if owner[pu] != owner[pa]:
                pairs.append((user, anon))
            if len(pairs) == 4:
                break
        anonymous = [
            _event(k, anon, kind, 10 * i + k)
            for i, (_, anon) in enumerate(pairs)
            for k, kind in enumerate(["page_view", "product_view", "product_view"])
        ]
        produce_kafka_python(stack.settings, anonymous)
        wait_applied(stack, len(anonymous), reader, quiet=0, stall=180)
        identified = [
            _event(9, user, "identify", 100 + i, anonymous_id=anon)
            for i, (user, anon) in enumerate(pairs)
        ]
        produce_kafka_python(stack.settings, identified)
        if crash:  # one worker dies somewhere in the hand-overs; a new one takes its partitions
            time.sleep(0.3)
            stack.kill_worker(1)
            stack.start_worker()
            stack.wait_healthy(90)
        _wait(lambda: _merged(redis_url, namespace, pairs, 2), reader)
        later = [_event(20, user, "order_completed", 200 + i) for i, (user, _) in enumerate(pairs)]
        later += [_event(30, anon, "product_view", 210 + i) for i, (_, anon) in enumerate(pairs)]
        produce_kafka_python(stack.settings, later)
        events = anonymous + identified + later
        _wait(lambda: _merged(redis_url, namespace, pairs, 3), reader)
        expected = expected_changes(events, config)
        reader.wait_complete(expected, timeout=30)
        reader.close()
        texts = [fetch_text(stack, i) for i in range(2)]
        forwarded = sum(metric_sum(t, "segmentflow_events_forwarded_total") for t in texts)
        applied = sum(metric_sum(t, "segmentflow_events_applied_total") for t in texts)
        store = RedisStore(redis_url, namespace)
        aliases = store.resolve_aliases([anon for _, anon in pairs])
        store.close()
        merged_all = _merged(redis_url, namespace, pairs, 3)
    outcome = compare(reader.values, expected)
    print(
        f"\n[identity two workers, {'sigkill' if crash else 'clean'}] pairs={len(pairs)} "
        f"events={len(events)} changes={len(expected)} delivered={outcome.deliveries} "
        f"duplicates={outcome.duplicates} forwarded={forwarded} applied={applied}"
    )
    assert not outcome.problems, "\n".join(outcome.problems)
    assert merged_all, "every user merged its anonymous id once and counts its 3 views"
    assert aliases == {anon: user for user, anon in pairs}
    if not crash:  # a killed worker's counters die with it
        assert applied == len(events)
        assert forwarded >= 3 * len(pairs)  # request, hand-over reply, the late anonymous event
    merged = [orjson.loads(v) for v in reader.values]
    assert any(c["data"]["cause"]["kind"] == "merge" for c in merged)
