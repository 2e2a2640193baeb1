"""Deterministic replay of an event file in event time (``segmentflow replay``, CONTRACT §5).

Before each event, every customer's time-driven changes due at or before its timestamp fire
(the watermark is the file's timestamp); after the last event everything due up to ``until``
fires. The same input gives the same output, byte for byte.

The store is the caller's (:func:`segmentflow.bootstrap.replay_events` and
:func:`segmentflow.bootstrap.replay_file` wire an in-memory one): the service layer names no
adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from segmentflow.config import SegmentConfig
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event, Limits, Rejection, parse_json, validate_event
from segmentflow.service.heap import CollectorSchedule
from segmentflow.service.processor import Item, Processor
from segmentflow.state.base import StateStore


class ReplayError(ValueError):
    """The input file is malformed or unsorted; the message names the line and why."""


@dataclass
class ReplaySummary:
    """What a replay did."""

    events: int = 0
    changes: int = 0
    duplicates: int = 0
    skipped_after_until: int = 0


def _events_from_lines(lines: Iterable[bytes], limits: Limits, source: str) -> Iterator[Event]:
    previous = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        data = parse_json(line.rstrip(b"\r\n"))
        event = data if isinstance(data, Rejection) else validate_event(data, None, limits)
        if isinstance(event, Rejection):
            raise ReplayError(f"{source}:{number}: {event.reason}: {event.detail}")
        if previous is not None and event.ts < previous:
            raise ReplayError(
                f"{source}:{number}: events must be sorted by timestamp; this one is earlier "
                f"than the line before (sort the file, e.g. with `sort_by timestamp`)"
            )
        previous = event.ts
        yield event


def events_from_dicts(events: Iterable[dict[str, Any]], limits: Limits) -> Iterator[Event]:
    """Decode event dicts (CONTRACT §2, sorted by timestamp) for :func:`run`; a bad or unsorted
    one raises :class:`ReplayError`."""
    return _events_from_lines((orjson.dumps(e) for e in events), limits, "<events>")


#: with ``long_lived=True``: events between two collections of the cyclic collector (at
#: least this many, else a quarter of the events replayed so far)
COLLECT_EVERY = 20_000


def _long_lived_heap() -> CollectorSchedule:
    """The collector's schedule of a replay that owns its process (``heap.py``): while it
    runs, the collector collects (then freezes) only after :data:`COLLECT_EVERY` events or a
    quarter of those replayed so far."""
    return CollectorSchedule(COLLECT_EVERY, every_seconds=math.inf, grow=0.25, thaw_every=0)


def run(
    events: Iterable[Event],
    config: SegmentConfig,
    until: int | None,
    emit: Callable[[Change], None],
    store: StateStore,
    long_lived: bool = False,
) -> tuple[Processor, ReplaySummary]:
    """Replay decoded ``events`` (sorted) through a :class:`Processor` over ``store``, calling
    ``emit`` for each change in order. ``until=None`` stops at the last event's timestamp.
    ``long_lived``: tune the cyclic collector for a replay that owns its process (the CLI;
    :func:`_long_lived_heap`); the output is the same either way."""
    processor = Processor(config, store, check_key=False)
    summary = ReplaySummary()
    batch: list[Item] = []
    last = None

    heap = _long_lived_heap()  # counts nothing unless running

    def flush() -> None:
        for change in processor.apply(batch):
            emit(change)
            summary.changes += 1
        heap.seen(len(batch))
        batch.clear()

    with heap.running() if long_lived else nullcontext():
        for event in events:
            if until is not None and event.ts > until:
                summary.skipped_after_until += 1
                continue
            processor.counters.received["replay"] += 1
            batch.append(Item("replay", event))
            summary.events += 1
            last = event.ts
            if len(batch) >= 1000:
                flush()
        flush()
        horizon = until if until is not None else last
        if horizon is not None:
            for change in processor.advance(horizon) + processor.sweep_rfm(horizon):
                emit(change)
                summary.changes += 1
    summary.duplicates = sum(processor.counters.duplicates.values())
    return processor, summary


def replay_events(
    events: Iterable[dict[str, Any]],
    config: SegmentConfig,
    until_us: int | None,
    store: StateStore,
) -> list[dict[str, Any]]:
    """Replay event dicts (CONTRACT §2) over ``store`` and return the change events
    (CONTRACT §3) in order."""
    out: list[dict[str, Any]] = []
    limits = Limits.of(config)
    run(
        events_from_dicts(events, limits),
        config,
        until_us,
        lambda c: out.append(c.to_cloudevent()),
        store,
    )
    return out


def replay_file(
    path: Path,
    config: SegmentConfig,
    until: int | None,
    out: Path,
    store: StateStore,
    progress: Callable[[int], None] | None = None,
) -> tuple[Processor, ReplaySummary]:
    """Replay the JSONL file ``path`` over ``store``, writing change events as JSONL to
    ``out``."""
    limits = Limits.of(config)
    with path.open("rb") as source, out.open("wb") as sink:

        def lines() -> Iterator[bytes]:
            for line in source:
                if progress is not None:
                    progress(len(line))
                yield line

        def emit(change: Change) -> None:
            sink.write(change.to_json())
            sink.write(b"\n")

        events = _events_from_lines(lines(), limits, str(path))
        return run(events, config, until, emit, store, long_lived=True)
