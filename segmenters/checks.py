"""The shared check suite every dimension passes (like ``river.checks``), built-in or custom.

:func:`checks_for` yields :class:`Check` s for one dimension kind and a :class:`Case` (a config
that enables it and events that make it emit); each check raises ``AssertionError`` saying what
broke. Run them from a test::

    @pytest.mark.parametrize("check", list(checks_for(case)), ids=str)
    def test_dimension(check: Check, tmp_path: Path) -> None:
        check(tmp_path)

The checks: the dimension emits only its declared names (and at least one change); output is
the same in other processes and under other ``PYTHONHASHSEED`` s; repeated events change
nothing and late ones keep change times and sequences in order; state slices survive
encode/decode; a restart from encoded state equals an uninterrupted run; ``replay`` equals the
worker's path (a :class:`~segmentflow.service.processor.Processor` fed Kafka records in
batches, advanced to each batch's watermark); time-driven changes fire at exactly their due
moment, not a microsecond early; an identity merge ends the merged-away id's values, keeps the
merged state decodable and is idempotent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from segmentflow.config import SegmentConfig, config_from_dict
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, Limits
from segmentflow.schemas.events import topic_kind_of
from segmentflow.schemas.timefmt import parse_rfc3339
from segmentflow.segmenters.dimension import Dimension, Moment
from segmentflow.service.processor import InputRecord, Item, Processor, refit_meta
from segmentflow.service.replay import events_from_dicts, run
from segmentflow.state.memory import MemoryStore

DAY_US = 86_400_000_000
START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """What the checks run: a config mapping (CONTRACT §6) enabling the dimension ``kind``,
    events (§2 dicts, sorted by timestamp), the replay horizon and the folders a subprocess
    needs on ``PYTHONPATH`` to import a custom dimension."""

    kind: str
    config: Mapping[str, Any]
    events: Sequence[Mapping[str, Any]]
    until: int
    pythonpath: tuple[str, ...] = ()

    def segment_config(self) -> SegmentConfig:
        return config_from_dict(dict(self.config), f"case {self.kind}")


@dataclass(frozen=True)
class Check:
    """One named check of a case: ``check(tmp_path)`` raises ``AssertionError`` on failure."""

    name: str
    case: Case
    run: Callable[[Case, Path], None] = field(repr=False)

    def __call__(self, tmp_path: Path) -> None:
        self.run(self.case, tmp_path)

    def __str__(self) -> str:
        return f"{self.case.kind}-{self.name}"


def synthetic_events(customers: int = 30, days: int = 150, seed: int = 5) -> list[dict[str, Any]]:
    """A small deterministic event stream (``segmentflow.synthetic``), valid and sorted."""
    from segmentflow.synthetic import generate

    messages = generate(customers, seed, START, days)  # sorted by event time
    return [m.event for m in messages if m.event is not None and not m.duplicate]


def builtin_case(kind: str, events: Sequence[Mapping[str, Any]] | None = None) -> Case:
    """A case for a built-in dimension (persona with a small model so it warms up; clv refits
    from 10 customers on, so that the small population is refitted)."""
    rows = list(events) if events is not None else synthetic_events()
    config: dict[str, Any] = {"persona": {"enabled": False}}
    if kind == "clv":
        config["dimensions"] = [{"kind": "clv", "refit_min_customers": 10}]
    elif kind == "interest":
        config["dimensions"] = [{"kind": "interest"}]
    elif kind == "persona":
        config = {"persona": {"clusters": 2, "snapshot_every": 40}}
    elif kind == "rules":
        config["rules"] = [
            {"name": "buyer", "when": "orders >= 1"},
            {"name": "idle", "when": "days_since_last_seen >= 3"},
            {"name": "lapsing", "when": 'lifecycle == "at_risk" || r_score <= 2'},
        ]
    return Case(kind, config, rows, _until(rows))


def _until(events: Sequence[Mapping[str, Any]]) -> int:
    return parse_rfc3339(str(events[-1]["timestamp"])) + 200 * DAY_US


# -- running a case ---------------------------------------------------------------------------


def _decoded(case: Case, config: SegmentConfig) -> list[Event]:
    return list(events_from_dicts((dict(e) for e in case.events), Limits.of(config)))


def replay(case: Case, events: Sequence[Event] | None = None) -> tuple[list[Change], Processor]:
    """Replay the case in process (as ``segmentflow replay``): changes and the processor."""
    config = case.segment_config()
    changes: list[Change] = []
    processor, _ = run(
        events if events is not None else _decoded(case, config),
        config,
        case.until,
        changes.append,
        MemoryStore(),
    )
    return changes, processor


def digest(changes: Sequence[Change]) -> str:
    """SHA-256 of the changes' wire JSON, in order."""
    sha = hashlib.sha256()
    for change in changes:
        sha.update(change.to_json())
        sha.update(b"\n")
    return sha.hexdigest()


