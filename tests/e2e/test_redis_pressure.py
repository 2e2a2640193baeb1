"""Redis memory pressure is an outage, not bad input (issue 12, finding 3): a worker process on
Tansu and a test-owned redis-server.

- ``maxmemory`` reached under ``noeviction``: the worker stalls (``/health`` 503, nothing
  dead-lettered or lost), and once the limit is raised every event is applied: the delivered
  changes equal ``replay``'s.
- ``allkeys-lru`` (it could evict state keys silently): the worker refuses to start, saying why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from support.worker_e2e import (
    EXACT_CONFIG,
    TopicReader,
    check,
    expected,
    metrics,
    produce,
    wait_status,
)

from segmentflow.devstack import DevStack
from segmentflow.embedded import EmbeddedRedis
from segmentflow.synthetic import generate

pytestmark = pytest.mark.e2e

CONFIG = EXACT_CONFIG  # lifecycle and two rule segments: exact against replay
START = datetime(2025, 3, 1, tzinfo=UTC)
HEADROOM = 20_000  # bytes of maxmemory above what Redis uses mid-stream


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "segmentflow.yaml"
    path.write_text(CONFIG)
    return path


def test_maxmemory_stalls_then_every_event_is_applied(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    config_file = _config(tmp_path)
    messages = generate(400, seed=131, start=START, days=120)
    want = expected((m.event for m in messages if m.event), config_file)
    with (
        EmbeddedRedis() as own,
        DevStack(
            workers=0,
            config=str(config_file),
            redis_url=own.url,
            extra_env={"SEGMENTFLOW_BATCH_SIZE": "200"},  # small batches: a stall mid-stream
        ) as stack,
    ):
        assert stack.redis.owned is False and stack.redis.url == own.url
        s = stack.settings
        topics = s.input_topics
        produce(s, ((topics[m.topic_kind], m.key, m.value) for m in messages))
        client = redis.Redis.from_url(own.url)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        changes = TopicReader(s, s.topic_segment_changes)
        letters = TopicReader(s, s.topic_segmentflow_deadletter)
        stack.start_worker()
        stack.wait_healthy(60)
        changes.wait_until(lambda: len(changes.values) > 0, 60, "first changes")
        limit = int(client.info("memory")["used_memory"]) + HEADROOM
        client.config_set("maxmemory", limit)  # mid-stream: the next writes get OOM errors
        stalled_after = wait_status(stack, 503, timeout=60)
        changes.poll(3.0)
        at_stall = len(changes.values)
        assert stack.health() == 503, "still stalled: OOM is retried, not skipped"
        during = metrics(stack)
        try:
            stack.get("/health")
        except Exception as exc:  # 503: the body says why
            health = orjson.loads(exc.read())  # type: ignore[attr-defined]
        letters.poll(1.0)
        assert letters.values == [], "nothing dead-lettered under memory pressure"
        client.config_set("maxmemory", 0)  # the operator raises the limit
        recovered_after = wait_status(stack, 200, timeout=60)
        ids = {c["id"] for c in want}
        changes.wait_quiet(lambda: ids <= {orjson.loads(v)["id"] for v in changes.values}, 120)
        letters.poll(1.0)
        outboxes = client.scan_iter(match=f"{{{stack.namespace}:p*}}:outbox")
        outbox = sum(int(client.llen(k)) for k in outboxes)
        client.close()
        changes.close()
        letters.close()
        assert stack.workers[0].poll() is None, "the worker survived"

    outcome = check(changes.values, want)
    values = {
        "events": len(messages),
        "maxmemory": limit,
        "stalled_after_s": round(stalled_after, 1),
        "changes_at_stall": at_stall,
        "expected_changes": len(want),
        "used_memory_in_stall": during["segmentflow_redis_used_memory_bytes"][""],
        "memory_warning_in_stall": during["segmentflow_redis_memory_warning"][""],
        "redis_ok_in_stall": during["segmentflow_redis_ok"][""],
        "health_in_stall": health,
        "recovered_after_s": round(recovered_after, 1),
        "deadletters": len(letters.values),
        "seconds": round(time.monotonic() - started, 1),
    }
    record_property("redis_oom", orjson.dumps(values).decode())
    print(f"\n[redis_oom] {values}")
    assert at_stall < len(want), "the limit was reached mid-stream"
    assert "OutOfMemoryError" in health["last_error"] and "MSET" not in health["last_error"]
    assert values["memory_warning_in_stall"] == 1 and values["redis_ok_in_stall"] == 0
    assert during["segmentflow_redis_maxmemory_bytes"][""] == limit
    assert not outcome.problems, "\n".join(outcome.problems)
    assert letters.values == [] and outbox == 0


def test_eviction_policy_that_drops_keys_is_refused(tmp_path: Path) -> None:
    with (
        EmbeddedRedis() as own,
        DevStack(workers=0, config=str(_config(tmp_path)), redis_url=own.url) as stack,
    ):
        client = redis.Redis.from_url(own.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        proc = stack.start_worker()
        code = proc.wait(timeout=90)
        log = next(stack.log_dir.glob("worker-*.log")).read_text()
        stack.workers.clear()
        stack.web_ports.clear()
    assert code == 2, log
    assert "maxmemory-policy 'allkeys-lru'" in log and "noeviction" in log, log
    assert "Traceback" not in log
