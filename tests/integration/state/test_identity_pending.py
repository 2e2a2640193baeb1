"""A merge pending across workers (notes/identity.md): the user's events read by the survivor's
owner after the merging event but before the hand-over came back (the order right after the
identify: the usual SDK flow) travel behind the merging event and are applied after the merge,
so the change stream equals ``replay`` exactly (times and order, not only counts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from support.identity import HOUR, T0, replay_rows, side_rows, two_sides
from support.identity import Side as BaseSide

from segmentflow.engine.state import T
from segmentflow.schemas.timefmt import format_us
from segmentflow.service.processor import MERGE_PENDING, PENDING_FORWARDS, InputRecord

pytestmark = pytest.mark.integration

TOPICS = {"order_completed": ("orders", "purchase")}


class Side(BaseSide):
    """One worker's processor owning one partition (of every topic), with its own offsets."""

    def read(self, value: dict[str, Any]) -> list[InputRecord]:
        """Read one record on the owned partition; return the records it forwards."""
        topic, kind = TOPICS.get(value["type"], ("website-events", "website"))
        raw = orjson.dumps(value)
        key = value["customer_id"].encode()
        return self.again(InputRecord(topic, kind, self.partition, self.offset, key, raw))

    def again(self, rec: InputRecord) -> list[InputRecord]:
        """Read ``rec`` at the next offset of the owned partition (a forward lands here, or a
        redelivery after a crash before the ack)."""
        rec = InputRecord(rec.topic, rec.kind, self.partition, self.offset, rec.key, rec.value)
        self.offset += 1
        forwards = self.process(rec)
        assert all(p != self.partition for _, p in forwards)
        return [r for r, _ in forwards]


@pytest.fixture
def sides(redis_url: str, namespace: str) -> Iterator[tuple[Side, Side]]:
    with two_sides(Side, redis_url, namespace) as made:
        yield made


def ev(eid: str, cid: str, kind: str, minutes: int, **extra: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"product_id": "p"}
    if kind == "identify":
        props = {"traits": {"email": "a@b.c"}}
    if kind == "order_completed":
        props = {"order_id": eid, "revenue": 30, "currency": "EUR"}
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": kind,
        "timestamp": format_us(T0 + minutes * HOUR // 60),
        "properties": props,
        **extra,
    }


def _anonymous_then_identify(known: Side, anonymous: Side) -> list[dict[str, Any]]:
    history = [ev("v1", "anon", "product_view", 0), ev("v2", "anon", "product_view", 1)]
    for event in history:
        assert anonymous.read(event) == []
    history.append(ev("u0", "user", "product_view", 2))
    assert known.read(history[-1]) == []
    return history


def test_events_after_the_merging_event_wait_behind_it(sides: tuple[Side, Side]) -> None:
    known, anonymous = sides  # the user's home is partition 0, the anonymous id's partition 1
    history = _anonymous_then_identify(known, anonymous)
    identify = ev("i1", "user", "identify", 3, anonymous_id="anon")
    after = [ev("o1", "user", "order_completed", 4), ev("v3", "user", "product_view", 5)]
    history += [identify, *after]

    [request] = known.read(identify)  # the anonymous profile is the other worker's: ask it
    held = [r for event in after for r in known.read(event)]  # before the hand-over is back
    user = known.store.get("user")
    assert user is not None and user.totals[4] == 1  # nothing of the held events applied
    assert user.extra[MERGE_PENDING]["id"] == "i1" and len(held) == 2
    [reply] = anonymous.again(request)
    passed = [r for one in held for r in anonymous.again(one)]  # passed back, in order
    assert known.again(reply) == []  # absorbed, identify applied, the mark cleared
    for one in passed:
        assert known.again(one) == []
    user = known.store.get("user")
    assert user is not None and MERGE_PENDING not in user.extra
    assert user.totals[4] == 4  # product views: 2 anonymous + 2 of the user's

    assert side_rows(sides) == replay_rows(history, T0 + 5 * HOUR)


