"""Redis bytes per customer with realistic histories (issue 13), at 10k, 100k and 1M.

    .venv/bin/python benchmarks/redis_bytes.py                         # 10k, 100k and CDNOW
    nice .venv/bin/python benchmarks/redis_bytes.py --sizes 10k 100k 1m --json OUT
    .venv/bin/python benchmarks/redis_bytes.py --tiny --json OUT       # seconds (the e2e test)

The states are real ones: the CDNOW-like population of ``population_data.cdnow_like_lines``
(10k customers, 1-10 orders each, half buy once, 18 months) and the real CDNOW history (23,570
customers, from the installed ``lifetimes`` wheel) are replayed in process with the default
config, as ``population.py`` replays them. Each size is then committed to a private
``redis-server`` (:class:`~segmentflow.embedded.EmbeddedRedis`, stopped by PID at the end)
through ``RedisStore`` as a worker commits: copies of the replayed states under distinct ids
(``k0000000`` ... as the generator names them; CDNOW keeps its own), each with the home
partition and source offset a worker's state carries (4 input partitions), the RFM rank index
attached (``:rfm`` hash and ``:rfm:log`` stream written with the states), the due index, the
directory, and the membership index and populations the customer's changes write (one
``None -> value`` change per indexed dimension, ``since`` = the state's clock). The outbox is
left off (a worker trims it once published). The kept event-id hashes of issue 9's exact dedup
(within ``dedup_horizon``) are in the states as the replay left them.

Then every key of the namespace is measured (``SCAN``, pipelined ``MEMORY USAGE ... SAMPLES
0``) and summed by kind, next to the ``INFO`` ``used_memory`` delta (which also counts the main
dictionary's buckets). The RFM log is counted as committed: a worker trims it to the updates of
the last 10 minutes (``RANK_LOG_RETENTION_MS``), so a load finished within that holds all of
it, and a population at rest holds only what changed in the last 10 minutes.

Cross-check (``--no-check`` skips it): the CDNOW-like events themselves through the worker's
``Processor`` over a ``RedisStore`` (``run.py``'s records on 4 partitions), measured the same
way. Its states, due index, RFM hash and members match the copies'; its RFM log is the one a
backlog load leaves for 10 minutes: every flush's update of every order and sweep move.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import population as pop  # noqa: E402
import population_data as data  # noqa: E402
import redis  # noqa: E402

from segmentflow.config import config_from_dict  # noqa: E402
from segmentflow.embedded import EmbeddedRedis  # noqa: E402
from segmentflow.engine.state import CustomerState  # noqa: E402
from segmentflow.schemas.changes import Change  # noqa: E402
from segmentflow.segmenters.rfm import RankIndex  # noqa: E402
from segmentflow.state.keys import Keys  # noqa: E402
from segmentflow.state.members import indexed_values  # noqa: E402
from segmentflow.state.redis_store import RedisStore, kafka_partition  # noqa: E402

SIZES = {"1k": 1_000, "2k": 2_000, "10k": 10_000, "100k": 100_000, "1m": 1_000_000}
#: customers replayed for the CDNOW-like templates (``--tiny``: 1k)
TEMPLATES = 10_000
#: the default namespace: key names as long as a deployment's
NAMESPACE = "segmentflow"
#: input partitions (home partitions), as in ``run.py``'s figure 5
PARTITIONS = 4
#: customers per commit (``run.py``'s figure 5)
CHUNK = 2_000
KINDS = ("state", "due", "rfm", "rfm_log", "directory", "members", "other")
TOPIC = "purchase-events"


def templates(lines: list[bytes]) -> tuple[list[CustomerState], int]:
    """The states a default-config replay of ``lines`` leaves (sorted by id), and the event
    count."""
    events = pop.decode(lines)
    _, _, processor = pop.replay(events, config_from_dict({}))
    store = processor.store
    _, ids = store.scan_ids(0, len(events) + 1)
    states = store.load_many(ids)
    return [states[cid] for cid in ids], len(events)


def clones(
    states: list[CustomerState], customers: int, per_customer: float, ids: list[str] | None
) -> Iterator[tuple[CustomerState, list[Change]]]:
    """``customers`` copies of ``states`` (round robin) under ids ``k<n:07d>`` (or ``ids``),
    each with a worker's home and source offset, and the changes that index its segments."""
    for n in range(customers):
        state = copy.copy(states[n % len(states)])
        cid = ids[n] if ids is not None else f"k{n:07d}"
        state.customer_id = cid
        state.home = home = kafka_partition(cid, PARTITIONS)
        # the highest applied offset of its source partition (a worker's redelivery hint)
        state.offsets = {f"{TOPIC}:{home}": int(n * per_customer / PARTITIONS)}
        at = state.clock or 0
        changes = [
            Change(cid, dim, None, value, 1, at, None)
            for dim, value in indexed_values(state).items()
        ]
        yield state, changes


