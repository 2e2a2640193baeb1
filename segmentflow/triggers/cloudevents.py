"""CloudEvents 1.0 HTTP protocol binding for change events, by the ``cloudevents`` SDK.

A change event (CONTRACT §3) already is a CloudEvent in structured JSON form; the SDK
(``cloudevents.core.bindings.http``) validates it and renders it in either content mode, with
:class:`OrjsonFormat` (the SDK's JSON format, serialized by orjson) for the JSON:

* structured: ``Content-Type: application/cloudevents+json``, the event as the body.
* binary: every context attribute as a ``ce-<name>`` header, ``Content-Type`` from
  ``datacontenttype`` and ``data`` as the JSON body.

The SDK percent-encodes ``ce-*`` header values as the binding (§3.1.3.2) requires: space,
``"``, ``%`` and everything outside printable ASCII (U+0021-U+007E), as UTF-8 octets, so
customer ids with any characters survive. Every request also carries
``Idempotency-Key: <change id>`` (same encoding), identical on every retry of a delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, unquote

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

Mode = Literal["structured", "binary"]
STRUCTURED_CONTENT_TYPE = JSONFormat.CONTENT_TYPE
IDEMPOTENCY_HEADER = "Idempotency-Key"
# the binding's rule (the SDK's for ce-* headers): printable ASCII but space, '"' and '%'
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


class OrjsonFormat(JSONFormat):
    """The SDK's JSON event format, serialized by orjson: compact UTF-8 JSON, the bytes of the
    change record on Kafka, many times faster than the SDK's ``json.dumps``. Byte data and
    non-JSON content types are left to the SDK.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> OrjsonFormat().write_data({"at": datetime(2026, 5, 30, tzinfo=UTC)}, None)
    b'{"at":"2026-05-30T00:00:00Z"}'
    """

    def _json(self, content_type: str | None) -> bool:
        return bool(self.JSON_CONTENT_TYPE_PATTERN.match(content_type or self.DEFAULT_CONTENT_TYPE))

    def write(self, event: BaseCloudEvent) -> bytes:
        data = event.get_data()
        attributes = event.get_attributes()
        if isinstance(data, bytes | bytearray) or not self._json(attributes.get("datacontenttype")):
            return super().write(event)
        value = dict(attributes) if data is None else {**attributes, "data": data}
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)

    def write_data(
        self, data: dict[str, Any] | str | bytes | None, datacontenttype: str | None
    ) -> bytes:
        if isinstance(data, dict) and self._json(datacontenttype):
            return orjson.dumps(data, option=orjson.OPT_UTC_Z)
        return super().write_data(data, datacontenttype)


_FORMAT = OrjsonFormat()


class EncodeError(ValueError):
    """The change event cannot be sent as a CloudEvent (e.g. missing ``id``)."""


def encode_header(value: str) -> str:
    """Percent-encode a header value per the CloudEvents HTTP binding (as the SDK does).

    Examples
    --------
    >>> encode_header("c-1/lifecycle/2")
    'c-1/lifecycle/2'
    >>> encode_header("Ünïcode 100%")
    '%C3%9Cn%C3%AFcode%20100%25'
    """
    return quote(value, safe=_SAFE)


def decode_header(value: str) -> str:
    """Inverse of :func:`encode_header`."""
    return unquote(value)


def _time_text(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def to_cloudevent(change: Mapping[str, Any], content_type: str | None = None) -> CloudEvent:
    """The SDK event of a change event (structured JSON object); raises :class:`EncodeError`.

    ``content_type`` is the ``datacontenttype`` to assume when the change has none.

    Examples
    --------
    >>> ev = to_cloudevent({"specversion": "1.0", "id": "c-1/rfm/1", "type": "t",
    ...                     "source": "s", "time": "2026-05-30T10:15:00Z", "data": {}})
    >>> ev.get_id(), ev.get_time().isoformat()
    ('c-1/rfm/1', '2026-05-30T10:15:00+00:00')
    """
    change_id = change.get("id")
    if not isinstance(change_id, str) or not change_id:
        raise EncodeError("change event without an id")
    attributes = {
        k: v for k, v in change.items() if k not in ("data", "data_base64") and v is not None
    }
    time = attributes.get("time")
    if isinstance(time, str):
        try:
            attributes["time"] = datetime.fromisoformat(time)
        except ValueError:
            raise EncodeError(f"{change_id}: time {time!r} is not an RFC 3339 timestamp") from None
    if content_type and not attributes.get("datacontenttype"):
        attributes["datacontenttype"] = content_type
    try:
        event = CloudEvent(attributes, change.get("data"))
    except BaseCloudEventException as exc:
        raise EncodeError(f"{change_id}: not a valid CloudEvent: {exc}") from None
    if "time" not in attributes:
        event.get_attributes().pop("time")  # the SDK stamps "now"; a change has its own time
    return event


def encode(
    change: Mapping[str, Any], mode: Mode, extra_headers: Mapping[str, str] | None = None
) -> tuple[dict[str, str], bytes]:
    """HTTP headers and body for delivering ``change``.

    Parameters
    ----------
    change
        A contract §3 change event (CloudEvents structured JSON object).
    mode
        ``structured`` or ``binary``.
    extra_headers
        Target headers (e.g. ``Authorization``); they cannot replace the CloudEvents headers.

    Examples
    --------
    >>> ev = {"specversion": "1.0", "id": "c-1/rfm/1", "type": "t", "source": "s",
    ...       "datacontenttype": "application/json", "data": {"current": "champions"}}
    >>> headers, body = encode(ev, "binary")
    >>> headers["ce-id"], headers["Idempotency-Key"], body
    ('c-1/rfm/1', 'c-1/rfm/1', b'{"current":"champions"}')
    """
    if mode not in ("structured", "binary"):
        raise EncodeError(f"unknown mode {mode!r} (structured or binary)")
    if mode == "structured":
        message = ce_http.to_structured(to_cloudevent(change), _FORMAT)
    else:
        message = ce_http.to_binary(to_cloudevent(change, "application/json"), _FORMAT)
    ours = {name.lower() for name in message.headers} | {IDEMPOTENCY_HEADER.lower()}
    headers = {k: v for k, v in (extra_headers or {}).items() if k.lower() not in ours}
    for name, value in message.headers.items():
        headers["Content-Type" if name == "content-type" else name] = value
    headers[IDEMPOTENCY_HEADER] = encode_header(str(change["id"]))
    return headers, message.body


def _as_change(event: BaseCloudEvent) -> dict[str, Any]:
    change: dict[str, Any] = dict(event.get_attributes())
    if isinstance(change.get("time"), datetime):
        change["time"] = _time_text(change["time"])
    change["data"] = event.get_data()
    return change


def decode(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Rebuild the structured event from an HTTP request in either mode (for receivers/tests).

    Binary-mode attributes come back as strings (``specversion``, ``id``, ``time``, ...).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip()
    message = ce_http.HTTPMessage(headers=lowered, body=body)
    try:
        if content_type == STRUCTURED_CONTENT_TYPE:
            return _as_change(ce_http.from_structured(message, _FORMAT, CloudEvent))
        if "ce-specversion" not in lowered:
            raise EncodeError("neither structured content type nor ce-specversion header")
        return _as_change(ce_http.from_binary(message, _FORMAT, CloudEvent))
    except (BaseCloudEventException, ValueError) as exc:
        if isinstance(exc, EncodeError):
            raise
        raise EncodeError(f"not a CloudEvent: {exc}") from None
