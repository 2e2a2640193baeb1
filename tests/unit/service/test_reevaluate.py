"""Re-evaluation after a config change (CONTRACT §6) against a brute-force reference: the old
replay plus :func:`reevaluate` ends with the values a fresh replay under the new config gives."""

from __future__ import annotations

from typing import Any

import pytest
from support.config_change import NEW, OLD

from segmentflow.config import config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.decode import Limits
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.segmenters.checks import synthetic_events
from segmentflow.service.processor import Processor
from segmentflow.service.reevaluate import ConfigDiff, diff, fingerprints, overall, reevaluate
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.memory import MemoryStore

DAY_US = 86_400_000_000


def _replay(config: dict[str, Any], rows: list[dict[str, Any]], until: int) -> Processor:
    cfg = config_from_dict(config)
    events = list(events_from_dicts(rows, Limits.of(cfg)))
    processor, _ = run(events, cfg, until, lambda _c: None, MemoryStore())
    return processor


def _values(state: CustomerState) -> dict[str, str]:
    """A customer's values; a rule never entered (no value) and one left (``out``) are alike."""
    return {k: v for k, v in state.values.items() if not (k.startswith("rule:") and v == "out")}


def _states(processor: Processor, ids: list[str]) -> dict[str, CustomerState]:
    return processor.store.load_many(ids)


@pytest.fixture(scope="module")
def world() -> tuple[list[dict[str, Any]], list[str], int]:
    rows = synthetic_events(customers=80, days=150, seed=11)
    ids = sorted({str(r["customer_id"]) for r in rows})
    # a midnight: a replay evaluates time-dependent rules at midnights only, a re-evaluation at
    # once, so only at a midnight must the two agree exactly
    until = (parse_rfc3339(str(rows[-1]["timestamp"])) // DAY_US + 45) * DAY_US
    return rows, ids, until


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_old_replay_plus_reevaluation_equals_fresh_replay(
    world: tuple[list[dict[str, Any]], list[str], int], batch: int
) -> None:
    rows, ids, until = world
    old = _replay(OLD, rows, until)
    fresh = _states(_replay(NEW, rows, until), ids)
    engine = Engine(config_from_dict(NEW))
    engine.ranks = old.engine.ranks  # the population's RFM metrics, as the worker keeps them
    stored = fingerprints(old.engine)
    change = diff(stored, overall(stored), engine)
    assert change.dimensions == {"lifecycle"} and change.rules == {"big", "idle"}
    states = _states(old, ids)
    before = {cid: dict(s.values) for cid, s in states.items()}
    clocks = {cid: s.clock for cid, s in states.items()}
    changes = []
    for start in range(0, len(ids), batch):
        part = [states[cid] for cid in ids[start : start + batch]]
        changes.extend(reevaluate(engine, change, part, until))
    assert changes, "the config change moves some customers"
    for cid in ids:
        assert _values(states[cid]) == _values(fresh[cid]), cid
    seen: dict[tuple[str, str], str | None] = {}
    for c in changes:
        assert c.to_cloudevent()["data"]["cause"] == {"kind": "config", "event_id": None}
        clock = clocks[c.customer_id]
        assert clock is not None and c.at == max(until, clock)
        default = "out" if c.dimension.startswith("rule:") else None  # as the engine numbers them
        was = seen.get(
            (c.customer_id, c.dimension), before[c.customer_id].get(c.dimension, default)
        )
        assert c.previous == was and c.current != was
        seen[(c.customer_id, c.dimension)] = c.current
    removed = [c for c in changes if c.dimension == "rule:browsers"]
    assert removed and {(c.previous, c.current) for c in removed} == {("in", "out")}
    dims = {c.dimension for c in changes}
    assert {"lifecycle", "rule:big", "rule:idle", "rule:browsers"} <= dims
    assert "rule:buyer" not in dims  # an unchanged rule whose inputs did not move stays
    # idempotent: a walk restarted after a crash emits nothing twice
    assert reevaluate(engine, change, states.values(), until) == []


def test_sequences_continue_and_next_due_follows_the_new_config(
    world: tuple[list[dict[str, Any]], list[str], int],
) -> None:
    rows, ids, until = world
    old = _replay(OLD, rows, until)
    engine = Engine(config_from_dict(NEW))
    engine.ranks = old.engine.ranks
    states = _states(old, ids)
    seqs = {cid: dict(s.seqs) for cid, s in states.items()}
    changes = reevaluate(
        engine, ConfigDiff(frozenset({"lifecycle"}), frozenset(), True), states.values(), until
    )
    for c in changes:
        assert c.sequence == seqs[c.customer_id].get(c.dimension, 0) + 1
        seqs[c.customer_id][c.dimension] = c.sequence
    for state in states.values():
        assert state.clock == until or state.clock is None
        assert state.next_due is None or state.next_due > until


def test_unchanged_config_moves_nobody(
    world: tuple[list[dict[str, Any]], list[str], int],
) -> None:
    rows, ids, until = world
    old = _replay(OLD, rows, until)
    engine = Engine(config_from_dict(OLD))
    stored = fingerprints(old.engine)
    change = diff(stored, overall(stored), engine)
    assert not change.changed
    assert reevaluate(engine, change, _states(old, ids).values(), until) == []
    # no stored fingerprints (state from before them): everything is checked, nothing moves
    everything = diff({}, None, engine)
    assert everything.changed and everything.dimensions >= {"lifecycle", "rfm"}
    engine.ranks = old.engine.ranks
    assert reevaluate(engine, everything, _states(old, ids).values(), until) == []


def test_a_tombstone_is_skipped() -> None:
    engine = Engine(config_from_dict(NEW))
    tomb = CustomerState("gone", seqs={"lifecycle": 3})
    assert (
        reevaluate(
            engine, ConfigDiff(frozenset({"lifecycle"}), frozenset(), True), [tomb], 10 * DAY_US
        )
        == []
    )
