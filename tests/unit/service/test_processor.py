"""Processor over a MemoryStore: dead letters (CONTRACT §4) next to applied records, accounting,
populations, time-driven firing and forget()."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import pytest

from segmentflow.config import config_from_dict
from segmentflow.schemas.timefmt import from_datetime, parse_rfc3339
from segmentflow.service.processor import InputRecord, Processor, is_tombstone
from segmentflow.state.memory import MemoryStore

DAY = 86_400_000_000
T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
T0_US = from_datetime(T0)
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TOPICS = {"website": "website-events", "email": "email-events", "purchase": "purchase-events"}
KIND_OF = {
    "page_view": "website",
    "identify": "website",
    "search": "website",
    "email_opened": "email",
    "order_completed": "purchase",
    "order_refunded": "purchase",
}
PROPS: dict[str, dict[str, Any]] = {
    "page_view": {"url": "/"},
    "search": {"query": "q"},
    "email_opened": {"campaign_id": "cmp"},
    "order_completed": {"order_id": "o", "revenue": "10.00", "currency": "EUR"},
    "order_refunded": {"order_id": "o", "amount": 1},
}
FIELDS = {"reason", "detail", "topic", "partition", "offset", "received_at", "payload"}


def ts_text(us: int) -> str:
    from segmentflow.schemas.timefmt import format_us

    return format_us(us)


class Feed:
    """Builds InputRecords with increasing offsets per topic."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def raw(
        self, kind: str, value: bytes | None, key: bytes | None, partition: int = 0
    ) -> InputRecord:
        topic = TOPICS[kind]
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return InputRecord(topic, kind, partition, offset, key, value)

    def event(self, eid: str, cid: str, type_: str, at: int, **props: Any) -> InputRecord:
        body: dict[str, Any] = {
            "event_id": eid,
            "customer_id": cid,
            "type": type_,
            "timestamp": ts_text(at),
            "properties": {**PROPS.get(type_, {}), **props},
        }
        return self.raw(KIND_OF[type_], orjson.dumps(body), cid.encode())


def processor(store: MemoryStore | None = None, **config: Any) -> Processor:
    config.setdefault("rfm", {"enabled": False})  # RFM has its own tests
    return Processor(config_from_dict(config), store if store is not None else MemoryStore())


def test_dead_letters_between_valid_records() -> None:
    feed = Feed()
    bad_json = feed.raw("website", b'{"event_id": ', b"c-1", partition=2)
    records = [
        feed.event("e1", "c-1", "page_view", T0_US),
        bad_json,
        feed.event("e2", "c-2", "order_completed", T0_US + 1),
        feed.event("e3", "c-3", "page_view", T0_US + 2),
    ]
    mismatch = feed.event("e4", "c-3", "page_view", T0_US + 3)
    mismatch = InputRecord(
        mismatch.topic, mismatch.kind, 1, mismatch.offset, b"c-9", mismatch.value
    )
    records.insert(3, mismatch)
    records.append(feed.event("e5", "c-1", "search", T0_US + 4))
    proc = processor()
    result = proc.process(records, now=NOW)

    assert [(c.customer_id, c.current, c.event_id) for c in result.changes] == [
        ("c-1", "prospect", "e1"),
        ("c-2", "new", "e2"),
        ("c-3", "prospect", "e3"),
    ]
    assert len(result.deadletters) == 2
    first, second = result.deadletters
    assert first.key == b"c-1" and second.key == b"c-9"
    assert set(first.value) == FIELDS and set(second.value) == FIELDS
    assert (first.value["reason"], second.value["reason"]) == ("invalid_json", "key_mismatch")
    assert (first.value["topic"], first.value["partition"], first.value["offset"]) == (
        "website-events",
        2,
        bad_json.offset,
    )
    assert (second.value["partition"], second.value["offset"]) == (1, mismatch.offset)
    assert base64.b64decode(first.value["payload"]) == bad_json.value
    assert base64.b64decode(second.value["payload"]) == mismatch.value
    assert parse_rfc3339(first.value["received_at"]) == from_datetime(NOW)
    # the record after the bad ones was applied too
    state = proc.store.get("c-1")
    assert state is not None and state.totals[6] == 1  # searches


