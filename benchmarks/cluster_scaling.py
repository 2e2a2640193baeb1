"""Redis Cluster scaling (issue 17): events/s and Redis bytes per customer with 1, 2 and 4
workers on a 3-primary Redis Cluster next to one Redis, in the same run.

Usage::

    .venv/bin/python benchmarks/cluster_scaling.py           # 3,000 customers, 1/2/4 workers
    .venv/bin/python benchmarks/cluster_scaling.py --customers 20000 --workers 1,2,4
    .venv/bin/python benchmarks/cluster_scaling.py --quick   # smoke: 150 customers, 1 worker
    .venv/bin/python benchmarks/cluster_scaling.py --json /tmp/cluster.json

One embedded Tansu broker, one private ``redis-server`` (or ``--redis-url``, a Redis that may be
shared: only this run's namespaces are touched, deleted by ``SCAN``, never ``FLUSHALL``) and one
:class:`~segmentflow.embedded_cluster.EmbeddedRedisCluster` of 3 primaries (``--replicas 0`` by
default: fewer processes on a small machine), all on 127.0.0.1, stopped by PID.

The backlog is CDNOW-like (purchase-events only, each customer 1-10 orders over 400 days), the
same for every configuration. Each configuration (backend x worker count, interleaved so a
drift of the machine's load touches both backends alike) gets a fresh namespace (Redis prefix,
consumer group) and a fresh topic set the backlog is produced to before its workers start.
Workers are the real CLI worker (``python -m segmentflow.cli.main worker``), the default
segmentation config unless ``--config``.

Measured per configuration (progress-based waiting on the workers' ``/metrics``: gives up only
when the event counters stand still for ``--stall`` seconds):

- ``ready s``: from the first worker's start until every worker answers 200 on ``/health``;
- ``events/s``: events applied after that moment divided by the time until every event is
  applied (``segmentflow_events_applied_total`` + dead-lettered summed over the workers), the
  headline figure, and its ratio to one worker on one Redis;
- ``applied s``: from the first worker's start (start-up included) until every event is
  applied;
- ``published s`` / ``events/s published``: until the outboxes (``{ns:pP}:outbox``) are empty
  as well, i.e. every change is published and acknowledged by the broker (the events applied
  after ready divided by the time from ready until then), and its ratio;
- ``retries``: ``segmentflow_retries_total`` summed over the workers (Redis or broker
  operations retried);
- ``B/customer``: ``MEMORY USAGE ... SAMPLES 0`` summed over the namespace's keys on every
  primary (state keys sampled beyond ``--sample`` keys per node and scaled), after the workers
  stopped, divided by customers; and the ``used_memory`` delta (``INFO memory``, summed over the
  primaries) over the same span, divided by customers. The bytes are also given without the
  RFM update log (``rfm:log``, kept ~10 minutes of server time: a backlog applied in minutes
  keeps every update) and the persona samples (a capped list: its share shrinks as the
  population grows): their size follows the update rate and a cap, not the customers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from segmentflow.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from segmentflow.embedded_cluster import EmbeddedRedisCluster
from segmentflow.state.client import connect
from segmentflow.state.keys import Keys
from segmentflow.streams.kafka_clients import create_topics

START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 400
#: topic kinds -> Settings field suffix (``SEGMENTFLOW_TOPIC_<NAME>``)
TOPICS = {
    "website": "website_events",
    "email": "email_events",
    "purchase": "purchase_events",
    "changes": "segment_changes",
    "deadletter": "segmentflow_deadletter",
    "metrics": "segmentflow_metrics",
}
#: seconds a worker may take to exit after SIGTERM before it is killed
STOP_LIMIT_S = 30.0
#: words in a worker log line that count as an error worth reporting
ERROR_WORDS = ("Traceback", "ERROR", "CRITICAL", "Exception")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ================================================================ data


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes


def backlog(customers: int, seed: int) -> list[Message]:
    """CDNOW-like purchases: each customer 1-10 orders from a first one in the first third of
    ``DAYS``, ~60 days apart (exponential); event times stay in the past; sorted by time."""
    rng = random.Random(seed)
    end = START + timedelta(days=DAYS)
    rows: list[tuple[str, Message]] = []
    for c in range(customers):
        cid = f"cd-{seed}-{c:06d}"
        t = START + timedelta(seconds=rng.uniform(0, DAYS * 86400 / 3))
        for k in range(rng.randint(1, 10)):
            if t > end:
                break
            stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "event_id": f"{cid}-o{k}",
                "customer_id": cid,
                "type": "order_completed",
                "timestamp": stamp,
                "properties": {
                    "order_id": f"{cid}-{k}",
                    "revenue": round(rng.uniform(5, 120), 2),
                    "currency": "USD",
                },
            }
            rows.append((stamp, Message(cid.encode(), orjson.dumps(body))))
            t += timedelta(days=rng.expovariate(1 / 60))
    rows.sort(key=lambda row: row[0])
    return [m for _, m in rows]


def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Send with kafka-python (murmur2 partitioner, keyed by customer)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    for m in messages:
        producer.send(topic, key=m.key, value=m.value)
    producer.flush()
    producer.close()


# ================================================================ workers


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of a worker URL; (0, b"") when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def metric_totals(text: str, names: Sequence[str]) -> dict[str, float]:
    """Sums of the samples called ``names`` in a Prometheus text."""
    out = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += float(sample.value)
    return out


APPLIED = "segmentflow_events_applied_total"
DEADLETTERED = "segmentflow_events_deadlettered_total"
CHANGES = "segmentflow_changes_total"
RETRIES = "segmentflow_retries_total"
COUNTERS = (APPLIED, DEADLETTERED, CHANGES, RETRIES)


class Workers:
    """``n`` CLI worker processes in one group, logs in ``log_dir``, stopped by PID."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []

    def start(self) -> None:
        port = free_port()
        path = self.log_dir / f"worker-{port}.log"
        with path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "segmentflow.cli.main", "worker"],
                env=dict(self.env, SEGMENTFLOW_WEB_PORT=str(port)),
                cwd=self.log_dir,  # Faust's <app>-data directory
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.ports.append(port)
        self.logs.append(path)

    def check_alive(self) -> None:
        for proc, path in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited ({proc.returncode}); see {path}")

    def healthy(self) -> bool:
        return all(http_get(port, "/health")[0] == 200 for port in self.ports)

    def stop(self) -> None:
        """SIGTERM every worker at once, then reap each (SIGKILL after a generous limit)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_LIMIT_S)

    def warnings(self) -> dict[str, int]:
        """WARNING log lines of every worker, counted by their text with numbers blanked."""
        found: dict[str, int] = {}
        for path in self.logs:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    _, sep, text = line.partition("[WARNING] ")
                    if sep:
                        text = re.sub(r"\d+(\.\d+)?", "N", text.strip())[:160]
                        found[text] = found.get(text, 0) + 1
        return dict(sorted(found.items(), key=lambda kv: -kv[1]))

    def errors(self) -> list[str]:
        """Log lines that look like errors (first ones, from every worker)."""
        found: list[str] = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if any(word in line for word in ERROR_WORDS):
                        found.append(f"{path.name}: {line.strip()[:300]}")
        return found


# ================================================================ Redis memory


def primaries(backend: str, url: str, cluster: EmbeddedRedisCluster | None) -> list[Any]:
    """Plain clients of every node holding the data (one for a single Redis)."""
    if cluster is None:
        return [redis.Redis.from_url(url)]
    return [node.connect(timeout=30) for node in cluster.primaries()]


def used_memory(nodes: Sequence[Any]) -> int:
    return sum(int(node.info("memory")["used_memory"]) for node in nodes)


def namespace_keys(node: Any, namespace: str) -> list[bytes]:
    return [
        key
        for pattern in Keys(namespace).everything
        for key in node.scan_iter(match=pattern, count=2000)
    ]


def kind_of(key: bytes, namespace: str) -> str:
    """What a key of layout 2 holds, for the breakdown: ``s`` (state), ``due``, ``rfm``,
    ``m`` (members), ``directory``, ``persona``, ``global`` ...

    Examples
    --------
    >>> kind_of(b"{ns:p3}:s:c-1", "ns"), kind_of(b"{ns:p0}:rfm:log", "ns")
    ('s', 'rfm:log')
    >>> kind_of(b"{ns:d17}", "ns"), kind_of(b"{ns:persona}:model", "ns"), kind_of(b"ns:meta", "ns")
    ('directory', 'persona', 'global')
    """
    text = key.decode(errors="replace")
    if text.startswith(f"{namespace}:"):
        return "global"
    tag, _, rest = text.partition("}")
    inner = tag[len(namespace) + 2 :]
    if inner.startswith("d") and inner[1:].isdigit():
        return "directory"
    if not (inner.startswith("p") and inner[1:].isdigit()):
        return inner or "other"
    parts = rest.lstrip(":").split(":")
    if parts[0] == "rfm" and parts[1:2] == ["log"]:
        return "rfm:log"
    return parts[0] if parts[0] in {"s", "due", "rfm", "m", "clv", "pop", "outbox"} else "part"


def memory_usage(nodes: Sequence[Any], namespace: str, sample: int) -> dict[str, Any]:
    """``MEMORY USAGE ... SAMPLES 0`` over the namespace's keys on every node: state keys
    (sampled beyond ``sample`` per node, scaled), the directory buckets and everything else,
    with a breakdown by :func:`kind_of`."""
    state_tag = b"}:s:"
    directory = f"{{{namespace}:d".encode()
    totals = {"state": 0.0, "directory": 0.0, "other": 0.0}
    kinds: dict[str, float] = {}
    per_node: list[int] = []
    rng = random.Random(17)
    for node in nodes:
        keys = namespace_keys(node, namespace)
        per_node.append(len(keys))
        states = [k for k in keys if state_tag in k]
        rest = [k for k in keys if state_tag not in k]
        measured = states if len(states) <= sample else rng.sample(states, sample)
        scale = len(states) / len(measured) if measured else 0.0
        for group, names, factor in (("state", measured, scale), ("rest", rest, 1.0)):
            for i in range(0, len(names), 1000):
                chunk = names[i : i + 1000]
                pipe = node.pipeline(transaction=False)
                for name in chunk:
                    pipe.memory_usage(name, samples=0)
                for name, value in zip(chunk, pipe.execute(), strict=True):
                    bucket = (
                        group
                        if group == "state"
                        else "directory"
                        if name.startswith(directory)
                        else "other"
                    )
                    totals[bucket] += factor * int(value or 0)
                    kind = kind_of(name, namespace)
                    kinds[kind] = kinds.get(kind, 0.0) + factor * int(value or 0)
    return {"keys_per_node": per_node, **totals, "total": sum(totals.values()), "kinds": kinds}


def drop(nodes: Sequence[Any], namespace: str) -> None:
    """Delete the namespace's keys on every node (one key per ``UNLINK``: cluster slots)."""
    for node in nodes:
        keys = namespace_keys(node, namespace)
        for i in range(0, len(keys), 1000):
            pipe = node.pipeline(transaction=False)
            for key in keys[i : i + 1000]:
                pipe.unlink(key)
            pipe.execute()


