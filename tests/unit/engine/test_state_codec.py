"""The compact per-customer state encoding: round trips, reads v2 and v1, stays small."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentflow.engine.state import TOTALS, WINDOWED, CustomerState, event_id_hash

_ints = st.integers(min_value=0, max_value=2**62)
_opt = st.none() | _ints
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@st.composite
def states(draw: st.DrawFn) -> CustomerState:
    return CustomerState(
        customer_id=draw(st.text(min_size=1, max_size=30)),
        first_seen=draw(_opt),
        last_seen=draw(_opt),
        first_order=draw(_opt),
        last_order=draw(_opt),
        reactivated_at=draw(_opt),
        clock=draw(_opt),
        next_due=draw(_opt),
        flags=draw(st.integers(0, 7)),
        totals=draw(st.lists(st.integers(0, 10**6), min_size=len(TOTALS), max_size=len(TOTALS))),
        days=draw(
            st.dictionaries(
                st.integers(0, 30_000),
                st.lists(st.integers(0, 1000), min_size=len(WINDOWED), max_size=len(WINDOWED)),
                max_size=5,
            )
        ),
        traits=draw(st.dictionaries(st.text(max_size=10), _json, max_size=4)),
        values=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)),
        seqs=draw(st.dictionaries(st.text(max_size=10), st.integers(0, 10**6), max_size=3)),
        recent=draw(
            st.dictionaries(st.integers(0, 2**64 - 1), st.integers(0, 2**62), max_size=300)
        ),
        extra=draw(st.dictionaries(st.text(max_size=10), _json, max_size=3)),
        offsets=draw(st.dictionaries(st.text(max_size=10), st.integers(0, 2**40), max_size=3)),
        home=draw(st.none() | st.integers(0, 10_000)),
    )


@given(states())
def test_round_trip(state: CustomerState) -> None:
    assert CustomerState.decode(state.encode()) == state
    assert state.encode()[:1] == b"\x03"


def _encode_v2(state: CustomerState) -> bytes:
    """The v2 layout (before event times and home), as the previous release wrote it."""
    from array import array

    from segmentflow.engine.state import _codec

    fields = orjson.loads(state.body())[:16]
    ids = array("Q", state.recent)
    header = b"\x02" + len(ids).to_bytes(2, "little")
    return header + ids.tobytes() + _codec()[0].compress(orjson.dumps(fields))


def test_reads_v2_keeping_its_ids_a_horizon_from_the_latest_event() -> None:
    ids = {event_id_hash("e-1"): 5, event_id_hash("e-2"): 9}
    old = CustomerState("c-2", first_seen=5, last_seen=9, recent=ids, offsets={"t:1": 4})
    state = CustomerState.decode(_encode_v2(old))
    assert state.recent == dict.fromkeys(ids, 9)  # no times in v2: the latest event's
    assert state.offsets == {"t:1": 4} and state.home is None and state.last_seen == 9
    assert CustomerState.decode(state.encode()) == state


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x03", b"\x03\x05abc", b"\x03\x00not zstd", b"\x02\x01\x00", b"\xff\xfe"],
)
def test_garbage_raises_an_error_not_a_crash(raw: bytes) -> None:
    with pytest.raises(Exception) as caught:
        CustomerState.decode(raw)
    assert not isinstance(caught.value, SystemExit | KeyboardInterrupt | MemoryError)


def test_reads_v1_and_hashes_its_event_ids() -> None:
    v1 = orjson.dumps(
        [1, "c-1", 1, 2, None, None, None, 2, 5, 0, [0] * len(TOTALS),
         [[3, *[1] * len(WINDOWED)]], {"plan": "pro"}, {"lifecycle": "prospect"},
         {"lifecycle": 1}, ["e-1", "e-2"], {}, {"t:0": 9}]
    )  # fmt: skip
    state = CustomerState.decode(v1)
    assert state.recent_ids == [event_id_hash("e-1"), event_id_hash("e-2")]
    assert set(state.recent.values()) == {2}  # v1 has no event times: the latest event's
    assert state.days == {3: [1] * len(WINDOWED)}
    assert state.offsets == {"t:0": 9}
    assert CustomerState.decode(state.encode()) == state


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 7"):
        CustomerState.decode(b"[7]")


def test_event_id_hash_is_stable_and_ids_cost_eight_bytes() -> None:
    # a fixed value: the hash must be the same in every process and release (stored in Redis)
    digest = hashlib.blake2b(b"e-81f3", digest_size=8).digest()
    assert event_id_hash("e-81f3") == int.from_bytes(digest, "little") == 3034847209500578998
    ids = {event_id_hash(f"{i:036d}"): 1_700_000_000_000_000 for i in range(64)}
    long_ids = CustomerState("c", last_seen=1_700_000_000_000_000, recent=ids)
    assert len(long_ids.encode()) < 64 * 8 + 100  # 36-byte UUID-like ids, 8 bytes each


def test_dictionary_compresses_real_states() -> None:
    """The committed zstd dictionary (scripts/train_state_dict.py) is used and fits the layout:
    state bodies of a synthetic replay (another seed than the training one) shrink > 2.5x."""
    from datetime import UTC, datetime

    from segmentflow.config import load_config
    from segmentflow.schemas.decode import DEFAULT_LIMITS
    from segmentflow.service.replay import events_from_dicts, run
    from segmentflow.state.memory import MemoryStore
    from segmentflow.synthetic import generate

    events = [m.event for m in generate(150, 5, datetime(2026, 3, 1, tzinfo=UTC), 60) if m.event]
    store = MemoryStore()
    run(events_from_dicts(events, DEFAULT_LIMITS), load_config(None), None, lambda c: None, store)
    states = store.load_many({e["customer_id"]: None for e in events}).values()
    body = sum(len(s.body()) for s in states)
    packed = sum(len(s.encode()) - 3 - 8 * len(s.recent) for s in states)
    assert packed * 2.5 < body, (packed, body)  # measured: ~3.5x
    assert all(CustomerState.decode(s.encode()) == s for s in states)
