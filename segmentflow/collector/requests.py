"""HTTP request bodies of the Segment Tracking API: decoding (gzip, JSON) and the structural
checks that decide between 400 and accepting a call (pure functions, no I/O).

A request is all or nothing: a body that is not a JSON object, a ``batch`` that is not a list
of call objects, or a call with a field of the wrong JSON type or no identity is refused with 400
and nothing is produced. So is a body nested deeper than :data:`DEFAULT_MAX_DEPTH`. Calls that
pass these checks are accepted (200); a call that then cannot become a valid contract event
(unmapped track name, missing product id, bad timestamp...) is dead-lettered, as Segment accepts
a batch whose messages its destinations later drop.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from segmentflow.collector.mapping import SEGMENT_CALLS

ENDPOINT_CALLS: Final[dict[str, str]] = {c: c for c in sorted(SEGMENT_CALLS)}
#: analytics.js's short paths (``/v1/t``...) -> endpoint.
SHORT_PATHS: Final[dict[str, str]] = {
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
}
DEFAULT_MAX_BODY_BYTES: Final = 2 * 1024 * 1024
#: Deepest JSON nesting accepted (the body object is depth 1); deeper gets 400.
DEFAULT_MAX_DEPTH: Final = 64
_WRITE_KEY = re.compile(rb'"writeKey"\s*:\s*"([^"\\]*)"')


class RequestError(Exception):
    """The request is refused: HTTP ``status``, machine ``code`` and a human ``message``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def bad_request(message: str) -> RequestError:
    return RequestError(400, "bad_request", message)


@dataclass(frozen=True, slots=True)
class Call:
    """One Segment call from a request: its type (``track``...) and its JSON object."""

    type: str
    message: dict[str, Any]
    index: int


def decompress(raw: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` (``gzip`` or none), refusing more than ``max_bytes`` out."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "x-gzip"):
        raise RequestError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported (gzip)"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise bad_request(f"body is not valid gzip: {exc}") from None
    if len(out) > max_bytes:
        raise RequestError(413, "too_large", f"decompressed body is over {max_bytes} bytes")
    if not inflater.eof:
        raise bad_request("body is not valid gzip: truncated stream")
    return out


def parse_json(body: bytes) -> Any:
    """Parse the body as JSON (UTF-8; no NaN/Infinity; no lone surrogates)."""
    if not body.strip():
        raise bad_request("body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None


def check_depth(value: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Refuse (400) a JSON value nested deeper than ``max_depth`` objects/arrays (iterative: a
    hostile body cannot exhaust the stack here or in the code that walks it later)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise RequestError(
                400, "too_deep", f"body is nested deeper than {max_depth} levels of objects/arrays"
            )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def scan_write_keys(body: bytes) -> list[str]:
    """The plain string values of every ``"writeKey"`` member in the raw JSON ``body``, found
    without parsing it (so a request without a valid key is refused before the costly parse)."""
    return [m.group(1).decode("utf-8", "replace") for m in _WRITE_KEY.finditer(body)]


def basic_auth_key(header: str | None) -> str | None:
    """The write key from an ``Authorization: Basic base64(key:)`` header (``None`` if absent).

    Raises a 401 :class:`RequestError` for a header that is not well-formed Basic auth.
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise RequestError(401, "unauthorized", "Authorization must be Basic <base64(writeKey:)>")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise RequestError(401, "unauthorized", "Authorization is not valid base64") from None
    return decoded.partition(":")[0]


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, str | int) or (isinstance(value, float) and value.is_integer())


def _check_call(call_type: str, message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be a JSON object")
    for field in ("userId", "anonymousId", "messageId"):
        value = message.get(field)
        if value is not None and not _is_id(value):
            raise bad_request(f"{where}.{field} must be a string or an integer")
    if not any(message.get(f) not in (None, "") for f in ("userId", "anonymousId")):
        raise bad_request(f"{where}: userId or anonymousId is required")
    for field in ("timestamp", "originalTimestamp"):
        value = message.get(field)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"{where}.{field} must be an ISO 8601 string")
    for field in ("properties", "traits", "context"):
        value = message.get(field)
        if value is not None and not isinstance(value, dict):
            raise bad_request(f"{where}.{field} must be a JSON object")
    if call_type == "track":
        event = message.get("event")
        if not isinstance(event, str) or not event:
            raise bad_request(f"{where}.event (the track event name) must be a non-empty string")
    elif call_type == "group":
        group = message.get("groupId")
        if group in (None, "") or not _is_id(group):
            raise bad_request(f"{where}.groupId must be a non-empty string or an integer")
    elif call_type == "alias":
        previous = message.get("previousId")
        if previous is not None and not _is_id(previous):
            raise bad_request(f"{where}.previousId must be a string or an integer")
        if previous in (None, "") and message.get("anonymousId") in (None, ""):
            raise bad_request(f"{where}: alias needs previousId (the id being merged)")


def _write_key(body: Mapping[str, Any]) -> str | None:
    key = body.get("writeKey")
    if key is not None and not isinstance(key, str):
        raise bad_request("writeKey must be a string")
    return key


def parse_calls(endpoint: str, body: Any) -> tuple[list[Call], str | None]:
    """Check a request body and split it into calls.

    Parameters
    ----------
    endpoint
        ``track``, ``identify``, ``page``, ``screen``, ``group``, ``alias`` or ``batch``.
    body
        The parsed JSON body.

    Returns
    -------
    (calls, writeKey)
        The calls in order and the body's ``writeKey`` (``None`` if absent).
    """
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    key = _write_key(body)
    if endpoint != "batch":
        call_type = ENDPOINT_CALLS[endpoint]
        _check_call(call_type, body, "body")
        message = {k: v for k, v in body.items() if k != "writeKey"}
        message["type"] = call_type
        return [Call(call_type, message, 0)], key
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise bad_request("batch must be a JSON array of calls")
    shared = body.get("context")
    if shared is not None and not isinstance(shared, dict):
        raise bad_request("context must be a JSON object")
    calls: list[Call] = []
    for index, message in enumerate(batch):
        where = f"batch[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be a JSON object")
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in SEGMENT_CALLS:
            raise bad_request(f"{where}.type must be one of {', '.join(sorted(SEGMENT_CALLS))}")
        _check_call(kind, message, where)
        if shared:
            own = message.get("context")
            message = {**message, "context": {**shared, **(own or {})}}
        calls.append(Call(kind, message, index))
    return calls, key
