"""Instants as integer microseconds since the Unix epoch (UTC), and their RFC 3339 form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?$"
)
MIN_US = 0  # 1970-01-01
MAX_US = int((datetime(2101, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()) * 1_000_000 - 1


class TimestampError(ValueError):
    """A timestamp is malformed (``code`` says how)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 timestamp with a UTC offset into epoch microseconds.

    Examples
    --------
    >>> parse_rfc3339("1970-01-02T00:00:00Z")
    86400000000
    >>> parse_rfc3339("1970-01-01T02:00:00+02:00")
    0
    """
    if (  # fast path: the canonical "YYYY-MM-DDTHH:MM:SSZ" (the date part is checked, cached)
        len(text) == 20
        and text[19] == "Z"
        and text[10] == "T"
        and text[13] == ":"
        and text[16] == ":"
        and text.isascii()
    ):
        hh, mm, ss = text[11:13], text[14:16], text[17:19]
        if hh.isdigit() and mm.isdigit() and ss.isdigit():
            seconds = int(hh) * 3600 + int(mm) * 60 + int(ss)
            midnight = _midnight(text[:10])
            if midnight is not None and hh < "24" and mm < "60" and ss < "60":
                return midnight + seconds * 1_000_000
    return _parse_rfc3339(text)


@lru_cache(maxsize=4096)
def _midnight(date: str) -> int | None:
    """Epoch microseconds of ``date`` (YYYY-MM-DD) at 00:00Z, or ``None`` if not valid."""
    try:
        return _parse_rfc3339(date + "T00:00:00Z")
    except TimestampError:
        return None


def _parse_rfc3339(text: str) -> int:
    match = _RFC3339.match(text)
    if match is None:
        raise TimestampError("invalid_timestamp", f"not an RFC 3339 date-time: {text[:64]!r}")
    if match.group("zone") is None:
        raise TimestampError("naive_timestamp", "timestamp has no UTC offset (add Z or +hh:mm)")
    normal = text.replace("z", "Z").replace("t", "T")
    if "." in normal:  # fromisoformat takes at most 6 fraction digits
        head, _, rest = normal.partition(".")
        digits = re.match(r"\d+", rest)
        assert digits is not None
        frac = digits.group(0)
        normal = f"{head}.{(frac + '000000')[:6]}{rest[len(frac) :]}"
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError as exc:
        raise TimestampError(
            "invalid_timestamp", f"invalid date-time {text[:64]!r}: {exc}"
        ) from None
    try:
        year = moment.astimezone(UTC).year
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        year = 0
    if not 1970 <= year <= 2100:
        raise TimestampError("timestamp_out_of_range", "timestamp outside the years 1970..2100")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_us(us: int) -> str:
    """Format epoch microseconds as RFC 3339 UTC (``Z``), with a fraction only when needed.

    Examples
    --------
    >>> format_us(0)
    '1970-01-01T00:00:00Z'
    >>> format_us(1_500_000)
    '1970-01-01T00:00:01.500000Z'
    """
    day, rest = divmod(us, DAY_US)
    seconds, micro = divmod(rest, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if micro:
        return f"{_date_prefix(day)}{hours:02d}:{minutes:02d}:{seconds:02d}.{micro:06d}Z"
    return f"{_date_prefix(day)}{hours:02d}:{minutes:02d}:{seconds:02d}Z"


@lru_cache(maxsize=4096)
def _date_prefix(day: int) -> str:
    """``YYYY-MM-DDT`` of a day number (days since 1970-01-01)."""
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")


def day_of(us: int) -> int:
    """The UTC calendar day number of an instant (days since 1970-01-01)."""
    return us // DAY_US


def to_datetime(us: int) -> datetime:
    """Epoch microseconds to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def from_datetime(moment: datetime) -> int:
    """An aware datetime to epoch microseconds."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