def _dimension(processor: Processor, kind: str) -> Dimension:
    return processor.engine.by_kind(kind)


def _own(changes: Sequence[Change], dim: Dimension) -> list[Change]:
    names = set(dim.names())
    return [c for c in changes if c.dimension in names]


def _key(change: Change) -> tuple[str, str, int]:
    return change.customer_id, change.dimension, change.sequence


# -- the checks -------------------------------------------------------------------------------


def check_emits_declared_names(case: Case, tmp_path: Path) -> None:
    """It emits at least one change, and every name it emits is one it declares."""
    changes, processor = replay(case)
    dim = _dimension(processor, case.kind)
    assert dim.names(), f"{case.kind}: names() is empty in this case (enable the dimension)"
    assert _own(changes, dim), f"{case.kind}: no change in this case (the checks would be void)"
    declared = set(processor.engine.dimensions)
    stray = sorted({c.dimension for c in changes} - declared)
    assert not stray, f"changes in undeclared dimensions {stray}"


def check_deterministic_across_processes(case: Case, tmp_path: Path) -> None:
    """Two other processes with other hash seeds give byte-identical output."""
    changes, _ = replay(case)
    expected = digest(changes)
    case_file = tmp_path / "case.json"
    case_file.write_bytes(
        orjson.dumps(
            {
                "kind": case.kind,
                "config": case.config,
                "events": list(case.events),
                "until": case.until,
            }
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*case.pythonpath, env.get("PYTHONPATH", "")])
    for seed in ("0", "4242"):
        env["PYTHONHASHSEED"] = seed
        out = subprocess.run(
            [sys.executable, "-m", "segmentflow.segmenters.checks", str(case_file)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, f"subprocess failed:\n{out.stderr[-3000:]}"
        assert out.stdout.strip() == expected, f"PYTHONHASHSEED={seed}: output differs"


def check_duplicates_change_nothing(case: Case, tmp_path: Path) -> None:
    """Every third event delivered twice: the same output as once."""
    expected, _ = replay(case)
    config = case.segment_config()
    events = _decoded(case, config)
    doubled: list[Event] = []
    for i, event in enumerate(events):
        doubled.append(event)
        if i % 3 == 0:
            doubled.append(event)
    got, processor = replay(case, doubled)
    assert digest(got) == digest(expected), "a repeated event changed the output"
    assert sum(processor.counters.duplicates.values()) == len(doubled) - len(events)


def check_late_events_keep_order(case: Case, tmp_path: Path) -> None:
    """Events delivered out of order (every fifth moved five places on): per customer, change
    times never go backwards, and per dimension sequences count 1, 2, ... with each
    ``previous`` the prior ``current``."""
    config = case.segment_config()
    events = _decoded(case, config)
    for i in range(0, len(events) - 5, 5):
        events.insert(i + 5, events.pop(i))
    processor = Processor(config, MemoryStore(), check_key=False)
    changes = processor.apply([Item("late", e) for e in events])
    changes += processor.advance(case.until)
    assert sum(processor.counters.late.values()), "no event was late: the check is void"
    assert _own(changes, _dimension(processor, case.kind)), f"{case.kind}: no change"
    _assert_ordered(changes)


def _assert_ordered(changes: Sequence[Change]) -> None:
    last_at: dict[str, int] = {}
    last: dict[tuple[str, str], Change] = {}
    for c in changes:  # in emission order
        assert c.at >= last_at.get(c.customer_id, c.at), f"{c.customer_id}: time went back"
        last_at[c.customer_id] = c.at
    for c in sorted(changes, key=_key):
        before = last.get((c.customer_id, c.dimension))
        first = "out" if c.dimension.startswith("rule:") else None  # a rule starts out
        sequence, previous = (0, first) if before is None else (before.sequence, before.current)
        where = f"{c.customer_id} {c.dimension} #{c.sequence}"
        assert c.sequence == sequence + 1, f"{where}: sequence after {sequence}"
        assert c.previous == previous, f"{where}: previous {c.previous!r} != {previous!r}"
        last[(c.customer_id, c.dimension)] = c


def _states(processor: Processor, case: Case) -> list[CustomerState]:
    ids = {str(e["customer_id"]): None for e in case.events}
    return list(processor.store.load_many(ids).values())


def check_slice_round_trip(case: Case, tmp_path: Path) -> None:
    """Each customer state, with the dimension's slice, decodes to what was encoded."""
    _, processor = replay(case)
    dim = _dimension(processor, case.kind)
    slices = 0
    for state in _states(processor, case):
        assert CustomerState.decode(state.encode()) == state, f"{state.customer_id}: round trip"
        held = state.slices.get(dim.kind)
        if held is not None and dim.slice_type is not None:
            assert isinstance(held, dim.slice_type), f"{type(held)} is not {dim.slice_type}"
            dumped = orjson.loads(orjson.dumps(held.dump()))
            assert type(held).load(held.version, dumped) == held, "slice load(dump()) differs"
            slices += 1
    if dim.slice_type is not None:
        assert slices, f"{case.kind}: declares a slice but no customer has one"


def check_restart_equals_uninterrupted(case: Case, tmp_path: Path) -> None:
    """Stop half way, start a new processor from the encoded states (and each dimension's
    :meth:`~Dimension.dump_population`), go on: the output equals one uninterrupted run."""
    config = case.segment_config()
    events = _decoded(case, config)
    expected, _ = replay(case, events)
    half = len(events) // 2
    first, store = Processor(config, MemoryStore(), check_key=False), MemoryStore(copy=True)
    changes = first.apply([Item("replay", e) for e in events[:half]])
    states = {s.customer_id: CustomerState.decode(s.encode()) for s in _states(first, case)}
    store.commit(states, [])
    for key in ("rfm_swept", *(refit_meta(kind) for kind in first.next_refit)):
        swept = first.store.get_meta(key)
        if swept is not None:
            store.set_meta(key, swept)
    second = Processor(config, store, check_key=False)
    second.next_sweep = first.next_sweep
    second.next_refit = dict(first.next_refit)
    for old, new in zip(first.engine.registry, second.engine.registry, strict=True):
        data = old.dump_population()
        if data is not None:
            new.load_population(data)
    changes += second.apply([Item("replay", e) for e in events[half:]])
    changes += second.advance(case.until) + second.sweep_rfm(case.until)
    assert digest(changes) == digest(expected), "the restarted run differs"


def check_replay_equals_processor_batches(case: Case, tmp_path: Path) -> None:
    """Kafka records in batches of 17 through ``Processor.process``, each batch followed by
    ``advance`` to its watermark: per customer and dimension, the changes of ``replay``."""
    expected, _ = replay(case)
    config = case.segment_config()
    last = _until(case.events)
    processor = Processor(config, MemoryStore(), check_key=True, wall_clock=lambda: last)
    records = []
    for offset, e in enumerate(case.events):
        kind = topic_kind_of(str(e["type"])) or "website"
        key = str(e["customer_id"]).encode()
        records.append(InputRecord(f"{kind}-events", kind, 0, offset, key, orjson.dumps(e)))
    changes: list[Change] = []
    for start in range(0, len(records), 17):
        result = processor.process(records[start : start + 17])
        assert not result.deadletters, result.deadletters[:1]
        changes += result.changes
        stamps = [ts for ts in result.timestamps if ts is not None]
        changes += processor.advance(max(stamps))
    changes += processor.advance(case.until) + processor.sweep_rfm(case.until)
    got = sorted((c.to_cloudevent() for c in changes), key=_wire_key)
    want = sorted((c.to_cloudevent() for c in expected), key=_wire_key)
    assert got == want, "processing in batches differs from replay"


def _wire_key(change: dict[str, Any]) -> str:
    return str(change["id"])


def check_due_at_exact_moment(case: Case, tmp_path: Path) -> None:
    """Replayed half way (so customers have dues pending), for every customer: nothing fires a
    microsecond before ``next_due``, everything at it is stamped with it; for a time-driven
    dimension, its value a microsecond before its own next due moment is still the one it
    holds (the moment is not late). Over the whole case, time-driven changes occur."""
    changes, _ = replay(case)
    config = case.segment_config()
    events = _decoded(case, config)[: len(case.events) // 2]
    half = Case(case.kind, case.config, case.events[: len(events)], events[-1].ts)
    _, processor = replay(half, events)
    engine: Engine = processor.engine
    dim = _dimension(processor, case.kind)
    timed = type(dim).next_due is not Dimension.next_due
    probed = 0
    for state in _states(processor, half):
        due = state.next_due
        if due is None:
            continue
        early = CustomerState.decode(state.encode())
        assert engine.advance(early, due - 1) == [], f"{state.customer_id}: fired early"
        assert early.next_due == due
        on_time = engine.advance(early, due)
        assert all(c.at == due for c in on_time), f"{state.customer_id}: stamped off {due}"
        own = dim.next_due(state, state.clock) if timed and state.clock is not None else None
        if own is not None:
            probe = CustomerState.decode(state.encode())
            moved = dim.evaluate(probe, Moment(own - 1), engine.emit)
            assert not moved, (
                f"{state.customer_id}: {moved[0].dimension} is {moved[0].current!r} already "
                f"at its next due moment - 1 µs (next_due is late; it must be exact)"
            )
            probed += 1
    if timed:
        assert probed, f"{case.kind}: time-driven but no customer had a due moment half way"
        driven = [c for c in _own(changes, dim) if c.event_id is None]
        assert driven, f"{case.kind}: time-driven but no time-driven change occurred"


def check_merge_leaves_and_repeats_harmlessly(case: Case, tmp_path: Path) -> None:
    """An identity merge half way (``alias``: the busiest customer merged into the second
    busiest): the merged-away id ends each of the dimension's values with ``null`` and emits
    nothing after; the merged state (with its :meth:`~Dimension.merge_slice`) round-trips
    encode/decode; a repeated alias later changes exactly what an alias naming nobody does."""
    counts: dict[str, int] = {}
    for e in case.events:
        counts[str(e["customer_id"])] = counts.get(str(e["customer_id"]), 0) + 1
    busiest = sorted(counts, key=lambda c: (-counts[c], c))[:2]
    if len(busiest) < 2:
        return
    gone, survivor = busiest
    rows = [dict(e) for e in case.events]
    half, late = rows[len(rows) // 2], rows[(3 * len(rows)) // 4]

    def alias(eid: str, at: Mapping[str, Any], previous: str) -> dict[str, Any]:
        return {
            "event_id": eid,
            "customer_id": survivor,
            "type": "alias",
            "timestamp": at["timestamp"],
            "properties": {"previous_id": previous},
        }

    def run_with(repeat_previous: str) -> tuple[list[Change], Processor]:
        events = list(rows)
        events.insert(events.index(half) + 1, alias("check-merge-1", half, gone))
        events.insert(events.index(late) + 1, alias("check-merge-2", late, repeat_previous))
        return replay(Case(case.kind, case.config, events, case.until, case.pythonpath))

    changes, processor = run_with(gone)
    dim = _dimension(processor, case.kind)
    names = set(dim.names())
    merged_at = next((i for i, c in enumerate(changes) if c.event_id == "check-merge-1"), None)
    if merged_at is not None:
        after = [c for c in changes[merged_at:] if c.customer_id == gone and c.dimension in names]
        assert all(c.current is None for c in after), f"{gone}: a value after its merge"
        assert all(c.reason == {"merged_into": survivor} for c in after), "reason of a final null"
        assert len({c.dimension for c in after}) == len(after), "two final changes per dimension"
    state = processor.store.get(survivor)
    assert state is not None
    assert CustomerState.decode(state.encode()) == state, "the merged state does not round-trip"
    held = state.slices.get(dim.kind)
    if held is not None and dim.slice_type is not None:
        assert isinstance(held, dim.slice_type), f"merged slice {type(held)}"
    repeated, _ = run_with(survivor)  # the second alias names the survivor itself: no merge
    assert digest(changes) == digest(repeated), "a repeated alias changed something"


CHECKS: tuple[Callable[[Case, Path], None], ...] = (
    check_emits_declared_names,
    check_deterministic_across_processes,
    check_duplicates_change_nothing,
    check_late_events_keep_order,
    check_slice_round_trip,
    check_restart_equals_uninterrupted,
    check_replay_equals_processor_batches,
    check_due_at_exact_moment,
    check_merge_leaves_and_repeats_harmlessly,
)


def checks_for(case: Case) -> Iterator[Check]:
    """Every check of the suite for ``case`` (see the module docstring).

    Examples
    --------
    >>> [str(c) for c in checks_for(builtin_case("lifecycle", synthetic_events(3, 5)))][:2]
    ['lifecycle-emits_declared_names', 'lifecycle-deterministic_across_processes']
    """
    for fn in CHECKS:
        yield Check(fn.__name__.removeprefix("check_"), case, fn)


def _main(argv: list[str]) -> None:
    """Subprocess side of :func:`check_deterministic_across_processes`: print the digest."""
    data = orjson.loads(Path(argv[0]).read_bytes())
    case = Case(data["kind"], data["config"], data["events"], data["until"])
    changes, _ = replay(case)
    print(digest(changes))


if __name__ == "__main__":
    _main(sys.argv[1:])


__all__ = ["Case", "Check", "builtin_case", "checks_for", "synthetic_events"]
