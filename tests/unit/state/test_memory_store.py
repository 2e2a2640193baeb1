"""MemoryStore and population deltas (the store side of CONTRACT §5 `segments`)."""

from __future__ import annotations

import pytest

from segmentflow.engine.state import CustomerState, event_id_hash
from segmentflow.schemas.changes import Change
from segmentflow.state.base import population_deltas
from segmentflow.state.memory import MemoryStore


def change(dim: str, previous: str | None, current: str | None, cid: str = "c") -> Change:
    return Change(cid, dim, previous, current, 1, 0, None)


@pytest.mark.parametrize(
    ("previous", "current", "delta"),
    [("out", "in", 1), ("in", "out", -1), ("in", None, -1), ("out", None, 0)],
)
def test_rule_populations_count_members_only(
    previous: str, current: str | None, delta: int
) -> None:
    got = population_deltas([change("rule:x", previous, current)])
    assert got.get(("rule:x", "in"), 0) == delta
    assert ("rule:x", "out") not in got


def test_value_populations_move_between_values() -> None:
    got = population_deltas(
        [
            change("lifecycle", None, "new", "a"),
            change("lifecycle", "new", "active", "a"),
            change("lifecycle", None, "prospect", "b"),
            change("lifecycle", "prospect", None, "b"),
        ]
    )
    assert {k: v for k, v in got.items() if v} == {("lifecycle", "active"): 1}


def state(cid: str, due: int | None) -> CustomerState:
    return CustomerState(
        cid, clock=0, next_due=due, values={"lifecycle": "new"}, seqs={"lifecycle": 1}
    )


@pytest.mark.parametrize("copy", [False, True])
def test_due_is_ordered_by_moment_then_id_and_limited(copy: bool) -> None:
    store = MemoryStore(copy=copy)
    store.commit(
        {"b": state("b", 30), "a": state("a", 30), "c": state("c", 10), "d": state("d", None)}, []
    )
    assert store.due(5, 10) == []
    assert store.due(30, 10) == ["c", "a", "b"]
    assert store.due(30, 2) == ["c", "a"]
    assert store.due(30, 10) == ["c", "a", "b"]  # reading does not consume
    assert store.next_due() == 10
    store.commit({"c": state("c", 50)}, [])  # moved later
    assert store.due(30, 10) == ["a", "b"]
    store.commit({"a": state("a", None)}, [])  # nothing due any more
    assert store.due(100, 10) == ["b", "c"]


def test_copy_mode_stores_snapshots() -> None:
    store = MemoryStore(copy=True)
    s = state("a", 5)
    store.commit({"a": s}, [])
    s.traits["x"] = 1  # not committed
    loaded = store.get("a")
    assert loaded is not None and loaded.traits == {} and loaded is not s


def test_delete_returns_state_and_clears_due() -> None:
    store = MemoryStore()
    store.commit({"a": state("a", 5)}, [change("lifecycle", None, "new", "a")])
    removed = store.delete("a")
    assert removed is not None and removed.customer_id == "a"
    assert store.get("a") is None and store.due(10, 10) == [] and store.customer_count() == 0
    assert store.delete("a") is None


def test_state_codec_round_trip() -> None:
    s = CustomerState(
        "c-ü",
        first_seen=1,
        last_seen=2,
        first_order=3,
        last_order=4,
        reactivated_at=None,
        clock=5,
        next_due=6,
        flags=5,
        totals=[1, 2.5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        days={19000: [1, 2.5, 0, 0, 0, 0, 0, 0, 0]},
        traits={"vip": True, "age": 41, "score": 0.5, "country": "DE"},
        values={"lifecycle": "new", "rule:x": "in"},
        seqs={"lifecycle": 1, "rule:x": 1},
        recent={event_id_hash("e1"): 1, event_id_hash("e2"): 2},
    )
    assert CustomerState.decode(s.encode()) == s
