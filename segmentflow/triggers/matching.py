"""Which segment changes a target wants (``match: {dimension, from?, to?}``).

``dimension`` is an exact name (``lifecycle``, ``rfm``, ``persona``, ``rule:<name>``) or a shell
pattern (``rule:*``, ``*``). ``from`` and ``to`` are a value or a list of values; an omitted key
matches anything. ``null`` inside a list matches a first value (``previous`` is null), e.g.
``from: [null, prospect]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

_ANY: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class Match:
    """A compiled match clause.

    Parameters
    ----------
    dimension
        Dimension name or shell pattern.
    from_values
        Accepted ``previous`` values (``None`` = a first value); empty means any.
    to_values
        Accepted ``current`` values; empty means any.
    """

    dimension: str
    from_values: tuple[str | None, ...] = _ANY
    to_values: tuple[str | None, ...] = _ANY

    @classmethod
    def build(
        cls,
        dimension: str,
        from_: str | Sequence[str | None] | None = None,
        to: str | Sequence[str | None] | None = None,
    ) -> Match:
        """Normalise scalars and lists (``None`` for a key means "any").

        Examples
        --------
        >>> Match.build("lifecycle", to="at_risk").to_values
        ('at_risk',)
        """
        return cls(dimension, _values(from_), _values(to))

    def matches(self, change: dict[str, Any]) -> bool:
        """Whether a contract §3 change event is wanted.

        Examples
        --------
        >>> m = Match.build("rule:vip", to="in")
        >>> m.matches({"data": {"dimension": "rule:vip", "previous": "out", "current": "in"}})
        True
        >>> m.matches({"data": {"dimension": "rule:vip", "previous": "in", "current": "out"}})
        False
        """
        data = change.get("data")
        if not isinstance(data, dict):
            return False
        dimension = data.get("dimension")
        if not isinstance(dimension, str) or not _dimension_ok(self.dimension, dimension):
            return False
        if self.from_values and data.get("previous") not in self.from_values:
            return False
        return not (self.to_values and data.get("current") not in self.to_values)


def _dimension_ok(pattern: str, dimension: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatchcase(dimension, pattern)
    return pattern == dimension


def _values(value: str | Sequence[str | None] | None) -> tuple[str | None, ...]:
    if value is None:
        return _ANY
    if isinstance(value, str):
        return (value,)
    return tuple(value)
