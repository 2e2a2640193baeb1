"""Config re-evaluation over a real Redis (CONTRACT §6): two workers owning two shards each walk
their own customers (one of them crashes half-way and resumes), and the store ends exactly as a
fresh replay under the new config: values, ``ns:pop``, the members index; every change is in
the outbox with ``cause.kind`` ``config``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from support.config_change import NEW, OLD

from segmentflow.config import config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.decode import Limits
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.segmenters.checks import synthetic_events
from segmentflow.service.config_walk import ConfigWalk
from segmentflow.service.processor import Processor
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.base import StateStore
from segmentflow.state.members import reader_for
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore

pytestmark = pytest.mark.integration
DAY_US = 86_400_000_000


def _replay(
    config: dict[str, Any], rows: list[dict[str, Any]], until: int, store: StateStore
) -> Processor:
    cfg = config_from_dict(config)
    events = list(events_from_dicts(rows, Limits.of(cfg)))
    return run(events, cfg, until, lambda _c: None, store)[0]


def _values(state: CustomerState) -> dict[str, str]:
    return {k: v for k, v in state.values.items() if not (k.startswith("rule:") and v == "out")}


def _worker(
    config: dict[str, Any], redis_url: str, namespace: str, shards: list[int], replayed: Processor
) -> Processor:
    store = RedisStore(redis_url, namespace, shards=4, outbox=True)
    store.assign_partitions(shards)
    processor = Processor(config_from_dict(config), store, check_key=False)
    processor.engine.ranks = replayed.engine.ranks  # the worker's rank sync, in effect
    return processor


def test_two_workers_walk_their_shards_to_the_fresh_replay(redis_url: str, namespace: str) -> None:
    rows = synthetic_events(customers=60, days=120, seed=8)
    until = (parse_rfc3339(str(rows[-1]["timestamp"])) // DAY_US + 45) * DAY_US
    ids = sorted({str(r["customer_id"]) for r in rows})
    replayed = _replay(OLD, rows, until, RedisStore(redis_url, namespace, shards=4, outbox=True))
    assert ConfigWalk(_worker(OLD, redis_url, namespace, [0, 1, 2, 3], replayed)).done
    store = RedisStore(redis_url, namespace, shards=4, outbox=True)
    before = sum(len(box) for _, box in store.outbox_pending())

    a = _worker(NEW, redis_url, namespace, [0, 1], replayed)
    crashed = ConfigWalk(a, batch=5)
    for _ in range(2):
        crashed.step(until)
    assert crashed.progress.running
    resumed = ConfigWalk(_worker(NEW, redis_url, namespace, [0, 1], replayed), batch=5)
    b = ConfigWalk(_worker(NEW, redis_url, namespace, [2, 3], replayed), batch=5)
    for walk in (resumed, b):
        pages = 0
        while not walk.done:
            walk.step(until)
            pages += 1
            # a page is a SCAN step of COUNT 5 per partition over the whole shared Redis
            # (other tests' keys too): bounded by its size, not by this test's customers
            assert pages < 1000 + store.client.dbsize(), "the walk makes progress"
    assert ConfigWalk(_worker(NEW, redis_url, namespace, [0, 1, 2, 3], replayed)).done

    fresh = _replay(NEW, rows, until, MemoryStore()).store
    mine, theirs = store.load_many(ids), fresh.load_many(ids)
    for cid in ids:
        assert _values(mine[cid]) == _values(theirs[cid]), cid
    assert store.populations() == fresh.populations()
    reader = reader_for(store)
    for dimension, value in (("rule:big", "in"), ("rule:idle", "in"), ("lifecycle", "at_risk")):
        members = {m.customer_id for m in reader.page(dimension, value, 10_000, None)}
        assert members == {cid for cid in ids if mine[cid].values.get(dimension) == value}
    assert not {m.customer_id for m in reader.page("rule:browsers", "in", 10_000, None)}
    published = [orjson.loads(x) for _, box in store.outbox_pending() for x in box]
    config_caused = [p for p in published if p["data"]["cause"]["kind"] == "config"]
    total = crashed.progress.changes + resumed.progress.changes + b.progress.changes
    assert len(published) - before == len(config_caused) == total > 0
