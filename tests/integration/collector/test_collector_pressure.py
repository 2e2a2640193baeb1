"""Pressure on a real collector process (Tansu behind it): slow-loris connections are closed,
concurrent large batches are bounded by the in-flight byte limit (413/503, not memory), and a
collector started before its broker answers 503, then 200 once the broker is up."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests
from collector_harness import (
    Collector,
    Process,
    health,
    launch,
    topic_names,
    unique_settings,
    wait_health,
)

from segmentflow.embedded import EmbeddedBroker, free_port, stop_pid
from segmentflow.streams.kafka_clients import create_topics

pytestmark = pytest.mark.integration


def _stop(process: Process) -> None:
    stop_pid(process.proc)
    process.log.unlink(missing_ok=True)


@pytest.fixture
def guarded(broker: EmbeddedBroker) -> Iterator[Process]:
    """A collector with short (but not tight) header and body deadlines."""
    settings = unique_settings(broker.url)
    create_topics(broker.bootstrap, topic_names(settings), partitions=1)
    process = launch(
        settings,
        ["--header-timeout", "2", "--body-timeout", "3", "--max-inflight-bytes", "6000000"],
    )
    try:
        wait_health(process, 200)
        yield process
    finally:
        _stop(process)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_slow_loris_connections_are_closed(guarded: Process) -> None:
    """60 sockets trickle their headers a byte at a time, 20 send headers and trickle the body:
    the server closes every one (the bodies after a 408), and keeps serving meanwhile."""
    port = _port(guarded.url)
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, str] = {}
    for i in range(80):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        kind = "headers" if i < 60 else "body"
        if kind == "body":
            head = (
                "POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode())
        opened[sock] = kind
        sel.register(sock, selectors.EVENT_READ)
    trickle = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
    replies: dict[socket.socket, bytes] = {s: b"" for s in opened}
    closed_after: list[float] = []
    start = time.monotonic()
    deadline = start + 60
    step = 0
    while opened and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.25):
            fileobj = key.fileobj
            assert isinstance(fileobj, socket.socket)
            sock = fileobj
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                replies[sock] += data
                continue
            sel.unregister(sock)
            opened.pop(sock)
            sock.close()
            closed_after.append(time.monotonic() - start)
        for sock in list(opened):  # one more byte each, never completing the request
            with_byte = trickle[step % len(trickle) : step % len(trickle) + 1]
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, BlockingIOError):
                sock.send(with_byte if opened[sock] == "headers" else b"{")
        step += 1
        if step % 8 == 0:
            assert health(guarded.url) == 200  # still serving while the sockets hang on
    for sock in opened:
        sock.close()
    assert not opened, f"{len(opened)} slow connections still open after 60 s"
    bodies = [r for r in replies.values() if r]
    assert len(bodies) == 20  # the slow bodies got an answer before the close
    assert all(b.startswith(b"HTTP/1.1 408") and b'"code":"timeout"' in b for b in bodies)
    print(f"80 slow-loris connections closed, the last after {max(closed_after):.1f}s")


def _big_batch(size: int) -> bytes:
    """A valid batch of about ``size`` bytes of calls the track map ignores (nothing produced)."""
    call = {"type": "track", "userId": "u", "event": "Button Clicked", "properties": {}}
    call["properties"] = {"pad": "x" * 900}
    one = len(json.dumps(call)) + 2
    return json.dumps({"batch": [call] * (size // one)}).encode()


def _rss_sampler(pid: int, stop: threading.Event, out: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        out.append(proc.memory_info().rss)
        time.sleep(0.05)


def test_concurrent_large_batches_are_bounded(guarded: Process, collector: Collector) -> None:
    """40 concurrent ~1.9 MB batches against a 6 MB in-flight limit: each is answered 200 or
    503 (none 500), several 503, and the process's memory stays bounded."""
    body = _big_batch(1_900_000)
    oversized = _big_batch(2_200_000)
    r = requests.post(f"{guarded.url}/v1/batch", data=oversized, headers=collector.auth, timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    rss_before = psutil.Process(guarded.proc.pid).memory_info().rss
    samples: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(guarded.proc.pid, stop, samples))
    sampler.start()
    statuses: list[int] = []
    barrier = threading.Barrier(40)

    def post() -> None:
        barrier.wait()
        resp = requests.post(
            f"{guarded.url}/v1/batch", data=body, headers=collector.auth, timeout=120
        )
        statuses.append(resp.status_code)
        if resp.status_code != 200:
            assert resp.json()["code"] == "overloaded"

    try:
        for _round in range(3):  # generous: until the limit has visibly been hit
            threads = [threading.Thread(target=post) for _ in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            barrier.reset()
            if 503 in statuses:
                break
    finally:
        stop.set()
        sampler.join()
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    peak = max(samples)
    print(
        f"{len(statuses)} concurrent ~1.9 MB batches: {statuses.count(200)} x 200, "
        f"{statuses.count(503)} x 503; RSS {rss_before / 2**20:.0f} MB before, "
        f"peak {peak / 2**20:.0f} MB"
    )
    assert peak - rss_before < 400 * 2**20  # issue 12 saw +600 MB for 40 x 2 MB
    assert health(guarded.url) == 200


def test_collector_started_before_its_broker(collector: Collector, tag: str) -> None:
    """503 (requests and /health) while no broker listens, one log line per retry and no
    traceback; 200 and the event on Kafka once it is up; /health 503 again when it goes."""
    port = free_port()
    settings = unique_settings(f"kafka://127.0.0.1:{port}")
    process = launch(settings)
    broker: EmbeddedBroker | None = None
    call: dict[str, Any] = {
        "userId": f"{tag}u",
        "event": "Products Searched",
        "properties": {"query": "q"},
        "messageId": f"{tag}m",
    }
    try:
        wait_health(process, 503)
        r = requests.post(f"{process.url}/v1/track", json=call, headers=collector.auth, timeout=30)
        assert r.status_code == 503 and r.json()["code"] == "unavailable"
        deadline = time.monotonic() + 60
        while process.log.read_text().count("retry") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        broker = EmbeddedBroker(port=port).start()
        create_topics(broker.bootstrap, topic_names(settings), partitions=1)
        wait_health(process, 200, timeout=90)
        r = requests.post(f"{process.url}/v1/track", json=call, headers=collector.auth, timeout=30)
        assert r.status_code == 200, r.text
        seen = Collector(process.url, settings, process.log)
        [(kind, _, value)] = seen.read(lambda k: k == f"{tag}u".encode(), expect=1)
        assert (kind, value["event_id"]) == ("website", f"{tag}m")
        broker.stop()
        broker = None
        wait_health(process, 503, timeout=60)
        log = process.log.read_text()
        retries = [line for line in log.splitlines() if "cannot reach Kafka" in line]
        assert len(retries) >= 2
        assert all("retry" in line for line in retries)
        assert "Traceback" not in log
        assert "connected to Kafka" in log
    finally:
        if broker is not None:
            broker.stop()
        _stop(process)
