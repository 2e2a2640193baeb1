"""Cross-worker identity merges over a real Redis (notes/identity.md): two processors, each
owning one partition, play the hand-over as the workers do (a forwarded record is re-read on
its target partition at a new offset). Every step repeated (a crash after its commit, before
its ack: the record is read again) changes nothing; the outcome equals ``replay``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from support.identity import HOUR, T0, replay_rows, side_rows, two_sides
from support.identity import Side as BaseSide

from segmentflow.schemas.timefmt import format_us
from segmentflow.service.processor import InputRecord

pytestmark = pytest.mark.integration

TOPIC = "website-events"


class Side(BaseSide):
    """One worker's processor, owning one partition, with its own offsets."""

    last: InputRecord | None = None

    def read(self, value: dict[str, Any]) -> list[InputRecord]:
        """Read one record on the owned partition; return the records it forwards."""
        raw = orjson.dumps(value)
        rec = InputRecord(
            TOPIC, "website", self.partition, self.offset, value["customer_id"].encode(), raw
        )
        self.offset += 1
        self.last = rec
        return self.again(rec)

    def again(self, rec: InputRecord) -> list[InputRecord]:
        """Read ``rec`` (again: a redelivery after a crash before its ack)."""
        return [r for r, _ in self.process(rec)]


@pytest.fixture
def sides(redis_url: str, namespace: str) -> Iterator[tuple[Side, Side]]:
    with two_sides(Side, redis_url, namespace) as made:
        yield made


def ev(eid: str, cid: str, kind: str, hours: int, **extra: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"url": "/"} if kind == "page_view" else {"product_id": "p"}
    if kind == "identify":
        props = {"traits": {"email": "a@b.c"}}
    if kind == "alias":
        props = {"previous_id": extra.pop("previous_id")}
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": kind,
        "timestamp": format_us(T0 + hours * HOUR),
        "properties": props,
        **extra,
    }


def _forward(side: Side, rec: InputRecord) -> InputRecord:
    return InputRecord(rec.topic, rec.kind, side.partition, side.offset, rec.key, rec.value)


def test_a_merge_across_workers_hands_the_state_over_once(sides: tuple[Side, Side]) -> None:
    known, anonymous = sides  # the user's home is partition 0, the anonymous id's partition 1
    history = [
        ev("v1", "anon", "page_view", 0),
        ev("v2", "anon", "product_view", 1),
        ev("v3", "anon", "product_view", 2),
    ]
    for event in history:
        assert anonymous.read(event) == []
    assert known.read(ev("u0", "user", "page_view", 3)) == []
    identify = ev("i1", "user", "identify", 4, anonymous_id="anon")
    history += [ev("u0", "user", "page_view", 3), identify]

    request = known.read(identify)  # the anonymous profile is the other worker's: ask it
    assert len(request) == 1 and known.changes[-1].event_id == "u0"
    assert known.last is not None and known.again(known.last) == request  # a redelivery
    to_anon = _forward(anonymous, request[0])
    anonymous.offset += 1
    reply = anonymous.again(to_anon)  # it leaves: final nulls, tombstone, alias, hand-over
    assert len(reply) == 1 and known.store.handovers("user", "i1").keys() == {"anon"}
    assert anonymous.again(to_anon) == reply  # a redelivery: nothing more, forwarded again
    to_user = _forward(known, reply[0])
    known.offset += 1
    known.again(to_user)  # absorbed, then the identify applied
    known.again(to_user)  # a redelivered forward: a duplicate
    second = _forward(known, reply[0])  # the repeated hand-over's forward, at a new offset
    known.offset += 1
    known.again(second)
    assert known.store.handovers("user", "i1") == {}

    late = ev("v4", "anon", "product_view", 5)  # keyed by the merged-away id
    forwarded = anonymous.read(late)
    assert len(forwarded) == 1
    known.offset += 1
    known.again(_forward(known, forwarded[0]))
    history.append(late)

    assert side_rows(sides, by_sequence=True) == replay_rows(
        history, T0 + 5 * HOUR, by_sequence=True
    )
    user = known.store.get("user")
    assert user is not None and user.totals[4] == 3  # product_views: 2 anonymous + 1 forwarded
    assert known.store.resolve_aliases(["anon"]) == {"anon": "user"}
    final = [c for c in anonymous.changes if c.customer_id == "anon" and c.current is None]
    assert {c.dimension for c in final} == {"lifecycle", "rule:viewer"}
    assert all(c.reason == {"merged_into": "user"} and c.cause == "merge" for c in final)


def test_a_rebalance_between_the_steps_moves_the_work_with_the_partition(
    sides: tuple[Side, Side],
) -> None:
    known, anonymous = sides
    history = [ev("v1", "anon", "product_view", 0), ev("v2", "anon", "product_view", 1)]
    for event in history:
        anonymous.read(event)
    alias = ev("x1", "user", "alias", 2, previous_id="anon")  # the user's first event
    history.append(alias)
    [request] = known.read(alias)
    # the anonymous id's owner dies before reading the request: its partition moves to the
    # known id's worker, which now owns both and reads the request there
    anonymous.store.revoke_partitions()
    known.store.assign_partitions({0, 1})
    known.partition = 1
    [reply] = known.again(_forward(known, request))
    known.partition = 0
    assert reply.partition == 1 and known.store.handovers("user", "x1").keys() == {"anon"}
    known.offset += 1
    assert known.again(_forward(known, reply)) == []
    assert known.store.handovers("user", "x1") == {}
    assert side_rows(sides, by_sequence=True) == replay_rows(
        history, T0 + 2 * HOUR, by_sequence=True
    )
    user = known.store.get("user")
    assert user is not None and user.totals[4] == 2 and user.home == 0
