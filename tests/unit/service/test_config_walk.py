"""The config re-evaluation walk over an in-memory store (CONTRACT §6): bounded pages through the
normal commit (outbox, populations, members index), a persisted cursor, fingerprints recorded
at the end."""

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
from segmentflow.service.reload import engine_for
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.memory import MemoryStore

DAY_US = 86_400_000_000


def _replay(config: dict[str, Any], rows: list[dict[str, Any]], until: int) -> Processor:
    cfg = config_from_dict(config)
    store = MemoryStore(outbox=True)
    events = list(events_from_dicts(rows, Limits.of(cfg)))
    return run(events, cfg, until, lambda _c: None, store)[0]


def _over(config: dict[str, Any], replayed: Processor) -> Processor:
    """A worker's processor over the replayed store (the RFM metrics synced, as from Redis)."""
    processor = Processor(config_from_dict(config), replayed.store, check_key=False)
    processor.engine.ranks = replayed.engine.ranks
    return processor


def _values(state: CustomerState) -> dict[str, str]:
    return {k: v for k, v in state.values.items() if not (k.startswith("rule:") and v == "out")}


def _walk(processor: Processor, until: int, batch: int, steps: int | None = None) -> ConfigWalk:
    walk = ConfigWalk(processor, batch)
    while not walk.done and (steps is None or steps > 0):
        walk.step(until)
        steps = None if steps is None else steps - 1
    return walk


def test_walk_brings_store_to_the_fresh_replay_and_resumes_after_a_crash() -> None:
    rows = synthetic_events(customers=60, days=120, seed=3)
    until = (parse_rfc3339(str(rows[-1]["timestamp"])) // DAY_US + 45) * DAY_US
    ids = sorted({str(r["customer_id"]) for r in rows})
    replayed = _replay(OLD, rows, until)
    store = replayed.store
    assert isinstance(store, MemoryStore)
    old = _over(OLD, replayed)
    assert _walk(old, until, 1000).progress.changes == 0  # records the old fingerprints
    assert ConfigWalk(old).done
    box = len(store.outbox_pending()[0][1]) if store.outbox_pending() else 0

    new = _over(NEW, replayed)
    first = _walk(new, until, 7, steps=3)  # then the worker dies
    assert first.progress.running and first.progress.customers == 21
    rest = _walk(new, until, 7)  # a new process resumes at the persisted cursor
    assert rest.done and not rest.progress.running
    assert rest.progress.customers == len(ids) - 21
    assert ConfigWalk(new).done  # the new fingerprints are recorded

    fresh = _replay(NEW, rows, until).store
    mine, theirs = store.load_many(ids), fresh.load_many(ids)
    for cid in ids:
        assert _values(mine[cid]) == _values(theirs[cid]), cid
    populations = store.populations()
    assert populations == fresh.populations()
    assert "rule:browsers" not in populations or not any(populations["rule:browsers"].values())
    big = {m.customer_id for m in store.members.page("rule:big", "in", 10_000, None)}
    assert big == {cid for cid in ids if mine[cid].values.get("rule:big") == "in"}
    published = [orjson.loads(b) for b in store.outbox_pending()[0][1][box:]]
    assert published and all(p["data"]["cause"]["kind"] == "config" for p in published)
    assert len(published) == first.progress.changes + rest.progress.changes


NEWER: dict[str, Any] = NEW | {
    "rules": [
        {"name": "buyer", "when": "orders >= 1"},
        {"name": "big", "when": "revenue >= 200.0"},
        {"name": "browsers", "when": "page_views >= 3"},  # back again
        {"name": "loyal", "when": "orders >= 3"},
    ]
}


@pytest.mark.parametrize("final", [OLD, NEWER], ids=["reverted", "newer"])
def test_a_reload_during_a_walk_ends_with_the_fresh_replay_of_the_last_config(
    final: dict[str, Any],
) -> None:
    rows = synthetic_events(customers=60, days=120, seed=5)
    until = (parse_rfc3339(str(rows[-1]["timestamp"])) // DAY_US + 45) * DAY_US
    ids = sorted({str(r["customer_id"]) for r in rows})
    replayed = _replay(OLD, rows, until)
    store = replayed.store
    processor = _over(OLD, replayed)
    _walk(processor, until, 1000)  # records the old fingerprints
    cfg = config_from_dict(NEW)
    processor.reconfigure(cfg, engine_for(cfg, processor.engine))
    first = _walk(processor, until, 7, steps=4)  # half-way through NEW, a SIGHUP:
    assert first.progress.running
    cfg = config_from_dict(final)
    processor.reconfigure(cfg, engine_for(cfg, processor.engine))
    again = _walk(processor, until, 7, steps=2)  # and a crash in the middle of that walk
    assert again.progress.running
    rest = _walk(processor, until, 7)
    assert rest.done and ConfigWalk(processor).done

    fresh = _replay(final, rows, until).store
    mine, theirs = store.load_many(ids), fresh.load_many(ids)
    for cid in ids:
        assert _values(mine[cid]) == _values(theirs[cid]), cid
    assert store.populations() == fresh.populations()
