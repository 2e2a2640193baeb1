"""Per-customer behavioral state and its compact encoding.

Everything the dimensions and the rule variables of CONTRACT §6 need: totals, per-UTC-day
buckets for the last 90 days, first/last times, flags, latest traits, the current value and
sequence per dimension, and the customer's clock (the moment up to which time-driven changes
have been evaluated).
"""

from __future__ import annotations

import functools
import hashlib
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zstandard

WINDOW_DAYS = 90

#: Totals, in this order in ``CustomerState.totals``.
TOTALS = (
    "orders",
    "revenue",
    "refunds",
    "page_views",
    "product_views",
    "cart_adds",
    "searches",
    "checkouts",
    "emails_delivered",
    "email_opens",
    "email_clicks",
)
T = {name: index for index, name in enumerate(TOTALS)}

#: Windowed metrics, in this order in each day bucket.
WINDOWED = (
    "orders",
    "revenue",
    "page_views",
    "product_views",
    "cart_adds",
    "searches",
    "checkouts",
    "email_opens",
    "email_clicks",
)
W = {name: index for index, name in enumerate(WINDOWED)}

#: event type -> metric it counts (revenue handled separately)
COUNTED: dict[str, str] = {
    "order_completed": "orders",
    "order_refunded": "refunds",
    "page_view": "page_views",
    "product_view": "product_views",
    "add_to_cart": "cart_adds",
    "search": "searches",
    "checkout_started": "checkouts",
    "email_delivered": "emails_delivered",
    "email_opened": "email_opens",
    "email_clicked": "email_clicks",
}

#: Encoding v3: this byte, the count of kept event-id hashes (LEB128 varint), the hashes (8 bytes
#: each, in apply order), then the positional orjson of the other fields compressed by zstd with
#: the dictionary ``state.zdict`` (trained by ``scripts/train_state_dict.py``; states written
#: with it can only be read with it, so a new dictionary needs a new version byte). The body ends
#: with the home partition, per kept hash ``last_seen - event time`` (µs), and the dimensions'
#: typed slices ``{kind: [version, *data]}`` (absent in v3 states written before them: read as
#: none). v2 (a 2-byte count, hashes without times, no home) and v1 (plain orjson, event ids as
#: strings) are read.
_V3 = b"\x03"
_V2 = b"\x02"
DICTIONARY = Path(__file__).with_name("state.zdict")


@functools.cache
def _codec() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """Compressor and decompressor with the state dictionary (loaded on first use)."""
    trained = zstandard.ZstdCompressionDict(
        DICTIONARY.read_bytes(), dict_type=zstandard.DICT_TYPE_FULLDICT
    )
    compressor = zstandard.ZstdCompressor(level=3, dict_data=trained, write_dict_id=False)
    return compressor, zstandard.ZstdDecompressor(dict_data=trained)


def event_id_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id (BLAKE2b, the same in every process), kept instead of
    the id for de-duplication: 8 bytes per id whatever its length; a false match needs two ids
    a customer applied within ``dedup_horizon`` to collide (about n**2 / 2**65 for n ids)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


#: kind -> typed slice class (``load(version, data)``), filled as dimension classes are defined
#: (``segmentflow.segmenters.dimension``); a slice of an unknown kind stays a raw list
SLICE_TYPES: dict[str, Any] = {}


def _load_slice(kind: str, held: list[Any]) -> Any:
    cls = SLICE_TYPES.get(kind)
    return held if cls is None else cls.load(held[0], held[1:])


FLAG_UNSUBSCRIBED = 1
FLAG_COMPLAINED = 2
FLAG_HARD_BOUNCED = 4


