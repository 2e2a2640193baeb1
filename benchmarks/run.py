"""segmentflow benchmarks: one command, one table, ratios against baselines of the same run.

Usage::

    .venv/bin/python benchmarks/run.py                      # full run (several minutes)
    .venv/bin/python benchmarks/run.py --quick              # < 60 s, smaller data
    .venv/bin/python benchmarks/run.py --json benchmarks/results/latest.json
    .venv/bin/python benchmarks/run.py --baseline-ref HEAD  # also measure that git revision
    .venv/bin/python benchmarks/run.py --profile /tmp/prof  # py-spy profiles (when installed)

Everything runs on one synthetic data set (``segmentflow.synthetic``), on this machine, in this
run: an embedded Tansu broker and a private ``redis-server`` are started and stopped by PID,
and every Redis key lives under a private namespace that is deleted at the end.

Figures (issue 7):

1. worker end-to-end events/s (3 topics x 4 partitions in, changes out, real Tansu + Redis)
   against a Faust no-op agent (``faust_probe.py``) reading the same topics with the same
   Faust settings;
2. engine events/s in-process: ``Processor.process`` (decode + apply + commit) over a
   ``MemoryStore`` and over a ``RedisStore``, and the cost of each dimension (lifecycle only,
   + rfm, + persona (the default config), + 3 rule segments);
3. ``replay`` events/s on the event file;
4. event-to-change latency p50/p99 at about half the measured worker throughput, with event
   time advancing like the wall clock (:func:`paced`);
5. Redis bytes per customer (``MEMORY USAGE``: state key + due-index, RFM hash, directory
   and RFM log shares, summed over the home partitions) at 100k customers, extrapolated to 1M;
6. two workers in one consumer group against one (scaling ratio).

Internal roles (run by the driver as subprocesses): ``_inproc`` (figures 2, 3, 5; prints JSON)
and ``_worker`` (an instrumented worker process built by ``segmentflow.streams.worker.build``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START = datetime(2025, 9, 1, tzinfo=UTC)
SEED = 7
RULES = [
    {"name": "de_repeat_buyers", "when": 'traits.country == "DE" && orders_90d >= 2'},
    {"name": "quiet", "when": "days_since_last_seen >= 14"},
    {"name": "big_spender", "when": "revenue_30d > 100.0"},
]
#: dimension configurations, cumulative; "+persona" is the default config
DIMENSIONS: dict[str, dict[str, Any]] = {
    "lifecycle": {"rfm": {"enabled": False}, "persona": {"enabled": False}},
    "+rfm": {"persona": {"enabled": False}},
    "+persona": {},
    "+3 rules": {"rules": RULES},
}
#: Faust settings that make a benchmark worker ready in ~3 s on Tansu (see notes/faust_tansu.md);
#: the no-op agent and the worker use the same ones, on top of ``streams.app.TUNING``
FAST_JOIN = {
    "broker_session_timeout": 2.0,
    "broker_heartbeat_interval": 0.3,
    "broker_rebalance_timeout": 4.0,
    "broker_request_timeout": 10.0,
}
SIZES = {
    # customers (about 115 events each over 180 days), Redis-memory customers, latency seconds
    "full": {"customers": 900, "days": 180, "mem_customers": 100_000, "latency_s": 10.0},
    "quick": {"customers": 80, "days": 180, "mem_customers": 10_000, "latency_s": 3.0},
    "tiny": {"customers": 12, "days": 60, "mem_customers": 500, "latency_s": 1.5},
}


def say(**kw: Any) -> None:
    """A JSON status line on the real stdout (Faust may redirect ``sys.stdout``)."""
    out = sys.__stdout__
    assert out is not None
    out.write(json.dumps(kw) + "\n")
    out.flush()


# ================================================================ data


def make_data(size: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Generate the backlog (valid events, sorted by time) and a later live stream."""
    from population_data import write

    from segmentflow.synthetic import generate

    days = size["days"]
    backlog = generate(size["customers"], SEED, START, days)
    live = generate(size["customers"], SEED + 1, START + timedelta(days=days), days)
    events = workdir / "events.jsonl"
    write((m.value for m in backlog), events)
    return {"backlog": backlog, "live": live, "events_file": events}


class PopulationMessage(NamedTuple):
    """A CDNOW-like order as ``produce`` and ``latency`` take it (``GeneratedMessage``'s
    fields that they read)."""

    topic_kind: str
    key: bytes
    value: bytes
    event: dict[str, Any]


def make_population_data(customers: int, workdir: Path) -> dict[str, Any]:
    """CDNOW-like orders of ``customers`` customers (``population_data.py``: 1-10 orders each,
    18 months): the first 95% in event time are the backlog, the rest the live stream."""
    import orjson
    from population_data import cdnow_like_lines, write

    lines = cdnow_like_lines(customers)
    messages = []
    for line in lines:
        event = orjson.loads(line)
        messages.append(PopulationMessage("purchase", event["customer_id"].encode(), line, event))
    cut = int(len(messages) * 0.95)
    events = workdir / "events.jsonl"
    write((m.value for m in messages[:cut]), events)
    return {"backlog": messages[:cut], "live": messages[cut:], "events_file": events}


