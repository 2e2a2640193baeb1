"""The ``rfm`` dimension (CONTRACT §3 "Default RFM"): exact rank scores over the population.

Population P = customers with at least one order. For each of recency (last order time),
frequency (orders) and monetary (net revenue), ``w`` counts the customers of P strictly worse,
and ``score = min(5, 1 + floor(5 * w / |P|))``. The segment is named from (R, F).

Ranks come from :class:`RankIndex`: recency and monetary values in :class:`SortedColumn` s
(sorted sublists), order counts in a :class:`CountColumn` (a histogram: an order moves one
count), so an update or a rank query is cheap and the scores are exact (see
``benchmarks/rfm_ranks.py`` for the comparison with a quantile sketch); population sweeps work
on numpy arrays of the metrics and cost O(n) vectorised plus O(log n + Python work) per customer
whose scores moved.
"""

from __future__ import annotations

import pickle
import re
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from segmentflow.config import RfmConfig, parse_duration_us
from segmentflow.engine.state import CustomerState, T
from segmentflow.schemas.changes import Change
from segmentflow.segmenters.dimension import (
    DAY_US,
    Dimension,
    Emit,
    Getter,
    Moment,
    PopulationWork,
    StateSlice,
)

Metrics = tuple[int, int, float]  # (last order time, orders, net revenue)
_T_ORDERS, _T_REVENUE = T["orders"], T["revenue"]
Scores = tuple[int, int, int]


