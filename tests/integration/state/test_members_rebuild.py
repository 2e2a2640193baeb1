"""``segmentflow members --rebuild`` against a real Redis: state stored without its membership
index (written before the index existed) gets an exact index; members already indexed keep
their ``since``; stale members go; a worker committing during the rebuild wins (WATCH)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from support.members import write_members

from segmentflow.cli.main import main
from segmentflow.config import config_from_dict
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, validate_event
from segmentflow.schemas.timefmt import DAY_US
from segmentflow.service.replay import run
from segmentflow.state import member_chunks
from segmentflow.state.keys import Keys
from segmentflow.state.members import SEP, indexed
from segmentflow.state.members_rebuild import rebuild_members
from segmentflow.state.redis_store import RedisStore
from segmentflow.synthetic import generate

pytestmark = pytest.mark.integration
Index = dict[tuple[str, str], dict[str, int]]


def _index(client: redis.Redis[bytes], namespace: str) -> Index:
    out: Index = {}  # every home partition's chunks ({ns:pP}:mx:<dim>\x1f<value>) merged
    for key in client.scan_iter(match=f"{{{namespace}:p*}}:mx:*", count=1000):
        tag, _, segment = key.decode().partition("}:mx:")
        dim, _, value = segment.partition(SEP)
        part = Keys(namespace).part(int(tag.rpartition(":p")[2]))
        for rows in member_chunks.iter_rows(client, part, dim, value):
            out.setdefault((dim, value), {}).update({m.decode(): since for m, since in rows})
    return out


def _drop_index(client: redis.Redis[bytes], namespace: str) -> None:
    for kind in ("mx", "mc"):
        keys = list(client.scan_iter(match=f"{{{namespace}:p*}}:{kind}:*", count=1000))
        if keys:
            client.delete(*keys)


def _states(store: RedisStore) -> dict[str, CustomerState]:
    return store.load_many(list(store.iter_ids()), sync_ranks=False)


def _expected(states: dict[str, CustomerState]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for cid, state in states.items():
        for dim, value in state.values.items():
            member = indexed(dim, value)
            if member is not None:
                out.setdefault((dim, member), set()).add(cid)
    return out


def _sets(index: Index) -> dict[tuple[str, str], set[str]]:
    return {segment: set(members) for segment, members in index.items() if members}


@pytest.fixture
def stored(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> RedisStore:
    """120 synthetic customers replayed into Redis (the index built by the commits)."""
    start = datetime(2025, 9, 1, tzinfo=UTC)
    raws = [
        m.event
        for m in generate(customers=120, seed=9, start=start, days=60)
        if m.event is not None and not m.duplicate
    ]
    events = [e for e in (validate_event(r, None) for r in raws) if isinstance(e, Event)]
    events.sort(key=lambda e: e.ts)
    until = (events[-1].ts // DAY_US + 1) * DAY_US
    rules: list[dict[str, Any]] = [{"name": "buyer", "when": "orders >= 1"}]
    store = RedisStore(redis_url, namespace, shards=4)
    run(events, config_from_dict({"rules": rules}), until, lambda c: None, store)
    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", namespace)
    monkeypatch.delenv("SEGMENTFLOW_CONFIG", raising=False)
    return store


def test_rebuild_from_states_without_an_index(
    stored: RedisStore, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = stored.client
    built = _index(client, namespace)
    states = _states(stored)
    assert _sets(built) == _expected(states)  # what the commits built
    _drop_index(client, namespace)  # state written before the index existed
    assert main(["members", "--rebuild"]) == 0
    assert "members index rebuilt: 120 customers" in capsys.readouterr().err
    rebuilt = _index(client, namespace)
    assert _sets(rebuilt) == _expected(states)
    for (_dim, _value), members in rebuilt.items():  # since: the customer's clock
        assert all(since == states[cid].clock for cid, since in members.items())
    assert main(["members", "--rebuild"]) == 0  # nothing left to do
    assert "0 memberships added, 0 removed" in capsys.readouterr().err


def test_rebuild_keeps_known_since_and_removes_stale_members(
    stored: RedisStore, namespace: str
) -> None:
    client = stored.client
    built = _index(client, namespace)
    states = _states(stored)
    (dim, value), members = next((s, m) for s, m in sorted(built.items()) if len(m) >= 3)
    missing = sorted(members)[:2]
    for cid in missing:
        write_members(client, Keys(namespace).part(stored.shard_of(cid)), (dim, value), [cid], {})
    stranger = next(c for c in sorted(states) if c not in members)
    home = stored.shard_of(stranger)
    write_members(client, Keys(namespace).part(home), (dim, value), [], {stranger: 1})  # stale
    write_members(
        client, Keys(namespace).part(0), ("lifecycle", "nobody"), [], {"ghost": 1}
    )  # no state
    report = rebuild_members(stored, page=7)
    assert (report.customers, report.added, report.removed) == (120, 2, 2)
    rebuilt = _index(client, namespace)
    assert _sets(rebuilt) == _expected(states)
    for cid, since in rebuilt[(dim, value)].items():
        assert since == (states[cid].clock if cid in missing else members[cid])


def test_a_commit_during_the_rebuild_wins(
    stored: RedisStore, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = stored.client
    _drop_index(client, namespace)
    worker = RedisStore(redis_url, namespace, shards=4)  # a worker's own connection
    victim = sorted(stored.iter_ids())[0]
    load = stored.load_many
    calls = [0]

    def load_then_commit(ids: Any, *, sync_ranks: bool = True) -> dict[str, CustomerState]:
        found = load(ids, sync_ranks=sync_ranks)
        calls[0] += 1
        if calls[0] == 1 and victim in found:  # the worker moves the customer meanwhile
            state = worker.load_many([victim])[victim]
            was = state.values.get("lifecycle")
            state.values["lifecycle"] = "churned" if was != "churned" else "active"
            seq = state.seqs.get("lifecycle", 0) + 1
            state.seqs["lifecycle"] = seq
            at = state.clock or 0
            change = Change(victim, "lifecycle", was, state.values["lifecycle"], seq, at, None)
            worker.commit({victim: state}, [change])
        return found

    monkeypatch.setattr(stored, "load_many", load_then_commit)
    report = rebuild_members(stored, page=500)
    assert report.retried >= 1
    monkeypatch.undo()
    states = _states(stored)
    assert _sets(_index(client, namespace)) == _expected(states)
    worker.close()
