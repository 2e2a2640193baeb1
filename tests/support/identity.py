"""Two processors over one real Redis, each owning one partition as a worker does, for the
cross-worker identity tests (notes/identity.md): the sides, and their change stream against
``replay``'s."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from segmentflow.bootstrap import replay_events
from segmentflow.config import config_from_dict
from segmentflow.schemas.changes import Change
from segmentflow.service.processor import InputRecord, Processor
from segmentflow.state.redis_store import RedisStore
from support.streams import Event

T0 = 1_767_225_600_000_000
HOUR = 3_600_000_000
#: a rule on a total that a merge adds up (the anonymous views count for the user)
CONFIG: dict[str, Any] = {
    "persona": {"enabled": False},
    "rules": [{"name": "viewer", "when": "product_views_30d >= 2"}],
}
Rows = dict[tuple[str, str], list[tuple[Any, ...]]]


class Side:
    """One worker's processor (:data:`CONFIG`, outbox on), owning one partition, with its own
    offsets and the changes it emitted."""

    def __init__(self, url: str, namespace: str, partition: int) -> None:
        self.store = RedisStore(url, namespace, shards=2, outbox=True)
        self.store.assign_partitions({partition})
        self.processor = Processor(config_from_dict(CONFIG), self.store)
        self.partition = partition
        self.offset = 0
        self.changes: list[Change] = []

    def process(self, rec: InputRecord) -> list[tuple[InputRecord, int]]:
        """Apply ``rec``, keep its changes; return the records to forward (record, partition)."""
        self.changes.extend(self.processor.process([rec]).changes)
        forwards = self.processor.take_forwards()
        return [(r.record, p) for r, p in forwards if r.record is not None]


S = TypeVar("S", bound=Side)


@contextmanager
def two_sides(kind: type[S], url: str, namespace: str) -> Iterator[tuple[S, S]]:
    """The sides owning partitions 0 and 1; their stores closed after."""
    made = (kind(url, namespace, 0), kind(url, namespace, 1))
    try:
        yield made
    finally:
        for side in made:
            side.store.close()


def change_rows(changes: Sequence[dict[str, Any]], by_sequence: bool = False) -> Rows:
    """Non-RFM changes (CloudEvents) per (customer, dimension): id, previous, current, time,
    cause and reason in stream order, or ordered by the id's sequence number."""
    out: Rows = defaultdict(list)
    for c in changes:
        d = c["data"]
        if d["dimension"] == "rfm":
            continue
        key = (d["customer_id"], d["dimension"])
        out[key].append((c["id"], d["previous"], d["current"], c["time"], d["cause"], d["reason"]))
    if by_sequence:
        return {
            key: sorted(rows, key=lambda r: int(r[0].rsplit("/", 1)[1]))
            for key, rows in out.items()
        }
    return dict(out)


def side_rows(sides: Sequence[Side], by_sequence: bool = False) -> Rows:
    """:func:`change_rows` of what the sides emitted together."""
    return change_rows([c.to_cloudevent() for s in sides for c in s.changes], by_sequence)


def replay_rows(history: list[dict[str, Any]], until: int, by_sequence: bool = False) -> Rows:
    """:func:`change_rows` of ``replay`` of ``history`` up to ``until`` (µs) under
    :data:`CONFIG`."""
    return change_rows(replay_events(history, config_from_dict(CONFIG), until), by_sequence)


#: the identity worker tests' config and events (two workers; a Redis Cluster)
IDENTITY_CONFIG = """\
rfm: {enabled: false}
persona: {enabled: false}
rules:
  - name: viewer
    when: 'product_views_30d >= 2'
"""
IDENTITY_START = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)


def identity_event(n: int, cid: str, kind: str, minutes: int, **extra: Any) -> Event:
    """Event ``n`` of ``cid`` (page/product view, identify, order), ``minutes`` after the start
    (website topic; orders on the purchase topic)."""
    table: dict[str, dict[str, Any]] = {
        "page_view": {"url": "/"},
        "product_view": {"product_id": "p1"},
        "identify": {"traits": {"email": f"{cid}@example.com"}},
        "order_completed": {"order_id": f"o{n}", "revenue": 30, "currency": "EUR"},
    }
    props = table[kind]
    body = {
        "event_id": f"{cid}-{n}",
        "customer_id": cid,
        "type": kind,
        "timestamp": (IDENTITY_START + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "properties": props,
        **extra,
    }
    topic = "purchase" if kind == "order_completed" else "website"
    return Event(topic, cid.encode(), orjson.dumps(body), body)
