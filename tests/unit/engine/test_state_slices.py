"""Typed per-dimension state slices in the state encoding, and states written before them."""

from __future__ import annotations

from array import array

import orjson

from segmentflow.config import config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import _V3, CustomerState, _codec, _varint
from segmentflow.segmenters.persona import Persona, PersonaSlice
from segmentflow.segmenters.rfm import Rfm, RfmSlice


def encoded_before_slices(state: CustomerState) -> bytes:
    """``state`` as a v3 encoding written before the slices field existed (18 fields)."""
    body = orjson.dumps(orjson.loads(state.body())[:18])
    ids = array("Q", state.recent)
    return _V3 + _varint(len(ids)) + ids.tobytes() + _codec()[0].compress(body)


def test_state_written_before_slices_decodes_and_migrates() -> None:
    old = CustomerState("c", extra={"rfm_scores": [4, 2, 5], "persona_day": 20_000})
    state = CustomerState.decode(encoded_before_slices(old))
    assert state.slices == {} and state.extra == old.extra
    engine = Engine(config_from_dict({}))
    assert engine.getters["r_score"](state, 0) == 4  # read from the legacy field
    assert engine.dimension(Rfm).slice(state) == RfmSlice([4, 2, 5])
    assert engine.dimension(Persona).slice(state) == PersonaSlice(20_000)
    assert state.extra == {}  # moved into the slices
    again = CustomerState.decode(state.encode())
    assert again.slices == {"rfm": RfmSlice([4, 2, 5]), "persona": PersonaSlice(20_000)}
    assert engine.getters["m_score"](again, 0) == 5


def test_slices_are_compact_and_versioned() -> None:
    state = CustomerState("c", slices={"rfm": RfmSlice([1, 2, 3]), "persona": PersonaSlice(7)})
    assert orjson.loads(state.body())[18] == {"rfm": [1, 1, 2, 3], "persona": [1, 7]}
    assert CustomerState.decode(state.encode()) == state


def test_slice_of_an_unloaded_dimension_is_kept_unchanged() -> None:
    state = CustomerState("c", slices={"someone_elses": [3, "x", 1.5]})
    again = CustomerState.decode(state.encode())
    assert again.slices == {"someone_elses": [3, "x", 1.5]}
    assert orjson.loads(again.body())[18] == {"someone_elses": [3, "x", 1.5]}
