"""Automation triggers: deliver matching segment changes to HTTP webhooks.

Pure logic lives in small modules (:mod:`.matching`, :mod:`.backoff`, :mod:`.ratelimit`,
:mod:`.cloudevents`, :mod:`.config`); :mod:`.dispatcher` is the Kafka/HTTP runtime behind
``segmentflow triggers``.
"""

from __future__ import annotations

DEFAULT_DEADLETTER_TOPIC = "segmentflow-triggers-deadletter"

__all__ = ["DEFAULT_DEADLETTER_TOPIC"]
