"""Rule segments (dimension ``rule:<name>``): CEL expressions over the §6 variables.

Rules compile once at start-up; a syntax error or an unknown variable raises
:class:`~segmentflow.config.ConfigError` naming the rule.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel
from pydantic import BaseModel, ConfigDict, Field

from segmentflow.config import RuleConfig
from segmentflow.engine.state import CustomerState
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.dimension import DAY_US, Dimension, Emit, Getter, Moment
from segmentflow.segmenters.features import GETTERS, variables

IN, OUT = "in", "out"
_TRAIT_ACCESS = re.compile(r"\btraits\.([A-Za-z_][A-Za-z0-9_]*)")
_CACHE_LIMIT = 100_000
_ERROR = object()


@dataclass(frozen=True)
class CompiledRule:
    """A rule segment ready to evaluate.

    CEL is pure, so results are memoised on the values of the variables the rule references
    (handing a map to the CEL runtime costs far more than looking the answer up). When the
    expression reads traits only as ``traits.<name>``, just those traits form the key and are
    passed in.
    """

    name: str
    source: str
    program: Any
    references: frozenset[str]
    trait_keys: tuple[str, ...] | None = None
    #: whether the rule's value can change at a midnight without any event
    time_dependent: bool = False
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _traits_at: int = field(init=False, repr=False, compare=False)
    _dimension: str = field(init=False, repr=False, compare=False)

    @property
    def dimension(self) -> str:
        return self._dimension

    def __post_init__(self) -> None:
        names = tuple(sorted(self.references))
        object.__setattr__(self, "_names", names)
        traits_at = names.index("traits") if "traits" in names else -1
        object.__setattr__(self, "_traits_at", traits_at)
        object.__setattr__(self, "_dimension", f"rule:{self.name}")

    def evaluate(self, variables: dict[str, Any]) -> bool:
        """Evaluate; raise :class:`RuleEvaluationError` if the expression errors for them."""
        names = self._names
        values = [variables[name] for name in names]
        at = self._traits_at
        if at >= 0:
            traits = values[at]
            if traits is not None:
                if self.trait_keys is not None:
                    traits = {k: traits[k] for k in self.trait_keys if k in traits}
                values[at] = traits
                # the memo key must be hashable and tell 1, 1.0 and True apart
                key_part: Any = tuple(sorted((k, type(v), v) for k, v in traits.items()))
                key = (*values[:at], key_part, *values[at + 1 :], *map(type, values))
            else:
                key = (*values, *map(type, values))
        else:
            key = (*values, *map(type, values))
        result = self._cache.get(key)
        if result is None:
            try:
                result = self.program.execute(dict(zip(names, values, strict=True)))
            except Exception:  # the CEL binding raises several exception types
                result = _ERROR
            if not isinstance(result, bool):
                result = _ERROR
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = result
        if result is _ERROR:
            raise RuleEvaluationError(self.name, "expression errored for these variables")
        return bool(result)


class RuleEvaluationError(Exception):
    """A rule errored for one customer (counts as false; counted in the metrics)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"rule {rule!r}: {detail}")
        self.rule = rule


def _trait_keys(source: str) -> tuple[str, ...] | None:
    """The trait names read as ``traits.<name>``, or ``None`` if traits are read otherwise."""
    plain = source.count("traits")
    named = _TRAIT_ACCESS.findall(source)
    return tuple(sorted(set(named))) if plain == len(named) else None


def compile_rules(
    rules: Sequence[RuleConfig],
    getters: Mapping[str, Getter] | None = None,
    time_dependent: frozenset[str] | None = None,
) -> list[CompiledRule]:
    """Compile every rule, raising ``ConfigError`` naming the first broken one.

    ``getters``/``time_dependent``: every variable a rule may use and those that move with time
    alone (default: the core §6 variables and the built-in dimensions').
    """
    from segmentflow.config import ConfigError

    if getters is None or time_dependent is None:
        from segmentflow.segmenters.registry import builtin_variables

        getters, time_dependent = builtin_variables()
    compiled = []
    for rule in rules:
        try:
            program = cel.compile(rule.when)
        except Exception as exc:
            raise ConfigError(f"rule {rule.name!r}: expression does not compile: {exc}") from None
        refs = program.references()
        names = frozenset(refs.get("variables", []))
        unknown = sorted(names - getters.keys())
        if unknown:
            raise ConfigError(
                f"rule {rule.name!r}: unknown variable(s) {', '.join(unknown)}; "
                f"see CONTRACT §6 for the variables a rule may use"
            )
        timed = bool(names & time_dependent)
        compiled.append(
            CompiledRule(rule.name, rule.when, program, names, _trait_keys(rule.when), timed)
        )
    return compiled


class RulesParams(BaseModel):
    """The rule segments of the config (``rules:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[RuleConfig] = Field(default_factory=list)


class Rules(Dimension):
    """The rule segments (dimension ``rule:<name>`` each), evaluated after every other
    dimension on each event and, when a rule reads a time-dependent variable, at every UTC
    midnight. :meth:`bind` compiles them against every variable of the other dimensions.

    Examples
    --------
    >>> dim = Rules(RulesParams(rules=[RuleConfig(name="buyer", when="orders >= 1")]))
    >>> dim.bind(GETTERS, frozenset())
    >>> dim.names(), dim.next_due(CustomerState("c"), 0)
    (['rule:buyer'], None)
    """

    kind = "rules"
    Params = RulesParams

    def __init__(self, params: BaseModel) -> None:
        super().__init__(params)
        assert isinstance(params, RulesParams)
        self.rules_config = params.rules
        self.compiled: list[CompiledRule] = []
        self.getters: Mapping[str, Getter] = GETTERS
        #: evaluation errors per rule name (the rule counts as false)
        self.errors: Counter[str] = Counter()
        self._names: list[str] = []
        self._midnights = False

    def bind(self, getters: Mapping[str, Getter], time_dependent: frozenset[str]) -> None:
        """Compile the rules against ``getters`` (raises ``ConfigError`` naming a bad rule)."""
        self.getters = getters
        self.compiled = compile_rules(self.rules_config, getters, time_dependent)
        self._names = sorted({name for rule in self.compiled for name in rule.references})
        self._midnights = any(rule.time_dependent for rule in self.compiled)

    def names(self) -> list[str]:
        return [rule.dimension for rule in self.compiled]

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if not self.compiled:
            return []
        env = variables(state, at.t, self._names, self.getters)
        changes = []
        for rule in self.compiled:
            try:
                inside = rule.evaluate(env)
            except RuleEvaluationError:
                self.errors[rule.name] += 1
                inside = False
            dim = rule.dimension
            was = state.values.get(dim, OUT)
            now = IN if inside else OUT
            if now != was:
                reason = {"rule": rule.name, "when": rule.source}
                changes.append(emit(state, dim, now, at, reason, was))
        return changes

    def next_due(self, state: CustomerState, after: int) -> int | None:
        return (after // DAY_US + 1) * DAY_US if self._midnights else None

    def on_due(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        if not self._midnights or at.t % DAY_US:
            return []
        state.prune(at.t // DAY_US)
        return self.evaluate(state, at, emit)

    def explain(
        self, state: CustomerState, name: str, value: str | None, t: int, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        for rule in self.compiled:
            if rule.dimension == name:
                refs = sorted(rule.references)
                return {"when": rule.source, "variables": {n: env[n] for n in refs}}
        return None
