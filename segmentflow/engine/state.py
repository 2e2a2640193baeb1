"""Per-customer behavioral state and its compact encoding.

Everything the dimensions and the rule variables of CONTRACT §6 need: totals, per-UTC-day
buckets for the last 90 days, first/last times, flags, latest traits, the current value and
sequence per dimension, and the customer's clock (the moment up to which time-driven changes
have been evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

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
    recent_ids: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: highest applied offset per source "topic:partition" (idempotent redelivery)
    offsets: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Compact bytes (orjson of a positional list)."""
        return orjson.dumps(
            [
                1,
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
                self.recent_ids,
                self.extra,
                self.offsets,
            ]
        )

    @classmethod
    def decode(cls, raw: bytes) -> CustomerState:
        """Inverse of :meth:`encode`."""
        data = orjson.loads(raw)
        if data[0] != 1:
            raise ValueError(f"unknown state encoding version {data[0]}")
        return cls(
            customer_id=data[1],
            first_seen=data[2],
            last_seen=data[3],
            first_order=data[4],
            last_order=data[5],
            reactivated_at=data[6],
            clock=data[7],
            next_due=data[8],
            flags=data[9],
            totals=data[10],
            days={row[0]: row[1:] for row in data[11]},
            traits=data[12],
            values=data[13],
            seqs=data[14],
            recent_ids=data[15],
            extra=data[16],
            offsets=data[17] if len(data) > 17 else {},
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
