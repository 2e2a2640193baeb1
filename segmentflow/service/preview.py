"""Preview a rule segment before deploying it (issue 15): how many customers of the live state
match a candidate CEL rule now, a sample of them, and, given a history file, its daily
population over that history (a replay with the candidate rule added to the configuration).

The rule is compiled and evaluated by the engine's own rules dimension (segmenters/rules.py),
with the variables the engine would give it, so the preview agrees with what the worker will do.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from segmentflow.config import SegmentConfig
from segmentflow.engine.engine import Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.schemas.timefmt import DAY_US, format_us
from segmentflow.segmenters.features import variables
from segmentflow.segmenters.rules import CompiledRule, RuleEvaluationError, Rules
from segmentflow.state.base import StateStore

#: name the candidate rule gets when none is given
CANDIDATE = "preview"


def with_rule(config: SegmentConfig, name: str, when: str) -> SegmentConfig:
    """``config`` plus the candidate rule (``ConfigError`` for a bad name or expression, or a
    name already taken)."""
    from segmentflow.config import ConfigError, config_from_dict

    if any(rule.name == name for rule in config.rules):
        raise ConfigError(f"rule {name!r} already exists in the configuration: pick another --name")
    data = config.model_dump()
    data["rules"] = [*data["rules"], {"name": name, "when": when}]
    out = config_from_dict(data)
    Engine(out)  # compiles every rule: a bad expression fails here, naming the rule
    return out


@dataclass
class LivePreview:
    """Customers of the live state matching the candidate at ``at``."""

    at: int
    customers: int = 0
    matching: int = 0
    errors: int = 0
    sample: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "at": format_us(self.at),
            "customers": self.customers,
            "matching": self.matching,
            "errors": self.errors,
            "sample": self.sample,
        }


class Candidate:
    """The candidate rule compiled by an engine whose configuration includes it."""

    def __init__(self, config: SegmentConfig, name: str, when: str) -> None:
        self.config = with_rule(config, name, when)
        self.engine = Engine(self.config)
        rules = next(d for d in self.engine.registry if isinstance(d, Rules))
        self._getters = rules.getters
        self.rule: CompiledRule = next(r for r in rules.compiled if r.name == name)
        self._names = sorted(self.rule.references)

    def matches(self, state: CustomerState, at: int) -> bool:
        """Whether the customer is in the candidate segment at ``at`` (an error raises
        :class:`RuleEvaluationError`)."""
        return bool(self.rule.evaluate(variables(state, at, self._names, self._getters)))


def preview_live(
    candidate: Candidate, states: Iterable[CustomerState], at: int, sample: int = 10
) -> LivePreview:
    """Evaluate the candidate on every state at ``at``; keep the ``sample`` smallest ids that
    match (deterministic)."""
    out = LivePreview(at)
    picked: list[str] = []  # max-heap of the smallest ids, negated by sort key
    for state in states:
        if state.clock is None:  # a forgotten customer's tombstone
            continue
        out.customers += 1
        try:
            inside = candidate.matches(state, at)
        except RuleEvaluationError:
            out.errors += 1
            continue
        if inside:
            out.matching += 1
            picked.append(state.customer_id)
            if len(picked) > 4 * sample + 64:
                picked = heapq.nsmallest(sample, picked)
    out.sample = heapq.nsmallest(sample, picked)
    return out


def daily_population(changes: Iterable[Change], dimension: str) -> list[tuple[str, int]]:
    """Members of ``dimension`` (``in``) at the end of each UTC day from its first change to
    its last, from a replay's changes (in order).

    Examples
    --------
    >>> c = lambda cid, was, now, day: Change(cid, "rule:x", was, now, 1, day * DAY_US, None)
    >>> changes = [c("a", "out", "in", 0), c("b", "out", "in", 0), c("a", "in", "out", 2)]
    >>> daily_population(changes, "rule:x")
    [('1970-01-01', 2), ('1970-01-02', 2), ('1970-01-03', 1)]
    """
    per_day: dict[int, int] = {}
    for change in changes:
        if change.dimension == dimension:
            delta = (change.current == "in") - (change.previous == "in")
            day = change.at // DAY_US
            per_day[day] = per_day.get(day, 0) + delta
    if not per_day:
        return []
    out, members = [], 0
    for day in range(min(per_day), max(per_day) + 1):
        members += per_day.get(day, 0)
        out.append((format_us(day * DAY_US)[:10], members))
    return out


def preview_history(
    candidate: Candidate, path: Path, until: int | None, store: StateStore
) -> list[tuple[str, int]]:
    """Replay the history file with the candidate added over ``store`` (an empty one, e.g.
    :func:`segmentflow.bootstrap.memory_store`); its daily population."""
    from segmentflow.schemas.decode import Limits
    from segmentflow.service.replay import ReplayError, _events_from_lines, run

    dimension = f"rule:{candidate.rule.name}"
    kept: list[Change] = []
    limits = Limits.of(candidate.config)
    try:
        with path.open("rb") as source:
            events = _events_from_lines(source, limits, str(path))
            run(events, candidate.config, until, lambda c: _keep(c, dimension, kept), store)
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from None
    return daily_population(kept, dimension)


def _keep(change: Change, dimension: str, kept: list[Change]) -> None:
    if change.dimension == dimension:
        kept.append(change)
