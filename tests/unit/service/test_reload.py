"""What a reload (SIGHUP, CONTRACT §6) carries from the running engine to the new one: the RFM
rank index, the persona model, unchanged dimensions' populations, rule error counts, and the
shared clv refit re-attached to the new clv dimension (or dropped with it)."""

from __future__ import annotations

from typing import Any

from segmentflow.config import config_from_dict
from segmentflow.segmenters.clv import Clv
from segmentflow.service.clv_share import SharedClvRefit
from segmentflow.service.processor import Processor
from segmentflow.service.reload import engine_for, switch
from segmentflow.state.clv_population import MemoryClvPopulation
from segmentflow.state.memory import MemoryStore

CLV: dict[str, Any] = {"persona": {"enabled": False}, "dimensions": [{"kind": "clv"}]}


def _clv(processor: Processor) -> Clv:
    dim = processor.engine.by_kind("clv")
    assert isinstance(dim, Clv)
    return dim


def test_unchanged_dimensions_keep_their_population_and_counters_go_on() -> None:
    old = Processor(config_from_dict(CLV), MemoryStore())
    _clv(old).population["c1"] = (10, 20, 2, 55.0)
    old.engine.rule_errors["gone"] = 3
    rules = [{"name": "big", "when": "revenue >= 100.0"}]
    engine = engine_for(config_from_dict(CLV | {"rules": rules}), old.engine)
    assert engine.ranks is old.engine.ranks
    clv = engine.by_kind("clv")
    assert isinstance(clv, Clv) and clv is not _clv(old)
    assert clv.population == {"c1": (10, 20, 2, 55.0)}
    assert engine.rule_errors["gone"] == 3
    changed = CLV | {"dimensions": [{"kind": "clv", "high_value_top": 0.1}]}
    fresh = engine_for(config_from_dict(changed), old.engine).by_kind("clv")
    assert isinstance(fresh, Clv) and fresh.population == {}  # as after a restart


def test_the_shared_clv_refit_follows_the_new_dimension_or_goes_with_it() -> None:
    processor = Processor(config_from_dict(CLV), MemoryStore())
    population = MemoryClvPopulation()
    share = SharedClvRefit(_clv(processor), population, processor.store, 1)
    share.attach()
    processor.shares["clv"] = share
    rules = [{"name": "big", "when": "revenue >= 100.0"}]
    config = config_from_dict(CLV | {"rules": rules})
    switch(processor, config, engine_for(config, processor.engine))
    assert processor.shares["clv"] is share and share.dim is _clv(processor)
    assert population.dim is _clv(processor) and not share.dim.local_index
    config = config_from_dict({"persona": {"enabled": False}})
    switch(processor, config, engine_for(config, processor.engine))
    assert processor.shares == {} and processor.config is config
