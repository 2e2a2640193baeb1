"""The store reads the CLI uses instead of key names: ``peek`` (forget's wait) and
``meta_items`` (``segments``' config-walk status)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from segmentflow.engine.state import CustomerState
from segmentflow.state.redis_store import RedisStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str, namespace: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, namespace, shards=2)
    yield s
    s.close()


def test_peek_reads_a_state_without_side_effects(store: RedisStore) -> None:
    store.commit({"a": CustomerState("a", clock=5, next_due=9, home=1)}, [])
    peeked = store.peek("a")
    assert peeked is not None and peeked.customer_id == "a" and peeked.next_due == 9
    assert store.peek("nobody") is None
    store.client.set(store.keys.state("a", 1), b"\x03\x05not a state")
    assert store.peek("a") is None  # unreadable: None, and nothing recorded or removed
    assert store.client.hget(store.part(1).quarantine, "a") is None
    assert store.client.zscore(store.keys.due(1), "a") == 9
    assert store.corrupt_states == 0 and not store.is_quarantined("a")


def test_meta_items_lists_every_field(store: RedisStore) -> None:
    assert store.meta_items() == {}
    store.set_meta("config:s0:pending", 1)
    store.set_meta("rfm:swept", 42)
    assert store.meta_items() == {"config:s0:pending": 1, "rfm:swept": 42}
