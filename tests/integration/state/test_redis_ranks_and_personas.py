"""The stores split out of RedisStore, on a real Redis: the RFM rank sync (two workers' rank
indexes stay equal through ``ns:rfm`` and ``ns:rfm:log``, written in the state commit's
transaction) and the persona model store (samples and versioned models shared by workers).
Key names and value formats are the ones stored before the split."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from segmentflow.engine.state import CustomerState, T
from segmentflow.segmenters.rfm import RankIndex
from segmentflow.state.keys import Keys
from segmentflow.state.redis_personas import RedisPersonaStore
from segmentflow.state.redis_store import RedisStore

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(redis_url: str, namespace: str) -> Iterator[list[tuple[RedisStore, RankIndex]]]:
    made = []
    for _ in range(2):
        store, ranks = RedisStore(redis_url, namespace, shards=4), RankIndex()
        store.ranks.attach(ranks)
        made.append((store, ranks))
    yield made
    for store, _ in made:
        store.close()


def buyer(cid: str, last_order: int, orders: int, revenue: float, home: int) -> CustomerState:
    state = CustomerState(cid, clock=last_order, last_order=last_order)
    state.totals[T["orders"]] = orders
    state.totals[T["revenue"]] = revenue
    state.home = home
    return state


def test_a_commit_reaches_the_other_workers_rank_index_with_the_home(
    workers: list[tuple[RedisStore, RankIndex]], redis_url: str, namespace: str
) -> None:
    (a, ranks_a), (b, ranks_b) = workers
    a.commit({"c-1": buyer("c-1", 1_000, 2, 30.5, home=3)}, [])
    assert "c-1" not in set(ranks_b.customers())
    b.load_many([])  # every load of the processor also reads the rank log
    assert set(ranks_b.customers()) == {"c-1"}
    b.get("c-1")  # views and tools do not (they may run while a batch is in a thread)
    a.load_many([])  # (the committing worker's engine updates its index; its log read agrees)
    assert set(ranks_a.customers()) == {"c-1"}
    assert b.shard_of("c-1") == 3  # the home travels with the metrics
    raw = redis.Redis.from_url(redis_url)
    part = a.part(3)  # the metrics live in the home partition
    assert orjson.loads(raw.hget(part.rfm, "c-1") or b"") == [1_000, 2, 30.5, 3]
    assert raw.xlen(part.rfm_log) == 1
    a.delete("c-1")
    b.load_many([])
    assert list(ranks_b.customers()) == []


def test_a_late_attach_loads_the_population_and_skips_unreadable_metrics(
    workers: list[tuple[RedisStore, RankIndex]], redis_url: str, namespace: str
) -> None:
    (a, _), _ = workers
    a.commit({f"c-{n}": buyer(f"c-{n}", 1_000 + n, 1, 10.0, home=n % 4) for n in range(5)}, [])
    redis.Redis.from_url(redis_url).hset(a.part(2).rfm, "bad", b"null")
    late, ranks = RedisStore(redis_url, namespace, shards=4), RankIndex()
    assert late.ranks.corrupt_metrics == 0
    late.ranks.attach(ranks)
    assert set(ranks.customers()) == {f"c-{n}" for n in range(5)}
    assert late.ranks.corrupt_metrics == 1
    late.close()


def test_without_an_attached_index_no_metrics_are_written(redis_url: str, namespace: str) -> None:
    store = RedisStore(redis_url, namespace, shards=4)
    store.commit({"c-1": buyer("c-1", 1_000, 1, 5.0, home=0)}, [])
    assert not redis.Redis.from_url(redis_url).exists(store.part(0).rfm)
    store.close()


def test_persona_samples_and_models_are_shared_by_workers(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    one, other = RedisPersonaStore(client, namespace), RedisPersonaStore(client, namespace)
    assert other.model_version() == 0 and other.load_model() is None
    one.push_samples([{"x": float(n)} for n in range(5)], cap=3)
    one.push_samples([])
    assert other.take_samples(2) == [{"x": 2.0}, {"x": 3.0}]  # the oldest beyond the cap went
    assert other.take_samples(10) == [{"x": 4.0}]
    assert other.take_samples(10) == []
    one.save_model(b"pickled", 7)
    assert (other.model_version(), other.load_model()) == (7, b"pickled")
    assert client.get(Keys(namespace).persona_version) == b"7"
