"""Audiences end to end (issue 15; CONTRACT §5 ``members``, §8): a worker process (Tansu, Redis)
fills the membership index; ``segmentflow members`` exports exactly the customers ``segments``
counts, with the time each entered; the HTTP endpoint pages with a cursor that neither skips nor
repeats a member present throughout while other members leave and enter between pages."""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.streams import write_config
from support.worker_e2e import TopicReader, event, produce, stamp

from segmentflow.devstack import DevStack
from segmentflow.embedded import free_port, stop_pid
from segmentflow.schemas.timefmt import format_us, parse_rfc3339

pytestmark = pytest.mark.e2e

CONFIG = """\
persona: {enabled: false}
rules:
  - name: buyers
    when: 'orders >= 1'
"""
START = datetime(2025, 3, 1, tzinfo=UTC)
CUSTOMERS = 60


def page_view(cid: str, at: datetime, n: int) -> dict[str, Any]:
    return event(cid, f"pv-{cid}-{n}", "page_view", at, url="https://shop.example/")


def order(cid: str, at: datetime) -> dict[str, Any]:
    props = {"order_id": f"o-{cid}", "revenue": 20.0, "currency": "EUR"}
    return event(cid, f"o-{cid}", "order_completed", at, **props)


def send(stack: DevStack, events: list[dict[str, Any]]) -> None:
    s = stack.settings
    topic = {"page_view": "website", "order_completed": "purchase"}
    produce(
        s,
        (
            (s.input_topics[topic[e["type"]]], e["customer_id"].encode(), orjson.dumps(e))
            for e in events
        ),
    )


