"""Machine reason codes for rejected messages (dead letters, CONTRACT §4).

Each code is stable: dashboards and alerting key on it. The README lists them too.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a message was dead-lettered."""

    OVERSIZED = "oversized"
    """The message is larger than ``max_event_bytes``; the payload is truncated."""
    MISSING_KEY = "missing_key"
    """The Kafka message has no key (or an empty one)."""
    KEY_MISMATCH = "key_mismatch"
    """The key is not the UTF-8 encoding of ``customer_id``."""
    INVALID_UTF8 = "invalid_utf8"
    """The value is not valid UTF-8."""
    INVALID_JSON = "invalid_json"
    """The value is not JSON (includes NaN/Infinity literals and nesting too deep to parse)."""
    NOT_AN_OBJECT = "not_an_object"
    """The JSON value is not an object."""
    MISSING_FIELD = "missing_field"
    """A required field is absent."""
    INVALID_FIELD = "invalid_field"
    """A field has the wrong type or an invalid value (e.g. a number as ``customer_id``)."""
    INVALID_MONEY = "invalid_money"
    """Money is negative, not finite, above ``max_money``, or a string that is not a decimal
    number."""
    INVALID_TIMESTAMP = "invalid_timestamp"
    """``timestamp`` is not an RFC 3339 date-time."""
    NAIVE_TIMESTAMP = "naive_timestamp"
    """``timestamp`` has no UTC offset."""
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    """``timestamp`` falls outside the years 1970..2100, or lies more than ``max_future_skew``
    after the receiving process's wall clock (not checked by ``replay``)."""
    UNKNOWN_TYPE = "unknown_type"
    """``type`` is not an event type of CONTRACT §2."""
    WRONG_TOPIC = "wrong_topic"
    """``type`` belongs to another topic than the one it arrived on."""
    STATE_LIMIT = "state_limit"
    """Too many traits or a trait string too long (``max_traits``, ``max_trait_length``)."""
    CORRUPT_STATE = "corrupt_state"
    """The customer's stored state (or RFM metrics) in Redis cannot be decoded: its events are
    quarantined here, untouched state left for repair (see README "Corrupt state")."""
    PROCESSING_ERROR = "processing_error"
    """A valid-looking event made the engine fail (a bug): quarantined instead of lost."""