def score(worse: int, population: int) -> int:
    """``min(5, 1 + floor(5 * worse / population))``.

    Examples
    --------
    >>> [score(w, 10) for w in (0, 1, 2, 5, 9)]
    [1, 1, 2, 3, 5]
    """
    return min(5, 1 + (5 * worse) // population)


class SortedColumn:
    """A sorted multiset of numbers with exact ranks (the ``sortedcontainers`` layout, cut
    down): sorted sublists of about :attr:`LOAD` values, each sublist's maximum and length. A
    rank is two bisections and a sum of the lengths on the shorter side of the sublist.

    Examples
    --------
    >>> column = SortedColumn([1, 3, 3, 7])
    >>> column.add(5); column.remove(3)
    >>> column.rank(3), column.rank(4), column.rank(8), column[2], len(column)
    (1, 2, 4, 5, 4)
    """

    LOAD = 1024
    __slots__ = ("lens", "lists", "maxes", "n")

    def __init__(self, ordered: Sequence[Any] = ()) -> None:
        step = self.LOAD
        self.lists = [list(ordered[i : i + step]) for i in range(0, len(ordered), step)]
        self.maxes = [sub[-1] for sub in self.lists]
        self.lens = [len(sub) for sub in self.lists]
        self.n = len(ordered)

    def add(self, value: Any) -> None:
        """Add one occurrence of ``value``."""
        maxes = self.maxes
        self.n += 1
        if not maxes:
            self.lists.append([value])
            maxes.append(value)
            self.lens.append(1)
            return
        i = bisect_right(maxes, value)
        if i == len(maxes):  # a new maximum (recency: every order of a replay)
            i -= 1
            self.lists[i].append(value)
            maxes[i] = value
        else:
            insort(self.lists[i], value)
        lens = self.lens
        lens[i] += 1
        if lens[i] > 2 * self.LOAD:
            self._split(i)

    def remove(self, value: Any) -> None:
        """Remove one occurrence of ``value`` (``ValueError`` if it is not there)."""
        maxes = self.maxes
        i = bisect_left(maxes, value)
        if i == len(maxes):
            raise ValueError(f"{value!r} is not in the column")
        sub = self.lists[i]
        j = bisect_left(sub, value)
        if sub[j] != value:
            raise ValueError(f"{value!r} is not in the column")
        del sub[j]
        self.n -= 1
        lens = self.lens
        lens[i] -= 1
        if not sub:
            del self.lists[i], maxes[i], lens[i]
            return
        if j == len(sub):
            maxes[i] = sub[-1]
        if lens[i] < self.LOAD // 2 and len(lens) > 1:
            self._merge(i)

    def rank(self, value: Any) -> int:
        """How many values are strictly lower than ``value``."""
        maxes = self.maxes
        i = bisect_left(maxes, value)
        if i == len(maxes):
            return self.n
        below = bisect_left(self.lists[i], value)
        if 2 * i < len(maxes):
            return sum(self.lens[:i]) + below
        return self.n - sum(self.lens[i:]) + below

    def __getitem__(self, k: int) -> Any:
        """The ``k``-th smallest value (``0 <= k < len``)."""
        for size, sub in zip(self.lens, self.lists, strict=True):
            if k < size:
                return sub[k]
            k -= size
        raise IndexError(k)

    def __len__(self) -> int:
        return self.n

    def _split(self, i: int) -> None:
        sub = self.lists[i]
        half = len(sub) // 2
        self.lists[i : i + 1] = [sub[:half], sub[half:]]
        self.maxes.insert(i, sub[half - 1])
        self.lens[i : i + 1] = [half, len(sub) - half]

    def _merge(self, i: int) -> None:
        a = i - 1 if i else 0
        lists, lens = self.lists, self.lens
        lists[a : a + 2] = [lists[a] + lists[a + 1]]
        self.maxes[a : a + 2] = [self.maxes[a + 1]]
        lens[a : a + 2] = [lens[a] + lens[a + 1]]
        if lens[a] > 2 * self.LOAD:
            self._split(a)


class CountColumn:
    """A multiset of non-negative integers (order counts) as a histogram: ``ge[v]`` values are
    ``>= v``. A rank is one read; a value moving by one (an order) is one write; adding or
    removing a value ``v`` costs O(v).

    Examples
    --------
    >>> column = CountColumn([1, 1, 2, 5])
    >>> column.move(1, 2); column.add(3); column.remove(5)
    >>> column.rank(2), column.rank(3), column.rank(9), column[3], len(column)
    (1, 3, 4, 3, 4)
    """

    __slots__ = ("ge",)

    def __init__(self, values: Sequence[int] | np.ndarray = ()) -> None:
        array = np.asarray(values, dtype=np.int64)
        if len(array) and array.min() < 0:
            raise ValueError("order counts are never negative")
        counts = np.bincount(array, minlength=1)
        #: ``ge[v]``: values >= v; the last entry is always 0
        self.ge: list[int] = [*np.cumsum(counts[::-1])[::-1].tolist(), 0]

    def _reach(self, value: int) -> list[int]:
        if value < 0:
            raise ValueError(f"order counts are never negative (got {value})")
        ge = self.ge
        if value + 1 >= len(ge):
            ge.extend([0] * (value + 2 - len(ge)))
        return ge

    def add(self, value: int) -> None:
        """Add one occurrence of ``value``."""
        ge = self._reach(value)
        for v in range(value + 1):
            ge[v] += 1

    def remove(self, value: int) -> None:
        """Remove one occurrence of ``value`` (``ValueError`` if it is not there)."""
        ge = self.ge
        if not 0 <= value < len(ge) - 1 or ge[value] == ge[value + 1]:
            raise ValueError(f"{value!r} is not in the column")
        for v in range(value + 1):
            ge[v] -= 1

    def move(self, old: int, new: int) -> None:
        """One occurrence of ``old`` becomes ``new`` (``old`` must be there)."""
        ge = self._reach(new)
        if new > old:
            for v in range(old + 1, new + 1):
                ge[v] += 1
        else:
            for v in range(new + 1, old + 1):
                ge[v] -= 1

    def rank(self, value: int) -> int:
        """How many values are strictly lower than ``value``."""
        ge = self.ge
        if value <= 0:
            return 0
        return ge[0] - ge[value] if value < len(ge) else ge[0]

    def __getitem__(self, k: int) -> int:
        """The ``k``-th smallest value (``0 <= k < len``): the least ``v`` with more than ``k``
        values ``<= v``, i.e. ``ge[v + 1] < len - k``."""
        ge = self.ge
        if not 0 <= k < ge[0]:
            raise IndexError(k)
        above = ge[0] - k
        lo, hi = 1, len(ge) - 1  # ge[hi] == 0 < above
        while lo < hi:
            mid = (lo + hi) // 2
            if ge[mid] < above:
                hi = mid
            else:
                lo = mid + 1
        return lo - 1

    def __len__(self) -> int:
        return self.ge[0]


class RankIndex:
    """Exact order statistics of the RFM metrics of every customer with an order.

    Per-customer queries use three columns: recency and monetary values in
    :class:`SortedColumn` s, order counts in a :class:`CountColumn`. For population
    sweeps the metrics also live in numpy arrays, one slot per customer (freed slots are reused),
    updated in place, next to the scores each customer was last given. A score needs only four
    order statistics per metric (:func:`thresholds`), so a sweep compares the arrays with twelve
    numbers and the recorded scores, vectorised, and makes Python objects only for the customers
    whose scores moved. A sweep with no metric change since the previous one reuses its scores.

    Examples
    --------
    >>> ranks = RankIndex()
    >>> ranks.update("a", (10, 1, 5.0)); ranks.update("b", (20, 3, 50.0))
    >>> ranks.scores("b")
    (3, 3, 3)
    >>> ranks.scores("a")
    (1, 1, 1)
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._r, self._f, self._m = SortedColumn(), CountColumn(), SortedColumn()
        #: customer -> (slot, metrics), in first-insertion order (the tuple saves numpy reads
        #: on the per-event path; its values are the objects the columns hold)
        self._slots: dict[str, tuple[int, Metrics]] = {}
        self._ids: list[str | None] = []  # slot -> customer
        self._free: list[int] = []
        self._last = np.zeros(capacity, dtype=np.int64)
        self._orders = np.zeros(capacity, dtype=np.int64)
        self._revenue = np.zeros(capacity, dtype=np.float64)
        self._alive = np.zeros(capacity, dtype=np.bool_)
        self._order = np.zeros(capacity, dtype=np.int64)  # insertion sequence of the slot
        #: scores as one code, ``100 r + 10 f + m`` (one comparison per customer in a sweep)
        self._recorded = np.zeros(capacity, dtype=np.int16)  # 0 = never given
        self._computed = np.zeros(capacity, dtype=np.int16)
        self._unsaved: dict[int, Scores] = {}  # slot -> scores recorded since the last sweep
        self._sequence = 0
        self._reused = False
        #: grows with every metric change (a sweep at an unchanged version moves nobody new)
        self.version = 0
        self._computed_version = -1

    # -- updates ----------------------------------------------------------------------------

    def _grow(self) -> None:
        size = 2 * len(self._alive)
        for name in ("_last", "_orders", "_revenue", "_alive", "_order", "_recorded", "_computed"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def update(self, customer_id: str, metrics: Metrics | None) -> None:
        """Set (or with ``None`` remove) a customer's metrics."""
        entry = self._slots.get(customer_id)
        slot = None
        if entry is not None:
            slot, old = entry
            if old == metrics:
                return
        elif metrics is None:
            return
        self.version += 1
        if metrics is None:
            assert slot is not None and entry is not None
            old = entry[1]
            self._r.remove(old[0])
            self._f.remove(old[1])
            self._m.remove(old[2])
            del self._slots[customer_id]
            self._ids[slot] = None
            self._alive[slot] = False
            self._recorded[slot] = 0
            self._unsaved.pop(slot, None)
            self._free.append(slot)
            return
        last, orders, revenue = metrics
        if entry is not None:
            old_last, old_orders, old_revenue = entry[1]
            if old_last != last:
                self._r.remove(old_last)
                self._r.add(last)
            if old_orders != orders:
                self._f.move(old_orders, orders)
            if old_revenue != revenue:
                self._m.remove(old_revenue)
                self._m.add(revenue)
        else:
            self._r.add(last)
            self._f.add(orders)
            self._m.add(revenue)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._ids[slot] = customer_id
                self._reused = True
            else:
                slot = len(self._ids)
                if slot == len(self._alive):
                    self._grow()
                self._ids.append(customer_id)
            self._alive[slot] = True
            self._order[slot] = self._sequence
            self._sequence += 1
        self._slots[customer_id] = (slot, metrics)
        self._last[slot] = last
        self._orders[slot] = orders
        self._revenue[slot] = revenue

    def rescore(self, customer_id: str, metrics: Metrics) -> Scores:
        """:meth:`update` then :meth:`scores` (the per-event path).

        Examples
        --------
        >>> ranks = RankIndex()
        >>> ranks.rescore("a", (10, 1, 5.0)), ranks.rescore("b", (20, 3, 50.0))
        ((1, 1, 1), (3, 3, 3))
        """
        self.update(customer_id, metrics)
        n = len(self._slots)
        last, orders, revenue = metrics
        return (
            min(5, 1 + 5 * self._r.rank(last) // n),
            min(5, 1 + 5 * self._f.rank(orders) // n),
            min(5, 1 + 5 * self._m.rank(revenue) // n),
        )

    def load(
        self,
        ids: Sequence[str],
        metrics: Sequence[Metrics],
        given: Sequence[Scores | None] | None = None,
    ) -> None:
        """Add many customers at once: the same as ``update(ids[i], metrics[i])`` (then
        ``record(ids[i], given[i])`` where scores are given) for each ``i`` in order (a repeated
        customer keeps its first position, its last metrics and its last scores given), but an
        empty index is built in bulk: the arrays filled at once and each sorted list made from
        one sorted array, instead of one sorted-list insert per value.

        Examples
        --------
        >>> ranks = RankIndex()
        >>> ranks.load(["a", "b"], [(10, 1, 5.0), (20, 3, 50.0)], [(1, 1, 1), None])
        >>> ranks.scores("b"), ranks.recorded("a"), ranks.recorded("b")
        ((3, 3, 3), (1, 1, 1), None)
        >>> ranks.sweep()
        [('b', (3, 3, 3))]
        """
        if given is None:
            given = [None] * len(ids)
        if self._ids:  # not empty (or slots to reuse): one by one
            for cid, values, scores in zip(ids, metrics, given, strict=True):
                self.update(cid, values)
                if scores is not None:
                    self.record(cid, scores)
            return
        slots = dict(zip(ids, zip(range(len(ids)), metrics, strict=True), strict=True))
        if len(slots) != len(ids):  # repeats (a SCAN may return a key twice)
            chosen: dict[str, tuple[Metrics, Scores | None]] = {}
            for cid, values, scores in zip(ids, metrics, given, strict=True):
                if scores is None and cid in chosen:
                    scores = chosen[cid][1]
                chosen[cid] = (values, scores)
            ids = list(chosen)
            metrics = [values for values, _ in chosen.values()]
            given = [scores for _, scores in chosen.values()]
            slots = dict(zip(ids, zip(range(len(ids)), metrics, strict=True), strict=True))
        n = len(ids)
        if not n:
            return
        while len(self._alive) < n:
            self._grow()
        self._ids = list(ids)
        self._slots = slots
        last = np.fromiter((m[0] for m in metrics), dtype=np.int64, count=n)
        orders = np.fromiter((m[1] for m in metrics), dtype=np.int64, count=n)
        revenue = np.fromiter((m[2] for m in metrics), dtype=np.float64, count=n)
        self._last[:n], self._orders[:n], self._revenue[:n] = last, orders, revenue
        self._alive[:n] = True
        self._order[:n] = np.arange(n)
        self._sequence = n
        given_at = [i for i, scores in enumerate(given) if scores is not None]
        if given_at:
            codes = (100 * r + 10 * f + m for r, f, m in (s for s in given if s is not None))
            self._recorded[given_at] = np.fromiter(codes, dtype=np.int16, count=len(given_at))
        # each column from its array sorted once (already sorted input sorts in linear time)
        self._r = SortedColumn(np.sort(last).tolist())
        self._f = CountColumn(orders)
        self._m = SortedColumn(np.sort(revenue).tolist())
        self.version += n

    # -- queries ----------------------------------------------------------------------------

    def get(self, customer_id: str) -> Metrics | None:
        """A customer's metrics, or ``None`` outside P."""
        entry = self._slots.get(customer_id)
        return None if entry is None else entry[1]

    def scores(self, customer_id: str) -> Scores | None:
        """(R, F, M) scores of a customer in P, or ``None``."""
        entry = self._slots.get(customer_id)
        if entry is None:
            return None
        n = len(self._slots)
        last, orders, revenue = entry[1]
        return (
            min(5, 1 + 5 * self._r.rank(last) // n),
            min(5, 1 + 5 * self._f.rank(orders) // n),
            min(5, 1 + 5 * self._m.rank(revenue) // n),
        )

    def record(self, customer_id: str, scores: Scores) -> None:
        """Remember the scores a customer was last given (so a sweep finds who moved)."""
        entry = self._slots.get(customer_id)
        if entry is not None:
            self._unsaved[entry[0]] = scores  # into the array at the next sweep

    def recorded(self, customer_id: str) -> Scores | None:
        """The scores a customer was last given."""
        entry = self._slots.get(customer_id)
        if entry is None:
            return None
        unsaved = self._unsaved.get(entry[0])
        if unsaved is not None:
            return unsaved
        code = int(self._recorded[entry[0]])
        return (code // 100, code // 10 % 10, code % 10) if code else None

    def thresholds(self) -> list[list[float]]:
        """Per metric, the four values ``v_k`` (k = 1..4) such that a customer's score is 1 plus
        the number of them strictly below its value.

        ``floor(5 w / n) >= k`` iff ``w >= c = ceil(k n / 5)`` iff at least ``c`` values are
        strictly lower iff the ``c``-th smallest value is lower; ``c <= n`` for ``k <= 4`` and
        ``floor(5 w / n) <= 4`` as ``w < n``, so the ``min(5, ...)`` never binds.
        """
        n = len(self._slots)
        columns = (self._r, self._f, self._m)
        return [[values[(k * n + 4) // 5 - 1] for k in range(1, 5)] for values in columns]

    def _compute(self, top: int) -> None:
        if self._computed_version == self.version:
            return
        computed = self._computed[:top]
        computed.fill(111)  # scores of 1, plus each cut strictly below the value
        columns = (self._last[:top], self._orders[:top], self._revenue[:top])
        for weight, column, cuts in zip((100, 10, 1), columns, self.thresholds(), strict=True):
            previous = None
            for cut in cuts:
                if cut != previous:
                    hit = column > cut
                    above = hit if weight == 1 else hit * np.int16(weight)
                previous = cut
                computed += above
        self._computed_version = self.version

    def sweep(self, include: Callable[[str], bool] | None = None) -> list[tuple[str, Scores]]:
        """Score everyone at once (vectorised) and return the customers (that ``include``
        accepts) whose scores differ from the ones they were last given, in the order the
        customers entered the index.

        Examples
        --------
        >>> ranks = RankIndex()
        >>> ranks.update("a", (10, 1, 5.0)); ranks.record("a", (1, 1, 1))
        >>> ranks.update("b", (20, 3, 50.0)); ranks.record("b", (1, 1, 1))
        >>> ranks.sweep()
        [('b', (3, 3, 3))]
        """
        if not self._slots:
            return []
        top = len(self._ids)
        if self._unsaved:
            codes = [100 * r + 10 * f + m for r, f, m in self._unsaved.values()]
            self._recorded[list(self._unsaved)] = codes
            self._unsaved.clear()
        self._compute(top)
        computed = self._computed[:top]
        moved = self._recorded[:top] != computed
        moved &= self._alive[:top]
        slots = np.flatnonzero(moved)
        if not len(slots):
            return []
        if self._reused:  # reused slots are out of insertion order
            slots = slots[np.argsort(self._order[slots], kind="stable")]
        ids = self._ids
        out: list[tuple[str, Scores]] = []
        for slot, code in zip(slots.tolist(), computed[slots].tolist(), strict=True):
            cid = ids[slot]
            assert cid is not None
            if include is None or include(cid):
                out.append((cid, (code // 100, code // 10 % 10, code % 10)))
        return out

    def customers(self) -> Iterable[str]:
        """Every customer in P."""
        return self._slots.keys()

    def __len__(self) -> int:
        return len(self._slots)

    def nbytes(self) -> int:
        """Bytes held by the sweep arrays (the sorted lists and the id map come on top)."""
        arrays = (self._last, self._orders, self._revenue, self._alive, self._order)
        return sum(a.nbytes for a in arrays) + self._recorded.nbytes + self._computed.nbytes


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


@dataclass(slots=True)
class RfmSlice(StateSlice):
    """The (R, F, M) scores a customer was last given (``None`` before its first order)."""

    scores: list[int] | None = None

    def dump(self) -> list[Any]:
        return [] if self.scores is None else list(self.scores)

    @classmethod
    def load(cls, version: int, data: list[Any]) -> RfmSlice:
        return cls(list(data) if data else None)


def given_scores(state: CustomerState) -> list[int] | None:
    """The (R, F, M) scores ``state`` was last given (its RFM slice), without creating a slice
    (CEL reads every customer; the rank sync stores them with the metrics)."""
    held = state.slices.get(Rfm.kind)
    if held is None:
        legacy: list[int] | None = state.extra.get(_LEGACY)
        return legacy
    if isinstance(held, list):
        return held[1:] or None
    scores: list[int] | None = held.scores
    return scores


def _score_getter(index: int) -> Getter:
    def get(state: CustomerState, _today: int) -> int | None:
        scores = given_scores(state)
        return None if scores is None else int(scores[index])

    return get


_LEGACY = "rfm_scores"  # where states encoded before the slices kept the scores


class Rfm(Dimension, PopulationWork):
    """The ``rfm`` dimension: exact rank scores (:class:`RankIndex`), re-scored after each
    of the customer's events and by population sweeps every ``sweep_every`` of event time.

    Examples
    --------
    >>> from segmentflow.config import RfmConfig
    >>> dim = Rfm(RfmConfig())
    >>> dim.names(), dim.sweep_every_us // 3_600_000_000
    (['rfm'], 24)
    >>> Rfm(RfmConfig(enabled=False)).names()
    []
    """

    kind = "rfm"
    Params = RfmConfig
    slice_type = RfmSlice

    def __init__(self, params: BaseModel, ranks: RankIndex | None = None) -> None:
        super().__init__(params)
        assert isinstance(params, RfmConfig)
        self.enabled = params.enabled
        self.ranks = ranks if ranks is not None else RankIndex()
        self.segments = SegmentMap.parse(params.segments)
        self._names = self.segments.table
        self.sweep_every_us = parse_duration_us(params.sweep_every) if self.enabled else None

    def names(self) -> list[str]:
        return [self.kind] if self.enabled else []

    def evaluate(self, state: CustomerState, at: Moment, emit: Emit) -> list[Change]:
        """Re-score against the population; a change when the segment differs."""
        if not self.enabled or state.first_order is None or state.last_order is None:
            return []
        totals = state.totals
        metrics = (state.last_order, int(totals[_T_ORDERS]), float(totals[_T_REVENUE]))
        return self.on_sweep(state, at, self.ranks.rescore(state.customer_id, metrics), emit)

    def on_sweep(self, state: CustomerState, at: Moment, payload: Any, emit: Emit) -> list[Change]:
        """Give the customer ``payload`` (its new scores): a change if the segment moved."""
        last = state.last_order
        assert last is not None
        r, f, m = payload
        ranks = self.ranks
        entry = ranks._slots.get(state.customer_id)  # RankIndex.record, inlined (hot path)
        if entry is not None:
            ranks._unsaved[entry[0]] = payload
        kind = self.kind
        held = state.slices.get(kind)
        if type(held) is not RfmSlice:  # not created or decoded yet
            held = self.slice(state)
        held.scores = [r, f, m]
        name = self._names.get((r, f), "other")  # SegmentMap.name
        if name == state.values.get(kind):
            return []
        totals = state.totals
        reason = {
            "r": r,
            "f": f,
            "m": m,
            "days_since_last_order": (at.t - last) // DAY_US,
            "orders": int(totals[_T_ORDERS]),
            "revenue": round(float(totals[_T_REVENUE]), 2),
            "population": len(ranks._slots),
        }
        return [emit(state, kind, name, at, reason)]

    def migrate(self, state: CustomerState) -> RfmSlice | None:
        scores = state.extra.pop(_LEGACY, None)
        return None if scores is None else RfmSlice(list(scores))

    def variables(self) -> Mapping[str, Getter]:
        return {
            self.kind: lambda s, _today: s.values.get(self.kind),
            "r_score": _score_getter(0),
            "f_score": _score_getter(1),
            "m_score": _score_getter(2),
        }

    def time_dependent(self) -> frozenset[str]:
        return frozenset({self.kind, "r_score", "f_score", "m_score"})

    def explain(
        self, state: CustomerState, name: str, value: str | None, t: int, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        scores = given_scores(state)
        return None if scores is None else dict(zip("rfm", scores, strict=True))

    # -- population ---------------------------------------------------------------------------

    def population_version(self) -> object:
        return self.ranks.version

    def population_size(self) -> int:
        return len(self.ranks)

    def moved(self, include: Callable[[str], bool] | None) -> list[tuple[str, Any]]:
        return list(self.ranks.sweep(include))

    def forget(self, customer_id: str) -> None:
        self.ranks.update(customer_id, None)

    def dump_population(self) -> bytes | None:
        return pickle.dumps(self.ranks)

    def load_population(self, data: bytes) -> None:
        self.ranks = pickle.loads(data)