def test_oversized_dead_letter_is_truncated() -> None:
    feed = Feed()
    big = feed.event("e1", "c-1", "page_view", T0_US, pad="x" * 500)
    proc = processor(max_event_bytes=200)
    result = proc.process([big, feed.event("e2", "c-1", "page_view", T0_US)], now=NOW)
    [letter] = result.deadletters
    assert letter.value["reason"] == "oversized" and letter.value["truncated"] is True
    assert base64.b64decode(letter.value["payload"]) == cast(bytes, big.value)[:200]
    assert [c.event_id for c in result.changes] == ["e2"]


def test_every_bad_record_gets_exactly_one_dead_letter() -> None:
    feed = Feed()
    values = [b"\xff", b"[]", b"{}", b"null", b"", None, orjson.dumps({"type": "page_view"})]
    records = [feed.raw("email", v, b"k") for v in values]
    result = processor().process(records, now=NOW)
    assert len(result.deadletters) == len(values)
    assert [d.value["offset"] for d in result.deadletters] == [r.offset for r in records]
    assert result.changes == []


def test_accounting_identity_per_topic() -> None:
    feed = Feed()
    records = [
        feed.event("w1", "c-1", "page_view", T0_US),
        feed.event("w1", "c-1", "page_view", T0_US),  # duplicate
        feed.raw("website", b"nope", b"c-1"),
        feed.event("w2", "c-2", "page_view", T0_US + 5),
        feed.event("m1", "c-1", "email_opened", T0_US + 1),
        feed.event("p1", "c-1", "order_completed", T0_US + 2),
        feed.event("p1", "c-1", "order_completed", T0_US + 2),  # duplicate
        feed.event("p2", "c-1", "page_view", T0_US + 3),  # website topic
        feed.raw("purchase", orjson.dumps({"a": 1}), b"c-1"),
    ]
    proc = processor()
    proc.process(records[:4], now=NOW)
    proc.process(records[4:], now=NOW)
    # a later batch re-sending an applied event is a duplicate as well
    proc.process([feed.event("w2", "c-2", "page_view", T0_US + 5)], now=NOW)
    counters = proc.counters
    expected = {
        "website-events": {"received": 6, "applied": 3, "deadlettered": 1, "duplicates": 2},
        "email-events": {"received": 1, "applied": 1, "deadlettered": 0, "duplicates": 0},
        "purchase-events": {"received": 3, "applied": 1, "deadlettered": 1, "duplicates": 1},
    }
    for topic, want in expected.items():
        got = {name: getattr(counters, name)[topic] for name in want}
        assert got == want, topic
        assert got["received"] == got["applied"] + got["deadlettered"] + got["duplicates"]
    snap = counters.snapshot()
    assert snap["reasons"] == {"invalid_json": 1, "missing_field": 1}


def test_late_records_are_counted() -> None:
    feed = Feed()
    proc = processor()
    proc.process(
        [
            feed.event("e1", "c-1", "page_view", T0_US + DAY),
            feed.event("e2", "c-1", "order_completed", T0_US),  # earlier than c-1's clock
            feed.event("e3", "c-2", "page_view", T0_US),  # other customer: not late
        ],
        now=NOW,
    )
    assert dict(proc.counters.late) == {"purchase-events": 1}
    assert proc.counters.applied["purchase-events"] == 1


def test_populations_follow_changes_and_advance() -> None:
    feed = Feed()
    store = MemoryStore()
    proc = processor(store, rules=[{"name": "buyer", "when": "orders >= 1"}])
    proc.process(
        [
            feed.event("e1", "c-1", "page_view", T0_US),
            feed.event("e2", "c-2", "order_completed", T0_US + 1),
            feed.event("e3", "c-3", "order_completed", T0_US + 2),
        ],
        now=NOW,
    )
    assert store.populations() == {
        "lifecycle": {"prospect": 1, "new": 2},
        "rule:buyer": {"in": 2},
    }
    assert proc.advance(T0_US + 30 * DAY) == []  # due at T0 + 1 + 30d
    fired = proc.advance(T0_US + 30 * DAY + 2)
    assert [(c.customer_id, c.current, c.at) for c in fired] == [
        ("c-2", "active", T0_US + 1 + 30 * DAY),
        ("c-3", "active", T0_US + 2 + 30 * DAY),
    ]
    assert store.populations()["lifecycle"] == {"prospect": 1, "active": 2}
    # a refund does not change orders, a full refund does not leave the rule either
    proc.process([feed.event("r1", "c-2", "order_refunded", T0_US + 31 * DAY, amount=10)], now=NOW)
    assert store.populations()["rule:buyer"] == {"in": 2}


