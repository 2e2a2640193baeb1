"""The shared clv population on a real Redis (issue 16): the store interface (Redis and memory
backends alike), rows written in the state commit's transaction and dropped by an erase, and
two processors (one per shard, each in its own thread, as two workers) sharing one refit per
moment: together they emit exactly ``replay``'s changes, with the same parameters; a restarted
processor resumes with the stored parameters."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from segmentflow.bootstrap import share_clv
from segmentflow.config import SegmentConfig
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Limits
from segmentflow.segmenters.checks import builtin_case, replay, synthetic_events
from segmentflow.segmenters.clv import Clv, ClvFit, ClvSlice
from segmentflow.segmenters.clv_model import WEEK_US
from segmentflow.service.processor import Item, Processor
from segmentflow.service.replay import events_from_dicts
from segmentflow.state.clv_population import ClvPopulationStore, MemoryClvPopulation
from segmentflow.state.redis_clv import RedisClvPopulation
from segmentflow.state.redis_store import RedisStore

pytestmark = pytest.mark.integration

AT = 60 * WEEK_US


@pytest.fixture(params=["memory", "redis"])
def population(request: pytest.FixtureRequest) -> Iterator[ClvPopulationStore]:
    if request.param == "memory":
        yield MemoryClvPopulation()
        return
    client: redis.Redis[bytes] = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisClvPopulation(client, request.getfixturevalue("namespace"))
    client.close()


def test_records_barrier_and_lock_behave_alike(population: ClvPopulationStore) -> None:
    assert population.latest_fit() is None and population.fit_at(AT) is None
    fit = ClvFit(AT, 3, 1, {"r": 0.25, "alpha": 4.0}, 41.5, 300)
    assert population.publish(fit) == fit
    assert population.publish(ClvFit(AT, 9, 2, {"r": 1.0}, 1.0, 1)) == fit  # first wins
    later = ClvFit(AT + WEEK_US, 4, 2, {"r": 0.3}, 40.0, 310)
    population.publish(later)
    assert population.fit_at(AT) == fit and population.latest_fit() == later
    population.mark_ready(AT, [0, 2])
    assert not population.all_ready(AT, 3)
    population.mark_ready(AT, [1])
    assert population.all_ready(AT, 3) and not population.all_ready(AT + 1, 3)
    token = population.try_lock(AT, 30)
    assert token is not None and population.try_lock(AT, 30) is None
    population.unlock("someone else's")
    assert population.try_lock(AT, 30) is None
    population.unlock(token)
    assert population.try_lock(AT, 30) is not None


def buyer(cid: str, first: int, last: int, x: int, home: int) -> CustomerState:
    state = CustomerState(cid, clock=last * 86_400_000_000)
    state.slices["clv"] = ClvSlice(first, last, x, 10.0, 20.0 * x)
    state.values["clv"] = "growing"
    state.home = home
    return state


def test_rows_are_written_with_the_states_and_dropped_by_an_erase(
    redis_url: str, namespace: str
) -> None:
    config = builtin_case("clv").segment_config()
    store = RedisStore(redis_url, namespace, shards=2)
    proc = Processor(config, store)
    share = share_clv(proc, store, 2)
    assert share is not None
    dim = share.dim
    assert dim.changed is not None
    dim.changed.update({"a", "b"})
    store.commit({"a": buyer("a", 10, 40, 3, 0), "b": buyer("b", 5, 5, 0, 1)}, [])
    store.commit({"n": CustomerState("n")}, [])  # no order: no row, version unchanged
    read = store.clv.read()
    assert read.version == 2 and sorted(read.ids) == [b"a", b"b"]
    by_id = dict(zip(read.ids, read.rows.tolist(), strict=True))
    assert by_id[b"a"] == (10, 40, 3, 60.0, 3, 0) and by_id[b"b"] == (5, 5, 0, 0.0, 3, 1)
    proc.forget("a")
    read = store.clv.read()
    assert read.ids == [b"b"] and read.version == 3
    store.close()


def _partition(cid: str) -> int:
    return zlib.crc32(cid.encode()) % 2


#: one engine call at a time in this process (a worker runs one at a time, and the state codec's
#: zstd contexts are not for concurrent threads); a processor waiting at the barrier lets go
GATE = threading.Lock()


def _wait_outside_the_gate(seconds: float) -> None:
    GATE.release()
    try:
        time.sleep(seconds)
    finally:
        GATE.acquire()


def _worker(
    config: SegmentConfig, redis_url: str, namespace: str, shard: int
) -> tuple[Processor, RedisStore]:
    store = RedisStore(redis_url, namespace, shards=2)
    store.assign_partitions([shard])
    proc = Processor(config, store, check_key=False)
    share = share_clv(proc, store, 2)
    assert share is not None
    share.poll_seconds, share.sleep = 0.01, _wait_outside_the_gate
    return proc, store


def test_two_processors_share_each_refit_and_together_equal_replay(
    redis_url: str, namespace: str
) -> None:
    clv = builtin_case("clv", synthetic_events(50, 160))
    config_map = {**clv.config, "rfm": {"enabled": False}}  # RFM ranks: their own sync
    case = type(clv)("clv", config_map, clv.events, clv.until)
    expected, reference = replay(case)
    config = case.segment_config()
    events = list(events_from_dicts((dict(e) for e in case.events), Limits.of(config)))
    workers = [_worker(config, redis_url, namespace, shard) for shard in (0, 1)]
    got: list[list[Change]] = [[], []]
    failures: list[BaseException] = []

    def run(shard: int) -> None:
        proc, _ = workers[shard]
        mine = [
            Item("purchase", e, shard, i)
            for i, e in enumerate(x for x in events if _partition(x.customer_id) == shard)
        ]
        try:
            for i in range(0, len(mine), 40):  # batches: the other thread interleaves
                with GATE:
                    got[shard].extend(proc.apply(mine[i : i + 40]))
            with GATE:
                got[shard].extend(proc.advance(case.until))
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads)

    def keyed(changes: list[Change]) -> dict[str, Any]:
        return {f"{c.customer_id}/{c.dimension}/{c.sequence}": c.to_json() for c in changes}

    both = keyed(got[0]) | keyed(got[1])
    assert len(both) == len(got[0]) + len(got[1])  # no change emitted by both
    want = keyed(expected)
    assert sorted(both) == sorted(want)
    assert both == want
    ref = reference.engine.by_kind("clv")
    assert isinstance(ref, Clv) and ref.refits >= 8
    for proc, _ in workers:  # the same parameters as replay's, in both
        dim = proc.engine.by_kind("clv")
        assert isinstance(dim, Clv) and dim.cfg == ref.cfg and dim.refits == ref.refits
        assert dim.high_value_min == ref.high_value_min and not dim.population

    # a restart: a new processor on the same namespace resumes with the stored parameters
    restarted, store = _worker(config, redis_url, namespace, 0)
    dim = restarted.engine.by_kind("clv")
    assert isinstance(dim, Clv) and dim.cfg == ref.cfg and dim.refits == ref.refits
    assert dim.high_value_min == ref.high_value_min
    for _, s in [*workers, (restarted, store)]:
        s.close()
