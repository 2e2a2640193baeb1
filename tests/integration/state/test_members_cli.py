"""``segmentflow members`` and ``segmentflow preview`` in process against a real Redis state
written by a replay through RedisStore (the worker's store)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from segmentflow.cli.main import main
from segmentflow.config import config_from_dict
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.schemas.timefmt import DAY_US, format_us, parse_rfc3339
from segmentflow.service.replay import run
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration
WHEN = "orders_30d >= 1"


@pytest.fixture
def live(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[dict[str, object]]]:
    """The state of 120 synthetic customers replayed into Redis up to a midnight."""
    start = datetime(2025, 9, 1, tzinfo=UTC)
    raws = [
        m.event
        for m in generate(customers=120, seed=4, start=start, days=45)
        if m.event is not None and not m.duplicate
    ]
    raws = sorted(
        (r for r in raws if isinstance(validate_event(r, None), Event)),
        key=lambda r: parse_rfc3339(str(r["timestamp"])),
    )
    events = [validate_event(r, None) for r in raws]
    until = (max(e.ts for e in events if isinstance(e, Event)) // DAY_US + 1) * DAY_US
    store = RedisStore(redis_url, namespace, shards=4)
    run(
        [e for e in events if isinstance(e, Event)],
        config_from_dict({}),
        until,
        lambda c: None,
        store,
    )
    store.close()
    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", namespace)
    monkeypatch.delenv("SEGMENTFLOW_CONFIG", raising=False)
    return until, raws


def test_members_cli(
    live: tuple[int, list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
    redis_url: str,
    namespace: str,
) -> None:
    store = RedisStore(redis_url, namespace)
    populations = store.populations()
    store.close()
    for dim, values in populations.items():
        for value, count in values.items():
            assert main(["members", dim, value]) == 0
            rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert len(rows) == count == len({r["customer_id"] for r in rows})
    assert main(["members", "lifecycle", "prospect", "--format", "csv", "--limit", "3"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["customer_id", "since"] and len(table) == 4


def test_preview_cli_equals_deploying_the_rule(
    live: tuple[int, list[dict[str, object]]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    until, raws = live
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in raws))
    deployed = MemoryStore()
    events = [e for e in (validate_event(r, None) for r in raws) if isinstance(e, Event)]
    run(
        events,
        config_from_dict({"rules": [{"name": "cand", "when": WHEN}]}),
        until,
        lambda c: None,
        deployed,
    )
    members = sorted(m.customer_id for m in deployed.members.page("rule:cand", "in", 10_000, None))
    args = ["preview", "--when", WHEN, "--name", "cand", "--sample", "4", "--json"]
    at = ["--at", format_us(until)]  # default: the latest customer clock (the last event)
    assert main([*args, *at, "--history", str(history), "--until", format_us(until)]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["live"]["matching"] == len(members) > 0
    assert out["live"]["at"] == format_us(until)
    assert out["live"]["sample"] == members[:4]
    assert out["history"][-1]["members"] == len(members)
    assert main(["preview", "--when", "orders >=", "--no-live"]) == 2  # names the rule
    assert "rule 'preview': expression does not compile" in capsys.readouterr().err
