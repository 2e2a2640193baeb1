"""Probe Faust (faust-streaming) against the embedded Tansu broker.

Starts an `EmbeddedBroker`, creates ``--topics`` x ``--partitions`` topics, pre-loads
``--messages`` small JSON messages, then runs ``--workers`` Faust worker processes (this same
file, ``worker`` role) in one consumer group with a no-op agent, and reports time to ready,
time to drain, events/s, the high-water marks seen inside the agent and the committed offsets.
``--restart`` then stops the worker(s) (SIGTERM, or SIGKILL with ``--kill``), produces 10%
more messages and starts one worker again in the same group.

Usage::

    .venv/bin/python benchmarks/faust_probe.py --messages 30000 --mode take
    .venv/bin/python benchmarks/faust_probe.py --mode events --workers 2
    .venv/bin/python benchmarks/faust_probe.py --restart --kill

See notes/faust_tansu.md for the findings.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

TOPIC_PREFIX = "probe"


def faust_settings(broker_url: str, fast: bool) -> dict[str, Any]:
    """Faust settings used by the probe (``fast`` = tuned for Tansu/dev)."""
    settings: dict[str, Any] = {
        "broker": broker_url,
        "store": "memory://",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "web_enabled": False,
        "topic_partitions": 4,
        "consumer_auto_offset_reset": "earliest",
    }
    if fast:
        settings.update(
            # JoinGroup on Tansu returns after ~session_timeout/2 (1 s floor): keep it short.
            broker_session_timeout=2.0,
            broker_heartbeat_interval=0.3,
            broker_rebalance_timeout=4.0,
            broker_request_timeout=10.0,
            broker_commit_interval=1.0,
            topic_disable_leader=True,  # no <app>-__assignor-__leader topic
            producer_linger=0.005,
        )
    return settings


# --------------------------------------------------------------------------- worker side


def run_worker() -> None:
    """Faust worker: no-op agent over all probe topics; prints JSON status lines."""
    import asyncio

    import faust

    t0 = float(os.environ["PROBE_T0"])
    topics = os.environ["PROBE_TOPICS"].split(",")
    expected = int(os.environ["PROBE_EXPECTED"])
    mode = os.environ["PROBE_MODE"]
    fast = os.environ.get("PROBE_FAST") == "1"

    def say(**kw: Any) -> None:
        kw["t"] = round(time.time() - t0, 3)
        kw["pid"] = os.getpid()
        # mode's Worker may redirect sys.stdout to the logger; write to the real stdout
        assert sys.__stdout__ is not None
        sys.__stdout__.write(json.dumps(kw) + "\n")
        sys.__stdout__.flush()

    fetch_wait_ms = int(os.environ.get("PROBE_FETCH_WAIT_MS") or 0)
    if fetch_wait_ms:  # the worker's own patch of Faust's hard-coded 1500 ms
        from segmentflow.streams.app import patch_fetch_max_wait

        patch_fetch_max_wait(fetch_wait_ms)
    settings = faust_settings(os.environ["PROBE_URL"], fast)
    # Faust creates "<app id>-data/" in the working directory unless told otherwise
    settings["datadir"] = os.environ["PROBE_DATADIR"]
    settings.update(json.loads(os.environ.get("PROBE_EXTRA") or "{}"))
    app = faust.App(os.environ["PROBE_APP_ID"], **settings)
    source = app.topic(*topics, value_serializer="raw", key_serializer="raw")
    emit_every = int(os.environ.get("PROBE_EMIT_EVERY") or 0)
    out_name = os.environ["PROBE_OUT"]
    out = app.topic(out_name, value_serializer="raw", key_serializer="raw")
    raw_producer = os.environ.get("PROBE_RAW_PRODUCER") == "1"
    st: dict[str, Any] = {"n": 0, "first": None, "last": None, "reported": -1, "seen": {}}

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[Any], **kw: Any) -> None:
        say(event="assigned", partitions=len(assigned))

    def record(topic: str, partition: int, offset: int, value: bytes) -> None:
        if value.startswith(b'{"live"'):
            sent = json.loads(value)["live"]
            say(event="latency", ms=round((time.time() - sent) * 1000, 1))
            return
        st["n"] += 1
        st["seen"][f"{topic}/{partition}"] = offset
        st["last"] = time.time()
        if st["first"] is None:
            st["first"] = st["last"]
            say(event="first", offset=offset, cpu_s=round(time.process_time(), 2))

    def highwaters() -> dict[str, int]:
        # sync, from the last fetch response of each partition: cheap and exact on Tansu
        return {
            f"{tp.topic}/{tp.partition}": app.consumer.highwater(tp)
            for tp in sorted(app.consumer.assignment())
        }

    async def report(final: bool) -> None:
        extra: dict[str, Any] = {}
        if final:
            extra["highwater"] = highwaters()
            extra["next_offset"] = {k: v + 1 for k, v in sorted(st["seen"].items())}
            # ListOffsets(latest) for comparison only: runs in the consumer thread (waits for
            # the in-flight fetch, up to 1.5 s) and is wrong on Tansu 0.6.0
            t_end = time.time()
            tps = sorted(app.consumer.assignment())
            end = await app.consumer.highwaters(*tps) if tps else {}
            extra["end_offsets"] = {f"{tp.topic}/{tp.partition}": o for tp, o in end.items()}
            extra["end_offsets_call_s"] = round(time.time() - t_end, 3)
        say(
            event="done" if final else "progress",
            n=st["n"],
            drain_s=round(st["last"] - st["first"], 3) if st["first"] else None,
            cpu_s=round(time.process_time(), 2),
            **extra,
        )

    @app.timer(0.5)  # type: ignore[untyped-decorator]
    async def progress() -> None:
        if st["n"] != st["reported"] and not (expected > 0 and st["n"] == expected):
            # after "done" keep reporting: the driver counts redeliveries while settling
            st["reported"] = st["n"]
            await report(final=False)

    async def maybe_done() -> None:
        if expected > 0 and st["n"] >= expected and not st.get("done"):
            st["done"] = True  # batches may overshoot the count (redeliveries after SIGKILL)
            await report(final=True)

    if mode == "events":

        @app.agent(source)
        async def consume(stream: Any) -> None:
            async for event in stream.events():
                msg = event.message  # topic, partition, offset, key (bytes), value (bytes)
                record(msg.topic, msg.partition, msg.offset, msg.value)
                await maybe_done()

    else:

        @app.agent(source)
        async def consume_batches(stream: Any) -> None:
            batch_size = int(os.environ.get("PROBE_BATCH") or 1000)
            within = float(os.environ.get("PROBE_WITHIN") or 0.1)
            async for batch in stream.take_events(batch_size, within=within):
                pending = []
                for event in batch:
                    msg = event.message
                    record(msg.topic, msg.partition, msg.offset, msg.value)
                    if emit_every and msg.offset % emit_every == 0:
                        if raw_producer:  # aiokafka via Faust's producer: less overhead
                            pending.append(
                                await app.producer.send(out_name, msg.key, b"{}", None, None, None)
                            )
                        else:  # force=True: send now, not attached to the current event
                            pending.append(await out.send(key=msg.key, value=b"{}", force=True))
                if pending:
                    await asyncio.gather(*pending)  # broker acked every output record
                await maybe_done()
                # the next iteration acks every event of this batch

    worker = faust.Worker(
        app, loglevel=os.environ.get("PROBE_LOGLEVEL", "WARNING"), redirect_stdouts=False
    )
    # as the segmentflow worker does (streams.worker.faust_worker): without the start-up
    # spinner Faust leaves the root logger at the level asked for, not DEBUG
    worker.spinner = None
    say(event="starting")
    worker.execute_from_commandline()


# --------------------------------------------------------------------------- driver side


def produce(bootstrap: str, topics: list[str], partitions: int, n: int, start: int = 0) -> float:
    """Produce ``n`` small page_view events round-robin over topics and partitions."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=65536)
    t = time.time()
    for j in range(n):
        i = start + j
        topic = topics[i % len(topics)]
        cid = f"c-{i % 5000}"
        value = json.dumps(
            {
                "event_id": f"e-{i}",
                "customer_id": cid,
                "type": "page_view",
                "timestamp": "2026-03-01T10:15:00Z",
                "properties": {"url": "/x"},
            }
        ).encode()
        part = (i // len(topics)) % partitions
        producer.send(topic, key=cid.encode(), value=value, partition=part)
    producer.flush()
    producer.close()
    return time.time() - t


def committed(bootstrap: str, group: str) -> dict[str, int]:
    """Committed offsets of a consumer group (kafka-python 3 admin API)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = admin.list_group_offsets(group)[group]
        return {f"{tp.topic}/{tp.partition}": om.offset for tp, om in sorted(offs.items())}
    finally:
        admin.close()


def count_records(bootstrap: str, topic: str) -> int:
    """Total records of a topic, by the Fetch high-water marks."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    n = 0
    while True:
        got = consumer.poll(timeout_ms=1000)
        if not got:
            break
        n += sum(len(v) for v in got.values())
    consumer.close()
    return n


def _pump(proc: subprocess.Popen[str], out: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line)


def _profile_args(tag: str, i: int) -> list[str]:
    if not os.environ.get("PROBE_PROFILE"):
        return []
    return ["-m", "cProfile", "-o", f"/tmp/faust_probe_{tag}_{i}.prof"]


def run_round(
    env: dict[str, str],
    workers: int,
    expected: int,
    timeout: float,
    tag: str,
    settle: float = 0,
    stagger: float = 0,
) -> tuple[list[subprocess.Popen[str]], dict[str, Any], queue.Queue[str]]:
    """Start workers, wait until ``expected`` events are consumed; return procs and stats."""
    t0 = time.time()
    env = dict(env, PROBE_T0=str(t0), PROBE_EXPECTED=str(expected if workers == 1 else -1))
    procs: list[subprocess.Popen[str]] = []
    lines: queue.Queue[str] = queue.Queue()
    for i in range(workers):
        if i and stagger:
            time.sleep(stagger)
        p = subprocess.Popen(
            [sys.executable, *_profile_args(tag, i), __file__, "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(f"/tmp/faust_probe_{tag}_{i}.log", "w"),  # noqa: SIM115
            text=True,
        )
        procs.append(p)
        threading.Thread(target=_pump, args=(p, lines), daemon=True).start()
    counts: dict[int, int] = {}
    stats: dict[str, Any] = {"done": False}
    firsts: list[float] = []
    deadline = t0 + timeout
    while time.time() < deadline and not (stats["done"] and not settle):
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        try:
            # Faust's startup spinner writes terminal escapes onto the same stdout line
            msg = json.loads(line[line.find("{") :])
        except json.JSONDecodeError:
            continue
        ev = msg.get("event")
        if ev in ("done", "progress"):
            counts[msg["pid"]] = msg["n"]
            print(
                f"  [{tag}] t={msg['t']:.2f}s pid={msg['pid']} {ev} n={msg['n']} "
                f"cpu={msg['cpu_s']}s",
                flush=True,
            )
        elif ev in ("assigned", "first", "starting"):
            parts = f" partitions={msg['partitions']}" if ev == "assigned" else ""
            if ev == "first":
                parts = f" cpu={msg['cpu_s']}s"
                stats.setdefault("cpu_at_first", msg["cpu_s"])
            print(f"  [{tag}] t={msg['t']:.2f}s pid={msg['pid']} {ev}{parts}", flush=True)
            stats.setdefault(ev, msg["t"])
            if ev == "first":
                firsts.append(msg["t"])
        if ev == "done":
            stats["final"] = msg
            stats["cpu_drain_s"] = round(msg["cpu_s"] - stats.get("cpu_at_first", 0.0), 2)
        if not stats["done"] and (
            ev == "done" or (workers > 1 and sum(counts.values()) >= expected)
        ):
            stats["done"] = True
            stats["end"] = time.time() - t0
            deadline = min(deadline, time.time() + settle)
    stats["consumed"] = sum(counts.values())
    if firsts and "end" in stats:
        stats["drain_s"] = stats["end"] - min(firsts)
    return procs, stats, lines


def live_latency(bootstrap: str, topic: str, n: int, lines: queue.Queue[str]) -> list[float]:
    """Send ``n`` timestamped messages 0.37 s apart to a running worker; print latencies."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(n):
        time.sleep(0.37)
        value = json.dumps({"live": time.time()}).encode()
        producer.send(topic, key=b"live", value=value, partition=i % 4).get()
    producer.close()
    time.sleep(2)
    out: list[float] = []
    while not lines.empty():
        line = lines.get()
        if '"latency"' in line:
            out.append(json.loads(line[line.find("{") :])["ms"])
    return out


def stop(procs: list[subprocess.Popen[str]], sig: signal.Signals) -> float:
    """Signal every worker by PID and wait; return seconds taken."""
    t = time.time()
    for p in procs:
        p.send_signal(sig)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("role", nargs="?", default="driver", choices=["driver", "worker"])
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--topics", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--mode", choices=["events", "take"], default="take")
    ap.add_argument("--default-settings", action="store_true", help="Faust defaults (slow join)")
    ap.add_argument("--restart", action="store_true", help="stop, produce 10%% more, restart")
    ap.add_argument("--kill", action="store_true", help="stop with SIGKILL instead of SIGTERM")
    ap.add_argument("--live", type=int, default=0, help="then send N live msgs, show latency")
    ap.add_argument("--fetch-wait-ms", type=int, default=0, help="patch Faust's 1500 ms")
    ap.add_argument("--emit-every", type=int, default=0, help="take mode: emit 1 per K offsets")
    ap.add_argument("--stagger", type=float, default=0, help="seconds between worker starts")
    ap.add_argument("--extra", default="{}", help="JSON of extra Faust settings")
    ap.add_argument("--loglevel", default="WARNING")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args()
    if args.role == "worker":
        run_worker()
        return

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from segmentflow.embedded import EmbeddedBroker
    from segmentflow.streams.kafka_clients import create_topics

    run = uuid.uuid4().hex[:6]
    topics = [f"{TOPIC_PREFIX}-{run}-{i}" for i in range(args.topics)]
    app_id = f"probe-{run}"
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as datadir:
        create_topics(broker.bootstrap, topics, args.partitions)
        prod_s = produce(broker.bootstrap, topics, args.partitions, args.messages)
        print(f"broker {broker.url}; produced {args.messages} msgs in {prod_s:.2f}s", flush=True)
        env = dict(
            os.environ,
            PROBE_TOPICS=",".join(topics),
            PROBE_URL=broker.url,
            PROBE_DATADIR=datadir,
            PROBE_APP_ID=app_id,
            PROBE_MODE=args.mode,
            PROBE_FAST="0" if args.default_settings else "1",
            PROBE_LOGLEVEL=args.loglevel,
            PROBE_EXTRA=args.extra,
            PROBE_FETCH_WAIT_MS=str(args.fetch_wait_ms),
            PROBE_EMIT_EVERY=str(args.emit_every),
            PROBE_OUT=f"{TOPIC_PREFIX}-{run}-out",
        )
        procs, stats, lines = run_round(
            env, args.workers, args.messages, args.timeout, f"{run}-a", stagger=args.stagger
        )
        final = stats.pop("final", {})
        if args.live:
            lat = live_latency(broker.bootstrap, topics[0], args.live, lines)
            print(f"live latency ms: {lat}")
        sig = signal.SIGKILL if args.kill else signal.SIGTERM
        stop_s = stop(procs, sig)
        rate = args.messages / stats["drain_s"] if stats.get("drain_s") else 0.0
        cpu = stats.get("cpu_drain_s")
        per_cpu = f"{args.messages / cpu:.0f} events/cpu-s" if cpu else "n/a"
        print(
            f"round 1: {json.dumps(stats)}; {rate:.0f} events/s wall, {per_cpu} (single worker); "
            f"{sig.name} stop {stop_s:.2f}s"
        )
        if final:
            for k in ("highwater", "end_offsets", "end_offsets_call_s"):
                print(f"  {k}: {json.dumps(final.get(k))}")
        print(f"  committed: {json.dumps(committed(broker.bootstrap, app_id))}", flush=True)
        if args.emit_every:
            n_out = count_records(broker.bootstrap, f"{TOPIC_PREFIX}-{run}-out")
            print(f"  output records: {n_out}")
        if args.restart:
            more = max(1, args.messages // 10)
            produce(broker.bootstrap, topics, args.partitions, more, start=args.messages)
            # keep counting 3 s after the expected count (redeliveries after SIGKILL)
            procs, stats, _ = run_round(env, 1, more, args.timeout, f"{run}-b", settle=3.0)
            stats.pop("final", None)
            stop_s = stop(procs, signal.SIGTERM)
            print(f"round 2 (expect {more} new): {json.dumps(stats)}; stop {stop_s:.2f}s")
            print(f"  committed: {json.dumps(committed(broker.bootstrap, app_id))}", flush=True)


if __name__ == "__main__":
    main()