# ================================================================ one configuration


def outbox_length(client: Any, namespace: str, partitions: int) -> int:
    keys = Keys(namespace)
    return sum(int(client.llen(keys.part(p).outbox)) for p in range(partitions))


def wait_published(
    url: str, namespace: str, partitions: int, t0: float, workers: Workers, stall: float
) -> tuple[int, float | None]:
    """Changes in the outboxes now, and seconds from ``t0`` until they are empty (the workers
    published every change); ``None`` when they stop shrinking for ``stall`` seconds."""
    client = connect(url, socket_timeout=30)
    try:
        first = last = outbox_length(client, namespace, partitions)
        moved = time.monotonic()
        while last > 0:
            workers.check_alive()
            time.sleep(0.2)
            now = outbox_length(client, namespace, partitions)
            if now < last:
                moved = time.monotonic()
            elif time.monotonic() - moved > stall:
                log(f"{namespace}: {now} changes stay in the outboxes for {stall:.0f} s")
                return first, None
            last = now
        return first, time.monotonic() - t0
    finally:
        client.close()


@dataclass
class Row:
    backend: str
    workers: int
    events: int
    customers: int
    ready_s: float = 0.0
    applied_when_ready: float = 0.0
    drain_s: float = 0.0
    eps: float | None = None
    wall_s: float = 0.0
    eps_from_start: float = 0.0
    deadlettered: float = 0.0
    bytes_per_customer: float = 0.0
    state_bytes: float = 0.0
    directory_bytes: float = 0.0
    other_bytes: float = 0.0
    used_memory_per_customer: float = 0.0
    keys_per_node: list[int] = field(default_factory=list)
    #: bytes per customer by key kind (:func:`kind_of`)
    kinds: dict[str, float] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
    #: WARNING lines of the workers' logs by text (numbers blanked)
    log_warnings: dict[str, int] = field(default_factory=dict)
    #: changes in the outboxes when every event was applied, and seconds from the first
    #: worker's start until the outboxes were empty (every change published)
    outbox_at_applied: int = 0
    published_s: float | None = None
    #: events (applied after ready) per second until every change was published
    eps_published: float | None = None
    ratio_published: float | None = None
    #: changes emitted and Redis/broker operations retried, summed over the workers
    changes: float = 0.0
    retries: float = 0.0
    #: the longest the outboxes were while the events were applied, and a sample of
    #: (seconds since the first start, events applied, outbox length) over the run
    outbox_max: int = 0
    trace: list[tuple[float, float, int]] = field(default_factory=list)
    ratio: float | None = None


