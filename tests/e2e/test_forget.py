"""``forget`` that holds (issue 12, finding 4; CONTRACT §5): 50 forget commands race a worker
process that is working through those customers' backlog (Tansu, Redis). None is undone (no
write-back continues an erased profile), no change id is reused with other content, and a later
event starts a new profile whose sequences continue after the final ``null``. The CLI waits for
the erasure and reports it."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from support.streams import write_config
from support.worker_e2e import TopicReader, event, produce

from segmentflow.cli.forget_cmd import request
from segmentflow.devstack import DevStack
from segmentflow.engine.state import CustomerState
from segmentflow.service.processor import FORGOTTEN, is_tombstone
from segmentflow.state.keys import Keys
from segmentflow.synthetic import customer_id_for, generate

pytestmark = pytest.mark.e2e

CONFIG = """\
persona: {enabled: false}
rules:
  - name: buyers
    when: 'orders >= 1'
"""
START = datetime(2025, 3, 1, tzinfo=UTC)
FORGETS = 50
LATER = 10  # forgotten customers that send one more event afterwards


def _state(client: redis.Redis[bytes], keys: Keys, cid: str) -> CustomerState | None:
    """A customer's stored state, read raw: its home from the directory, then its key."""
    home = client.hget(keys.directory(cid), cid)
    raw = None if home is None else client.get(keys.state(cid, int(home)))
    return CustomerState.decode(raw) if raw else None


def test_forgets_racing_the_worker_hold(
    tmp_path: Path,
    redis_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    config_file = write_config(tmp_path, CONFIG)
    messages = generate(200, seed=141, start=START, days=120)
    victims = [customer_id_for(i) for i in range(1, FORGETS + 1)]
    assert all(any(m.key == v.encode() for m in messages) for v in victims)
    with DevStack(
        workers=0,
        config=str(config_file),
        redis_url=redis_url,
        extra_env={"SEGMENTFLOW_BATCH_SIZE": "200"},  # small batches: forgets land mid-stream
    ) as stack:
        s = stack.settings
        keys = Keys(stack.namespace)
        topics = s.input_topics
        produce(s, ((topics[m.topic_kind], m.key, m.value) for m in messages))
        changes = TopicReader(s, s.topic_segment_changes)
        stack.start_worker()
        stack.wait_healthy(60)
        changes.wait_until(lambda: len(changes.values) > 0, 60, "first changes")
        requests: dict[str, str] = {}
        for group in range(5):  # while the worker applies the backlog
            batch = victims[group * 10 : (group + 1) * 10]
            for cid in batch:
                requests[cid] = f"forget-{uuid.uuid4().hex}"
            produce(s, ((topics["website"], c.encode(), request(c, requests[c])) for c in batch))
            time.sleep(0.3)
        at_forgets = len(changes.values)
        client = redis.Redis.from_url(stack.redis.url)

        def applied() -> int:
            states = {cid: _state(client, keys, cid) for cid in victims}
            return sum(
                1 for c, st in states.items() if st and st.extra.get(FORGOTTEN) == requests[c]
            )

        deadline = time.monotonic() + 120
        while applied() < FORGETS:
            assert time.monotonic() < deadline, f"{applied()} of {FORGETS} forgets applied"
            changes.poll(0.5)
        # a later event for some forgotten customers: a new profile
        later_at = START + timedelta(days=200)
        later = [
            event(cid, f"later-{cid}", "page_view", later_at, url="https://shop.example/")
            for cid in victims[:LATER]
        ]
        produce(s, ((topics["website"], e["customer_id"].encode(), orjson.dumps(e)) for e in later))
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "segmentflow.cli.main",
                "forget",
                victims[-1],
                "--timeout",
                "120",
            ],
            env=stack.env(),
            capture_output=True,
            text=True,
            timeout=180,
        )

        def later_seen() -> bool:
            got = {orjson.loads(v)["data"]["cause"]["event_id"] for v in changes.values}
            return {e["event_id"] for e in later} <= got

        changes.wait_quiet(later_seen, 120)
        final = {cid: _state(client, keys, cid) for cid in victims}
        rfm: set[str] = set()
        due: set[str] = set()
        for p in range(stack.partitions):
            rfm |= {k.decode() for k in client.hkeys(keys.part(p).rfm)}
            due |= {m.decode() for m in client.zrange(keys.due(p), 0, -1)}
        client.close()
        changes.close()
        assert stack.health() == 200 and stack.workers[0].poll() is None

    # every delivered change: ids unique per content, sequences 1..n per customer and dimension
    first: dict[str, bytes] = {}
    problems: list[str] = []
    for value in changes.values:
        cid = orjson.loads(value)["id"]
        if first.setdefault(cid, value) != value:
            problems.append(f"id {cid} reused with other content")
    by_dim: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for value in first.values():
        data = orjson.loads(value)["data"]
        by_dim[(data["customer_id"], data["dimension"])].append(data)
    nulls = 0
    for (cid, dim), rows in by_dim.items():
        rows.sort(key=lambda d: d["sequence"])
        if [d["sequence"] for d in rows] != list(range(1, len(rows) + 1)):
            problems.append(f"{cid}/{dim}: sequences {[d['sequence'] for d in rows]}")
        for before, after in itertools.pairwise(rows):
            if before["current"] is None:  # erased: what follows is a new profile
                nulls += 1
                fresh = "out" if dim.startswith("rule:") else None
                if after["previous"] != fresh:
                    problems.append(f"{cid}/{dim}: erased profile continued: {after}")
            elif after["previous"] != before["current"]:
                problems.append(f"{cid}/{dim}: {before['current']} -> {after}")
        if cid not in victims and any(d["current"] is None for d in rows):
            problems.append(f"{cid}/{dim}: nulled but never forgotten")
    forgotten = {cid for (cid, _), rows in by_dim.items() for d in rows if d["current"] is None}
    tombstones = [cid for cid, st in final.items() if is_tombstone(st)]
    for cid in tombstones:
        st = final[cid]
        assert st is not None and not st.values and not st.traits and st.last_seen is None
        assert not any(st.totals) and not st.days
    for cid in victims[:LATER]:
        lifecycle = by_dim[(cid, "lifecycle")]
        erased = [d for d in lifecycle if d["current"] is None]
        assert erased, f"{cid}: no final null"
        newest = lifecycle[-1]
        assert newest["cause"]["event_id"] == f"later-{cid}" and newest["previous"] is None
        assert newest["sequence"] > erased[0]["sequence"], "sequences continue after null"
    values = {
        "events": len(messages),
        "forgets": FORGETS,
        "changes_before_forgets": at_forgets,
        "changes": len(first),
        "nulls_followed_by_new_profile": nulls,
        "customers_nulled": len(forgotten),
        "tombstones_at_end": len(tombstones),
        "cli": cli.stdout.strip()[-120:],
        "seconds": round(time.monotonic() - started, 1),
    }
    record_property("forget", orjson.dumps(values).decode())
    print(f"\n[forget] {values}")
    assert not problems, "\n".join(problems[:20])
    assert cli.returncode == 0 and "forgot" in cli.stdout, cli.stdout + cli.stderr
    assert forgotten <= set(victims) and len(forgotten) >= FORGETS - 5  # a few had no value yet
    assert not (set(tombstones) & rfm), "RFM metrics of erased customers are gone"
    assert not (set(tombstones) & due), "nothing is due for an erased customer"
