"""Argument types shared by the CLI commands: one parser and one error message per kind of
value, so every command accepts the same forms and says the same thing about a bad one."""

from __future__ import annotations

import argparse

from segmentflow.schemas.timefmt import TimestampError, parse_rfc3339

#: what to write instead of a bad instant (``--until``, ``--at``)
INSTANT_HINT = (
    "write an RFC 3339 date-time with a UTC offset, e.g. 2026-05-30T00:00:00Z "
    "or 2026-05-30T02:00:00+02:00"
)


def instant(text: str) -> int:
    """An argparse type: an RFC 3339 instant (``--until``, ``--at``) as epoch microseconds. A bad
    one ends the command with exit code 2 and a usage line saying what to write.

    Examples
    --------
    >>> instant("1970-01-02T00:00:00Z"), instant("1970-01-01T02:00:00+02:00")
    (86400000000, 0)
    >>> try:
    ...     instant("2026-05-30")
    ... except argparse.ArgumentTypeError as exc:
    ...     print(exc)
    not an RFC 3339 date-time: '2026-05-30'; write an RFC 3339 date-time with a UTC offset, \
e.g. 2026-05-30T00:00:00Z or 2026-05-30T02:00:00+02:00
    """
    try:
        return parse_rfc3339(text)
    except TimestampError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; {INSTANT_HINT}") from None
