"""CloudEvents 1.0 HTTP protocol binding for change events (structured and binary modes).

A change event (CONTRACT §3) already is a CloudEvent in structured JSON form.

* structured: ``Content-Type: application/cloudevents+json``, the event as the body.
* binary: every context attribute as a ``ce-<name>`` header, ``Content-Type`` from
  ``datacontenttype`` and ``data`` as the JSON body.

Header values are percent-encoded as the binding requires (space, ``"``, ``%`` and anything
outside printable ASCII), so customer ids with any characters survive. Every request also carries
``Idempotency-Key: <change id>`` (same encoding), identical on every retry of a delivery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, unquote

import orjson

Mode = Literal["structured", "binary"]
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_ATTRIBUTE = re.compile(r"^[a-z0-9]{1,20}$")
_NOT_ATTRIBUTES = {"data", "data_base64", "datacontenttype"}


class EncodeError(ValueError):
    """The change event cannot be sent as a CloudEvent (e.g. missing ``id``)."""


def encode_header(value: str) -> str:
    """Percent-encode a header value per the CloudEvents HTTP binding.

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


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


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
    change_id = change.get("id")
    if not isinstance(change_id, str) or not change_id:
        raise EncodeError("change event without an id")
    headers: dict[str, str] = dict(extra_headers or {})
    if mode == "structured":
        headers["Content-Type"] = STRUCTURED_CONTENT_TYPE
        body = orjson.dumps(dict(change))
    elif mode == "binary":
        for name, value in change.items():
            if name in _NOT_ATTRIBUTES or value is None:
                continue
            if not _ATTRIBUTE.match(name):
                raise EncodeError(f"attribute name {name!r} is not a CloudEvents attribute name")
            headers[f"ce-{name}"] = encode_header(_attribute_text(value))
        headers["Content-Type"] = str(change.get("datacontenttype") or "application/json")
        body = orjson.dumps(change.get("data"))
    else:
        raise EncodeError(f"unknown mode {mode!r} (structured or binary)")
    headers[IDEMPOTENCY_HEADER] = encode_header(change_id)
    return headers, body


def decode(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Rebuild the structured event from an HTTP request in either mode (for receivers/tests).

    Binary-mode attributes come back as strings (``specversion``, ``id``, ``time``, ...).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "")
    if content_type.split(";")[0].strip() == STRUCTURED_CONTENT_TYPE:
        event: dict[str, Any] = orjson.loads(body)
        return event
    event = {k[3:]: decode_header(v) for k, v in lowered.items() if k.startswith("ce-")}
    if "specversion" not in event:
        raise EncodeError("neither structured content type nor ce-specversion header")
    event["datacontenttype"] = content_type
    event["data"] = orjson.loads(body) if body else None
    return event
