"""Rule segments (dimension ``rule:<name>``): CEL expressions over the §6 variables.

Rules compile once at start-up; a syntax error or an unknown variable raises
:class:`~segmentflow.config.ConfigError` naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cel

from segmentflow.segmenters.features import GETTERS, TIME_DEPENDENT

if TYPE_CHECKING:
    from segmentflow.config import RuleConfig

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
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _traits_at: int = field(init=False, repr=False, compare=False)
    _dimension: str = field(init=False, repr=False, compare=False)

    @property
    def dimension(self) -> str:
        return self._dimension

    @property
    def time_dependent(self) -> bool:
        """Whether the rule's value can change at a midnight without any event."""
        return bool(self.references & TIME_DEPENDENT)

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


def compile_rules(rules: Sequence[RuleConfig]) -> list[CompiledRule]:
    """Compile every rule, raising ``ConfigError`` naming the first broken one."""
    from segmentflow.config import ConfigError

    compiled = []
    for rule in rules:
        try:
            program = cel.compile(rule.when)
        except Exception as exc:
            raise ConfigError(f"rule {rule.name!r}: expression does not compile: {exc}") from None
        refs = program.references()
        names = frozenset(refs.get("variables", []))
        unknown = sorted(names - GETTERS.keys())
        if unknown:
            raise ConfigError(
                f"rule {rule.name!r}: unknown variable(s) {', '.join(unknown)}; "
                f"see CONTRACT §6 for the variables a rule may use"
            )
        compiled.append(CompiledRule(rule.name, rule.when, program, names, _trait_keys(rule.when)))
    return compiled
