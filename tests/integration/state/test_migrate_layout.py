"""``segmentflow migrate-layout`` against a real Redis (and a real Redis Cluster): a layout-1
namespace written key by key (states, due entries, populations, members, RFM, clv rows,
quarantine, aliases, a hand-over, outboxes, meta, persona) is copied to layout 3 as the spec
says, verified, resumable, idempotent, one run at a time; a dry run writes nothing;
``--drop-old`` leaves only layout 3; workers refuse a layout-1 or layout-2 namespace
(:func:`ensure_layout`); the ``RedisStore`` reads a migrated replay's states, populations, due
entries and members as they were. A layout-2 namespace written by real commits has its
membership sorted sets converted in place to chunks (same members, same since, every other key
untouched), resumably, and only a verified segment's sorted set is deleted."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from segmentflow.cli.main import main
from segmentflow.config import Settings
from segmentflow.embedded import EmbeddedBroker
from segmentflow.embedded_cluster import EmbeddedRedisCluster
from segmentflow.engine.state import CustomerState
from segmentflow.state import member_chunks
from segmentflow.state.client import scan_keys
from segmentflow.state.keys import LAYOUT, SEP, Keys, LegacyKeys, glob_escape
from segmentflow.state.migrate_layout import (
    META_CURSOR,
    META_STEP,
    LayoutError,
    MigrationError,
    MigrationReport,
    ensure_layout,
    legacy_shard,
    migrate,
)
from segmentflow.streams.kafka_clients import create_topics

pytestmark = pytest.mark.integration
SHARDS = 4
GARBAGE = b"\x07not a state"
Snapshot = dict[bytes, Any]


def _state(
    cid: str, home: int | None, values: dict[str, str], due: int | None, clock: int
) -> CustomerState:
    return CustomerState(cid, home=home, values=values, next_due=due, clock=clock)


STATES = {
    "c1": _state("c1", 2, {"lifecycle": "active", "rule:vip": "in"}, 1_000, 90),
    "c2": _state("c2", None, {"lifecycle": "new", "rule:vip": "out"}, 500, 40),
    "c3": _state("c3", 1, {"lifecycle": "active", "persona": "p1"}, None, 70),
}


def home(cid: str) -> int:
    """Where a customer lives in layout 3 (its state's home, else the legacy shard)."""
    state = STATES.get(cid)
    if state is not None and state.home is not None:
        return state.home
    return legacy_shard(cid, SHARDS)


def clv_bucket(cid: str) -> int:
    return zlib.crc32(cid.encode()) % 64


@pytest.fixture
def client(redis_url: str, namespace: str) -> Iterator[redis.Redis[bytes]]:
    c: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    yield c  # (the namespace fixture deletes both layouts' keys)
    c.close()


def rows(client: Any, ns: str, part: int, dim: str, value: str) -> list[tuple[bytes, int]]:
    """One partition's members of a segment in the layout-3 index, in id order."""
    keys = Keys(ns).part(part)
    return [row for page in member_chunks.iter_rows(client, keys, dim, value, 7) for row in page]


def layout2_sets(client: Any, ns: str, parts: int = SHARDS) -> list[bytes]:
    """The layout-2 membership sorted sets left in the namespace."""
    found: list[bytes] = []
    for p in range(parts):
        part = Keys(ns).part(p)
        pattern = glob_escape(part.layout2_segment_prefix) + "*"
        cursor = -1
        while cursor != 0:
            cursor, keys = scan_keys(client, part.pop, pattern, max(cursor, 0), 1000)
            found += keys
    return found


def write_legacy(client: Any, ns: str) -> None:
    """A layout-1 namespace, as the previous version stored it."""
    old = LegacyKeys(ns)
    for cid, state in STATES.items():
        client.set(old.state(cid), state.encode())
    client.set(old.state("c4"), GARBAGE)  # undecodable: quarantined
    client.hset(old.quarantine, "c4", "ValueError: unknown state encoding version ?")
    client.zadd(old.due(2), {"c1": 1_000})
    client.zadd(old.due(3), {"c3": 777})  # c3 (home 1) found in another shard's index
    client.hset(
        old.pop,
        mapping={
            f"lifecycle{SEP}active": 2,
            f"lifecycle{SEP}new": 1,
            f"rule:vip{SEP}in": 1,
            f"persona{SEP}p1": 1,
            f"lifecycle{SEP}at_risk": 0,
        },
    )
    client.zadd(old.segment("lifecycle", "active"), {"c1": 10, "c3": 30})
    client.zadd(old.segment("lifecycle", "new"), {"c2": 20})
    client.zadd(old.segment("rule:vip", "in"), {"c1": 11})
    client.zadd(old.segment("lifecycle", "at_risk"), {"c9": 5})  # stale, no state
    # (c3 persona p1 is not indexed: written before the index existed)
    client.hset(old.rfm, mapping={"c1": b"rfm-1", "c2": b"rfm-2"})
    client.xadd(old.rfm_log, {"c1": b""})
    client.hset(old.clv_rows(clv_bucket("c1")), "c1", b"row-1")
    client.hset(old.clv_rows(clv_bucket("c3")), "c3", b"row-3")
    client.set(old.clv_version, 5)
    client.hset(old.alias, mapping={"m1": "c1", "c2x": "c2"})
    client.sadd(old.aliased("c1"), "m1")
    client.sadd(old.aliased("c2"), "c2x")
    client.hset(old.handover("c1"), f"merge-1{SEP}c3", STATES["c3"].encode())
    client.rpush(old.outbox(0), b'{"n":1}', b'{"n":2}')
    client.rpush(old.outbox(2), b'{"n":3}')
    client.hset(old.meta, mapping={"swept": 123})
    client.hset(old.partitions, mapping={"events:0": b'{"epoch":1}', "events:3": b'{"epoch":2}'})
    client.hset(old.clv_fits, "100", b'{"fit":1}')
    client.hset(old.clv_ready, "0", 100)
    client.set(old.persona_model, b"model-bytes")
    client.set(old.persona_version, 3)
    client.rpush(old.persona_samples, b'{"a":1}', b'{"a":2}')
    client.set(old.claim("c1"), 2)


def snapshot(client: Any, ns: str) -> Snapshot:
    """Every key of the namespace (both layouts) with its contents."""
    out: Snapshot = {}
    for pattern in (f"{ns}:*", f"{{{ns}:*", f"{{{ns}}}:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            kind = client.type(key)
            if kind == b"string":
                out[key] = client.get(key)
            elif kind == b"hash":
                out[key] = client.hgetall(key)
            elif kind == b"zset":
                out[key] = client.zrange(key, 0, -1, withscores=True)
            elif kind == b"set":
                out[key] = client.smembers(key)
            elif kind == b"list":
                out[key] = client.lrange(key, 0, -1)
            elif kind == b"stream":
                out[key] = client.xrange(key)
    return out


def assert_layout_3(client: Any, ns: str) -> None:
    """What the spec says layout 3 holds for :func:`write_legacy`'s namespace."""
    keys = Keys(ns)
    for cid, state in STATES.items():
        assert client.get(keys.state(cid, home(cid))) == state.encode()
        assert client.hget(keys.directory(cid), cid) == str(home(cid)).encode()
    shard4 = legacy_shard("c4", SHARDS)
    assert client.get(keys.state("c4", shard4)) == GARBAGE
    assert client.hget(keys.directory("c4"), "c4") == str(shard4).encode()
    assert client.hgetall(keys.part(shard4).quarantine) == {
        b"c4": b"ValueError: unknown state encoding version ?"
    }
    dues = {p: client.zrange(keys.due(p), 0, -1, withscores=True) for p in range(SHARDS)}
    expected_due: dict[int, list[tuple[bytes, float]]] = {p: [] for p in range(SHARDS)}
    expected_due[2].append((b"c1", 1000.0))
    expected_due[home("c2")].append((b"c2", 500.0))
    expected_due[1].append((b"c3", 777.0))
    assert dues == {p: sorted(rows, key=lambda r: r[1]) for p, rows in expected_due.items()}
    assert client.hgetall(keys.part(2).rfm) == {b"c1": b"rfm-1"}
    assert client.hget(keys.part(home("c2")).rfm, "c2") == b"rfm-2"
    assert client.hgetall(keys.part(2).clv_rows(clv_bucket("c1"))) == {b"c1": b"row-1"}
    assert client.hgetall(keys.part(1).clv_rows(clv_bucket("c3"))) == {b"c3": b"row-3"}
    versions = [int(client.get(keys.part(p).clv_version) or 0) for p in range(SHARDS)]
    assert versions[1] > 0 and versions[2] > 0 and sum(versions) > 5  # the next refit runs
    # members: old ones with their since; c3's persona (missing from the old index): its clock
    assert layout3_index(client, ns) == {
        (2, "lifecycle", "active"): [(b"c1", 10)],
        (1, "lifecycle", "active"): [(b"c3", 30)],
        (home("c2"), "lifecycle", "new"): [(b"c2", 20)],
        (2, "rule:vip", "in"): [(b"c1", 11)],
        (1, "persona", "p1"): [(b"c3", 70)],
        (legacy_shard("c9", SHARDS), "lifecycle", "at_risk"): [(b"c9", 5)],  # stale, kept
    }
    assert not layout2_sets(client, ns)
    pops: dict[str, int] = {}
    for p in range(SHARDS):
        for name, count in client.hgetall(keys.part(p).pop).items():
            pops[name.decode()] = pops.get(name.decode(), 0) + int(count)
    assert pops == {
        f"lifecycle{SEP}active": 2,
        f"lifecycle{SEP}new": 1,
        f"rule:vip{SEP}in": 1,
        f"persona{SEP}p1": 1,
    }
    assert client.hgetall(keys.part(2).pop) == {
        b"lifecycle\x1factive": b"1",
        b"rule:vip\x1fin": b"1",
    }
    # aliases under the merged-away id's home (no state: its survivor's), with directory entries
    assert client.hget(keys.part(2).alias, "m1") == b"c1"
    assert client.hget(keys.directory("m1"), "m1") == b"2"
    assert client.hget(keys.part(home("c2")).alias, "c2x") == b"c2"
    assert client.hget(keys.directory("c2x"), "c2x") == str(home("c2")).encode()
    assert client.smembers(keys.part(2).aliased("c1")) == {b"m1"}
    assert client.smembers(keys.part(home("c2")).aliased("c2")) == {b"c2x"}
    assert client.hgetall(keys.part(1).handover("c1")) == {
        f"merge-1{SEP}c3".encode(): STATES["c3"].encode()
    }
    assert client.lrange(keys.outbox(0), 0, -1) == [b'{"n":1}', b'{"n":2}']
    assert client.lrange(keys.outbox(2), 0, -1) == [b'{"n":3}']
    assert client.lrange(keys.outbox(1), 0, -1) == client.lrange(keys.outbox(3), 0, -1) == []
    assert client.get(keys.persona_model) == b"model-bytes"
    assert client.get(keys.persona_version) == b"3"
    assert client.lrange(keys.persona_samples, 0, -1) == [b'{"a":1}', b'{"a":2}']
    assert client.hgetall(keys.meta) == {b"swept": b"123"}  # the progress fields are gone
    assert client.hget(keys.partitions, "events:3") == b'{"epoch":2}'
    assert client.hget(keys.clv_fits, "100") == b'{"fit":1}'
    assert client.hget(keys.clv_ready, "0") == b"100"
    assert client.get(keys.layout) == str(LAYOUT).encode()
    assert client.zscore(keys.span, "partitions") == SHARDS
    for p in range(SHARDS):  # not copied: the rank log (workers reload the hash)
        assert not client.exists(keys.part(p).rfm_log)


def test_migrates_every_kind_of_key(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    report = migrate(client, client, namespace, SHARDS)
    assert report.ok and not report.already and not report.resumed
    assert_layout_3(client, namespace)
    counts = report.counts
    assert (counts["states"], counts["undecodable"], counts["due"]) == (4, 1, 3)
    assert (counts["rfm"], counts["clv rows"], counts["quarantine"]) == (2, 2, 1)
    assert (counts["aliases"], counts["aliased"], counts["handovers"]) == (2, 2, 1)
    assert (counts["members"], counts["members from states"], counts["outbox"]) == (5, 1, 3)
    assert counts["directory"] == 6  # 4 states, 2 merged-away ids
    # the old keys stay (a rollback), the layout-1 claim and rank log too
    old = LegacyKeys(namespace)
    assert client.get(old.state("c1")) == STATES["c1"].encode()
    assert client.exists(old.pop, old.rfm_log, old.claim("c1")) == 3


def test_a_second_run_changes_nothing(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    migrate(client, client, namespace, SHARDS)
    migrated = snapshot(client, namespace)
    again = migrate(client, client, namespace, SHARDS)
    assert again.already and snapshot(client, namespace) == migrated
    # every step written twice (the marker removed: the whole migration runs again)
    client.delete(Keys(namespace).layout)
    rerun = migrate(client, client, namespace, SHARDS, page=2)
    assert rerun.ok and not rerun.already
    assert snapshot(client, namespace) == migrated


@pytest.mark.parametrize("during", ["states", "members"])
def test_an_interrupted_run_resumes(
    client: redis.Redis[bytes], namespace: str, during: str
) -> None:
    write_legacy(client, namespace)
    keys = Keys(namespace)

    class Stop(Exception):
        pass

    def interrupt(report: MigrationReport) -> None:
        cursor = int(client.hget(keys.meta, META_CURSOR) or 0)
        step = int(client.hget(keys.meta, META_STEP) or 0)
        if during == "states" and report.counts["states"] and cursor:  # mid state pass
            raise Stop
        if during == "members" and step == 3:  # states, aliases done; members under way
            raise Stop

    with pytest.raises(Stop):
        migrate(client, client, namespace, SHARDS, page=1, progress=interrupt)
    assert not client.exists(keys.layout)
    resumed = migrate(client, client, namespace, SHARDS, page=1)
    assert resumed.ok and resumed.resumed
    assert_layout_3(client, namespace)


def test_starts_again_after_an_earlier_versions_interrupted_run(
    client: redis.Redis[bytes], namespace: str
) -> None:
    """An interrupted layout 1 -> 2 run of the previous version left its progress and layout-2
    membership sets: this version copies every page again (their memberships into chunks) and
    deletes those sets."""
    write_legacy(client, namespace)
    keys = Keys(namespace)
    client.hset(keys.meta, mapping={META_STEP: 2, META_CURSOR: 0})  # its state pass was done
    client.zadd(keys.part(1).layout2_segment("persona", "p1"), {"c3": 70})
    client.zadd(keys.part(2).layout2_segment("lifecycle", "active"), {"c1": 10})
    report = migrate(client, client, namespace, SHARDS)
    assert report.ok and report.resumed and report.counts["states"] == 4
    assert any("earlier version (to layout 2)" in note for note in report.notes)
    assert "2 layout-2 membership sets it left: deleted" in report.notes
    assert_layout_3(client, namespace)


def test_one_migration_at_a_time(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    lock = f"{namespace}:migrate-layout:lock"
    client.set(lock, "another run", px=60_000)
    with pytest.raises(MigrationError, match="another `segmentflow migrate-layout`"):
        migrate(client, client, namespace, SHARDS)
    assert not client.exists(Keys(namespace).layout)
    client.delete(lock)
    seen: list[int] = []
    migrate(client, client, namespace, SHARDS, progress=lambda r: seen.append(client.pttl(lock)))
    assert seen and all(ttl > 0 for ttl in seen)  # held (and refreshed) while it ran
    assert not client.exists(lock)  # released


def test_a_dry_run_writes_nothing(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    before = snapshot(client, namespace)
    dry = migrate(client, client, namespace, SHARDS, dry_run=True, drop_old=True)
    assert snapshot(client, namespace) == before
    keys = Keys(namespace)
    shared = {keys.meta, keys.partitions, keys.clv_fits, keys.clv_ready}  # kept by drop_old
    assert dry.ok and dry.dry_run
    assert dry.dropped == len([k for k in before if k.decode() not in shared])
    real = migrate(client, client, namespace, SHARDS)
    assert dry.counts == real.counts


def test_drop_old_leaves_only_layout_3(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    report = migrate(client, client, namespace, SHARDS, drop_old=True)
    assert report.dropped > 20
    assert_layout_3(client, namespace)
    keys = Keys(namespace)
    kept = {keys.meta, keys.partitions, keys.layout, keys.span, keys.clv_fits, keys.clv_ready}
    left = {k.decode() for k in client.scan_iter(match=f"{namespace}:*", count=1000)}
    assert left == kept
    ensure_layout(client, namespace)  # a worker starts on it


def test_two_clients_of_one_redis_are_one_redis(
    client: redis.Redis[bytes], namespace: str, redis_url: str
) -> None:
    """Another client (another URL spelling) of the same database keeps the shared globals."""
    write_legacy(client, namespace)
    other: redis.Redis[bytes] = redis.Redis.from_url(redis_url.replace("127.0.0.1", "localhost"))
    try:
        report = migrate(client, other, namespace, SHARDS, drop_old=True)
    finally:
        other.close()
    assert report.ok and report.counts["globals"] == 3  # the persona keys only
    assert_layout_3(client, namespace)


def test_drop_old_later_on_a_migrated_namespace(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    migrate(client, client, namespace, SHARDS)
    later = migrate(client, client, namespace, SHARDS, drop_old=True)
    assert later.already and later.dropped > 20
    assert_layout_3(client, namespace)


def test_differences_stop_the_switch(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)
    old = LegacyKeys(namespace)
    client.hset(old.pop, f"lifecycle{SEP}active", 5)  # an old worker went on counting
    with pytest.raises(MigrationError, match="population lifecycle=active: 5 before, 2") as err:
        migrate(client, client, namespace, SHARDS, drop_old=True)
    assert "workers of the old version" in str(err.value)
    assert err.value.report is not None and err.value.report.differences
    assert not client.exists(Keys(namespace).layout)
    assert client.exists(old.state("c1"))  # nothing dropped


def test_a_shortfall_within_the_undecodable_states_is_a_note(
    client: redis.Redis[bytes], namespace: str
) -> None:
    write_legacy(client, namespace)
    client.hincrby(
        LegacyKeys(namespace).pop, f"lifecycle{SEP}active", 1
    )  # c4, before its bytes broke
    report = migrate(client, client, namespace, SHARDS)
    assert report.ok and client.get(Keys(namespace).layout) == str(LAYOUT).encode()
    assert "population lifecycle=active: 3 before, 2 migrated" in report.notes
    assert any("within the 1 undecodable states" in note for note in report.notes)


def test_no_switch_before_the_replicas_hold_it(client: redis.Redis[bytes], namespace: str) -> None:
    write_legacy(client, namespace)  # (the test Redis has no replica)
    with pytest.raises(MigrationError, match="fewer than 1 replicas acknowledged"):
        migrate(client, client, namespace, SHARDS, min_replicas=1, replica_timeout=0.2)
    assert not client.exists(Keys(namespace).layout)
    assert migrate(client, client, namespace, SHARDS).ok  # resumed: verified again, switched


def test_a_wrong_partition_count_is_refused_before_writing(
    client: redis.Redis[bytes], namespace: str
) -> None:
    write_legacy(client, namespace)
    before = snapshot(client, namespace)
    with pytest.raises(MigrationError, match="partition count given is 2"):
        migrate(client, client, namespace, 2)
    assert snapshot(client, namespace) == before


def test_a_state_homed_beyond_the_partitions_is_a_difference(
    client: redis.Redis[bytes], namespace: str
) -> None:
    write_legacy(client, namespace)
    client.set(LegacyKeys(namespace).state("c5"), _state("c5", 6, {}, None, 1).encode())
    with pytest.raises(MigrationError, match=r"homed outside partitions 0\.\.3: 6 \(1 "):
        migrate(client, client, namespace, SHARDS)
    assert not client.exists(Keys(namespace).layout)


def test_ensure_layout(client: redis.Redis[bytes], namespace: str) -> None:
    keys = Keys(namespace)
    ensure_layout(client, namespace)  # fresh: marked
    assert client.get(keys.layout) == b"3"
    ensure_layout(client, namespace)
    client.delete(keys.layout)
    write_legacy(client, namespace)
    with pytest.raises(LayoutError) as refused:
        ensure_layout(client, namespace)
    message = str(refused.value)
    assert "segmentflow migrate-layout" in message and namespace in message
    assert "stop every worker of the old version" in message
    assert not client.exists(keys.layout)
    migrate(client, client, namespace, SHARDS)
    ensure_layout(client, namespace)
    client.set(keys.layout, 4)
    with pytest.raises(LayoutError, match="layout 4, which this version of segmentflow cannot"):
        ensure_layout(client, namespace)


def test_workers_and_tools_refuse_layout_1(
    client: redis.Redis[bytes],
    namespace: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``bootstrap.redis_store`` (every worker and tool) checks the layout first."""
    from segmentflow import bootstrap

    settings = Settings(redis_url=redis_url, namespace=namespace, partitions=SHARDS)
    write_legacy(client, namespace)
    with pytest.raises(LayoutError, match="migrate-layout"):
        bootstrap.redis_store(settings)
    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", namespace)
    assert main(["segments"]) == 3
    assert "segmentflow migrate-layout" in " ".join(capsys.readouterr().err.split())  # (wrapped)
    migrate(client, client, namespace, SHARDS)
    bootstrap.redis_store(settings).close()


def test_cli(
    client: redis.Redis[bytes],
    namespace: str,
    redis_url: str,
    broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_legacy(client, namespace)
    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", namespace)
    monkeypatch.setenv("SEGMENTFLOW_KAFKA_URL", broker.url)
    for kind in ("WEBSITE", "EMAIL", "PURCHASE"):
        monkeypatch.setenv(f"SEGMENTFLOW_TOPIC_{kind}_EVENTS", f"{namespace}-{kind.lower()}")
    monkeypatch.setenv("SEGMENTFLOW_PARTITIONS", "1")  # wrong: the broker's count is used
    create_topics(Settings(), Settings().input_topics.values(), SHARDS)
    assert main(["migrate-layout", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "would copy" in out and "dry run" in out and "4 partitions" in err
    assert not client.exists(Keys(namespace).layout)
    client.hset(LegacyKeys(namespace).pop, f"persona{SEP}p1", 9)
    assert main(["migrate-layout", "--partitions", str(SHARDS)]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "population persona=p1: 9 before, 1 migrated" in said
    client.hset(LegacyKeys(namespace).pop, f"persona{SEP}p1", 1)
    argv = ["migrate-layout", "--from", redis_url, "--to", redis_url, "--partitions", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "states" in out
    assert_layout_3(client, namespace)
    assert main(["migrate-layout", "--partitions", "2"]) == 0  # marked: nothing to do
    assert "layout 3 already" in capsys.readouterr().out
    assert main(["migrate-layout", "--to", "redis://127.0.0.1:1/0", "--partitions", "4"]) == 3
    assert "cannot reach the target Redis" in " ".join(capsys.readouterr().err.split())


def test_to_a_redis_cluster(
    client: redis.Redis[bytes], namespace: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layout 3 written across slots and nodes: each partition's keys in one MULTI on the
    node of its tag, the directory in its own slots; the CLI with a ``redis+cluster://`` URL,
    dropping the old keys on the source."""
    write_legacy(client, namespace)
    by_cli = f"{namespace}-cli"  # (its source keys match the fixture's `ns*`)
    write_legacy(client, by_cli)
    with EmbeddedRedisCluster(primaries=3, replicas=1) as cluster:
        target: Any = cluster.client()  # (typed as redis.Redis: state/client.py)
        report = migrate(client, target, namespace, SHARDS, page=2)
        assert report.ok
        assert_layout_3(target, namespace)
        keys = Keys(namespace)
        tags = [keys.part(p).pop for p in range(SHARDS)]
        assert len({cluster.primary_for(t).port for t in tags}) > 1  # partitions on many nodes
        assert migrate(client, target, namespace, SHARDS).already
        ensure_layout(target, namespace)
        fresh = f"{namespace}-fresh"
        ensure_layout(target, fresh)  # no layout-1 key on any node: marked
        assert target.get(Keys(fresh).layout) == b"3"

        monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", by_cli)
        monkeypatch.setenv("SEGMENTFLOW_REDIS_MIN_REPLICAS", "1")  # each primary's replica holds it
        argv = ["migrate-layout", "--from", redis_url, "--to", cluster.url, "--drop-old"]
        assert main([*argv, "--partitions", str(SHARDS)]) == 0
        assert_layout_3(target, by_cli)
        assert not list(client.scan_iter(match=f"{by_cli}:*"))  # every old key went

        # layout 2 -> 3 in place on the cluster: each partition's sorted sets on its node
        index = layout3_index(target, namespace)
        to_layout_2(target, namespace, index)
        upgraded = migrate(target, target, namespace, SHARDS, page=2)
        assert upgraded.ok and upgraded.source_layout == 2
        assert upgraded.counts["members"] == sum(len(m) for m in index.values()) == 6
        assert_layout_3(target, namespace)
        assert layout3_index(target, namespace) == index
    assert not client.exists(Keys(namespace).layout)  # the source is left as it was


def test_a_store_reads_the_migrated_namespace_as_before(
    client: redis.Redis[bytes], namespace: str
) -> None:
    """A replay's states written in layout 1 (as the previous version stored them), migrated:
    the layout-3 :class:`RedisStore` sees the same states, populations, due entries and
    members."""
    from segmentflow.config import config_from_dict
    from segmentflow.schemas.decode import Event, validate_event
    from segmentflow.schemas.timefmt import DAY_US
    from segmentflow.service.replay import run
    from segmentflow.state.members import RedisMembers
    from segmentflow.state.memory import MemoryStore
    from segmentflow.state.redis_store import RedisStore
    from segmentflow.synthetic import generate

    start = datetime(2025, 9, 1, tzinfo=UTC)
    raws = [m.event for m in generate(customers=80, seed=5, start=start, days=45)]
    decoded = (validate_event(r, None) for r in raws if r is not None)
    events = sorted((e for e in decoded if isinstance(e, Event)), key=lambda e: e.ts)
    until = (events[-1].ts // DAY_US + 1) * DAY_US
    memory = MemoryStore()
    rules: list[dict[str, Any]] = [{"name": "buyer", "when": "orders >= 1"}]
    run(events, config_from_dict({"rules": rules}), until, lambda c: None, memory)
    ids = memory.scan_ids(0, 1_000_000)[1]
    states = memory.load_many(ids)
    populations = memory.populations()
    old = LegacyKeys(namespace)
    pipe = client.pipeline(transaction=False)
    for cid, state in states.items():
        assert state.home is None  # (replay: no partitions) the legacy shard is its home
        pipe.set(old.state(cid), state.encode())
        if state.next_due is not None:
            pipe.zadd(old.due(legacy_shard(cid, SHARDS)), {cid: state.next_due})
    members: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for dim, values in populations.items():
        for value, count in values.items():
            pipe.hset(old.pop, f"{dim}{SEP}{value}", count)
            page = memory.members.page(dim, value, 1_000_000, None)
            members[(dim, value)] = [(m.since, m.customer_id) for m in page]
            if page:
                pipe.zadd(old.segment(dim, value), {m.customer_id: m.since for m in page})
    pipe.execute()

    report = migrate(client, client, namespace, SHARDS, page=16)
    assert report.ok and report.counts["states"] == len(ids) > 50

    store = RedisStore(client, namespace, shards=SHARDS)
    loaded = store.load_many(ids, sync_ranks=False)
    assert sorted(loaded) == sorted(ids)
    for cid, state in states.items():
        state.home = legacy_shard(cid, SHARDS)  # what the store adopts for a state without one
        assert loaded[cid].body() == state.body() and loaded[cid].recent == state.recent
        assert store.shard_of(cid) == legacy_shard(cid, SHARDS)
    assert store.populations() == populations
    far = max(s.next_due or 0 for s in states.values()) + 1
    due_before = sorted((s.next_due, cid) for cid, s in states.items() if s.next_due is not None)
    assert store.due(far, 1_000_000) == [cid for _, cid in due_before]
    assert store.next_due() == due_before[0][0]
    reader = RedisMembers(client, namespace, SHARDS)
    for (dim, value), listed in members.items():
        page = reader.page(dim, value, 1_000_000, None)
        assert [(m.since, m.customer_id) for m in page] == listed
    assert store.customer_count() == len(ids)


def test_a_store_reads_the_migrated_identity_outbox_and_quarantine(
    client: redis.Redis[bytes], namespace: str
) -> None:
    from segmentflow.state.redis_store import RedisStore

    write_legacy(client, namespace)
    migrate(client, client, namespace, SHARDS)
    store = RedisStore(client, namespace, shards=SHARDS, outbox=True)
    assert store.resolve_aliases(["m1", "c2x", "c1"]) == {"m1": "c1", "c2x": "c2"}
    handed = store.handovers("c1", "merge-1")
    assert list(handed) == ["c3"] and handed["c3"].body() == STATES["c3"].body()
    assert store.quarantined() == {"c4": "ValueError: unknown state encoding version ?"}
    assert store.outbox_pending() == [(0, [b'{"n":1}', b'{"n":2}']), (2, [b'{"n":3}'])]
    assert store.get_meta("swept") == 123
    assert store.load_many(["c4"], sync_ranks=False) == {}  # undecodable: quarantined again
    assert store.shard_of("c4") == legacy_shard("c4", SHARDS)


# -- layout 2 -> 3 (issue 13): the membership index converted in place ------------------------

Index = dict[tuple[int, str, str], list[tuple[bytes, int]]]


def layout3_index(client: Any, ns: str, parts: int = SHARDS) -> Index:
    """Every (partition, dimension, value) -> members of the layout-3 index."""
    out: Index = {}
    for p in range(parts):
        part = Keys(ns).part(p)
        cursor = -1
        while cursor != 0:
            pattern = glob_escape(part.segment_prefix) + "*"
            cursor, found = scan_keys(client, part.pop, pattern, max(cursor, 0), 1000)
            for key in found:
                dim, value = part.segment_of(key)
                out[(p, dim, value)] = rows(client, ns, p, dim, value)
    return dict(sorted(out.items()))


def to_layout_2(client: Any, ns: str, index: Index, parts: int = SHARDS) -> None:
    """Make a layout-3 namespace a layout-2 one: its membership index goes, ``index`` is
    written as layout 2's sorted sets, the marker says 2 (every other key is the same in both
    layouts)."""
    for p in range(parts):
        part = Keys(ns).part(p)
        for prefix in (part.segment_prefix, f"{part.tag}:mc:"):
            cursor = -1
            while cursor != 0:
                pattern = glob_escape(prefix) + "*"
                cursor, found = scan_keys(client, part.pop, pattern, max(cursor, 0), 1000)
                for key in found:
                    client.delete(key)
    assert not layout3_index(client, ns, parts)
    for (p, dim, value), members in index.items():
        client.zadd(Keys(ns).part(p).layout2_segment(dim, value), dict(members))
    client.set(Keys(ns).layout, 2)


def is_membership(key: bytes) -> bool:
    """A key of either layout's membership index (``{ns:pP}:m:``, ``:mx:``, ``:mc:``)."""
    return key.partition(b"}")[2].startswith((b":m:", b":mx:", b":mc:"))


def others(client: Any, ns: str) -> Snapshot:
    """Every key of the namespace but the membership index."""
    return {k: v for k, v in snapshot(client, ns).items() if not is_membership(k)}


@pytest.fixture(scope="module")
def replayed() -> tuple[list[Any], Any]:
    """A replay's events and its :class:`MemoryStore` (states, populations, the index)."""
    from segmentflow.config import config_from_dict
    from segmentflow.schemas.decode import Event, validate_event
    from segmentflow.service.replay import run
    from segmentflow.state.memory import MemoryStore
    from segmentflow.synthetic import generate

    start = datetime(2025, 9, 1, tzinfo=UTC)
    raws = [m.event for m in generate(customers=80, seed=7, start=start, days=45)]
    decoded = (validate_event(r, None) for r in raws if r is not None)
    events = sorted((e for e in decoded if isinstance(e, Event)), key=lambda e: e.ts)
    memory = MemoryStore()
    run(events, config_from_dict({"rules": RULES}), until_of(events), lambda c: None, memory)
    return events, memory


RULES: list[dict[str, Any]] = [{"name": "buyer", "when": "orders >= 1"}]


def until_of(events: list[Any]) -> int:
    """The end of the last event's day (the replay's ``until``)."""
    from segmentflow.schemas.timefmt import DAY_US

    return int((events[-1].ts // DAY_US + 1) * DAY_US)


def layout_2_from_commits(client: Any, ns: str, replayed: tuple[list[Any], Any]) -> Index:
    """The replay committed through a real :class:`RedisStore`, its membership index then
    written as layout 2 from the memory replay's index (under each member's home); returns
    that index."""
    from segmentflow.config import config_from_dict
    from segmentflow.service.replay import run
    from segmentflow.state.redis_store import RedisStore

    events, memory = replayed
    ensure_layout(client, ns)
    store = RedisStore(client, ns, shards=SHARDS)
    run(events, config_from_dict({"rules": RULES}), until_of(events), lambda c: None, store)
    index: Index = {}
    for dim, values in memory.populations().items():
        for value in values:
            for m in memory.members.page(dim, value, 1_000_000, None):
                slot = (store.shard_of(m.customer_id), dim, value)
                index.setdefault(slot, []).append((m.customer_id.encode(), m.since))
    for members in index.values():
        members.sort()
    to_layout_2(client, ns, index)
    assert len(layout2_sets(client, ns)) == len(index) > 2 * SHARDS
    return dict(sorted(index.items()))


def assert_members_as_replayed(client: Any, ns: str, memory: Any) -> None:
    """The layout-3 reader lists every segment's members as the memory replay's index."""
    from segmentflow.state.members import RedisMembers

    reader = RedisMembers(client, ns, SHARDS)
    for dim, values in memory.populations().items():
        for value in values:
            expected = [
                (m.since, m.customer_id) for m in memory.members.page(dim, value, 10**6, None)
            ]
            assert [
                (m.since, m.customer_id) for m in reader.page(dim, value, 10**6, None)
            ] == expected
            assert reader.count(dim, value) == len(expected)


def test_upgrades_a_layout_2_namespace_in_place(
    client: redis.Redis[bytes], namespace: str, replayed: tuple[list[Any], Any]
) -> None:
    index = layout_2_from_commits(client, namespace, replayed)
    memory = replayed[1]
    kept = others(client, namespace)
    before = snapshot(client, namespace)
    dry = migrate(client, client, namespace, SHARDS, dry_run=True)
    assert snapshot(client, namespace) == before  # a dry run writes nothing
    report = migrate(client, client, namespace, SHARDS, page=16)
    assert report.ok and report.source_layout == 2 and not report.resumed
    assert (
        report.counts
        == dry.counts
        == {
            "segments": len(index),
            "members": sum(len(m) for m in index.values()),
        }
    )
    assert layout3_index(client, namespace) == index  # the same members, the same since
    assert_members_as_replayed(client, namespace, memory)
    assert not layout2_sets(client, namespace)  # the old sorted sets went
    assert client.get(Keys(namespace).layout) == b"3"
    assert others(client, namespace) == {**kept, Keys(namespace).layout.encode(): b"3"}
    ensure_layout(client, namespace)  # a worker starts on it
    upgraded = snapshot(client, namespace)
    again = migrate(client, client, namespace, SHARDS)
    assert again.already and snapshot(client, namespace) == upgraded


def test_an_interrupted_upgrade_resumes(
    client: redis.Redis[bytes],
    namespace: str,
    redis_url: str,
    replayed: tuple[list[Any], Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped after a partition, the namespace stays at layout 2 (workers refuse it, naming
    the command); run again, it goes on to the result of an uninterrupted run."""
    from segmentflow import bootstrap

    index = layout_2_from_commits(client, namespace, replayed)
    kept = others(client, namespace)

    class Stop(Exception):
        pass

    def interrupt(report: MigrationReport) -> None:
        if not any(
            key.startswith(b"{%s:p0}" % namespace.encode())
            for key in layout2_sets(client, namespace)
        ):
            raise Stop  # partition 0 converted, the others not yet

    with pytest.raises(Stop):
        migrate(client, client, namespace, SHARDS, page=5, progress=interrupt)
    left = layout2_sets(client, namespace)
    assert 0 < len(left) < len(index)
    assert client.get(Keys(namespace).layout) == b"2"
    with pytest.raises(LayoutError) as refused:
        ensure_layout(client, namespace)
    assert f"SEGMENTFLOW_NAMESPACE={namespace} segmentflow migrate-layout" in str(refused.value)
    settings = Settings(redis_url=redis_url, namespace=namespace, partitions=SHARDS)
    with pytest.raises(LayoutError, match="layout 2"):
        bootstrap.redis_store(settings)  # every worker and tool
    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", namespace)
    assert main(["segments"]) == 3
    said = " ".join(capsys.readouterr().err.split())
    assert f"SEGMENTFLOW_NAMESPACE={namespace} segmentflow migrate-layout" in said

    resumed = migrate(client, client, namespace, SHARDS, page=5)
    assert resumed.ok and resumed.resumed
    assert resumed.counts["segments"] == len(left)
    assert layout3_index(client, namespace) == index
    assert_members_as_replayed(client, namespace, replayed[1])
    assert not layout2_sets(client, namespace)
    assert others(client, namespace) == {**kept, Keys(namespace).layout.encode(): b"3"}
    bootstrap.redis_store(settings).close()


def test_an_upgrade_difference_keeps_layout_2(
    client: redis.Redis[bytes],
    namespace: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A member in the new index the old one lacks (an old worker still running): exit 1, the
    marker stays 2, that segment's sorted set stays; another Redis as --from: refused (2)."""
    write_legacy(client, namespace)
    migrate(client, client, namespace, SHARDS, drop_old=True)
    index = layout3_index(client, namespace)
    to_layout_2(client, namespace, index)
    pipe = client.pipeline(transaction=True)
    ghost = {("lifecycle", "active"): ((), {"ghost": 1})}
    member_chunks.queue_writes(pipe, Keys(namespace).part(2), ghost)
    pipe.execute()
    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", redis_url)
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", namespace)
    assert main(["migrate-layout", "--partitions", str(SHARDS)]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "partition 2 segment lifecycle=active: 1 members in layout 2, 2 converted" in said
    assert "were workers of the previous version still running" in said
    assert client.get(Keys(namespace).layout) == b"2"
    assert layout2_sets(client, namespace) == [
        Keys(namespace).part(2).layout2_segment("lifecycle", "active").encode()
    ]
    other_db = redis_url.rpartition("/")[0] + "/1"  # (same server, another database)
    argv = ["migrate-layout", "--from", other_db, "--partitions", str(SHARDS)]
    assert main(argv) == 2
    assert "upgraded in place" in " ".join(capsys.readouterr().err.split())
    pipe = client.pipeline(transaction=True)
    member_chunks.queue_writes(
        pipe, Keys(namespace).part(2), {("lifecycle", "active"): (["ghost"], {})}
    )
    pipe.execute()
    assert main(["migrate-layout", "--partitions", str(SHARDS)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "verified" in out and "layout-2 sorted sets deleted" in out
    assert_layout_3(client, namespace)
