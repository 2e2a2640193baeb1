"""Segment-change events (CONTRACT §3), CloudEvents 1.0 structured JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from segmentflow.schemas.timefmt import format_us

CHANGE_TYPE = "segmentflow.segment.changed"
SOURCE = "segmentflow"


@dataclass(frozen=True, slots=True)
class Change:
    """One change of a customer's value in one dimension.

    ``at`` is the event time of the transition in epoch microseconds; ``event_id`` is the
    causing event's id, or ``None`` for a time-driven change.
    """

    customer_id: str
    dimension: str
    previous: str | None
    current: str | None
    sequence: int
    at: int
    event_id: str | None
    reason: dict[str, Any] = field(default_factory=dict)
    #: ``cause.kind`` when neither ``event`` nor ``time`` (``"merge"``, ``"config"``; §3, §6)
    cause: str | None = None
    _json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def to_json(self) -> bytes:
        """:meth:`to_cloudevent` as JSON bytes, encoded once (the Redis outbox and the Kafka
        send share them)."""
        encoded = self._json
        if encoded is None:
            encoded = orjson.dumps(self.to_cloudevent())
            object.__setattr__(self, "_json", encoded)
        return encoded

    @property
    def id(self) -> str:
        """``<customer_id>/<dimension>/<sequence>``."""
        return f"{self.customer_id}/{self.dimension}/{self.sequence}"

    def to_cloudevent(self) -> dict[str, Any]:
        """The contract's JSON object for this change."""
        return {
            "specversion": "1.0",
            "type": CHANGE_TYPE,
            "source": SOURCE,
            "id": self.id,
            "subject": self.customer_id,
            "time": format_us(self.at),
            "datacontenttype": "application/json",
            "data": {
                "customer_id": self.customer_id,
                "dimension": self.dimension,
                "previous": self.previous,
                "current": self.current,
                "sequence": self.sequence,
                "cause": {
                    "kind": self.cause or ("time" if self.event_id is None else "event"),
                    "event_id": self.event_id,
                },
                "reason": self.reason,
            },
        }
