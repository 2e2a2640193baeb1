"""Broken dimensions the check suite must reject (imported by test_checks_catch_bugs.py, and
by its subprocesses through PYTHONPATH)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.decode import Event
from segmentflow.segmenters.dimension import DAY_US, Dimension, Emit, Moment, StateSlice

IDLE_US = 5 * DAY_US


class HashSalted(Dimension):
    """Its value depends on ``hash()`` of a string: differs between processes."""

    kind = "hash_salted"

    def names(self) -> list[str]:
        return [self.kind]

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        value = "even" if hash(state.customer_id) % 2 == 0 else "odd"
        if value == state.values.get(self.kind):
            return []
        return [emit(state, self.kind, value, at, {})]


@dataclass(slots=True)
class SeenSlice(StateSlice):
    last: int | None = None

    def dump(self) -> list[Any]:
        return [self.last]

    @classmethod
    def load(cls, version: int, data: list[Any]) -> SeenSlice:
        return cls(*data)


class Idle(Dimension):
    """A correct dimension: ``busy``, then ``idle`` exactly 5 days after the latest event."""

    kind = "idle"
    slice_type = SeenSlice

    def names(self) -> list[str]:
        return [self.kind]

    def observe(self, state: CustomerState, event: Event, t: int) -> None:
        held = self.slice(state)
        held.last = max(event.ts, held.last or event.ts)

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        last = self.slice(state).last
        value = "idle" if at.t - last >= IDLE_US else "busy"
        if value == state.values.get(self.kind):
            return []
        return [emit(state, self.kind, value, at, {})]

    on_due = evaluate

    def next_due(self, state: CustomerState, after: int) -> int | None:
        due: int = self.slice(state).last + IDLE_US
        return due if due > after else None


class LateDue(Idle):
    """Reports its moment one microsecond late."""

    kind = "late_due"

    def next_due(self, state: CustomerState, after: int) -> int | None:
        due: int = self.slice(state).last + IDLE_US + 1
        return due if due > after else None


@dataclass(slots=True)
class LossySlice(SeenSlice):
    """Loses the time when stored."""

    def dump(self) -> list[Any]:
        return [None if self.last is None else self.last - 1]


class Forgetful(Idle):
    """Its slice does not survive encoding."""

    kind = "forgetful"
    slice_type = LossySlice
