"""CloudEvents HTTP binding: structured and binary encodings, header escaping, round trip."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmentflow.triggers.cloudevents import (
    STRUCTURED_CONTENT_TYPE,
    EncodeError,
    decode,
    decode_header,
    encode,
    encode_header,
)

CHANGE: dict[str, Any] = {
    "specversion": "1.0",
    "type": "segmentflow.segment.changed",
    "source": "segmentflow",
    "id": "c-1042/lifecycle/7",
    "subject": "c-1042",
    "time": "2026-05-30T10:15:00Z",
    "datacontenttype": "application/json",
    "data": {
        "customer_id": "c-1042",
        "dimension": "lifecycle",
        "previous": "active",
        "current": "at_risk",
        "sequence": 7,
        "cause": {"kind": "time", "event_id": None},
        "reason": {"days_since_last_order": 90},
    },
}


def test_structured_mode_sends_the_event_as_is() -> None:
    headers, body = encode(CHANGE, "structured")
    assert headers["Content-Type"] == STRUCTURED_CONTENT_TYPE
    assert headers["Idempotency-Key"] == CHANGE["id"]
    assert orjson.loads(body) == CHANGE
    assert not any(h.startswith("ce-") for h in headers)


def test_binary_mode_puts_attributes_in_headers_and_data_in_the_body() -> None:
    headers, body = encode(CHANGE, "binary")
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == "c-1042/lifecycle/7"
    assert headers["ce-type"] == "segmentflow.segment.changed"
    assert headers["ce-source"] == "segmentflow"
    assert headers["ce-subject"] == "c-1042"
    assert headers["ce-time"] == "2026-05-30T10:15:00Z"
    assert headers["Content-Type"] == "application/json"
    assert "ce-data" not in headers and "ce-datacontenttype" not in headers
    assert orjson.loads(body) == CHANGE["data"]
    assert headers["Idempotency-Key"] == CHANGE["id"]


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_round_trip(mode: str) -> None:
    headers, body = encode(CHANGE, mode)  # type: ignore[arg-type]
    assert decode(headers, body) == CHANGE


def test_target_headers_are_added_but_cannot_replace_cloudevents_ones() -> None:
    headers, _ = encode(
        CHANGE, "binary", {"Authorization": "Bearer t", "ce-id": "forged", "Idempotency-Key": "x"}
    )
    assert headers["Authorization"] == "Bearer t"
    assert headers["ce-id"] == CHANGE["id"]
    assert headers["Idempotency-Key"] == CHANGE["id"]


def test_unusual_customer_ids_are_percent_encoded() -> None:
    change = dict(CHANGE, id='Ünï "c" 100%/lifecycle/1', subject='Ünï "c" 100%')
    headers, body = encode(change, "binary")
    for value in headers.values():
        assert all(0x21 <= ord(ch) <= 0x7E for ch in value.replace(" ", "")), value
    assert " " not in headers["ce-id"] and '"' not in headers["ce-id"]
    assert decode_header(headers["Idempotency-Key"]) == change["id"]
    assert decode(headers, body)["subject"] == change["subject"]


@given(st.text(min_size=1, max_size=40))
def test_header_encoding_is_reversible_and_ascii(value: str) -> None:
    encoded = encode_header(value)
    assert encoded.isascii() and " " not in encoded and '"' not in encoded
    assert decode_header(encoded) == value


def test_errors() -> None:
    with pytest.raises(EncodeError):
        encode({"data": {}}, "structured")
    with pytest.raises(EncodeError):
        encode(CHANGE, "weird")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode(dict(CHANGE, **{"Bad-Name": 1}), "binary")
    with pytest.raises(EncodeError):
        decode({"Content-Type": "application/json"}, b"{}")


def test_binary_headers_follow_the_binding_percent_encoding() -> None:
    # CloudEvents HTTP binding §3.1.3.2: space, '"', '%' and non-printable-ASCII characters
    # (as UTF-8 octets) are percent-encoded; every other printable ASCII character is kept
    change = dict(CHANGE, id='Ünï "c" 100%/lifecycle/1', subject="a+b=c&d;e,f(g)<h>")
    headers, _ = encode(change, "binary")
    assert headers["ce-id"] == "%C3%9Cn%C3%AF%20%22c%22%20100%25/lifecycle/1"
    assert headers["ce-subject"] == "a+b=c&d;e,f(g)<h>"
    assert headers["Idempotency-Key"] == headers["ce-id"]


def test_structured_body_keeps_fractional_times_and_unicode() -> None:
    change = dict(CHANGE, time="2026-05-30T10:15:00.000250Z", subject="Zoë")
    _, body = encode(change, "structured")
    assert orjson.loads(body) == change
    headers, body = encode(change, "binary")
    assert headers["ce-time"] == "2026-05-30T10:15:00.000250Z"
    assert decode(headers, body) == change


def test_a_target_content_type_cannot_replace_the_binding_one() -> None:
    headers, _ = encode(CHANGE, "structured", {"content-type": "text/plain", "X-Tenant": "t1"})
    assert headers["Content-Type"] == STRUCTURED_CONTENT_TYPE and "content-type" not in headers
    assert headers["X-Tenant"] == "t1"


def test_decode_reads_another_producers_binary_request() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "CE-ID": "c%201/rfm/3",
        "CE-Type": "segmentflow.segment.changed",
        "CE-Source": "segmentflow",
        "CE-Time": "2026-05-30T10:15:00Z",
        "Content-Type": "application/json; charset=utf-8",
    }
    event = decode(headers, b'{"current": "champions"}')
    assert event["id"] == "c 1/rfm/3" and event["time"] == "2026-05-30T10:15:00Z"
    assert event["data"] == {"current": "champions"}


def test_invalid_events_are_refused_with_the_reason() -> None:
    with pytest.raises(EncodeError, match="specversion"):
        encode(dict(CHANGE, specversion="0.1"), "structured")
    with pytest.raises(EncodeError, match="RFC 3339"):
        encode(dict(CHANGE, time="yesterday"), "binary")
    with pytest.raises(EncodeError, match="not a CloudEvent"):
        decode({"Content-Type": STRUCTURED_CONTENT_TYPE}, b"{not json")


def test_structured_body_is_the_kafka_records_bytes() -> None:
    # the change record on segment-changes is orjson's compact UTF-8 JSON; the webhook gets
    # the same bytes (unicode unescaped, fractional seconds kept)
    change = dict(CHANGE, subject="Zoë", time="2026-05-30T10:15:00.000250Z")
    assert encode(change, "structured")[1] == orjson.dumps(change)
    assert encode(change, "binary")[1] == orjson.dumps(change["data"])