def kind_of(key: bytes, namespace: str) -> str:
    """The kind of a key of ``namespace`` (one of :data:`KINDS`)."""
    text = key.decode("utf-8", "replace")
    ns = re.escape(namespace)
    if re.fullmatch(rf"\{{{ns}:d\d+\}}", text):
        return "directory"
    part = re.match(rf"\{{{ns}:p\d+\}}:(.*)", text, re.S)
    if part is None:
        return "other"
    rest = part.group(1)
    if rest.startswith("s:"):
        return "state"
    if rest.startswith(("m:", "mx:", "mc:")):  # layout 2 sorted sets, layout 3 chunks
        return "members"
    return {"due": "due", "rfm": "rfm", "rfm:log": "rfm_log"}.get(rest, "other")


def measure_keys(client: redis.Redis[bytes], namespace: str) -> dict[str, Any]:
    """``MEMORY USAGE`` (``SAMPLES 0``: every element) of every key, summed by kind; keys per
    kind; the mean state value length."""
    used = dict.fromkeys(KINDS, 0)
    keys = dict.fromkeys(KINDS, 0)
    value_bytes = entries = 0
    names = [k for pattern in Keys(namespace).everything for k in client.scan_iter(pattern, 5000)]
    for i in range(0, len(names), 5000):
        page = names[i : i + 5000]
        kinds = [kind_of(name, namespace) for name in page]
        pipe = client.pipeline(transaction=False)
        for name, kind in zip(page, kinds, strict=True):
            pipe.memory_usage(name, samples=0)
            if kind == "state":
                pipe.strlen(name)
            elif kind == "rfm_log":
                pipe.xlen(name)
        replies = iter(pipe.execute())
        for kind in kinds:
            used[kind] += int(next(replies) or 0)
            keys[kind] += 1
            if kind == "state":
                value_bytes += int(next(replies))
            elif kind == "rfm_log":
                entries += int(next(replies))
    return {
        "bytes": used,
        "keys": keys,
        "state_value_bytes": value_bytes / max(1, keys["state"]),
        "rfm_log_entries": entries,
    }


def used_memory(client: redis.Redis[bytes]) -> int:
    return int(client.info("memory")["used_memory"])


def drop(client: redis.Redis[bytes], namespace: str) -> None:
    """Delete the namespace's keys (``SCAN``; never ``FLUSHALL``)."""
    names = [k for pattern in Keys(namespace).everything for k in client.scan_iter(pattern, 5000)]
    for i in range(0, len(names), 5000):
        client.delete(*names[i : i + 5000])


def measure(
    client: redis.Redis[bytes],
    label: str,
    states: list[CustomerState],
    events: int,
    customers: int,
    ids: list[str] | None = None,
) -> dict[str, Any]:
    """Commit ``customers`` clones of ``states`` as a worker does and measure them."""
    drop(client, NAMESPACE)
    gc.collect()
    before = used_memory(client)
    store = RedisStore(client, NAMESPACE, shards=PARTITIONS)
    store.attach_ranks(RankIndex())
    began = time.perf_counter()
    chunk: dict[str, CustomerState] = {}
    changes: list[Change] = []
    for state, indexed in clones(states, customers, events / len(states), ids):
        chunk[state.customer_id] = state
        changes.extend(indexed)
        if len(chunk) >= CHUNK:
            store.commit(chunk, changes)
            chunk, changes = {}, []
    if chunk:
        store.commit(chunk, changes)
    commit_s = time.perf_counter() - began
    after = used_memory(client)
    found = measure_keys(client, NAMESPACE)
    del store
    dedup = sum(len(s.recent) for s in states) / len(states)
    out = result_row(label, len(states), events / len(states), dedup, customers, commit_s, found)
    out["used_memory_delta_per_customer"] = (after - before) / customers
    out["used_memory_delta_mb"] = (after - before) / 1e6
    pop.say(**{k: v for k, v in out.items() if k != "keys"})
    drop(client, NAMESPACE)
    return out


def result_row(
    label: str,
    templates: int,
    events_per_template: float,
    dedup: float,
    customers: int,
    commit_s: float,
    found: dict[str, Any],
) -> dict[str, Any]:
    """One measured run as the table and ``--json`` take it (bytes per ``customers``)."""
    per = {kind: b / customers for kind, b in found["bytes"].items()}
    total = sum(per.values())
    return {
        "data": label,
        "templates": templates,
        "events_per_template": events_per_template,
        "dedup_ids_per_customer": dedup,
        "customers": customers,
        "commit_s": commit_s,
        "keys": found["keys"],
        "state_value_bytes": found["state_value_bytes"],
        "rfm_log_entries": found["rfm_log_entries"],
        "per_customer": per,
        "memory_usage_per_customer": total,
        "memory_usage_per_customer_without_log": total - per["rfm_log"],
    }


