"""Re-evaluation after a configuration change (CONTRACT §6 "changed configuration"). No I/O.

The store remembers which configuration its state was built with as one fingerprint per
dimension and per rule (:func:`fingerprints`, kept in the store's meta under
:data:`META_PREFIX`), plus one for the whole (:data:`META_ALL`). When a worker starts with a
different one, :func:`diff` says what changed and :func:`reevaluate` gives, for a batch of
states, the changes that make each customer's values what the new configuration says at the
watermark: a new or changed rule (and every rule, when a dimension it may read changed) is
evaluated, a changed dimension is evaluated, a removed rule emits ``out`` for its members and a
removed dimension ``null``. The changes are stamped with the watermark (never before the
customer's clock) and carry ``cause.kind`` ``config``. Evaluating again changes nothing, so a
walk interrupted by a crash may simply start again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from segmentflow.engine.engine import DAY_US, Engine
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.dimension import Emit, Moment
from segmentflow.segmenters.features import variables
from segmentflow.segmenters.rules import IN, OUT, CompiledRule, RuleEvaluationError, Rules

#: meta key prefix of one fingerprint (``config:dim:<kind>``, ``config:rule:<name>``)
META_PREFIX = "config:"
#: meta key of the whole configuration's fingerprint
META_ALL = "config:all"
CAUSE = "config"


def _digest(value: object) -> int:
    """A stable 63-bit fingerprint of JSON-able ``value`` (fits the store's integer meta)."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") >> 1


def fingerprints(engine: Engine) -> dict[str, int]:
    """One fingerprint per dimension (its parameters) and per rule (its expression).

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> rules = [{"name": "b", "when": "orders >= 1"}]
    >>> sorted(fingerprints(Engine(config_from_dict({"rules": rules}))))
    ['dim:lifecycle', 'dim:persona', 'dim:rfm', 'rule:b']
    """
    out: dict[str, int] = {}
    for dim in engine.registry:
        if isinstance(dim, Rules):
            for rule in dim.compiled:
                out[f"rule:{rule.name}"] = _digest(rule.source)
        else:
            out[f"dim:{dim.kind}"] = _digest([dim.kind, dim.params.model_dump(mode="json")])
    return out


def overall(prints: Mapping[str, int]) -> int:
    """The fingerprint of the whole configuration (changes when anything was added, changed
    or removed)."""
    return _digest(sorted(prints.items()))


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What changed between the stored configuration and the running one."""

    #: dimension kinds that are new or whose parameters changed
    dimensions: frozenset[str] = frozenset()
    #: rule names that are new or whose expression changed
    rules: frozenset[str] = frozenset()
    #: whether anything changed at all (a removal shows only here)
    changed: bool = False


def diff(stored: Mapping[str, int | None], stored_all: int | None, engine: Engine) -> ConfigDiff:
    """Compare the stored fingerprints (``stored``: key -> fingerprint or ``None`` for each key
    of the running configuration; ``stored_all``: :data:`META_ALL`) with ``engine``'s.

    Without any stored fingerprint (state written before fingerprints existed) everything
    counts as changed: re-evaluating an unchanged definition moves nobody.

    Examples
    --------
    >>> from segmentflow.config import config_from_dict
    >>> engine = Engine(config_from_dict({"rules": [{"name": "b", "when": "orders >= 1"}]}))
    >>> now = fingerprints(engine)
    >>> diff(now, overall(now), engine).changed
    False
    >>> d = diff({**now, "rule:b": 1}, 7, engine)
    >>> d.changed, sorted(d.rules), sorted(d.dimensions)
    (True, ['b'], [])
    """
    now = fingerprints(engine)
    if stored_all == overall(now):
        return ConfigDiff()
    fresh = stored_all is None
    moved = {key for key, value in now.items() if fresh or stored.get(key) != value}
    return ConfigDiff(
        frozenset(k[4:] for k in moved if k.startswith("dim:")),
        frozenset(k[5:] for k in moved if k.startswith("rule:")),
        True,
    )


def _as_config(change: Change) -> Change:
    return dataclasses.replace(change, cause=CAUSE, event_id=None)


def affected_rules(engine: Engine, change: ConfigDiff) -> list[CompiledRule]:
    """The rules to evaluate: the new and changed ones, and those reading a variable of a
    changed dimension (the others keep their values until their next event or midnight)."""
    moved = {name for kind in change.dimensions for name in engine.by_kind(kind).variables()}
    return [r for r in engine.rules if r.name in change.rules or r.references & moved]


def _evaluate_rules(
    rules: Rules, chosen: list[CompiledRule], state: CustomerState, at: Moment, emit: Emit
) -> list[Change]:
    """:meth:`Rules.evaluate` restricted to ``chosen`` (errors counted in ``rules.errors``)."""
    names = sorted({name for rule in chosen for name in rule.references})
    env = variables(state, at.t, names, rules.getters)
    changes = []
    for rule in chosen:
        try:
            inside = rule.evaluate(env)
        except RuleEvaluationError:
            rules.errors[rule.name] += 1
            inside = False
        was = state.values.get(rule.dimension, OUT)
        now = IN if inside else OUT
        if now != was:
            reason = {"rule": rule.name, "when": rule.source}
            changes.append(emit(state, rule.dimension, now, at, reason, was))
    return changes


def reevaluate(
    engine: Engine, change: ConfigDiff, states: Iterable[CustomerState], watermark: int
) -> list[Change]:
    """The changes that bring ``states`` (mutated in place) to what ``engine``'s configuration
    gives at ``watermark``, in customer order (each customer's in dimension order).

    Due time-driven changes up to ``watermark`` fire first (``cause.kind`` ``time``, as in
    :meth:`Engine.advance`); then, stamped ``max(watermark, clock)`` with ``cause.kind``
    ``config``: the changed dimensions are evaluated, then :func:`affected_rules`, then the
    values of
    dimensions the configuration no longer has go (a rule's ``in`` becomes ``out``, any other
    value ``null``; their sequence numbers stay so change ids are never reused). Tombstones and
    customers without events are skipped.
    """
    if not change.changed:
        return []
    emitted = set(engine.dimensions)
    emit = engine.emit
    rules = engine.dimension(Rules)
    chosen = affected_rules(engine, change)
    dims = [d for d in engine.registry if d.kind in change.dimensions and d is not rules]
    out: list[Change] = []
    for state in states:
        if state.clock is None:
            continue
        out.extend(engine.advance(state, watermark))
        assert state.clock is not None
        t = max(watermark, state.clock)
        state.prune(t // DAY_US)
        at = Moment(t)
        found: list[Change] = []
        for dim in dims:
            found.extend(dim.evaluate(state, at, emit))
        if chosen:
            found.extend(_evaluate_rules(rules, chosen, state, at, emit))
        for name in sorted(set(state.values) - emitted):
            value = state.values.pop(name)
            gone = OUT if name.startswith("rule:") else None
            if value == gone or (gone == OUT and value != IN):
                continue
            sequence = state.seqs.get(name, 0) + 1
            state.seqs[name] = sequence
            reason = {"rule": name.removeprefix("rule:"), "removed": True}
            found.append(Change(state.customer_id, name, value, gone, sequence, t, None, reason))
        out.extend(_as_config(c) for c in found)
        state.clock = t
        state.next_due = engine._next_due(state)
    return out
