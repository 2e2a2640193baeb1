"""service/preview.py: a candidate rule evaluated on live states equals the segment a replay
with that rule deployed holds (same members, at a midnight), and its daily population over a
history file equals that replay's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from segmentflow.config import ConfigError, config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.schemas.timefmt import DAY_US, parse_rfc3339
from segmentflow.service.preview import Candidate, daily_population, preview_history, preview_live
from segmentflow.service.replay import run
from segmentflow.state.memory import MemoryStore
from segmentflow.synthetic import generate

WHEN = "orders_30d >= 1 && page_views_30d >= 2"


def raw_events() -> list[dict[str, Any]]:
    start = datetime(2025, 9, 1, tzinfo=UTC)
    found = [
        m.event
        for m in generate(customers=150, seed=9, start=start, days=60)
        if m.event is not None and not m.duplicate and validate_event(m.event, None)
    ]
    valid = [e for e in found if isinstance(validate_event(e, None), Event)]
    return sorted(valid, key=lambda e: parse_rfc3339(e["timestamp"]))


def events() -> list[Event]:
    out = []
    for raw in raw_events():
        event = validate_event(raw, None)
        assert isinstance(event, Event)
        out.append(event)
    return out


def test_live_preview_equals_the_deployed_rule() -> None:
    evs = events()
    until = (evs[-1].ts // DAY_US + 3) * DAY_US  # a midnight: rules are re-evaluated there
    live = MemoryStore()
    processor, _ = run(evs, config_from_dict({}), until, lambda c: None, live)
    processor.forget(evs[0].customer_id)  # a tombstone is nobody
    deployed = MemoryStore()
    rule = {"rules": [{"name": "cand", "when": WHEN}]}
    _, _ = run(evs, config_from_dict(rule), until, lambda c: None, deployed)
    candidate = Candidate(config_from_dict({}), "cand", WHEN)
    states = live.load_many({e.customer_id for e in evs}).values()
    got = preview_live(candidate, states, until, sample=5)
    members = {m.customer_id for m in deployed.members.page("rule:cand", "in", 10_000, None)}
    members.discard(evs[0].customer_id)
    assert 0 < got.matching == len(members) < got.customers
    assert got.customers == len({e.customer_id for e in evs}) - 1
    assert got.sample == sorted(members)[:5]
    assert got.as_json()["matching"] == len(members)


def test_history_preview_equals_a_replay_with_the_rule(tmp_path: Path) -> None:
    evs = events()
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in raw_events()))
    until = evs[-1].ts
    changes: list[Change] = []
    rule = config_from_dict({"rules": [{"name": "cand", "when": WHEN}]})
    run(evs, rule, until, changes.append, MemoryStore())
    candidate = Candidate(config_from_dict({}), "cand", WHEN)
    daily = preview_history(candidate, history, until, MemoryStore())
    assert daily == daily_population(changes, "rule:cand")
    assert len(daily) > 30 and max(n for _, n in daily) > 0


def test_bad_candidates_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="cand"):
        Candidate(config_from_dict({}), "cand", "orders >=")
    with pytest.raises(ConfigError, match="already exists"):
        Candidate(config_from_dict({"rules": [{"name": "x", "when": "orders > 1"}]}), "x", "true")
    with pytest.raises(ConfigError):
        Candidate(config_from_dict({}), "Bad Name", "true")
