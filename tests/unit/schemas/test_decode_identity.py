"""CONTRACT v1.1 §2 identity fields: the ``alias`` type and the optional ``anonymous_id``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from segmentflow.schemas.decode import (
    Event,
    Rejection,
    decode_message,
    validate_event,
    validate_event_full,
)
from segmentflow.schemas.reasons import Reason


def _event(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "customer_id": "u-1",
        "type": "alias",
        "timestamp": "2026-03-01T10:15:00Z",
        "properties": {"previous_id": "anon-1"},
    }
    base.update(extra)
    return base


def test_alias_decodes_with_previous_id() -> None:
    result = decode_message(orjson.dumps(_event()), b"u-1", "website")
    assert isinstance(result, Event)
    assert (result.type, result.previous_id, result.anonymous_id) == ("alias", "anon-1", None)
    assert validate_event_full(_event(), "website") == result


@pytest.mark.parametrize("previous", [None, "", 7, "x" * 257])
def test_alias_needs_a_previous_id(previous: Any) -> None:
    props = {} if previous is None else {"previous_id": previous}
    result = validate_event(_event(properties=props), "website")
    assert isinstance(result, Rejection)
    assert result.reason in (Reason.MISSING_FIELD, Reason.INVALID_FIELD)
    assert validate_event_full(_event(properties=props), "website") == result


def test_alias_belongs_on_the_website_topic() -> None:
    result = validate_event(_event(), "purchase")
    assert isinstance(result, Rejection) and result.reason is Reason.WRONG_TOPIC


def test_anonymous_id_on_any_event() -> None:
    data = _event(type="search", properties={"query": "shoes"}, anonymous_id="anon-9")
    fast, full = validate_event(data, "website"), validate_event_full(data, "website")
    assert isinstance(fast, Event) and fast == full
    assert fast.anonymous_id == "anon-9" and fast.previous_id is None


@pytest.mark.parametrize("bad", ["", 5, "a" * 257, ["x"]])
def test_bad_anonymous_id_is_invalid_field(bad: Any) -> None:
    data = _event(type="search", properties={"query": "shoes"}, anonymous_id=bad)
    result = validate_event(data, "website")
    assert isinstance(result, Rejection) and result.reason is Reason.INVALID_FIELD
    assert validate_event_full(data, "website") == result