def test_every_step_repeated_changes_nothing(sides: tuple[Side, Side]) -> None:
    known, anonymous = sides
    history = _anonymous_then_identify(known, anonymous)
    identify = ev("i1", "user", "identify", 3, anonymous_id="anon")
    order = ev("o1", "user", "order_completed", 4)
    history += [identify, order]

    [request] = known.read(identify)
    assert [r.value for r in known.read(identify)] == [request.value]  # redelivered: one mark
    held = known.read(order) + known.read(order)  # the order redelivered: forwarded twice
    user = known.store.get("user")
    assert user is not None and user.extra[MERGE_PENDING]["n"] == 2
    replies = anonymous.again(request) + anonymous.again(request)
    passed = [r for one in held for r in anonymous.again(one)]
    assert len(replies) == 2 and len(passed) == 2
    for one in [*replies, *passed]:
        assert known.again(one) == []
    user = known.store.get("user")
    assert user is not None and MERGE_PENDING not in user.extra and user.totals[4] == 3
    assert side_rows(sides) == replay_rows(history, T0 + 4 * HOUR)


def test_a_lost_merging_event_does_not_hold_the_user_forever(sides: tuple[Side, Side]) -> None:
    known, anonymous = sides
    _anonymous_then_identify(known, anonymous)
    [_lost] = known.read(ev("i1", "user", "identify", 3, anonymous_id="anon"))  # dead-lettered
    laps = 0
    bounced = known.read(ev("o1", "user", "order_completed", 4))
    while bounced:  # passed back and forth until the mark's bound is reached
        [back] = anonymous.again(bounced[0])
        bounced = known.again(back)
        laps += 1
    assert laps == PENDING_FORWARDS
    user = known.store.get("user")
    assert user is not None and MERGE_PENDING not in user.extra
    assert user.totals[T["product_views"]] == 1 and user.totals[T["orders"]] == 1  # once, unmerged


def test_a_held_event_back_before_the_merging_event_goes_round_again(
    sides: tuple[Side, Side],
) -> None:
    known, anonymous = sides  # another topic: the order can overtake the identify on its way
    history = _anonymous_then_identify(known, anonymous)
    identify = ev("i1", "user", "identify", 3, anonymous_id="anon")
    order = ev("o1", "user", "order_completed", 4)
    history += [identify, order]
    [request] = known.read(identify)
    [held] = known.read(order)
    [reply] = anonymous.again(request)
    [passed] = anonymous.again(held)
    [again] = known.again(passed)  # still pending: another lap, behind the merging event
    assert known.again(reply) == []
    [back] = anonymous.again(again)
    assert known.again(back) == []
    assert side_rows(sides) == replay_rows(history, T0 + 4 * HOUR)


def test_a_rebalance_while_pending_keeps_the_mark(sides: tuple[Side, Side]) -> None:
    known, anonymous = sides
    history = _anonymous_then_identify(known, anonymous)
    identify = ev("i1", "user", "identify", 3, anonymous_id="anon")
    view = ev("v3", "user", "product_view", 4)
    history += [identify, view]
    [request] = known.read(identify)
    # the user's worker dies; its partition moves to the anonymous id's worker (both owned)
    known.store.revoke_partitions()
    anonymous.store.assign_partitions({0, 1})
    [reply] = anonymous.again(request)  # read on partition 1: hand-over, back to partition 0
    anonymous.partition = 0
    [held] = anonymous.read(view)  # the mark is in Redis: held behind the request
    assert held.value == orjson.dumps(view)
    anonymous.partition = 1
    [passed] = anonymous.again(held)
    anonymous.partition = 0
    assert anonymous.again(reply) == [] and anonymous.again(passed) == []
    assert side_rows(sides) == replay_rows(history, T0 + 4 * HOUR)


def test_an_event_older_than_the_merging_event_is_not_held(sides: tuple[Side, Side]) -> None:
    known, anonymous = sides
    history = _anonymous_then_identify(known, anonymous)
    identify = ev("i1", "user", "identify", 3, anonymous_id="anon")
    older = ev("v2b", "user", "product_view", 2)  # read after the identify, from before it
    order = ev("o1", "user", "order_completed", 4)
    history += [older, identify, order]
    [request] = known.read(identify)
    assert known.read(older) == []  # applied before the merge, as in replay's time order
    [held] = known.read(order)
    [reply] = anonymous.again(request)
    [passed] = anonymous.again(held)
    assert known.again(reply) == [] and known.again(passed) == []
    assert side_rows(sides) == replay_rows(history, T0 + 4 * HOUR)
