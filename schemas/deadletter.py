"""Dead-letter messages (CONTRACT §4)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from segmentflow.schemas.decode import Rejection


def dead_letter(
    rejection: Rejection,
    payload: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    max_event_bytes: int,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """The dead-letter JSON object for a rejected message.

    A payload over ``max_event_bytes`` keeps its first ``max_event_bytes`` bytes and is marked
    ``"truncated": true``.
    """
    raw = payload or b""
    truncated = len(raw) > max_event_bytes
    moment = received_at or datetime.now(UTC)
    letter: dict[str, Any] = {
        "reason": str(rejection.reason),
        "detail": rejection.detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "payload": base64.b64encode(raw[:max_event_bytes]).decode("ascii"),
    }
    if truncated:
        letter["truncated"] = True
    return letter
