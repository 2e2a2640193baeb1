"""Dead-letter values (CONTRACT §4): the documented fields, base64 payload, truncation flag."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from segmentflow.schemas.deadletter import dead_letter
from segmentflow.schemas.decode import Limits, Rejection, decode_message
from segmentflow.schemas.reasons import Reason
from segmentflow.schemas.timefmt import from_datetime, parse_rfc3339

FIELDS = {"reason", "detail", "topic", "partition", "offset", "received_at", "payload"}
AT = datetime(2026, 3, 1, 10, 15, 0, 250_000, tzinfo=UTC)


def test_fields_and_payload_round_trip() -> None:
    payload = b'{"event_id": "e-\xff"}'
    rejection = decode_message(payload, b"c-1", "website")
    assert isinstance(rejection, Rejection)
    letter = dead_letter(rejection, payload, "website-events", 3, 1234, 65536, AT)
    assert set(letter) == FIELDS  # no "truncated" unless truncated
    assert letter["reason"] == "invalid_utf8" == Reason.INVALID_UTF8.value
    assert isinstance(letter["reason"], str) and type(letter["reason"]) is str
    assert letter["detail"] == rejection.detail
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("website-events", 3, 1234)
    assert base64.b64decode(letter["payload"], validate=True) == payload
    assert letter["received_at"].endswith("Z")
    assert parse_rfc3339(letter["received_at"]) == from_datetime(AT)
    # the value is plain JSON
    assert orjson.loads(orjson.dumps(letter)) == letter


def test_received_at_in_another_zone_is_written_in_utc() -> None:
    local = AT.astimezone(timezone(timedelta(hours=-7)))
    letter = dead_letter(Rejection(Reason.INVALID_JSON, "x"), b"{", "t", 0, 0, 10, local)
    assert letter["received_at"].endswith("Z")
    assert parse_rfc3339(letter["received_at"]) == from_datetime(AT)


def test_received_at_defaults_to_now() -> None:
    before = from_datetime(datetime.now(UTC))
    letter = dead_letter(Rejection(Reason.INVALID_JSON, "x"), b"{", "t", 0, 0, 10)
    after = from_datetime(datetime.now(UTC))
    assert before <= parse_rfc3339(letter["received_at"]) <= after


@pytest.mark.parametrize("size", [0, 1, 99, 100])
def test_not_truncated_up_to_the_limit(size: int) -> None:
    payload = bytes(range(256))[:size] if size <= 256 else b""
    letter = dead_letter(Rejection(Reason.INVALID_JSON, "x"), payload, "t", 0, 0, 100, AT)
    assert "truncated" not in letter or letter["truncated"] is False
    assert base64.b64decode(letter["payload"]) == payload


def test_oversized_payload_keeps_first_max_bytes_and_is_flagged() -> None:
    payload = bytes(i % 251 for i in range(1000))
    rejection = decode_message(payload, b"k", "website", Limits(max_event_bytes=100))
    assert isinstance(rejection, Rejection) and rejection.reason is Reason.OVERSIZED
    letter = dead_letter(rejection, payload, "t", 1, 2, 100, AT)
    assert letter["reason"] == "oversized"
    assert letter["truncated"] is True
    assert base64.b64decode(letter["payload"]) == payload[:100]


def test_missing_value_gives_empty_payload() -> None:
    letter = dead_letter(Rejection(Reason.INVALID_JSON, "tombstone"), None, "t", 0, 5, 100, AT)
    assert letter["payload"] == ""
    assert letter["offset"] == 5