def test_advance_returns_changes_in_time_order_across_customers() -> None:
    feed = Feed()
    proc = processor()
    proc.process(
        [
            feed.event("a1", "c-a", "order_completed", T0_US + 5 * DAY),
            feed.event("b1", "c-b", "order_completed", T0_US),
        ],
        now=NOW,
    )
    fired = proc.advance(T0_US + 1000 * DAY)
    assert [c.at for c in fired] == sorted(c.at for c in fired)
    assert len(fired) == 6
    per_customer: dict[str, list[int]] = {}
    for change in fired:
        per_customer.setdefault(change.customer_id, []).append(change.sequence)
    assert per_customer == {"c-a": [2, 3, 4], "c-b": [2, 3, 4]}
    assert proc.store.populations()["lifecycle"] == {"churned": 2}


def test_forget_emits_null_per_dimension_with_next_sequence() -> None:
    feed = Feed()
    store = MemoryStore()
    proc = processor(store, rules=[{"name": "buyer", "when": "orders >= 1"}])
    proc.process(
        [
            feed.event("e1", "c-1", "order_completed", T0_US),
            feed.event("e2", "c-2", "order_completed", T0_US),
        ],
        now=NOW,
    )
    proc.advance(T0_US + 30 * DAY)  # both active: lifecycle sequence 2
    at = T0_US + 40 * DAY
    changes = proc.forget("c-1", at)
    assert sorted((c.dimension, c.previous, c.current, c.sequence, c.at) for c in changes) == [
        ("lifecycle", "active", None, 3, at),
        ("rule:buyer", "in", None, 2, at),
    ]
    assert all(c.event_id is None for c in changes)
    assert {c.id for c in changes} == {"c-1/lifecycle/3", "c-1/rule:buyer/2"}
    tomb = store.get("c-1")  # a tombstone: sequences only (README "forget")
    assert is_tombstone(tomb) and tomb is not None
    assert tomb.seqs == {"lifecycle": 3, "rule:buyer": 2} and not tomb.values and not tomb.traits
    assert store.populations() == {"lifecycle": {"active": 1}, "rule:buyer": {"in": 1}}
    assert proc.forget("c-1", at) == []
    assert proc.forget("never-seen", at) == []
    # nothing is due any more for the forgotten customer
    assert all(c.customer_id == "c-2" for c in proc.advance(T0_US + 1000 * DAY))


def test_forget_of_customer_outside_rule_keeps_rule_population() -> None:
    feed = Feed()
    store = MemoryStore()
    proc = processor(store, rules=[{"name": "big", "when": "revenue >= 10.0"}])
    proc.process(
        [
            feed.event("e1", "c-1", "order_completed", T0_US),  # in
            feed.event("e2", "c-2", "order_completed", T0_US),  # in ...
            feed.event("e3", "c-2", "order_refunded", T0_US + 1, amount=5),  # ... then out
        ],
        now=NOW,
    )
    assert store.populations()["rule:big"] == {"in": 1}
    changes = proc.forget("c-2", T0_US + 2)
    assert ("lifecycle", "new", None) in {(c.dimension, c.previous, c.current) for c in changes}
    # the rule value "out" may be closed with out -> null or not at all; either way the
    # rule's population (its members) is unchanged
    assert all(c.previous == "out" for c in changes if c.dimension == "rule:big")
    assert store.populations() == {"lifecycle": {"new": 1}, "rule:big": {"in": 1}}


@pytest.mark.parametrize("copy", [False, True])
def test_state_survives_between_batches(copy: bool) -> None:
    feed = Feed()
    proc = processor(MemoryStore(copy=copy), rules=[{"name": "two", "when": "orders >= 2"}])
    first = proc.process([feed.event("e1", "c-1", "order_completed", T0_US)], now=NOW)
    second = proc.process([feed.event("e2", "c-1", "order_completed", T0_US + 1)], now=NOW)
    assert [c.dimension for c in first.changes] == ["lifecycle"]
    assert [(c.dimension, c.current, c.sequence) for c in second.changes] == [("rule:two", "in", 1)]
    dup = proc.process([feed.event("e1", "c-1", "order_completed", T0_US)], now=NOW)
    assert dup.changes == [] and proc.counters.duplicates["purchase-events"] == 1