def paced(live: list[Any], count: int, rate: float) -> list[PopulationMessage]:
    """``count`` live events whose event time advances like the wall clock at ``rate``/s
    from the first live event's: live traffic, not a month of history squeezed into seconds
    (which would time each UTC midnight's work over the population, its daily sweep and due
    evaluations, instead). The live events are taken in order and reused in turn, each copy
    with its own event id (and order id, for orders).

    Examples
    --------
    >>> one = PopulationMessage("purchase", b"k1", b"", {"event_id": "o-1", "customer_id": "k1",
    ...     "timestamp": "1998-06-01T00:00:00Z", "properties": {"order_id": "o-1"}})
    >>> [m.event["timestamp"] for m in paced([one], 3, 2.0)]
    ['1998-06-01T00:00:00Z', '1998-06-01T00:00:00.500000Z', '1998-06-01T00:00:01Z']
    >>> paced([one], 2, 2.0)[1].event["properties"]["order_id"]
    'o-1-live1'
    """
    import orjson

    from segmentflow.schemas.timefmt import format_us, parse_rfc3339

    start = parse_rfc3339(live[0].event["timestamp"])
    out = []
    for i in range(count):
        m = live[i % len(live)]
        event = {**m.event, "event_id": f"{m.event['event_id']}-live{i}"}
        properties = event.get("properties") or {}
        if "order_id" in properties:
            event["properties"] = {**properties, "order_id": event["event_id"]}
        event["timestamp"] = format_us(start + int(i * 1_000_000 / rate))
        out.append(PopulationMessage(m.topic_kind, m.key, orjson.dumps(event), event))
    return out


# ================================================================ in-process figures (2, 3, 5)


def _records(events_file: Path, partitions: int) -> list[Any]:
    import orjson

    from segmentflow.schemas.events import EVENT_TYPES
    from segmentflow.service.processor import InputRecord
    from segmentflow.state.redis_store import kafka_partition

    topics = {"website": "website-events", "email": "email-events", "purchase": "purchase-events"}
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for line in events_file.read_bytes().splitlines():
        data = orjson.loads(line)
        kind = EVENT_TYPES[data["type"]][0]
        key = data["customer_id"].encode()
        part = kafka_partition(data["customer_id"], partitions)
        tp = (topics[kind], part)
        out.append(InputRecord(tp[0], kind, part, offsets[tp], key, line))
        offsets[tp] += 1
    return out


def _run_processor(records: list[Any], config: Any, store: Any, batch: int = 2000) -> float:
    from segmentflow.service.processor import Processor

    processor = Processor(config, store)
    if hasattr(store, "attach_ranks") and config.rfm.enabled:
        store.attach_ranks(processor.engine.ranks)
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        processor.process(records[i : i + batch])
    return len(records) / (time.perf_counter() - started)


def _drop(client: Any, namespace: str) -> None:
    from segmentflow.state.keys import Keys

    everything = Keys(namespace).everything  # one pattern in layout 1 (a --baseline-ref)
    patterns = everything if isinstance(everything, tuple) else (everything,)
    keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=5000)]
    for i in range(0, len(keys), 5000):
        client.delete(*keys[i : i + 5000])


