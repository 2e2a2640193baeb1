"""The shared clv population (issue 16): packed rows, the in-memory store, and the refit
protocol of service/clv_share.py (one record per moment, barrier, lock expiry, restart) on it;
the shared path gives what the in-process refit of ``replay`` gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Limits
from segmentflow.segmenters.checks import builtin_case, replay, synthetic_events
from segmentflow.segmenters.checks import digest as changes_digest
from segmentflow.segmenters.clv import Clv, ClvFit, ClvParams, ClvSlice
from segmentflow.segmenters.clv_model import DAY_US, WEEK_US
from segmentflow.service.clv_share import SharedClvRefit
from segmentflow.service.processor import Item, Processor
from segmentflow.service.replay import events_from_dicts
from segmentflow.state.clv_population import MemoryClvPopulation, decode_rows, row_of
from segmentflow.state.memory import MemoryStore

AT = 70 * WEEK_US


class SharingStore(MemoryStore):
    """A memory state store whose commits write the clv population, as the Redis one does."""

    def __init__(self, population: MemoryClvPopulation) -> None:
        super().__init__()
        self.population = population

    def commit(
        self,
        states: Mapping[str, CustomerState],
        changes: Sequence[Change],
        *more: Any,
        **named: Any,
    ) -> None:
        super().commit(states, changes, *more, **named)
        self.population.commit(states)


class FakeTime:
    """A wall clock that moves only when slept."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def state_with(cid: str, first: int, last: int, x: int, spend: float) -> CustomerState:
    s = CustomerState(cid)
    s.slices["clv"] = ClvSlice(first, last, x, 10.0, spend)
    s.values["clv"] = "steady"
    s.home = 0
    return s


def filled(n: int = 40) -> tuple[MemoryClvPopulation, Clv]:
    pop = MemoryClvPopulation()
    dim = Clv(ClvParams(refit_min_customers=10))
    pop.attach(dim)
    rng = np.random.default_rng(4)
    states = {}
    for i in range(n):
        first = int(rng.integers(0, 300))
        x = int(rng.integers(0, 6))
        last = first + (int(rng.integers(1, 150)) if x else 0)
        states[f"c{i}"] = state_with(f"c{i}", first, last, x, 25.0 * x)
        assert dim.changed is not None
        dim.changed.add(f"c{i}")
    pop.commit(states)
    return pop, dim


def test_rows_pack_the_summary_value_and_home() -> None:
    s = state_with("a", 3, 17, 2, 40.5)
    raw = CustomerState("b")
    raw.slices["clv"] = [1, 5, 9, 1, 2.0, 3.0]  # a slice not decoded (dimension not loaded)
    assert row_of(CustomerState("none")) is None
    rows = decode_rows([row_of(s) or b"", b"short", row_of(raw) or b""])
    assert rows.tolist() == [(3, 17, 2, 40.5, 4, 0), (5, 9, 1, 3.0, 0, -1)]


def test_memory_store_counts_changed_summaries_and_drops_merged_away_rows() -> None:
    pop, dim = filled(12)
    assert pop.version == 12 and len(pop.read().rows) == 12
    pop.commit({"c0": state_with("c0", 1, 1, 0, 0.0)})  # no order since: version unchanged
    assert pop.version == 12
    dim.forget("c1")  # e.g. merged away: its tombstone is committed without a summary
    pop.commit({"c1": CustomerState("c1")})
    read = pop.read()
    assert pop.version == 13 and b"c1" not in read.ids and read.corrupt == 0


def test_the_first_record_of_a_moment_wins_and_the_latest_is_the_restart_point() -> None:
    pop = MemoryClvPopulation()
    first = ClvFit(AT, 5, 1, {"r": 0.3}, 50.0, 100)
    assert pop.publish(first) == first
    assert pop.publish(ClvFit(AT, 6, 1, {"r": 0.9}, 1.0, 100)) == first
    later = ClvFit(AT + WEEK_US, 7, 2, {"r": 0.4}, 45.0, 120)
    pop.publish(later)
    assert pop.fit_at(AT) == first and pop.latest_fit() == later


def test_a_worker_waits_for_the_other_shards_then_fits_alone_after_the_limit() -> None:
    pop, dim = filled()
    fake = FakeTime()
    store = MemoryStore()
    store.assign_partitions([0])  # shard 0 of 2
    share = SharedClvRefit(dim, pop, store, 2, 5.0, 60.0, 0.5, fake.clock, fake.sleep)
    share.attach()
    fit, rows = share.record(AT)  # shard 1 never reports: 5 s of waiting, then the fit
    assert rows is not None and fake.now == pytest.approx(5.0) and fit.refits == 1
    assert pop.fit_at(AT) == fit and share.fitted == 1