def cli(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segmentflow.cli.main", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def get(stack: DevStack, path: str) -> tuple[int, Any]:
    try:
        return 200, orjson.loads(stack.get(path))
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def members_path(dimension: str, value: str, **query: str) -> str:
    dim, val = urllib.parse.quote(dimension, safe=""), urllib.parse.quote(value, safe="")
    return f"/segments/{dim}/{val}/members?{urllib.parse.urlencode(query)}"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    """Poll ``condition`` with one generous overall limit."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        time.sleep(0.2)


def current(changes: TopicReader) -> dict[tuple[str, str], dict[str, str]]:
    """Segment -> {customer: since} recomputed from the delivered change events."""
    held: dict[tuple[str, str], tuple[str | None, str]] = {}
    for change in changes.decoded():
        data = change["data"]
        held[(data["customer_id"], data["dimension"])] = (data["current"], change["time"])
    out: dict[tuple[str, str], dict[str, str]] = {}
    for (cid, dim), (value, at) in held.items():
        if value is not None and not (dim.startswith("rule:") and value == "out"):
            out.setdefault((dim, value), {})[cid] = at
    return out


def test_members_cli_and_endpoint(tmp_path: Path, redis_url: str) -> None:
    config_file = write_config(tmp_path, CONFIG)
    ids = [f"m-{n:03d}" for n in range(CUSTOMERS)]
    # three customers per timestamp: ties in `since` are ordered by id
    first = [page_view(cid, START + timedelta(minutes=n // 3), 0) for n, cid in enumerate(ids)]
    buyers = ids[::5]
    first += [order(cid, START + timedelta(hours=2)) for cid in buyers]
    with DevStack(workers=1, config=str(config_file), redis_url=redis_url) as stack:
        changes = TopicReader(stack.settings, stack.settings.topic_segment_changes)
        send(stack, first)
        wanted = CUSTOMERS + 2 * len(buyers)  # prospect for all; new + buyers in per buyer
        changes.wait_until(lambda: len(changes.values) >= wanted, 90, "first changes")

        # the CLI export equals the change stream and the populations
        expected = current(changes)
        _, populations = get(stack, "/segments")
        assert {(d, v): n for d, vs in populations.items() for v, n in vs.items()} == {
            seg: len(m) for seg, m in expected.items()
        }
        for (dim, value), members in expected.items():
            if (dim, value) in {("lifecycle", "prospect"), ("rule:buyers", "in")}:
                jsonl = cli(stack, "members", dim, value)  # (each CLI start costs seconds)
                assert jsonl.returncode == 0, jsonl.stderr
                rows = [orjson.loads(line) for line in jsonl.stdout.splitlines()]
            else:
                _, body = get(stack, members_path(dim, value, limit="10000"))
                rows = body["members"]
            assert {r["customer_id"]: r["since"] for r in rows} == members
            assert len(rows) == len(members)
            order_key = [(parse_rfc3339(r["since"]), r["customer_id"]) for r in rows]
            assert order_key == sorted(order_key)
        prospects = expected[("lifecycle", "prospect")]
        assert len(prospects) == CUSTOMERS - len(buyers)
        as_csv = cli(stack, "members", "lifecycle", "prospect", "--format", "csv", "--limit", "5")
        assert as_csv.returncode == 0, as_csv.stderr
        table = list(csv.reader(io.StringIO(as_csv.stdout)))
        assert table[0] == ["customer_id", "since"] and len(table) == 6
        assert all(prospects[cid] == since for cid, since in table[1:])
        nobody = cli(stack, "members", "lifecycle", "nosuchvalue")
        assert nobody.returncode == 0 and nobody.stdout == ""
        assert "nobody is in segment lifecycle 'nosuchvalue'" in nobody.stderr
        assert "lifecycle prospect" in nobody.stderr

        # paging while members leave (they order) and enter (new prospects), between pages
        steady = set(prospects) - set(ids[1::4])
        leaving = iter(sorted(set(prospects) - steady))
        later = START + timedelta(days=1)
        seen: list[dict[str, str]] = []
        cursor: str | None = None
        step = 0
        while True:
            query = {"limit": "9"} | ({"cursor": cursor} if cursor else {})
            code, body = get(stack, members_path("lifecycle", "prospect", **query))
            assert code == 200, body
            seen.extend(body["members"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
            step += 1
            movers = [cid for _, cid in zip(range(3), leaving, strict=False)]
            newcomers = [f"n-{step}-{k}" for k in range(2)]
            moment = later + timedelta(minutes=step)
            send(  # one newcomer enters before the cursor, one after it
                stack,
                [order(c, moment) for c in movers]
                + [page_view(newcomers[0], START - timedelta(days=1), 0)]
                + [page_view(newcomers[1], moment, 0)],
            )
            wait_for(
                partial(_moved, stack, movers, newcomers),
                f"page {step}: movers left prospect and newcomers entered",
            )
        got = [m["customer_id"] for m in seen]
        assert steady <= set(got), sorted(steady - set(got))
        assert all(got.count(cid) == 1 for cid in steady)
        assert step >= 3  # members really changed during the pagination
        for m in seen:  # `since` is the entry time
            if m["customer_id"] in steady:
                assert m["since"] == prospects[m["customer_id"]]

        # bad parameters are the caller's error (400 with what to do), never a 500
        for query, words in [
            ({"limit": "0"}, "limit must be an integer"),
            ({"limit": "many"}, "limit must be an integer"),
            ({"limit": "100000"}, "limit must be an integer"),
            ({"cursor": "not-a-cursor"}, "next_cursor"),
            ({"cursor": "W10"}, "next_cursor"),
        ]:
            code, body = get(stack, members_path("lifecycle", "prospect", **query))
            assert code == 400 and words in body["error"], (query, code, body)
        code, body = get(stack, members_path("rule:buyers", "in", limit="1000"))
        assert code == 200 and body["next_cursor"] is None
        bought = {m["customer_id"]: m["since"] for m in body["members"]}
        assert set(buyers) <= set(bought)
        assert bought[buyers[0]] == format_us(parse_rfc3339(stamp(START + timedelta(hours=2))))
        assert get(stack, members_path("lifecycle", "nosuchvalue")) == (
            200,
            {"members": [], "next_cursor": None},
        )

        # the dashboard links each segment to its member list: a CSV through the worker's pages
        now = cli(stack, "members", "lifecycle", "prospect", "--format", "csv")
        with dashboard(stack) as base:
            with urllib.request.urlopen(f"{base}/members/lifecycle/prospect", timeout=60) as r:
                assert r.headers["Content-Type"].startswith("text/csv")
                assert r.read().decode() == now.stdout
            with urllib.request.urlopen(f"{base}/api/members/rule%3Abuyers/in?limit=2") as r:
                body = orjson.loads(r.read())
                assert len(body["members"]) == 2 and body["next_cursor"]
        changes.close()


@contextlib.contextmanager
def dashboard(stack: DevStack) -> Iterator[str]:
    """``segmentflow dashboard`` (no Kafka) on the stack's worker; yields its base URL."""
    port = free_port()
    worker = f"http://127.0.0.1:{stack.web_ports[0]}"
    args = ["dashboard", "--port", str(port), "--worker-url", worker, "--no-kafka"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segmentflow.cli.main", *args],
        env=stack.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/health"), "dashboard up")
        yield base
    finally:
        stop_pid(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _moved(stack: DevStack, movers: list[str], newcomers: list[str]) -> bool:
    for cid in movers:
        if _lifecycle(stack, cid) != "new":
            return False
    return all(_lifecycle(stack, cid) == "prospect" for cid in newcomers)


def _lifecycle(stack: DevStack, cid: str) -> str | None:
    code, body = get(stack, f"/customers/{urllib.parse.quote(cid)}")
    if code != 200:
        return None
    value: str | None = body["dimensions"].get("lifecycle", {}).get("value")
    return value