def _memory(client: Any, namespace: str, templates: list[Any], customers: int) -> dict[str, Any]:
    """Commit ``customers`` states (copies of real ones) like the worker does and measure."""
    import copy

    from segmentflow.segmenters.rfm import RankIndex
    from segmentflow.state.redis_store import RedisStore

    store = RedisStore(client, namespace, shards=4)
    store.attach_ranks(RankIndex())
    chunk: dict[str, Any] = {}
    for n in range(customers):
        state = copy.copy(templates[n % len(templates)])
        state.customer_id = f"m-{n:07d}"
        chunk[state.customer_id] = state
        if len(chunk) >= 2000 or n == customers - 1:
            store.commit(chunk, [])
            chunk = {}
    sample = [f"m-{n:07d}" for n in range(0, customers, max(1, customers // 2000))]
    keys: Any = store.keys
    if hasattr(store, "part"):  # layout 2 (issue 17): keys per home partition, a directory
        parts = [store.part(p) for p in store.partitions]
        state_keys = [keys.state(cid, store.shard_of(cid)) for cid in sample]
        due_keys = [part.due for part in parts]
        rfm_keys = [part.rfm for part in parts]
        log_keys = [part.rfm_log for part in parts]
        # the directory (16,384 buckets): compact listpacks up to ~128 ids a bucket (~2M
        # customers); its share per customer falls as the buckets fill (31 B at 100k, 15 B at 1M)
        directory = sorted({keys.directory(f"m-{n:07d}") for n in range(customers)})
    else:  # layout 1 (a --baseline-ref from before issue 17)
        state_keys = [keys.state(cid) for cid in sample]
        due_keys = [keys.due(s) for s in range(4)]
        rfm_keys, log_keys, directory = [keys.rfm], [keys.rfm_log], []

    def usage(names: list[str]) -> int:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        return sum(int(v or 0) for v in pipe.execute())

    pipe = client.pipeline(transaction=False)
    for key in state_keys:
        pipe.memory_usage(key, samples=0)
    state_bytes = statistics.mean(int(v or 0) for v in pipe.execute())
    raw = statistics.mean(len(client.get(key) or b"") for key in state_keys[:200])
    per = {
        "state_key": state_bytes,
        "due_share": usage(due_keys) / customers,
        "rfm_hash_share": usage(rfm_keys) / customers,
        "directory_share": usage(directory) / customers,
        "rfm_log_share": usage(log_keys) / customers,
    }
    total = per["state_key"] + per["due_share"] + per["rfm_hash_share"] + per["directory_share"]
    return {
        "customers": customers,
        "state_value_bytes": raw,
        **per,
        "bytes_per_customer": total,
        "bytes_per_customer_with_log": total + per["rfm_log_share"],
        "mb_at_1m": total * 1_000_000 / 1e6,
        "mb_at_1m_with_log": (total + per["rfm_log_share"]) * 1_000_000 / 1e6,
    }


def inproc(args: argparse.Namespace) -> None:
    """Figures 2, 3 and 5 in this interpreter (whichever segmentflow it imports)."""
    import gc

    import redis

    from segmentflow.bootstrap import replay_file
    from segmentflow.config import config_from_dict
    from segmentflow.service.processor import Processor
    from segmentflow.state.memory import MemoryStore
    from segmentflow.state.redis_store import RedisStore

    events_file = Path(args.events)
    records = _records(events_file, 4)
    out: dict[str, Any] = {"events": len(records)}
    default = config_from_dict({})

    decoder = Processor(default, MemoryStore())
    started = time.perf_counter()
    decoder.decode_all(records)
    out["decode_eps"] = len(records) / (time.perf_counter() - started)

    out["engine_eps"] = {}
    for name, cfg in DIMENSIONS.items():
        gc.collect()
        out["engine_eps"][name] = _run_processor(records, config_from_dict(cfg), MemoryStore())

    client = redis.Redis.from_url(args.redis_url)
    namespace = f"{args.namespace}-eng"
    try:
        store = RedisStore(client, namespace, shards=4, outbox=True)
        gc.collect()
        out["engine_redis_eps"] = _run_processor(records, default, store)
    finally:
        _drop(client, namespace)

    gc.collect()
    started = time.perf_counter()
    _, summary = replay_file(events_file, default, None, Path(args.workdir) / "changes.jsonl")
    out["replay_eps"] = summary.events / (time.perf_counter() - started)
    out["replay_changes"] = summary.changes

    if args.mem_customers:
        templates_store = MemoryStore()
        processor = Processor(default, templates_store)
        for i in range(0, len(records), 2000):
            processor.process(records[i : i + 2000])
        templates = [templates_store.get(cid) for cid in sorted(templates_store._states)]
        namespace = f"{args.namespace}-mem"
        try:
            out["memory"] = _memory(client, namespace, templates, args.mem_customers)
        finally:
            _drop(client, namespace)
    client.close()
    say(event="inproc", result=out)


# ================================================================ worker process role


def worker_role() -> None:
    """A real worker (``segmentflow.streams.worker.build``) that reports its progress."""

    from segmentflow.config import Settings
    from segmentflow.streams import worker as sw

    t0 = float(os.environ["BENCH_T0"])
    app, worker = sw.build(Settings(), **FAST_JOIN)
    counters = worker.processor.counters
    st: dict[str, Any] = {"first": None, "last": None, "done": 0, "reported": None}

    def done() -> int:
        return sum(
            sum(c.values()) for c in (counters.applied, counters.deadlettered, counters.duplicates)
        )

    def note() -> None:
        n = done()
        if n != st["done"]:
            st["done"] = n
            st["last"] = time.time()

    handle, tick = worker.handle_batch, worker.tick

    async def handle_batch(*args: Any) -> None:  # whatever handle_batch() takes
        if st["first"] is None:
            st["first"] = time.time()
        await handle(*args)
        note()

    async def timed_tick(*args: Any, **kwargs: Any) -> None:  # whatever tick() takes
        await tick(*args, **kwargs)
        note()

    worker.handle_batch = handle_batch  # type: ignore[method-assign, assignment]
    worker.tick = timed_tick  # type: ignore[method-assign]

    @app.timer(0.25)  # type: ignore[untyped-decorator]
    async def progress() -> None:
        mark = worker.watermark  # a --baseline-ref worker may predate caught_up()
        caught_up = getattr(mark, "caught_up", lambda: True)() and not worker.batches_waiting
        row = (st["done"], worker.changes_sent, len(worker.aligner), worker.status.ready, caught_up)
        if row != st["reported"]:
            st["reported"] = row
            say(
                event="progress",
                pid=os.getpid(),
                tag=os.environ.get("BENCH_TAG"),
                t=round(time.time() - t0, 3),
                done=st["done"],
                held=len(worker.aligner),
                caught_up=caught_up,
                changes=worker.changes_sent,
                deadletters=worker.deadletters_sent,
                ready=worker.status.ready,
                first=st["first"],
                last=st["last"],
                cpu_s=round(time.process_time(), 2),
            )

    say(event="starting", pid=os.getpid())
    if hasattr(sw, "faust_worker"):
        sw.faust_worker(app, redirect_stdouts=False).execute_from_commandline()
    else:  # a --baseline-ref from before faust_worker: as its streams.worker.run started it
        import faust

        faust.Worker(
            app, loglevel="WARNING", quiet=True, redirect_stdouts=False
        ).execute_from_commandline()


# ================================================================ driver helpers


class Procs:
    """Subprocesses with JSON status lines on stdout, stopped by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def start(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Any:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        self.procs.append(proc)
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        return proc

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            start = line.find("{")
            if start < 0:
                continue
            try:
                self.lines.put(json.loads(line[start:]))
            except json.JSONDecodeError:
                continue

    def stop(self, procs: list[Any] | None = None, sig: int = signal.SIGTERM) -> None:
        for proc in list(procs if procs is not None else self.procs):
            if proc.poll() is None:
                proc.send_signal(sig)  # SIGINT makes py-spy write its profile
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc in self.procs:
                self.procs.remove(proc)


def _py(profile: Path | None, tag: str) -> list[str]:
    """The interpreter, under py-spy when profiling (and installed)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if profile is not None and Path(spy).exists():
        profile.mkdir(parents=True, exist_ok=True)
        out = profile / f"{tag}.txt"
        return [spy, "record", "-r", "200", "-f", "raw", "-o", str(out), "--", sys.executable]
    return [sys.executable]


def baseline_tree(ref: str, workdir: Path) -> Path:
    """Export ``ref`` and lay it out like the installed package; return a PYTHONPATH entry."""
    src = workdir / "baseline-src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = workdir / "baseline-pkg" / "segmentflow"
    pkg.mkdir(parents=True)
    for entry in (src / "segmentflow").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name in ("schemas", "segmenters", "streams"):
        (pkg / name).symlink_to(src / name)
    return pkg.parent


def run_inproc(
    data: dict[str, Any],
    args: argparse.Namespace,
    redis_url: str,
    namespace: str,
    workdir: Path,
    pythonpath: Path | None,
    tag: str,
) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    argv = [
        *_py(args.profile, f"inproc-{tag}"),
        str(HERE / "run.py"),
        "_inproc",
        "--events",
        str(data["events_file"]),
        "--redis-url",
        redis_url,
        "--namespace",
        f"{namespace}-{tag}",
        "--workdir",
        str(workdir),
        "--mem-customers",
        str(args.size["mem_customers"]),
    ]
    done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=1800)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            msg = json.loads(line)
            if msg.get("event") == "inproc":
                return dict(msg["result"])
    raise RuntimeError(f"in-process benchmark ({tag}) failed:\n{done.stderr[-3000:]}")


def produce(bootstrap: str, messages: list[Any], topics: dict[str, str]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    for m in messages:
        producer.send(topics[m.topic_kind], key=m.key, value=m.value)
    producer.flush()
    producer.close()


def run_workers(
    procs: Procs,
    n: int,
    env: dict[str, str],
    expected: int,
    timeout: float,
    workdir: Path,
    profile: Path | None,
    tag: str,
) -> tuple[list[Any], dict[str, Any]]:
    """Start ``n`` workers in one group; wait until they applied ``expected`` events (with
    ``expected`` 0: until they are ready and have caught up, e.g. with the records a resumed
    group reads again after its last commit)."""
    t0 = time.time()
    env = dict(env, BENCH_T0=str(t0))
    started = []
    for i in range(n):
        port_env = dict(env, SEGMENTFLOW_WEB_PORT=str(_free_port()), BENCH_TAG=f"{tag}-{i}")
        started.append(
            procs.start(
                [*_py(profile, f"worker-{tag}-{i}"), str(HERE / "run.py"), "_worker"],
                port_env,
                workdir / f"worker-{tag}-{i}.log",
                workdir,
            )
        )
    tags = {f"{tag}-{i}" for i in range(n)}
    latest: dict[str, dict[str, Any]] = {}
    deadline = t0 + timeout
    stats: dict[str, Any] = {"complete": False}
    while time.time() < deadline:
        if any(p.poll() is not None for p in started):
            raise RuntimeError(f"a worker exited early; see {workdir}/worker-{tag}-*.log")
        try:
            msg = procs.lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if msg.get("tag") in tags and msg.get("event") == "progress":
            latest[msg["tag"]] = msg
            total = sum(m["done"] for m in latest.values())
            held = sum(m["held"] for m in latest.values())
            ready = len(latest) == n and all(m["ready"] for m in latest.values())
            caught_up = ready and all(m["caught_up"] for m in latest.values())
            if (total >= expected if expected else caught_up) and held == 0:
                stats["complete"] = True
                break
    rows = list(latest.values())
    firsts = [m["first"] for m in rows if m["first"]]
    lasts = [m["last"] for m in rows if m["last"]]
    if firsts and lasts:
        stats["drain_s"] = max(lasts) - min(firsts)
        stats["eps"] = expected / stats["drain_s"] if stats["drain_s"] > 0 else 0.0
    stats["applied"] = sum(m["done"] for m in rows)
    stats["changes"] = sum(m["changes"] for m in rows)
    stats["ready_s"] = (min(firsts) - t0) if firsts else None
    stats["cpu_s"] = sum(m["cpu_s"] for m in rows)
    return started, stats


def _free_port() -> int:
    from segmentflow.embedded import free_port

    return free_port()


def faust_noop(
    bootstrap_url: str, topics: list[str], expected: int, workdir: Path
) -> dict[str, Any]:
    """The Faust no-op agent of ``faust_probe.py`` on the same topics and settings."""
    sys.path.insert(0, str(HERE))
    import faust_probe

    try:
        from segmentflow.streams.app import FETCH_MAX_WAIT_MS, TUNING
    except ImportError:  # a baseline without the patch
        from segmentflow.streams.app import TUNING

        FETCH_MAX_WAIT_MS = 0

    extra = {**TUNING, **FAST_JOIN}
    env = dict(
        os.environ,
        PROBE_TOPICS=",".join(topics),
        PROBE_URL=bootstrap_url,
        PROBE_DATADIR=str(workdir / "probe-data"),
        PROBE_APP_ID=f"bench-noop-{uuid.uuid4().hex[:6]}",
        PROBE_MODE="take",
        PROBE_FAST="1",
        PROBE_LOGLEVEL="WARNING",
        PROBE_EXTRA=json.dumps(extra),
        PROBE_FETCH_WAIT_MS=str(FETCH_MAX_WAIT_MS),
        PROBE_EMIT_EVERY="0",
        PROBE_OUT="bench-noop-out",
        PROBE_BATCH="2000",
        PROBE_WITHIN="0.2",
    )
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the probe prints its progress
        procs, stats, _ = faust_probe.run_round(env, 1, expected, 180, "bench-noop")
    faust_probe.stop(procs, signal.SIGTERM)
    final = stats.get("final", {})
    drain = final.get("drain_s") or stats.get("drain_s")
    return {
        "drain_s": drain,
        "eps": expected / drain if drain else 0.0,
        "cpu_s": stats.get("cpu_drain_s"),
    }


def latency(
    bootstrap: str, settings: Any, live: list[Any], rate: float, seconds: float
) -> dict[str, Any]:
    """Produce ``live`` events at ``rate``/s; time each change from produce to consume."""
    import orjson
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    count = max(1, min(len(live), int(rate * seconds)))
    messages = live[:count]
    # a short fetch wait: Tansu answers a waiting Fetch only every ~wait/2 (notes/faust_tansu.md)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    topic = settings.topic_segment_changes
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    sent: dict[str, float] = {}
    seen: list[float] = []
    dimensions: Counter[str] = Counter()
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for rows in consumer.poll(timeout_ms=50).values():
                now = time.time()
                for row in rows:
                    data = orjson.loads(row.value)["data"]
                    at = sent.get(data["cause"].get("event_id") or "")
                    if at is not None:
                        seen.append((now - at) * 1000)
                        dimensions[data["dimension"]] += 1

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    topics = settings.input_topics
    started = time.time()
    for i, m in enumerate(messages):
        due = started + i / rate
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        assert m.event is not None
        sent[m.event["event_id"]] = time.time()
        producer.send(topics[m.topic_kind], key=m.key, value=m.value)
    producer.flush()
    produce_s = time.time() - started
    time.sleep(2.0)
    stop.set()
    reader.join(5)
    producer.close()
    consumer.close()
    seen.sort()

    def pct(q: float) -> float | None:
        return seen[min(len(seen) - 1, int(q * len(seen)))] if seen else None

    return {
        "target_eps": rate,
        "produced": count,
        "produced_eps": count / produce_s if produce_s else 0.0,
        "changes_timed": len(seen),
        "changes_timed_by_dimension": dict(sorted(dimensions.items())),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": seen[-1] if seen else None,
    }


# ================================================================ driver


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def drive(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    from segmentflow.config import Settings
    from segmentflow.embedded import EmbeddedBroker, EmbeddedRedis
    from segmentflow.streams.kafka_clients import create_topics

    t_start = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="segmentflow-bench-"))
    run_id = uuid.uuid4().hex[:6]
    namespace = f"bench-{run_id}"
    size = args.size
    results: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": args.mode,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "namespace": namespace,
    }
    log: Callable[..., None] = (
        (lambda *a: print(*a, file=sys.stderr, flush=True))
        if not args.silent
        else (lambda *a: None)
    )
    if size.get("population"):
        data = make_population_data(size["customers"], workdir)
    else:
        data = make_data(size, workdir)
    backlog, live = data["backlog"], data["live"]
    n = len(backlog)
    results["data"] = {
        "events": n,
        "customers": size["customers"],
        "days": size["days"],
        "bytes_per_event": sum(len(m.value) for m in backlog) / max(1, n),
        "topics": dict(Counter(m.topic_kind for m in backlog)),
    }
    log(f"data: {n} events, {size['customers']} customers ({time.time() - t_start:.1f}s)")
    redis_server = EmbeddedRedis(args.redis_url).start()
    broker = EmbeddedBroker()
    procs = Procs()
    client = redis.Redis.from_url(redis_server.url)
    try:
        # -- in-process figures (fresh interpreters, same data) ------------------------------
        if not args.workers_only:
            results["inproc"] = run_inproc(
                data, args, redis_server.url, namespace, workdir, None, "current"
            )
            log(f"in-process done ({time.time() - t_start:.1f}s)")
        if args.baseline_ref:
            path = baseline_tree(args.baseline_ref, workdir)
            results["baseline_ref"] = args.baseline_ref
        if args.baseline_ref and not args.workers_only:
            results["baseline_inproc"] = run_inproc(
                data, args, redis_server.url, namespace, workdir, path, "baseline"
            )
            log(f"baseline in-process done ({time.time() - t_start:.1f}s)")

        # -- broker figures ------------------------------------------------------------------
        broker.start()
        settings = Settings(kafka_url=broker.url, redis_url=redis_server.url, namespace=namespace)
        inputs = settings.input_topics
        create_topics(broker.bootstrap, list(inputs.values()), 4)
        create_topics(
            broker.bootstrap,
            [
                settings.topic_segment_changes,
                settings.topic_segmentflow_deadletter,
                settings.topic_segmentflow_metrics,
            ],
            4,
        )
        produce(broker.bootstrap, backlog, inputs)
        log(f"backlog produced ({time.time() - t_start:.1f}s)")

        results["faust_noop"] = faust_noop(broker.url, list(inputs.values()), n, workdir)
        log(f"faust no-op: {results['faust_noop']['eps']:.0f}/s ({time.time() - t_start:.1f}s)")

        base_env = dict(
            os.environ,
            SEGMENTFLOW_KAFKA_URL=broker.url,
            SEGMENTFLOW_REDIS_URL=redis_server.url,
            SEGMENTFLOW_PARTITIONS="4",
        )
        base_env.pop("SEGMENTFLOW_CONFIG", None)

        def env_for(tag: str, pythonpath: Path | None = None) -> dict[str, str]:
            env = dict(base_env, SEGMENTFLOW_NAMESPACE=f"{namespace}-{tag}")
            if pythonpath is not None:
                env["PYTHONPATH"] = str(pythonpath)
            return env

        one, stats1 = run_workers(
            procs, 1, env_for("w1"), n, args.timeout, workdir, args.profile, "w1"
        )
        results["worker_1"] = stats1
        log(f"1 worker: {stats1.get('eps', 0):.0f}/s ({time.time() - t_start:.1f}s)")

        procs.stop(one, signal.SIGINT if args.profile else signal.SIGTERM)

        two, stats2 = run_workers(procs, 2, env_for("w2"), n, args.timeout, workdir, None, "w2")
        procs.stop(two)
        results["worker_2"] = stats2
        log(f"2 workers: {stats2.get('eps', 0):.0f}/s ({time.time() - t_start:.1f}s)")

        if args.baseline_ref:
            path = workdir / "baseline-pkg"
            old, stats_old = run_workers(
                procs, 1, env_for("w1-baseline", path), n, args.timeout, workdir, None, "w1b"
            )
            procs.stop(old)
            results["baseline_worker_1"] = stats_old
            log(f"baseline worker: {stats_old.get('eps', 0):.0f}/s")

        # latency last (its events go to the same input topics): the first worker's group and
        # state resume caught up; events at half its measured throughput
        again, _ = run_workers(
            procs, 1, env_for("w1"), 0, args.timeout, workdir, args.profile, "w1-live"
        )
        rate = max(50.0, args.latency_share * float(stats1.get("eps") or 0.0))
        live = paced(live, int(rate * size["latency_s"]), rate)
        results["latency"] = latency(broker.bootstrap, settings, live, rate, size["latency_s"])
        log(f"latency: p99 {results['latency']['p99_ms']} ms ({time.time() - t_start:.1f}s)")
        procs.stop(again, signal.SIGINT if args.profile else signal.SIGTERM)
    finally:
        procs.stop()
        try:
            _drop(client, namespace)
            client.close()
        finally:
            broker.stop()
            redis_server.stop()
            if args.profile is None:
                shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.time() - t_start
    results["ratios"] = ratios(results)
    if args.profile is not None:
        results["profiles"] = summarise_profiles(args.profile)
    return results


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    inproc = r.get("inproc") or {}
    w1 = r["worker_1"].get("eps")
    out = {
        "worker_vs_faust_noop": _ratio(w1, r["faust_noop"]["eps"]),
        "two_workers_vs_one": _ratio(r["worker_2"].get("eps"), w1),
        "latency_rate_vs_worker": _ratio(r["latency"]["produced_eps"], w1),
    }
    if inproc:
        eng = inproc["engine_eps"]
        out["engine_redis_vs_memory"] = _ratio(inproc["engine_redis_eps"], eng["+persona"])
        out["replay_vs_engine"] = _ratio(inproc["replay_eps"], eng["+persona"])
    base = r.get("baseline_inproc")
    if base and inproc:
        out["speedup_decode"] = _ratio(inproc["decode_eps"], base["decode_eps"])
        for name in DIMENSIONS:
            out[f"speedup_engine_{name}"] = _ratio(eng[name], base["engine_eps"][name])
        out["speedup_engine_redis"] = _ratio(inproc["engine_redis_eps"], base["engine_redis_eps"])
        out["speedup_replay"] = _ratio(inproc["replay_eps"], base["replay_eps"])
        if "memory" in inproc and "memory" in base:
            out["memory_after_vs_before"] = _ratio(
                inproc["memory"]["bytes_per_customer"], base["memory"]["bytes_per_customer"]
            )
    if r.get("baseline_worker_1"):
        out["speedup_worker"] = _ratio(w1, r["baseline_worker_1"].get("eps"))
    return out


# ================================================================ profiles


def summarise_profiles(directory: Path, top: int = 12) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in each py-spy raw file."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob("*.txt")):
        own: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            samples = int(count)
            total += samples
            frames = [
                f.split(" (")[0] + " " + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                for f in stack.split(";")
            ]
            own[frames[-1]] += samples
            for frame in set(frames):
                incl[frame] += samples
        if not total:
            continue
        out[path.stem] = {
            "samples": total,
            "self": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)],
            "inclusive": [
                (f, round(100 * c / total, 1))
                for f, c in incl.most_common(60)
                if "segmentflow" in f
                or any(k in f for k in ("schemas", "segmenters", "streams"))
                or f.split(" ")[-1]
                in (
                    "engine.py",
                    "processor.py",
                    "runtime.py",
                    "decode.py",
                    "redis_store.py",
                    "state.py",
                    "rfm.py",
                    "rules.py",
                    "features.py",
                    "persona.py",
                    "align.py",
                )
            ][:top],
        }
    return out