def measure_worker_path(client: redis.Redis[bytes], lines: list[bytes]) -> dict[str, Any]:
    """The cross-check: the same events through the worker's ``Processor`` over a
    ``RedisStore`` (records on 4 partitions, as ``run.py``'s engine figure feeds it, ranks
    attached, then advanced to the last event), measured the same way."""
    import run as bench  # benchmarks/run.py (its ``_records``/``_run_processor``)

    from segmentflow.service.processor import Processor

    drop(client, NAMESPACE)
    gc.collect()
    before = used_memory(client)
    with tempfile.TemporaryDirectory(prefix="redis-bytes-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        data.write(lines, events_file)
        records = bench._records(events_file, PARTITIONS)
    store = RedisStore(client, NAMESPACE, shards=PARTITIONS)
    config = config_from_dict({})
    processor = Processor(config, store)
    store.attach_ranks(processor.engine.ranks)
    began = time.perf_counter()
    for i in range(0, len(records), CHUNK):
        processor.process(records[i : i + CHUNK])
    last = max(e.ts for e in pop.decode(lines[-1:]))
    processor.advance(last)
    processor.sweep_rfm(last)
    commit_s = time.perf_counter() - began
    after = used_memory(client)
    found = measure_keys(client, NAMESPACE)
    customers = found["keys"]["state"]
    ids = sorted({record.key.decode() for record in records if record.key})
    stored = store.load_many(ids, sync_ranks=False)
    dedup = sum(len(s.recent) for s in stored.values()) / max(1, len(stored))
    label = "cdnow-like via Processor"
    out = result_row(label, customers, len(records) / customers, dedup, customers, commit_s, found)
    out["used_memory_delta_per_customer"] = (after - before) / customers
    out["used_memory_delta_mb"] = (after - before) / 1e6
    pop.say(**{k: v for k, v in out.items() if k != "keys"})
    drop(client, NAMESPACE)
    return out


def table(r: dict[str, Any]) -> str:
    like = [run for run in r["runs"] if run["data"] == "cdnow-like"]
    smallest = f"{like[0]['customers'] // 1000}k" if like else "smallest"
    rows = [
        f"segmentflow Redis bytes per customer (redis {r['redis_version']}, MEMORY USAGE of "
        f"every key summed by kind, SAMPLES 0; {PARTITIONS} partitions; issue 13 target "
        "<= 600 B at 1M)",
        "",
        "| data | customers | state | due | rfm | rfm log | directory | members | other | "
        f"total | vs {smallest} | without log | INFO used_memory delta | state value |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = like[0]["memory_usage_per_customer"] if like else None
    for run in r["runs"]:
        p = run["per_customer"]
        total = run["memory_usage_per_customer"]
        ratio = f"{total / base:.2f}x" if base and run["data"] == "cdnow-like" else "-"
        cells = " | ".join(f"{p[k]:.1f}" for k in KINDS)
        rows.append(
            f"| {run['data']} | {run['customers']:,} | {cells} | **{total:.0f}** | {ratio} | "
            f"{run['memory_usage_per_customer_without_log']:.0f} | "
            f"{run['used_memory_delta_per_customer']:.0f} | {run['state_value_bytes']:.0f} |"
        )
    rows.append("")
    seen: set[str] = set()
    for run in r["runs"]:
        if run["data"] not in seen:
            seen.add(run["data"])
            rows.append(
                f"- {run['data']}: {run['templates']:,} customers replayed, "
                f"{run['events_per_template']:.2f} events each, "
                f"{run['dedup_ids_per_customer']:.2f} kept event-id hashes each (dedup); "
                f"RFM log entries at {run['customers']:,}: {run['rfm_log_entries']:,}"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["10k", "100k"])
    ap.add_argument("--tiny", action="store_true", help="1k templates, 1k and 2k, no CDNOW")
    ap.add_argument("--no-cdnow", action="store_true", help="skip the real CDNOW file")
    ap.add_argument(
        "--no-check", action="store_true", help="skip the Processor-over-Redis cross-check"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sizes = ["1k", "2k"] if args.tiny else args.sizes
    like_lines = data.cdnow_like_lines(1_000 if args.tiny else TEMPLATES)
    like, like_events = templates(like_lines)
    real: tuple[list[CustomerState], int] | None = None
    if not (args.tiny or args.no_cdnow) and data.cdnow_path() is not None:
        real = templates(data.cdnow_lines())
    results: dict[str, Any] = {"runs": []}
    with EmbeddedRedis() as server:  # private: never a shared one
        client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        try:
            results["redis_version"] = client.info("server")["redis_version"]
            for name in sorted(sizes, key=SIZES.__getitem__):
                run = measure(client, "cdnow-like", like, like_events, SIZES[name])
                results["runs"].append(run)
            if real is not None:
                states, events = real
                ids = [s.customer_id for s in states]
                results["runs"].append(measure(client, "cdnow", states, events, len(ids), ids))
            if not args.no_check:
                results["runs"].append(measure_worker_path(client, like_lines))
        finally:
            client.close()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
