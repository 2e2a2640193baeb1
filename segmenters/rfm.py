"""The ``rfm`` dimension (CONTRACT §3 "Default RFM"): exact rank scores over the population.

Population P = customers with at least one order. For each of recency (last order time),
frequency (orders) and monetary (net revenue), ``w`` counts the customers of P strictly worse,
and ``score = min(5, 1 + floor(5 * w / |P|))``. The segment is named from (R, F).

Ranks come from :class:`RankIndex`: three sorted lists (``sortedcontainers``), so an update or
a rank query costs O(log n) and the scores are exact (see ``benchmarks/rfm_ranks.py`` for the
comparison with a quantile sketch).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from sortedcontainers import SortedList

Metrics = tuple[int, int, float]  # (last order time, orders, net revenue)
Scores = tuple[int, int, int]


def score(worse: int, population: int) -> int:
    """``min(5, 1 + floor(5 * worse / population))``.

    Examples
    --------
    >>> [score(w, 10) for w in (0, 1, 2, 5, 9)]
    [1, 1, 2, 3, 5]
    """
    return min(5, 1 + (5 * worse) // population)


class RankIndex:
    """Exact order statistics of the RFM metrics of every customer with an order.

    Examples
    --------
    >>> ranks = RankIndex()
    >>> ranks.update("a", (10, 1, 5.0)); ranks.update("b", (20, 3, 50.0))
    >>> ranks.scores("b")
    (3, 3, 3)
    >>> ranks.scores("a")
    (1, 1, 1)
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Metrics] = {}
        self._lists = (SortedList(), SortedList(), SortedList())
        self._scores: dict[str, Scores] = {}  # scores last given to each customer

    def update(self, customer_id: str, metrics: Metrics | None) -> None:
        """Set (or with ``None`` remove) a customer's metrics."""
        old = self._metrics.get(customer_id)
        if old == metrics:
            return
        if old is not None:
            for values, value in zip(self._lists, old, strict=True):
                values.remove(value)
        if metrics is None:
            self._metrics.pop(customer_id, None)
            self._scores.pop(customer_id, None)
            return
        self._metrics[customer_id] = metrics
        for values, value in zip(self._lists, metrics, strict=True):
            values.add(value)

    def get(self, customer_id: str) -> Metrics | None:
        """A customer's metrics, or ``None`` outside P."""
        return self._metrics.get(customer_id)

    def scores(self, customer_id: str) -> tuple[int, int, int] | None:
        """(R, F, M) scores of a customer in P, or ``None``."""
        metrics = self._metrics.get(customer_id)
        if metrics is None:
            return None
        n = len(self._metrics)
        r, f, m = (
            score(values.bisect_left(value), n)
            for values, value in zip(self._lists, metrics, strict=True)
        )
        return r, f, m

    def record(self, customer_id: str, scores: Scores) -> None:
        """Remember the scores a customer was last given (so a sweep finds who moved)."""
        self._scores[customer_id] = scores

    def recorded(self, customer_id: str) -> Scores | None:
        """The scores a customer was last given."""
        return self._scores.get(customer_id)

    def sweep(self, include: Callable[[str], bool] | None = None) -> list[tuple[str, Scores]]:
        """Score everyone at once (vectorised) and return the customers (that ``include``
        accepts) whose scores differ from the ones they were last given.

        Examples
        --------
        >>> ranks = RankIndex()
        >>> ranks.update("a", (10, 1, 5.0)); ranks.record("a", (1, 1, 1))
        >>> ranks.update("b", (20, 3, 50.0)); ranks.record("b", (1, 1, 1))
        >>> ranks.sweep()
        [('b', (3, 3, 3))]
        """
        n = len(self._metrics)
        if not n:
            return []
        ids = list(self._metrics)
        columns = np.array(list(self._metrics.values()), dtype=np.float64)
        scores = np.empty((n, 3), dtype=np.int64)
        for j in range(3):
            column = columns[:, j]
            worse = np.searchsorted(np.sort(column), column, side="left")
            scores[:, j] = np.minimum(5, 1 + (5 * worse) // n)
        moved = []
        for cid, (r, f, m) in zip(ids, scores.tolist(), strict=True):
            row = (r, f, m)
            if self._scores.get(cid) != row and (include is None or include(cid)):
                moved.append((cid, row))
        return moved

    def customers(self) -> Iterable[str]:
        """Every customer in P."""
        return self._metrics.keys()

    def __len__(self) -> int:
        return len(self._metrics)


_PATTERN = re.compile(r"^(\d|\[\d-\d\])(\d|\[\d-\d\])$")


def _digits(part: str) -> range:
    if part.startswith("["):
        return range(int(part[1]), int(part[3]) + 1)
    return range(int(part), int(part) + 1)


@dataclass(frozen=True)
class SegmentMap:
    """(R, F) -> segment name, from patterns such as ``5[4-5]`` or ``[1-2][3-4]``."""

    table: Mapping[tuple[int, int], str]

    @classmethod
    def parse(cls, segments: Mapping[str, str]) -> SegmentMap:
        """Build from ``{name: pattern}``; raise ``ValueError`` for a bad pattern.

        Examples
        --------
        >>> from segmentflow.config import DEFAULT_RFM_SEGMENTS
        >>> m = SegmentMap.parse(DEFAULT_RFM_SEGMENTS)
        >>> m.name(5, 5), m.name(1, 1), m.name(3, 3)
        ('champions', 'hibernating', 'need_attention')
        """
        table: dict[tuple[int, int], str] = {}
        for name, pattern in segments.items():
            match = _PATTERN.match(pattern.replace(" ", ""))
            if match is None:
                raise ValueError(f"rfm segment {name!r}: bad pattern {pattern!r} (e.g. 5[4-5])")
            for r in _digits(match.group(1)):
                for f in _digits(match.group(2)):
                    table.setdefault((r, f), name)
        return cls(table)

    def name(self, r: int, f: int) -> str:
        """The segment of (R, F); ``"other"`` where the map has no entry."""
        return self.table.get((r, f), "other")
