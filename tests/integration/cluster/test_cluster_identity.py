"""Identity merges on a Redis Cluster (issue 17): one worker owns every partition, and each
anonymous id and its user have different home partitions, so the merge cannot be one
transaction (each partition's keys live on their own slot). The worker hands the anonymous
profile over to itself through the forward topic, each step one partition's ``MULTI``
(notes/identity.md, as between two workers): the change topic equals ``replay``, every user
holds its anonymous history once, and the alias resolves."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from support.identity import IDENTITY_CONFIG as CONFIG
from support.identity import identity_event as _event
from support.streams import (
    ChangeReader,
    compare,
    expected_changes,
    metric_sum,
    produce_kafka_python,
    wait_applied,
    write_config,
)

from segmentflow.devstack import DevStack
from segmentflow.embedded_cluster import EmbeddedRedisCluster
from segmentflow.engine.identity import has_merged
from segmentflow.state.client import connect
from segmentflow.state.redis_store import RedisStore, kafka_partition

pytestmark = pytest.mark.integration


def _store(cluster: EmbeddedRedisCluster, namespace: str) -> RedisStore:
    return RedisStore(cast(Any, connect(cluster.url)), namespace, shards=4)


def test_merges_across_partitions_on_a_cluster_equal_replay(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, CONFIG)
    with EmbeddedRedisCluster(primaries=3, replicas=0) as cluster:
        env = {"SEGMENTFLOW_REDIS_URL": cluster.url}
        with DevStack(workers=0, config=str(config), redis_url=redis_url, extra_env=env) as stack:
            namespace = stack.settings.namespace
            reader = ChangeReader(stack.settings)
            stack.start_worker()
            stack.wait_healthy(90)
            pairs = [
                (f"user-{n}", f"anon-{n}")
                for n in range(200)
                if kafka_partition(f"user-{n}", 4) != kafka_partition(f"anon-{n}", 4)
            ][:4]
            anonymous = [
                _event(k, anon, kind, 10 * i + k)
                for i, (_, anon) in enumerate(pairs)
                for k, kind in enumerate(["page_view", "product_view", "product_view"])
            ]
            produce_kafka_python(stack.settings, anonymous)
            wait_applied(stack, len(anonymous), reader, workers=1, quiet=0, stall=180)
            identified = [
                _event(9, user, "identify", 100 + i, anonymous_id=anon)
                for i, (user, anon) in enumerate(pairs)
            ]
            later = [
                _event(20, user, "order_completed", 200 + i) for i, (user, _) in enumerate(pairs)
            ]
            later += [
                _event(30, anon, "product_view", 210 + i) for i, (_, anon) in enumerate(pairs)
            ]
            produce_kafka_python(stack.settings, identified)
            # as across two workers, events of the anonymous id read while its hand-over is
            # under way are applied to it (notes/identity.md): the later ones follow the merge
            wait_applied(stack, len(anonymous) + len(identified), reader, workers=1, stall=180)
            produce_kafka_python(stack.settings, later)
            events = anonymous + identified + later
            expected = expected_changes(events, config)
            texts = wait_applied(stack, len(events), reader, workers=1, stall=180)
            reader.wait_complete(expected, timeout=60)
            reader.close()
            store = _store(cluster, namespace)
            users = store.load_many([user for user, _ in pairs])
            aliases = store.resolve_aliases([anon for _, anon in pairs])
            store.close()
    outcome = compare(reader.values, expected)
    forwarded = metric_sum(texts[0], "segmentflow_events_forwarded_total")
    applied = metric_sum(texts[0], "segmentflow_events_applied_total")
    print(
        f"\n[cluster identity] pairs={len(pairs)} events={len(events)} changes={len(expected)} "
        f"delivered={outcome.deliveries} forwarded={forwarded} applied={applied}"
    )
    assert len(pairs) == 4
    assert not outcome.problems, "\n".join(outcome.problems)
    assert applied == len(events)
    assert forwarded >= 2 * len(pairs)  # to the anonymous id's home and back, by hand-over
    assert aliases == {anon: user for user, anon in pairs}
    assert all(has_merged(users[user], anon) and users[user].totals[4] == 3 for user, anon in pairs)