def test_a_worker_adopts_the_record_another_published_and_moves_its_customers() -> None:
    pop, fitter = filled()
    SharedClvRefit(fitter, pop, MemoryStore(), 1).prepare_sweep(AT)
    other = Clv(ClvParams(refit_min_customers=10))
    share = SharedClvRefit(other, pop, MemoryStore(), 1)
    share.attach()  # restart point: the record of AT
    assert other.cfg == fitter.cfg and other.high_value_min == fitter.high_value_min
    nxt = Clv(ClvParams(refit_min_customers=10))
    share2 = SharedClvRefit(nxt, pop, MemoryStore(), 1)
    share2.prepare_sweep(AT)  # not attached: adopts the published record for AT
    assert nxt.cfg == fitter.cfg and share2.fitted == 0
    assert nxt.moved(None) == fitter.moved(None) and nxt.moved(None)


def test_a_dead_lock_holder_delays_the_refit_until_its_lock_expires() -> None:
    pop, dim = filled()
    fake = FakeTime()
    pop.clock = fake.clock
    assert pop.try_lock(AT, 30.0) is not None  # taken by a worker that then died
    share = SharedClvRefit(dim, pop, MemoryStore(), 1, 5.0, 60.0, 1.0, fake.clock, fake.sleep)
    fit, rows = share.record(AT)
    assert rows is not None and fake.now == pytest.approx(30.0) and fit.refits == 1


def test_no_change_since_the_last_record_keeps_the_parameters() -> None:
    pop, dim = filled()
    share = SharedClvRefit(dim, pop, MemoryStore(), 1)
    share.prepare_sweep(AT)
    cfg = dim.cfg
    share.prepare_sweep(AT + WEEK_US)
    kept = pop.fit_at(AT + WEEK_US)
    assert kept is not None and kept.refits == 1 and dim.cfg == cfg and dim.moved(None) == []
    assert share.population_version() != share.population_version()  # never stepped over


def test_the_shared_refit_gives_what_replay_gives() -> None:
    """One processor over the shared path (rows from the store, a record per moment) emits
    exactly replay's changes (the in-process index)."""
    case = builtin_case("clv", synthetic_events(60, 200))
    expected, reference = replay(case)
    config = case.segment_config()
    pop = MemoryClvPopulation()
    processor = Processor(config, SharingStore(pop), check_key=False)
    dim = processor.engine.by_kind("clv")
    assert isinstance(dim, Clv)
    share = SharedClvRefit(dim, pop, processor.store, 1)
    share.attach()
    processor.shares["clv"] = share
    events = list(events_from_dicts((dict(e) for e in case.events), Limits.of(config)))
    got: list[Change] = []
    for i in range(0, len(events), 1000):
        got.extend(processor.apply([Item("replay", e) for e in events[i : i + 1000]]))
    got.extend(processor.advance(case.until) + processor.sweep_rfm(case.until))
    ref = reference.engine.by_kind("clv")
    assert isinstance(ref, Clv) and dim.refits == ref.refits >= 10
    assert dim.cfg == ref.cfg and dim.high_value_min == ref.high_value_min
    assert not dim.population  # the index lives in the store, not in the process
    assert changes_digest(got) == changes_digest(expected)
    assert len(pop.fits) == (case.until // WEEK_US) - min(pop.fits) // WEEK_US + 1
    assert all(at % (7 * DAY_US) == 0 for at in pop.fits)


def test_a_reloaded_engines_clv_is_shared_with_the_parameters_in_force() -> None:
    pop, _ = filled()
    config = builtin_case("clv").segment_config()
    processor = Processor(config, SharingStore(pop), check_key=False)

    def current() -> Clv:
        found = processor.engine.by_kind("clv")
        assert isinstance(found, Clv)
        return found

    share = SharedClvRefit(current, pop, processor.store, 1)
    share.attach()
    share.prepare_sweep(AT)
    old = current()
    assert old.refits == 1 and old.changed is not None
    old.changed.add("pending")
    processor.engine = Engine(config)  # what a config reload does
    new = current()
    assert new is not old and new.local_index
    share.population_version()  # the next tick
    assert not new.local_index and pop.dim is new and new.changed == {"pending"}
    assert new.cfg == old.cfg and new.refits == 1 and new.high_value_min == old.high_value_min
