"""A worker started with a changed config re-evaluates the stored customers from its tick and
publishes the changes (``cause.kind`` ``config``) through the outbox (CONTRACT §6)."""

from __future__ import annotations

import asyncio

from support.config_change import BASE, BUY, big, order, worker

from segmentflow.state.memory import MemoryStore
from segmentflow.streams.metrics import registry_for, render
from segmentflow.streams.runtime import deliveries


def test_a_restart_with_a_new_rule_fills_it_for_the_stored_customers() -> None:
    store = MemoryStore(outbox=True)
    old, _ = worker(BASE, store)
    old.watermark.set_end((BUY, 0), 3)
    records = [order(1, "a", 50), order(2, "b", 500), order(3, "c", 900)]
    asyncio.run(old.handle_batch(deliveries(records, ["1", "2", "3"])))
    asyncio.run(old.tick())  # records the config the state follows
    rules = [{"name": "big", "when": "revenue >= 400.0"}]
    new, kafka = worker(BASE | {"rules": rules}, store)  # restarted, idle input
    asyncio.run(new.tick())
    got = big(kafka)
    assert sorted((d["customer_id"], d["current"]) for d in got) == [("b", "in"), ("c", "in")]
    assert {d["cause"]["kind"] for d in got} == {"config"}
    assert new.config_walk.done and new.config_walk.progress.customers == 3
    assert store.populations()["rule:big"] == {"in": 2}
    text = render(registry_for(new)).decode()
    assert "segmentflow_config_reevaluated_customers_total 3.0" in text
    assert "segmentflow_config_reevaluation_running 0.0" in text
    asyncio.run(new.tick())  # done: nothing twice
    assert len(big(kafka)) == 2