@dataclass(slots=True)
class CustomerState:
    """One customer's state. Instants are epoch microseconds (UTC)."""

    customer_id: str
    first_seen: int | None = None
    last_seen: int | None = None
    first_order: int | None = None
    last_order: int | None = None
    reactivated_at: int | None = None
    clock: int | None = None
    next_due: int | None = None
    flags: int = 0
    totals: list[float] = field(default_factory=lambda: [0] * len(TOTALS))
    days: dict[int, list[float]] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    #: :func:`event_id_hash` -> event time of the applied events (apply order) within
    #: ``dedup_horizon`` of ``last_seen`` (older ones may linger until pruned; see the engine)
    recent: dict[int, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: highest applied offset per source ``topic:partition`` (``topic:partition@epoch`` after
    #: the topic-partition's first new incarnation): a hint for redelivery beyond the horizon
    offsets: dict[str, int] = field(default_factory=dict)
    #: the input partition number that owns the customer (its due index and outbox shard):
    #: where its first applied event arrived; ``None`` outside Kafka (replay)
    home: int | None = None
    #: per dimension kind, its typed state slice (``segmentflow.segmenters.dimension``), or
    #: the stored ``[version, *data]`` list until the dimension first reads it
    slices: dict[str, Any] = field(default_factory=dict)

    @property
    def recent_ids(self) -> list[int]:
        """The kept event-id hashes, in apply order."""
        return list(self.recent)

    def body(self) -> bytes:
        """The fields other than the event-id hashes (but with their times, relative to
        ``last_seen``): orjson of a positional list."""
        base = self.last_seen or 0
        return orjson.dumps(
            [
                self.customer_id,
                self.first_seen,
                self.last_seen,
                self.first_order,
                self.last_order,
                self.reactivated_at,
                self.clock,
                self.next_due,
                self.flags,
                self.totals,
                [[day, *bucket] for day, bucket in self.days.items()],
                self.traits,
                self.values,
                self.seqs,
                self.extra,
                self.offsets,
                self.home,
                [base - ts for ts in self.recent.values()],
                {
                    kind: held if isinstance(held, list) else [held.version, *held.dump()]
                    for kind, held in self.slices.items()
                },
            ]
        )

    def encode(self) -> bytes:
        """Compact bytes: packed id hashes, then the zstd-compressed :meth:`body`
        (see :data:`_V3`). Raises ``ValueError`` for a non-finite total or day bucket (JSON has
        no inf/NaN: stored, it would read back as null and break the customer)."""
        check_finite(self)
        ids = array("Q", self.recent)
        if ids.itemsize != 8:  # pragma: no cover - every 64-bit CPython platform has 8
            raise RuntimeError("array('Q') is not 8 bytes on this platform")
        header = _V3 + _varint(len(ids))
        return header + ids.tobytes() + _codec()[0].compress(self.body())

    @classmethod
    def decode(cls, raw: bytes) -> CustomerState:
        """Inverse of :meth:`encode` (also reads the v2 and v1 encodings). Raises
        ``ValueError`` (or a zstd/orjson error) for bytes that are no state."""
        version = raw[:1]
        if version == _V3:
            n, start = _read_varint(raw, 1)
        elif version == _V2:
            n, start = int.from_bytes(raw[1:3], "little"), 3
        else:
            return cls._decode_v1(raw)
        ids = array("Q")
        ids.frombytes(raw[start : start + 8 * n])
        if len(ids) != n:
            raise ValueError(f"truncated state: {len(ids)} of {n} event-id hashes")
        fields = orjson.loads(_codec()[1].decompress(raw[start + 8 * n :]))
        hashes = ids.tolist()
        base = fields[2] or 0
        if version == _V2:  # no times: keep them a full horizon from the latest event
            return cls._from_fields(fields, dict.fromkeys(hashes, base))
        deltas = fields[17]
        if len(deltas) != n:
            raise ValueError(f"corrupt state: {len(deltas)} event times for {n} hashes")
        state = cls._from_fields(fields, {h: base - d for h, d in zip(hashes, deltas, strict=True)})
        state.home = fields[16]
        if len(fields) > 18:
            state.slices = {kind: _load_slice(kind, held) for kind, held in fields[18].items()}
        return state

    @classmethod
    def _decode_v1(cls, raw: bytes) -> CustomerState:
        """v1: orjson of ``[1, <the v2 fields up to seqs>, event ids, extra, offsets?]``."""
        data = orjson.loads(raw)
        if not isinstance(data, list) or data[0] != 1:
            version = data[0] if isinstance(data, list) and data else "?"
            raise ValueError(f"unknown state encoding version {version}")
        fields = [*data[1:15], data[16], data[17] if len(data) > 17 else {}]
        return cls._from_fields(fields, dict.fromkeys(map(event_id_hash, data[15]), data[3] or 0))

    @classmethod
    def _from_fields(cls, data: list[Any], recent: dict[int, int]) -> CustomerState:
        return cls(
            customer_id=data[0],
            first_seen=data[1],
            last_seen=data[2],
            first_order=data[3],
            last_order=data[4],
            reactivated_at=data[5],
            clock=data[6],
            next_due=data[7],
            flags=data[8],
            totals=data[9],
            days={row[0]: row[1:] for row in data[10]},
            traits=data[11],
            values=data[12],
            seqs=data[13],
            recent=recent,
            extra=data[14],
            offsets=data[15],
        )

    def window(self, metric: str, n: int, today: int) -> float:
        """Sum of ``metric`` over days ``today - n < day <= today``."""
        index = W[metric]
        low = today - n
        return sum(b[index] for d, b in self.days.items() if low < d <= today)

    def prune(self, today: int) -> None:
        """Drop day buckets that can no longer fall in any window."""
        low = today - WINDOW_DAYS
        for day in [d for d in self.days if d <= low]:
            del self.days[day]


def check_finite(state: CustomerState) -> None:
    """Raise ``ValueError`` if a total or day bucket of ``state`` is inf or NaN.

    One sum decides for almost every state (a sum of finite values is finite unless it
    overflows); only a sum that is not finite is checked value by value.

    Examples
    --------
    >>> state = CustomerState("c-1", totals=[1.0, 1e308, 1e308])
    >>> check_finite(state)  # the sum overflows, every value is finite
    >>> state.totals[0] = float("nan")
    >>> check_finite(state)
    Traceback (most recent call last):
    ...
    ValueError: customer 'c-1': a total is not finite
    """
    days = state.days
    if math.isfinite(sum(state.totals) + sum(map(sum, days.values()))):
        return
    if not all(map(math.isfinite, state.totals)) or not all(
        math.isfinite(x) for bucket in days.values() for x in bucket
    ):
        raise ValueError(f"customer {state.customer_id[:64]!r}: a total is not finite")


def _varint(n: int) -> bytes:
    """LEB128 unsigned varint."""
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    """The varint at ``raw[at:]`` and the index after it."""
    n = shift = 0
    while True:
        if at >= len(raw) or shift > 63:
            raise ValueError("truncated state header")
        byte = raw[at]
        at += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, at
