"""The worker's event-time clock (CONTRACT §3 "Clock").

For each owned input partition: the latest event timestamp read from it, and whether it still
has unread messages (read position below its end offset). The watermark is the minimum of the
latest timestamps over the partitions that still lag; when none lags, the latest timestamp read
anywhere. Then minus the allowed lateness; and it never goes backwards. A partition whose end
offset is not known yet holds the clock back like a lagging one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Partition:
    latest: int | None = None  # latest event timestamp read (epoch µs)
    position: int = 0  # next offset to read
    end: int | None = None  # end offset (high-water mark); None until the broker says

    @property
    def lagging(self) -> bool:
        return self.end is None or self.position < self.end


class Watermark:
    """Event-time watermark over a set of partitions.

    Parameters
    ----------
    allowed_lateness
        Microseconds subtracted from the raw watermark.

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

    def __init__(self, allowed_lateness: int = 0) -> None:
        self.allowed_lateness = allowed_lateness
        self._parts: dict[Hashable, _Partition] = {}
        self._value: int | None = None

    def assign(self, partitions: Iterable[Hashable]) -> None:
        """Set the owned partitions (after a rebalance); keeps what is known of kept ones."""
        wanted = set(partitions)
        self._parts = {tp: self._parts.get(tp, _Partition()) for tp in wanted}

    def observe(self, tp: Hashable, offset: int, timestamp: int | None) -> None:
        """Record that the message at ``offset`` of ``tp`` was read (its event ``timestamp``, or
        ``None`` for a message without one, e.g. a dead letter)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        part.position = max(part.position, offset + 1)
        if part.end is not None:
            part.end = max(part.end, part.position)
        if timestamp is not None and (part.latest is None or timestamp > part.latest):
            part.latest = timestamp

    def set_end(self, tp: Hashable, end_offset: int) -> None:
        """Record the partition's end offset (high-water mark) as the broker reports it."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        part.end = end_offset if part.end is None else max(part.end, end_offset)

    def set_position(self, tp: Hashable, position: int) -> None:
        """Record the consumer's position (e.g. the committed offset at assignment)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        part.position = max(part.position, position)

    def has_read(self, tp: Hashable) -> bool:
        """Whether any message of ``tp`` has been read or its position is known."""
        part = self._parts.get(tp)
        return part is not None and (part.latest is not None or part.position > 0)

    def raw(self) -> int | None:
        """The watermark before lateness and monotonicity, or ``None`` if unknown."""
        lagging = [p for p in self._parts.values() if p.lagging]
        if lagging:
            if any(p.latest is None for p in lagging):
                return None  # a lagging partition not read yet could hold anything
            return min(p.latest for p in lagging if p.latest is not None)
        latest = [p.latest for p in self._parts.values() if p.latest is not None]
        return max(latest) if latest else None

    def value(self) -> int | None:
        """The current watermark (monotonic), or ``None`` before anything is known."""
        raw = self.raw()
        if raw is not None:
            candidate = raw - self.allowed_lateness
            if self._value is None or candidate > self._value:
                self._value = candidate
        return self._value

    def lag(self) -> dict[Hashable, int]:
        """Unread messages per partition."""
        return {tp: max(0, (p.end or 0) - p.position) for tp, p in self._parts.items()}