# ================================================================ output


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, ratio/baseline, goal) rows."""
    inproc, ratio = r.get("inproc") or {}, r["ratios"]
    base = r.get("baseline_inproc") or {}
    bw = r.get("baseline_worker_1") or {}

    def before(value: Any, unit: str = "/s") -> str:
        return f" (before {_fmt(value, unit)})" if value is not None else ""

    rows = [
        (
            "1. worker end-to-end events/s (1 worker)",
            _fmt(r["worker_1"].get("eps"), "/s") + before(bw.get("eps")),
            f"{_fmt(ratio['worker_vs_faust_noop'])}x Faust no-op "
            f"({_fmt(r['faust_noop']['eps'], '/s')})",
            ">= 0.8x",
        ),
    ]
    if inproc:
        rows += _inproc_rows(inproc, base, ratio, before)
    lat = r["latency"]
    rows.append(
        (
            "4. event-to-change latency p50 / p99",
            f"{_fmt(lat['p50_ms'], ' ms')} / {_fmt(lat['p99_ms'], ' ms')}",
            f"at {_fmt(lat['produced_eps'], '/s')} "
            f"({_fmt(ratio['latency_rate_vs_worker'])}x max), {lat['changes_timed']} changes",
            "p99 <= 500 ms",
        )
    )
    mem = inproc.get("memory")
    if mem:
        bm = base.get("memory") or {}
        rows.append(
            (
                f"5. Redis bytes/customer at {mem['customers']:,}",
                _fmt(mem["bytes_per_customer"], " B")
                + (f" (before {_fmt(bm.get('bytes_per_customer'), ' B')})" if bm else ""),
                f"state {mem['state_key']:.0f} + due {mem['due_share']:.0f} + rfm "
                f"{mem['rfm_hash_share']:.0f} + dir {mem.get('directory_share', 0):.0f} "
                f"(+ rfm log {mem['rfm_log_share']:.0f}); "
                f"1M: {mem['mb_at_1m']:.0f} MB",
                "<= 600 B",
            )
        )
    rows.append(
        (
            "6. two workers vs one (events/s)",
            _fmt(r["worker_2"].get("eps"), "/s"),
            f"{_fmt(ratio['two_workers_vs_one'])}x one worker",
            "",
        )
    )
    return rows


def _inproc_rows(
    inproc: dict[str, Any],
    base: dict[str, Any],
    ratio: dict[str, float | None],
    before: Callable[..., str],
) -> list[tuple[str, str, str, str]]:
    """Rows of figures 2 and 3 (the in-process runs)."""
    eng = inproc["engine_eps"]
    rows = [
        (
            "2. engine events/s, MemoryStore (default config)",
            _fmt(eng["+persona"], "/s") + before(base.get("engine_eps", {}).get("+persona")),
            "",
            ">= 50k/s",
        ),
        (
            "2. engine events/s, RedisStore (default config)",
            _fmt(inproc["engine_redis_eps"], "/s") + before(base.get("engine_redis_eps")),
            f"{_fmt(ratio['engine_redis_vs_memory'])}x MemoryStore",
            ">= 25k/s",
        ),
    ]
    previous = None
    for name in DIMENSIONS:
        cost = (
            f"+{(1 / eng[name] - 1 / previous) * 1e6:.1f} us/event"
            if previous
            else f"{1e6 / eng[name]:.1f} us/event"
        )
        rows.append(
            (
                f"   dimensions: {name}",
                _fmt(eng[name], "/s") + before(base.get("engine_eps", {}).get(name)),
                cost,
                "",
            )
        )
        previous = eng[name]
    rows.append(
        (
            "   decode only",
            _fmt(inproc["decode_eps"], "/s") + before(base.get("decode_eps")),
            "",
            "",
        )
    )
    rows.append(
        (
            f"3. replay events/s ({inproc['events']:,} events)",
            _fmt(inproc["replay_eps"], "/s") + before(base.get("replay_eps")),
            f"{_fmt(ratio['replay_vs_engine'])}x engine",
            "",
        )
    )
    return rows


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (
        f"segmentflow benchmarks ({r['mode']}, {r['data']['events']:,} events, "
        f"{r['machine']['cpus']} CPUs, {r['seconds']:.0f} s)"
    )
    table = Table(title=title)
    for col in ("figure", "value", "ratio / detail", "goal"):
        table.add_column(col)
    for row in table_rows(r):
        table.add_row(*row)
    console = Console(width=160)
    console.print(table)
    speedups = {k: v for k, v in r["ratios"].items() if k.startswith("speedup") and v}
    if speedups:
        console.print(
            f"speedups vs {r['baseline_ref']}: "
            + ", ".join(f"{k.removeprefix('speedup_')} {v:.2f}x" for k, v in speedups.items())
        )
    for name, prof in (r.get("profiles") or {}).items():
        console.print(f"[bold]profile {name}[/bold] ({prof['samples']} samples), self time:")
        for frame, share in prof["self"]:
            console.print(f"  {share:5.1f}%  {frame}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("role", nargs="?", default="driver", choices=["driver", "_inproc", "_worker"])
    ap.add_argument("--quick", action="store_true", help="smaller data; finishes in < 60 s")
    ap.add_argument("--tiny", action="store_true", help="a few hundred events (tests)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--baseline-ref", help="also measure this git revision (before/after)")
    ap.add_argument("--profile", type=Path, help="write py-spy profiles here and summarise")
    ap.add_argument("--redis-url", help="use this Redis (else a private redis-server)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per worker phase")
    ap.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    ap.add_argument(
        "--workers-only",
        action="store_true",
        help="figures 1, 4 and 6 only (no in-process engine, replay or memory runs)",
    )
    ap.add_argument(
        "--latency-share",
        type=float,
        default=0.5,
        help="figure 4's event rate as a share of the measured worker throughput",
    )
    ap.add_argument(
        "--population",
        type=int,
        metavar="CUSTOMERS",
        help="CDNOW-like data of this many customers (1-10 orders each) instead of the "
        "heavy-history set (900 customers, ~115 events each)",
    )
    # _inproc role
    ap.add_argument("--events")
    ap.add_argument("--namespace")
    ap.add_argument("--workdir")
    ap.add_argument("--mem-customers", type=int, default=0)
    args = ap.parse_args()
    if args.role == "_worker":
        worker_role()
        return
    if args.role == "_inproc":
        inproc(args)
        return
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    args.size = SIZES[args.mode]
    if args.population:
        args.mode = f"population {args.population:,}"
        args.size = {
            **args.size,
            "customers": args.population,
            "days": 548,
            "mem_customers": max(10_000, args.population),
            "population": True,
        }
    results = drive(args)
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
