"""The worker's event-time clock (CONTRACT §3 "Clock").

For each owned input partition: the latest event timestamp read from it, and whether it still
has unread messages (read position below its end offset). The watermark is the minimum of the
latest timestamps over the partitions that still hold it back; when none does, the latest
timestamp read anywhere. Then minus the allowed lateness; and it never goes backwards.

End offsets come from two sources. The high-water mark of a fetch response is exact: it replaces
whatever was known (a later fetch may report less than a guess did). A ListOffsets answer is a
guess (Tansu answers it wrongly) and is used only until a fetch reports. An end offset is never
kept as the maximum of every answer, which let one too-high answer make an empty partition lag
for ever.

A lagging partition whose end is unknown or only guessed stops holding the clock back once it has
been idle (no new message, no new end offset) for ``idle_timeout`` seconds: an empty or silent
partition never freezes the clock. A partition the broker's fetch shows unread data on keeps
holding it (its events must be applied in order); that wait is visible in :meth:`held_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Partition:
    since: float  # monotonic time of the last progress: message read, end offset changed
    latest: int | None = None  # latest event timestamp read (epoch µs)
    position: int = 0  # next offset to read
    end: int | None = None  # end offset (high-water mark); None until the broker says
    exact: bool = False  # end came from a fetch response (not a ListOffsets guess)

    @property
    def lagging(self) -> bool:
        return self.end is None or self.position < self.end


class Watermark:
    """Event-time watermark over a set of partitions.

    Parameters
    ----------
    allowed_lateness
        Microseconds subtracted from the raw watermark.
    idle_timeout
        Seconds after which a lagging partition whose end offset is unknown or only guessed
        (no fetch high-water mark) no longer holds the clock back when nothing new arrived.
    clock
        Monotonic time source in seconds (injectable for tests).

    Examples
    --------
    >>> w = Watermark()
    >>> w.assign(["a", "b"])
    >>> w.observe("a", offset=0, timestamp=500)
    >>> w.value() is None  # b's end offset is unknown: it could hold anything
    True
    >>> w.set_end("a", 10); w.set_end("b", 10)
    >>> w.observe("b", offset=0, timestamp=100)
    >>> w.value()  # both lag: the slower partition holds the clock back
    100
    >>> w.observe("b", offset=9, timestamp=900)  # b is read to its end: no longer holds back
    >>> w.value()
    500
    """

    def __init__(
        self,
        allowed_lateness: int = 0,
        idle_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed_lateness = allowed_lateness
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._parts: dict[Hashable, _Partition] = {}
        self._value: int | None = None
        #: monotonic time the watermark last moved (or was created)
        self.moved_at = clock()

    def _part(self, tp: Hashable) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(self.clock())
        return part

    def assign(self, partitions: Iterable[Hashable]) -> None:
        """Set the owned partitions (after a rebalance); keeps what is known of kept ones."""
        wanted = set(partitions)
        self._parts = {tp: self._parts.get(tp) or _Partition(self.clock()) for tp in wanted}

    def observe(self, tp: Hashable, offset: int, timestamp: int | None) -> None:
        """Record that the message at ``offset`` of ``tp`` was read (its event ``timestamp``, or
        ``None`` for a message without one, e.g. a dead letter)."""
        part = self._part(tp)
        part.position = max(part.position, offset + 1)
        part.since = self.clock()
        if part.end is not None and part.end < part.position:
            part.end = part.position
        if timestamp is not None and (part.latest is None or timestamp > part.latest):
            part.latest = timestamp

    def set_end(self, tp: Hashable, end_offset: int, exact: bool = True) -> None:
        """Record the partition's end offset: ``exact`` for a fetch response's high-water mark
        (replaces what was known), else a ListOffsets guess (used until a fetch reports)."""
        part = self._part(tp)
        if part.exact and not exact:
            return
        end = max(end_offset, part.position)  # what was read exists, whatever was answered
        if end != part.end:
            part.since = self.clock()
        part.end, part.exact = end, exact or part.exact

    def set_position(self, tp: Hashable, position: int) -> None:
        """Record the consumer's position (e.g. the committed offset at assignment)."""
        part = self._part(tp)
        part.position = max(part.position, position)
        if part.end is not None and part.end < part.position:
            part.end = part.position

    def has_read(self, tp: Hashable) -> bool:
        """Whether any message of ``tp`` has been read or its position is known."""
        part = self._parts.get(tp)
        return part is not None and (part.latest is not None or part.position > 0)

    def _holding(self, part: _Partition, now: float) -> bool:
        if not part.lagging:
            return False
        if part.exact:
            return True  # the broker's fetch shows unread data: wait for it
        return now - part.since < self.idle_timeout

    def holding(self) -> list[Hashable]:
        """Partitions holding the clock back now (lagging and not idle)."""
        now = self.clock()
        return [tp for tp, p in self._parts.items() if self._holding(p, now)]

    def raw(self) -> int | None:
        """The watermark before lateness and monotonicity, or ``None`` if unknown."""
        now = self.clock()
        holding = [p for p in self._parts.values() if self._holding(p, now)]
        if holding:
            if any(p.latest is None for p in holding):
                return None  # a lagging partition not read yet could hold anything
            return min(p.latest for p in holding if p.latest is not None)
        latest = [p.latest for p in self._parts.values() if p.latest is not None]
        return max(latest) if latest else None

    def value(self) -> int | None:
        """The current watermark (monotonic), or ``None`` before anything is known."""
        raw = self.raw()
        if raw is not None:
            candidate = raw - self.allowed_lateness
            if self._value is None or candidate > self._value:
                self._value = candidate
                self.moved_at = self.clock()
        return self._value

    def stalled_seconds(self) -> float:
        """Seconds since the watermark last moved."""
        return max(0.0, self.clock() - self.moved_at)

    def caught_up(self) -> bool:
        """Whether partitions are owned and each is read to an end offset a fetch reported
        (nothing known to be unread).

        Examples
        --------
        >>> w = Watermark()
        >>> w.assign(["a"]); w.caught_up()
        False
        >>> w.set_end("a", 2); w.observe("a", offset=1, timestamp=5); w.caught_up()
        True
        """
        parts = self._parts.values()
        return bool(parts) and all(p.exact and not p.lagging for p in parts)

    def lag(self) -> dict[Hashable, int]:
        """Unread messages per partition."""
        return {tp: max(0, (p.end or 0) - p.position) for tp, p in self._parts.items()}
