"""The ``StateStore`` contract (segmentflow/state/base.py), one suite over every backend:
``MemoryStore`` (by reference and ``copy=True``) and ``RedisStore`` on a real Redis (a test
namespace). load/commit, the due index, next_due, populations, delete, erase, claim_homes,
quarantine, meta, partition assignment, the outbox and incarnation records behave the same
wherever the interface promises it; what only a shared store
can do (a second process sees the data, claims race across workers) runs on ``shared`` backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from segmentflow.engine.state import CustomerState, event_id_hash
from segmentflow.schemas.changes import Change
from segmentflow.state.base import StateStore
from segmentflow.state.memory import MemoryStore
from segmentflow.state.redis_store import RedisStore


@dataclass
class Backend:
    """A store under test and what the suite needs to know about it."""

    store: StateStore
    #: another handle on the same data (a restarted process); ``None`` for process-local stores
    reopen: Callable[[], StateStore] | None
    #: write bytes no codec reads as the customer's stored state; ``None`` if impossible
    corrupt: Callable[[str], None] | None
    #: a store on the same data whose commits also append to the outbox
    with_outbox: Callable[[], StateStore]
    #: whether ownership is per shard (``owns`` follows :meth:`assign_partitions`)
    sharded: bool = False


def _memory(copy: bool) -> Backend:
    return Backend(
        MemoryStore(copy=copy),
        reopen=None,
        corrupt=None,
        with_outbox=lambda: MemoryStore(copy=copy, outbox=True),
    )


@pytest.fixture(
    params=[
        "memory",
        "memory-copy",
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param != "redis":
        yield _memory(copy=request.param == "memory-copy")
        return
    redis_url: str = request.getfixturevalue("redis_url")
    namespace: str = request.getfixturevalue("namespace")
    opened: list[RedisStore] = []

    def open_store(outbox: bool = False) -> RedisStore:
        opened.append(RedisStore(redis_url, namespace, shards=3, outbox=outbox))
        return opened[-1]

    first = open_store()

    def corrupt(cid: str) -> None:
        first.client.set(first.keys.state(cid, first.shard_of(cid)), b"\x03\x05not a state")

    yield Backend(
        first,
        reopen=open_store,
        corrupt=corrupt,
        with_outbox=lambda: open_store(outbox=True),
        sharded=True,
    )
    for store in opened:
        store.close()


def state(cid: str, due: int | None = None, home: int | None = 0, **kw: object) -> CustomerState:
    made = CustomerState(cid, clock=0, next_due=due, home=home)
    for name, value in kw.items():
        setattr(made, name, value)
    return made


def change(cid: str, dim: str, previous: str | None, current: str | None, seq: int = 1) -> Change:
    return Change(cid, dim, previous, current, seq, 0, None)


# -- load / commit ---------------------------------------------------------------------------
def test_an_empty_store_has_nothing(backend: Backend) -> None:
    s = backend.store
    assert s.load_many([]) == {}
    assert s.load_many(["nobody"]) == {}
    assert s.get("nobody") is None
    assert s.customer_count() == 0
    assert s.due(10**18, 10) == []
    assert s.next_due() is None
    assert s.populations() == {}
    assert s.delete("nobody") is None


def test_commit_then_load_round_trips_every_field(backend: Backend) -> None:
    full = state(
        "c-ü/1",
        due=7,
        first_seen=1,
        last_seen=2,
        first_order=3,
        last_order=4,
        reactivated_at=5,
        flags=3,
        totals=[2, 19.5, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        days={20_000: [1, 9.5, 0, 0, 0, 0, 0, 0, 0]},
        traits={"country": "DE", "vip": True, "age": 41, "score": 0.25},
        values={"lifecycle": "new", "rule:x": "in"},
        seqs={"lifecycle": 1, "rule:x": 1},
        recent={event_id_hash("e1"): 1, event_id_hash("e2"): 2},
        offsets={"purchase-events:0": 41},
    )
    bare = state("c-2")
    backend.store.commit({full.customer_id: full, "c-2": bare}, [])
    assert backend.store.load_many([full.customer_id, "missing", "c-2"]) == {
        full.customer_id: full,
        "c-2": bare,
    }
    assert backend.store.get("c-2") == bare
    assert backend.store.customer_count() == 2


def test_a_later_commit_overwrites(backend: Backend) -> None:
    backend.store.commit({"a": state("a", traits={"country": "DE"})}, [])
    backend.store.commit({"a": state("a", traits={"country": "FR"})}, [])
    got = backend.store.get("a")
    assert got is not None and got.traits == {"country": "FR"}
    assert backend.store.customer_count() == 1


def test_committed_data_is_seen_by_another_process(backend: Backend) -> None:
    if backend.reopen is None:
        pytest.skip("process-local store")
    backend.store.commit({"a": state("a", due=5)}, [change("a", "lifecycle", None, "new")])
    backend.store.set_meta("rfm_sweep", 9)
    other = backend.reopen()
    assert other.get("a") == state("a", due=5)
    assert other.due(5, 10) == ["a"]
    assert other.populations() == {"lifecycle": {"new": 1}}
    assert other.get_meta("rfm_sweep") == 9


# -- due index -------------------------------------------------------------------------------
def test_due_is_ordered_by_moment_then_id_limited_and_not_consumed(backend: Backend) -> None:
    s = backend.store
    s.commit({"b": state("b", 30), "a": state("a", 30), "c": state("c", 10), "d": state("d")}, [])
    assert s.due(9, 10) == []
    assert s.due(10, 10) == ["c"]  # inclusive bound
    assert s.due(30, 10) == ["c", "a", "b"]
    assert s.due(30, 2) == ["c", "a"]
    assert s.due(30, 10) == ["c", "a", "b"]  # reading does not consume
    assert s.next_due() == 10


def test_due_follows_the_latest_commit(backend: Backend) -> None:
    s = backend.store
    s.commit({"a": state("a", 10), "b": state("b", 20)}, [])
    s.commit({"a": state("a", 50)}, [])  # moved later
    assert s.due(30, 10) == ["b"]
    assert s.next_due() == 20
    s.commit({"b": state("b", None)}, [])  # nothing due any more
    assert s.due(30, 10) == []
    assert s.next_due() == 50
    s.commit({"a": state("a", 5)}, [])  # moved earlier
    assert s.due(5, 10) == ["a"]
    assert s.next_due() == 5


def test_delete_returns_the_state_and_clears_its_due_entry(backend: Backend) -> None:
    s = backend.store
    s.commit({"a": state("a", 10), "b": state("b", 20)}, [])
    assert s.delete("a") == state("a", 10)
    assert s.get("a") is None
    assert s.due(100, 10) == ["b"]
    assert s.next_due() == 20
    assert s.customer_count() == 1
    assert s.delete("a") is None


# -- populations -----------------------------------------------------------------------------
def test_populations_follow_the_committed_changes(backend: Backend) -> None:
    s = backend.store
    s.commit(
        {"a": state("a"), "b": state("b")},
        [
            change("a", "lifecycle", None, "new"),
            change("b", "lifecycle", None, "new"),
            change("a", "rule:big", None, "in"),
            change("b", "rule:big", None, "out"),
        ],
    )
    assert s.populations() == {"lifecycle": {"new": 2}, "rule:big": {"in": 1}}
    s.commit(
        {"a": state("a")},
        [change("a", "lifecycle", "new", "active", 2), change("a", "rule:big", "in", "out", 2)],
    )
    # values that drop to zero are not listed; rule segments count members only
    assert s.populations() == {"lifecycle": {"active": 1, "new": 1}}


# -- erase (forget) --------------------------------------------------------------------------
def test_erase_replaces_the_state_by_its_tombstone_and_commits_its_changes(
    backend: Backend,
) -> None:
    s = backend.store
    s.commit({"a": state("a", 10)}, [change("a", "lifecycle", None, "new")])
    tomb = state("a", None, flags=1)
    s.erase("a", tomb, [change("a", "lifecycle", "new", None, 2)])
    assert s.get("a") == tomb
    assert s.due(100, 10) == []
    assert s.next_due() is None
    assert s.populations() == {}


# -- home partitions -------------------------------------------------------------------------
def test_claim_homes_grants_fresh_customers_the_partition_asked_for(backend: Backend) -> None:
    assert backend.store.claim_homes({"a": 2, "b": 0}) == {"a": 2, "b": 0}
    assert backend.store.claim_homes({}) == {}


def test_an_earlier_claim_by_another_worker_wins(backend: Backend) -> None:
    if backend.reopen is None:
        pytest.skip("process-local store: no other worker to race")
    assert backend.store.claim_homes({"a": 2}) == {"a": 2}
    assert backend.reopen().claim_homes({"a": 1, "b": 1}) == {"a": 2, "b": 1}


# -- quarantine ------------------------------------------------------------------------------
def test_nothing_is_quarantined_by_default(backend: Backend) -> None:
    backend.store.commit({"a": state("a")}, [])
    backend.store.load_many(["a", "b"])
    assert not backend.store.is_quarantined("a")
    assert not backend.store.is_quarantined("b")


def test_an_undecodable_state_is_quarantined_then_released_when_repaired(
    backend: Backend,
) -> None:
    if backend.corrupt is None:
        pytest.skip("the backend stores objects: no bytes to corrupt")
    s = backend.store
    s.commit({"bad": state("bad", 10), "good": state("good", 20)}, [])
    backend.corrupt("bad")
    assert s.load_many(["bad", "good"]) == {"good": state("good", 20)}  # never a crash
    assert s.is_quarantined("bad")
    assert not s.is_quarantined("good")
    assert s.due(100, 10) == ["good"]  # a stuck due entry would hold the clock forever
    s.commit({"bad": state("bad", 30)}, [])  # an operator repairs it
    assert s.get("bad") == state("bad", 30)
    assert not s.is_quarantined("bad")


def test_erase_releases_a_quarantined_customer(backend: Backend) -> None:
    if backend.corrupt is None:
        pytest.skip("the backend stores objects: no bytes to corrupt")
    s = backend.store
    backend.corrupt("bad")
    s.load_many(["bad"])
    tomb = state("bad", None, flags=1)
    s.erase("bad", tomb, [])
    assert s.load_many(["bad"]) == {"bad": tomb}
    assert not s.is_quarantined("bad")


# -- meta ------------------------------------------------------------------------------------
def test_meta_integers_are_stored_and_overwritten(backend: Backend) -> None:
    s = backend.store
    assert s.get_meta("rfm_sweep") is None
    s.set_meta("rfm_sweep", 1_767_225_600_000_000)
    s.set_meta("other", 0)
    assert s.get_meta("rfm_sweep") == 1_767_225_600_000_000
    assert s.get_meta("other") == 0
    s.set_meta("rfm_sweep", 2)
    assert s.get_meta("rfm_sweep") == 2


def test_every_customer_is_owned_and_has_one_shard_by_default(backend: Backend) -> None:
    s = backend.store
    s.commit({"a": state("a", home=0)}, [])
    assert s.owns("a")
    assert s.owns("nobody")
    assert s.shard_of("a") == 0


# -- partition assignment --------------------------------------------------------------------
def test_partitions_are_assigned_and_revoked_explicitly(backend: Backend) -> None:
    s = backend.store
    assert s.owned_partitions is None  # before the first assignment: everything (tools)
    s.assign_partitions([0, 2])
    assert s.owned_partitions == frozenset({0, 2})
    s.revoke_partitions()  # a rebalance started
    assert s.owned_partitions == frozenset()
    s.assign_partitions([1])
    assert s.owned_partitions == frozenset({1})


def test_a_sharded_store_owns_the_customers_of_its_assigned_partitions(backend: Backend) -> None:
    if not backend.sharded:
        pytest.skip("one shard: the store owns every customer")
    s = backend.store
    s.commit({"a": state("a", 10, home=0), "b": state("b", 20, home=2)}, [])
    s.assign_partitions([2])
    assert not s.owns("a") and s.owns("b")
    assert s.due(100, 10) == ["b"]  # only owned shards fire
    assert s.next_due() == 20
    s.revoke_partitions()
    assert s.due(100, 10) == [] and s.next_due() is None
    s.assign_partitions([0, 2])
    assert s.due(100, 10) == ["a", "b"]


# -- outbox ----------------------------------------------------------------------------------
def test_without_an_outbox_commits_leave_nothing_pending(backend: Backend) -> None:
    s = backend.store
    assert not s.has_outbox
    s.commit({"a": state("a")}, [change("a", "lifecycle", None, "new")])
    assert s.outbox_pending() == []


def test_the_outbox_keeps_committed_changes_until_marked_published(backend: Backend) -> None:
    s = backend.with_outbox()
    assert s.has_outbox and s.outbox_pending() == []
    first = [change("a", "lifecycle", None, "new"), change("a", "rule:big", None, "in")]
    second = [change("a", "lifecycle", "new", "active", 2)]
    s.commit({"a": state("a", home=0)}, first)
    s.commit({"a": state("a", home=0)}, second)
    s.commit({"a": state("a", home=0)}, [])  # a commit without changes adds nothing
    wire = [c.to_json() for c in first + second]
    assert s.outbox_pending() == [(0, wire)]  # the wire encoding, in commit order
    s.outbox_done({0: 2})
    assert s.outbox_pending() == [(0, wire[2:])]
    s.outbox_done({0: 0})
    assert s.outbox_pending() == [(0, wire[2:])]
    s.outbox_done({0: 1})
    assert s.outbox_pending() == []


# -- topic-partition incarnation records -----------------------------------------------------
def test_partition_records_are_stored_per_topic_partition(backend: Backend) -> None:
    s = backend.store
    assert s.partition_records([]) == {}
    assert s.partition_records(["web:0"]) == {}
    s.save_partition_records({"web:0": {"cluster": "A", "epoch": 0, "high": 41}})
    s.save_partition_records({"buy:1": {"cluster": "A", "epoch": 2, "high": -1}})
    s.save_partition_records({})
    assert s.partition_records(["web:0", "buy:1", "web:9"]) == {
        "web:0": {"cluster": "A", "epoch": 0, "high": 41},
        "buy:1": {"cluster": "A", "epoch": 2, "high": -1},
    }
    s.save_partition_records({"web:0": {"cluster": "B", "epoch": 1, "high": -1}})  # replaced
    assert s.partition_records(["web:0"]) == {"web:0": {"cluster": "B", "epoch": 1, "high": -1}}


# -- alias map (identity merges, CONTRACT §3 "Identity") -------------------------------------
def test_no_id_resolves_to_another_by_default(backend: Backend) -> None:
    assert backend.store.resolve_aliases([]) == {}
    assert backend.store.resolve_aliases(["a", "b"]) == {}


def test_aliases_are_committed_with_the_states_and_resolve_transitively(
    backend: Backend,
) -> None:
    s = backend.store
    s.commit({"b": state("b"), "a": state("a")}, [], aliases={"a": "b"})
    assert s.resolve_aliases(["a", "b", "z"]) == {"a": "b"}
    s.commit({"c": state("c")}, [], aliases={"b": "c"})  # merges chain
    assert s.resolve_aliases(["a", "b", "c"]) == {"a": "c", "b": "c"}
    s.commit({}, [], aliases={"x": "c"})  # a mapping without state (its id had none)
    assert s.resolve_aliases(["x"]) == {"x": "c"}
    if backend.reopen is not None:
        assert backend.reopen().resolve_aliases(["a", "x"]) == {"a": "c", "x": "c"}


def test_erase_drops_the_aliases_from_and_to_the_id(backend: Backend) -> None:
    s = backend.store
    s.commit({}, [], aliases={"a": "b", "b": "c", "x": "c", "c": "d", "other": "d"})
    assert s.resolve_aliases(["a", "other"]) == {"a": "d", "other": "d"}
    s.erase("c", state("c", None), [])
    assert s.resolve_aliases(["a", "b", "x", "c"]) == {}  # every id resolving to c, and c's
    assert s.resolve_aliases(["other"]) == {"other": "d"}  # an alias of another id stays
    s.commit({}, [], aliases={"c": "d"})  # a new merge after the forget is recorded again
    assert s.resolve_aliases(["c"]) == {"c": "d"}


def test_handovers_are_kept_per_survivor_and_merge_until_taken(backend: Backend) -> None:
    s = backend.store
    anon = state("anon", 5, first_seen=1)
    assert s.handovers("user", "m1") == {}
    s.commit({"anon": state("anon")}, [], {"anon": "user"}, {("user", "m1", "anon"): anon.encode()})
    assert s.handovers("user", "m1") == {"anon": anon}
    assert s.handovers("user", "m2") == {} and s.handovers("other", "m1") == {}
    if backend.reopen is not None:  # the survivor's owner is another process
        assert backend.reopen().handovers("user", "m1") == {"anon": anon}
    s.commit({"user": state("user")}, [], handovers={("user", "m1", "anon"): None})
    assert s.handovers("user", "m1") == {}


def test_erase_drops_the_handovers_to_the_id(backend: Backend) -> None:
    s = backend.store
    s.commit({}, [], handovers={("user", "m1", "anon"): state("anon", 5).encode()})
    s.erase("user", state("user", None), [])
    assert s.handovers("user", "m1") == {}


def test_load_resolved_loads_the_ids_the_customers_resolve_to(backend: Backend) -> None:
    s = backend.store
    assert s.load_resolved([]) == ({}, {})
    s.commit({"c": state("c", 7), "z": state("z")}, [], aliases={"a": "b", "b": "c"})
    states, resolved = s.load_resolved(["a", "z", "nobody"])
    assert resolved == {"a": "c"}
    assert states["c"] == state("c", 7) and states["z"] == state("z") and "nobody" not in states