def run_config(
    backend: str,
    n: int,
    url: str,
    cluster: EmbeddedRedisCluster | None,
    broker: EmbeddedBroker,
    messages: Sequence[Message],
    customers: int,
    args: argparse.Namespace,
    run_id: str,
    workdir: Path,
) -> Row:
    namespace = f"bench-{run_id}-{backend}-w{n}"
    topics = {kind: f"{namespace}-{kind}" for kind in TOPICS}
    create_topics(broker.bootstrap, list(topics.values()), args.partitions)
    produce(broker.bootstrap, topics["purchase"], messages)
    env = dict(os.environ)
    for name in ("SEGMENTFLOW_CONFIG", "SEGMENTFLOW_API_TOKEN", "SEGMENTFLOW_WORKER_ID"):
        env.pop(name, None)
    env.update(
        SEGMENTFLOW_KAFKA_URL=broker.url,
        SEGMENTFLOW_REDIS_URL=url,
        SEGMENTFLOW_NAMESPACE=namespace,
        SEGMENTFLOW_PARTITIONS=str(args.partitions),
        **{f"SEGMENTFLOW_TOPIC_{TOPICS[k].upper()}": t for k, t in topics.items()},
    )
    if args.config:
        env["SEGMENTFLOW_CONFIG"] = str(Path(args.config).resolve())
    log_dir = workdir / namespace
    log_dir.mkdir()
    nodes = primaries(backend, url, cluster)
    watch = connect(url, socket_timeout=30)
    row = Row(backend, n, len(messages), customers)
    workers = Workers(env, log_dir)
    try:
        before = used_memory(nodes)
        t0 = time.monotonic()
        for _ in range(n):
            workers.start()
        counts = [dict.fromkeys(COUNTERS, 0.0) for _ in range(n)]
        ready_at: float | None = None
        moved, last = time.monotonic(), -1.0
        done_at = 0.0
        trace: list[tuple[float, float, int]] = []  # (s since start, applied, outbox length)
        while True:
            workers.check_alive()
            with contextlib.suppress(redis.RedisError, OSError):
                trace.append(
                    (
                        time.monotonic() - t0,
                        sum(c[APPLIED] for c in counts),
                        outbox_length(watch, namespace, args.partitions),
                    )
                )
            for i, port in enumerate(workers.ports):
                status, body = http_get(port, "/metrics")
                if status == 200:  # a busy worker may not answer: keep its last figures
                    counts[i] = metric_totals(body.decode(), COUNTERS)
            now = sum(c[APPLIED] + c[DEADLETTERED] for c in counts)
            if ready_at is None and workers.healthy():
                # events applied between the metrics just read and this moment count as after
                ready_at, row.applied_when_ready = time.monotonic(), now
            if now >= len(messages) and ready_at is not None:
                done_at = time.monotonic()
                break
            if now != last:
                moved, last = time.monotonic(), now
            elif time.monotonic() - moved > args.stall:
                raise RuntimeError(
                    f"{backend} x{n}: workers stalled at {now:.0f} of {len(messages)} events "
                    f"for {args.stall:.0f} s; logs in {log_dir}"
                )
            time.sleep(0.2)
        row.ready_s = ready_at - t0
        row.wall_s = done_at - t0
        row.eps_from_start = len(messages) / row.wall_s
        row.drain_s = done_at - ready_at
        left = len(messages) - row.applied_when_ready
        if left > 0 and row.drain_s > 0:
            row.eps = left / row.drain_s
        row.deadlettered = sum(c[DEADLETTERED] for c in counts)
        row.outbox_max = max((length for _, _, length in trace), default=0)
        row.trace = [(round(t, 1), applied, length) for t, applied, length in trace[::5]]
        row.outbox_at_applied, row.published_s = wait_published(
            url, namespace, args.partitions, t0, workers, args.stall
        )
        if row.published_s is not None and row.published_s > row.ready_s:
            row.eps_published = (len(messages) - row.applied_when_ready) / (
                row.published_s - row.ready_s
            )
        final = [
            metric_totals(http_get(port, "/metrics")[1].decode(), COUNTERS)
            for port in workers.ports
        ]
        row.changes = sum(c[CHANGES] for c in final)
        row.retries = sum(c[RETRIES] for c in final)
        workers.stop()
        used = memory_usage(nodes, namespace, args.sample)
        row.used_memory_per_customer = (used_memory(nodes) - before) / customers
        row.bytes_per_customer = used["total"] / customers
        row.state_bytes = used["state"] / customers
        row.directory_bytes = used["directory"] / customers
        row.other_bytes = used["other"] / customers
        row.keys_per_node = list(used["keys_per_node"])
        row.kinds = {k: v / customers for k, v in sorted(used["kinds"].items())}
        row.log_errors = workers.errors()
        row.log_warnings = workers.warnings()
    finally:
        workers.stop()
        with contextlib.suppress(redis.RedisError, OSError):
            drop(nodes, namespace)
        for node in nodes:
            node.close()
        watch.close()
    return row


