"""Audience reads over the membership index: the worker's members endpoint (CONTRACT §8) and
the ``members`` export (§5), streamed page by page so a million members never sit in memory."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Literal, TextIO

import orjson

from segmentflow.schemas.timefmt import format_us
from segmentflow.state.base import StoreUnavailable
from segmentflow.state.members import (
    CursorError,
    Member,
    MemberReader,
    decode_cursor,
    encode_cursor,
    iter_members,
)

#: page size of ``GET .../members`` without ``limit``, and the largest one allowed
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
#: members read per round trip by the export
EXPORT_PAGE = 10_000
Format = Literal["jsonl", "csv"]


class BadRequest(ValueError):
    """A query parameter the endpoint cannot use (answered 400 with this message)."""


def parse_limit(text: str | None) -> int:
    """The page size asked for (``DEFAULT_LIMIT`` when absent).

    Examples
    --------
    >>> parse_limit(None), parse_limit("25")
    (100, 25)
    >>> try:
    ...     parse_limit("0")
    ... except BadRequest as exc:
    ...     print(exc)
    limit must be an integer from 1 to 10000, got '0'
    """
    if text is None:
        return DEFAULT_LIMIT
    stripped = text.strip()
    if not stripped.isdigit() or not 1 <= int(stripped) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text[:20]!r}")
    return int(stripped)


def member_json(member: Member) -> dict[str, str]:
    """The contract's form of a member: ``{"customer_id", "since"}`` (RFC 3339).

    Examples
    --------
    >>> member_json(Member(86_400_000_000, "c-1"))
    {'customer_id': 'c-1', 'since': '1970-01-02T00:00:00Z'}
    """
    return {"customer_id": member.customer_id, "since": format_us(member.since)}


def members_page(
    reader: MemberReader, dimension: str, value: str, query: Mapping[str, str]
) -> dict[str, Any]:
    """The body of ``GET /segments/{dimension}/{value}/members?limit=N&cursor=C``:
    ``{"members": [...], "next_cursor": C | None}``; :class:`BadRequest` for a bad ``limit`` or
    ``cursor``. A segment nobody is in (or that does not exist) has no members."""
    limit = parse_limit(query.get("limit"))
    cursor = query.get("cursor")
    try:
        after = decode_cursor(cursor) if cursor else None
    except CursorError as exc:
        raise BadRequest(str(exc)) from None
    found = reader.page(dimension, value, limit + 1, after)
    page = found[:limit]
    more = len(found) > limit
    return {
        "members": [member_json(m) for m in page],
        "next_cursor": encode_cursor(page[-1]) if more else None,
    }


def members_response(
    reader: MemberReader, dimension: str, value: str, query: Mapping[str, str]
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of the members endpoint: 200, 400 for bad parameters, 503
    while Redis cannot be reached."""
    try:
        return 200, members_page(reader, dimension, value, query)
    except BadRequest as exc:
        return 400, {"error": str(exc)}
    except StoreUnavailable as exc:
        return 503, {"error": f"the state store cannot be read ({exc}); retry shortly"}


def export_lines(
    reader: MemberReader, dimension: str, value: str, fmt: Format, limit: int | None = None
) -> Iterator[str]:
    """The export's text in chunks of up to :data:`EXPORT_PAGE` lines (csv: the header
    ``customer_id,since`` first; fields quoted where they need it), at most ``limit`` members.

    Examples
    --------
    >>> from segmentflow.state.members import MemberIndex
    >>> from segmentflow.schemas.changes import Change
    >>> index = MemberIndex()
    >>> index.apply([Change("a,b", "rfm", None, "champions", 1, 0, None)])
    >>> print("".join(export_lines(index, "rfm", "champions", "csv")), end="")
    customer_id,since
    "a,b",1970-01-01T00:00:00Z
    """
    page_size = EXPORT_PAGE if limit is None else max(1, min(EXPORT_PAGE, limit))
    members = iter_members(reader, dimension, value, page_size=page_size)
    since_text = lru_cache(maxsize=4096)(format_us)  # entries often share a moment (midnight)
    out: list[str] = ["customer_id,since\n"] if fmt == "csv" else []
    for count, member in enumerate(members, 1):
        cid, since = member.customer_id, since_text(member.since)
        if fmt == "jsonl":  # orjson.dumps(member_json(m)) without the dict, a third faster
            out.append(f'{{"customer_id":{orjson.dumps(cid).decode()},"since":"{since}"}}\n')
        elif _CSV_SPECIAL.search(cid):
            out.append(_csv_row(cid, since))
        else:
            out.append(f"{cid},{since}\n")
        if len(out) >= EXPORT_PAGE:
            yield "".join(out)
            out = []
        if limit is not None and count >= limit:
            break
    if out:
        yield "".join(out)


#: characters that make the csv module quote a field
_CSV_SPECIAL = re.compile(r'[",\r\n]')


def _csv_row(*fields: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue()


def write_export(
    out: TextIO,
    reader: MemberReader,
    dimension: str,
    value: str,
    fmt: Format,
    limit: int | None = None,
) -> None:
    """Write :func:`export_lines` to ``out``."""
    for text in export_lines(reader, dimension, value, fmt, limit):
        out.write(text)