# ================================================================ report


def fmt(value: float | None, spec: str = ",.0f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(rows: Sequence[Row], replicas: int) -> str:
    head = (
        "| backend | workers | ready s | applied before ready | applied s | events/s applied "
        "| ratio | published s | events/s published | ratio | B/customer (MEMORY USAGE) "
        "| without rfm:log, persona | state / directory / other | used_memory delta B/customer "
        "| retries |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        name = "one Redis" if r.backend == "single" else f"cluster 3 primaries x{replicas} replicas"
        core = r.bytes_per_customer - r.kinds.get("rfm:log", 0) - r.kinds.get("persona", 0)
        lines.append(
            f"| {name} | {r.workers} | {r.ready_s:.1f} | {r.applied_when_ready:,.0f} "
            f"| {r.wall_s:.1f} | {fmt(r.eps)} | {fmt(r.ratio, '.2f', 'x')} "
            f"| {fmt(r.published_s, '.1f')} | {fmt(r.eps_published)} "
            f"| {fmt(r.ratio_published, '.2f', 'x')} | {r.bytes_per_customer:,.0f} "
            f"| {core:,.0f} "
            f"| {r.state_bytes:,.0f} / {r.directory_bytes:,.0f} / {r.other_bytes:,.0f} "
            f"| {r.used_memory_per_customer:,.0f} | {r.retries:,.0f} |"
        )
    return "\n".join(lines)


def machine_note(replicas: int, workers: Sequence[int]) -> str:
    cpus = os.cpu_count() or 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    nodes = 3 * (1 + replicas)
    return (
        f"machine: {cpus} CPU(s), load average {load:.1f} at the end; up to {max(workers)} "
        f"workers, {nodes} redis-server cluster nodes, one Redis and the broker share them"
        + (
            ": the figures show the cluster's overhead, not a speed-up"
            if cpus <= 4
            else ": compare the ratios"
        )
    )


@contextlib.contextmanager
def single_redis(url: str | None) -> Iterator[str]:
    with EmbeddedRedis(url) as server:
        yield server.url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=3000, help="customers (1-10 orders)")
    parser.add_argument("--workers", default=None, help="worker counts, e.g. 1,2,4 (default)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 150 customers, 1 worker")
    parser.add_argument("--replicas", type=int, default=0, help="replicas per primary (0)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    parser.add_argument("--config", default=None, help="segmentation config (default config)")
    parser.add_argument("--redis-url", default=None, help="a Redis to reuse (default: private)")
    parser.add_argument("--seed", type=int, default=1717)
    parser.add_argument("--sample", type=int, default=5000, help="state keys measured per node")
    parser.add_argument("--stall", type=float, default=180.0, help="s without progress: give up")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers = min(args.customers, 150)
    spec = args.workers or ("1" if args.quick else "1,2,4")
    try:
        counts = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workers takes comma-separated counts like 1,2,4, not {spec!r}")
    if not counts or min(counts) < 1:
        parser.error("--workers needs counts of 1 or more")
    started = time.monotonic()
    messages = backlog(args.customers, args.seed)
    log(f"backlog: {len(messages)} events, {args.customers} customers")
    run_id = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="segmentflow-cluster-bench-"))
    rows: list[Row] = []
    with (
        EmbeddedBroker() as broker,
        single_redis(args.redis_url) as single_url,
        EmbeddedRedisCluster(primaries=3, replicas=args.replicas) as cluster,
    ):
        log(f"broker, Redis and cluster up ({time.monotonic() - started:.0f} s); logs in {workdir}")
        for n in counts:
            for backend in ("single", "cluster"):
                url = single_url if backend == "single" else cluster.url
                row = run_config(
                    backend,
                    n,
                    url,
                    None if backend == "single" else cluster,
                    broker,
                    messages,
                    args.customers,
                    args,
                    run_id,
                    workdir,
                )
                rows.append(row)
                log(
                    f"{backend} x{n}: {fmt(row.eps)} events/s after ready "
                    f"({row.wall_s:.1f} s from start), {row.bytes_per_customer:.0f} B/customer, "
                    f"{len(row.log_errors)} error lines in the worker logs "
                    f"({time.monotonic() - started:.0f} s)"
                )
    base = next((r.eps for r in rows if r.backend == "single" and r.workers == 1), None)
    base_published = next(
        (r.eps_published for r in rows if r.backend == "single" and r.workers == 1), None
    )
    for r in rows:
        r.ratio = None if not base or r.eps is None else r.eps / base
        if base_published and r.eps_published is not None:
            r.ratio_published = r.eps_published / base_published
    print(
        f"\nRedis Cluster scaling: {len(messages):,} events (purchase-events, {args.partitions} "
        f"partitions), {args.customers:,} customers, "
        f"{'config ' + args.config if args.config else 'default config'}; "
        f"ratios to one worker on one Redis; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
    )
    print(table(rows, args.replicas))
    print()
    print(machine_note(args.replicas, counts))
    for r in rows:
        kinds = ", ".join(
            f"{k} {v:,.0f}" for k, v in sorted(r.kinds.items(), key=lambda kv: -kv[1])
        )
        print(f"{r.backend} x{r.workers}: B/customer by key kind: {kinds}")
        if r.backend == "cluster":
            print(f"cluster x{r.workers}: keys per primary {r.keys_per_node}")
        print(
            f"{r.backend} x{r.workers}: {r.changes:,.0f} changes emitted; "
            f"at most {r.outbox_max:,} in the outboxes while applying, "
            f"{r.outbox_at_applied:,} when every event was applied, all "
            f"published {fmt(r.published_s, '.1f', ' s')} after the first start"
        )
        for text, count in list(r.log_warnings.items())[:4]:
            print(f"{r.backend} x{r.workers} worker log WARNING x{count}: {text}")
        for line in r.log_errors[:5]:
            print(f"{r.backend} x{r.workers} worker log: {line}")
        if len(r.log_errors) > 5:
            print(f"{r.backend} x{r.workers}: {len(r.log_errors) - 5} more error lines")
    if args.json is not None:
        payload = {
            "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
            "replicas": args.replicas,
            "partitions": args.partitions,
            "events": len(messages),
            "customers": args.customers,
            "rows": [asdict(r) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    if any(r.log_errors for r in rows):
        print(f"worker logs kept in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
