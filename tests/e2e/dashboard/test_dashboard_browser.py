"""The dashboard in a real headless Chromium against a real stack (Tansu + Redis + worker +
trigger dispatcher): after a synthetic stream is processed, the page shows the worker's exact
populations, a population chart per dimension, a lifecycle Sankey whose flows balance to those
populations, recent changes and dead-letter rates. Saves ``artifacts/dashboard.png``."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.http import get
from support.metrics import fetch

from segmentflow.devstack import DevStack
from segmentflow.embedded import free_port, stop_pid
from segmentflow.streams.kafka_clients import producer
from segmentflow.synthetic import generate

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"
TOKEN = "dash-token"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

RULES = """\
rules:
  - name: repeat_buyers
    when: 'orders >= 2'
"""


def _metric(stack: DevStack, name: str) -> float:
    return fetch(stack, token=TOKEN).total(name)


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not up; log:\n{log.read_text(errors='replace')}")


def _dom_populations(page: Any) -> dict[str, dict[str, int]]:
    rows = page.eval_on_selector_all(
        "#populations-table tbody tr",
        "rows => rows.map(r => [r.dataset.dimension, r.dataset.segment,"
        " Number(r.querySelector('td.count').dataset.count)])",
    )
    out: dict[str, dict[str, int]] = {}
    for dim, value, count in rows:
        out.setdefault(dim, {})[value] = count
    return out


def test_dashboard_renders_live_data(redis_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    config = tmp_path / "rules.yaml"
    config.write_text(RULES)
    triggers = tmp_path / "triggers.yaml"
    dead_port = free_port()  # nothing listens there: every delivery fails -> dead letter
    triggers.write_text(
        "targets:\n"
        "  - name: crm-churned\n"
        f"    url: http://127.0.0.1:{dead_port}/hook\n"
        "    match: {dimension: lifecycle, to: churned}\n"
        "    max_attempts: 1\n"
    )
    messages = generate(
        60, seed=5, start=datetime(2025, 1, 1, tzinfo=UTC), days=240, bad_ratio=0.01
    )
    bad = sum(1 for m in messages if m.event is None)
    assert bad > 0

    procs: list[subprocess.Popen[bytes]] = []
    with DevStack(
        workers=1,
        config=str(config),
        redis_url=redis_url,
        extra_env={"SEGMENTFLOW_API_TOKEN": TOKEN},
    ) as stack:
        try:
            port = free_port()
            env = stack.env()
            env["SEGMENTFLOW_TRIGGERS_CONFIG"] = str(triggers)
            logs = {name: tmp_path / f"{name}.log" for name in ("dashboard", "triggers")}
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "segmentflow.cli.main",
                        "dashboard",
                        "--port",
                        str(port),
                        "--worker-url",
                        f"http://127.0.0.1:{stack.web_ports[0]}",
                        "--poll",
                        "0.5",
                        "--from-beginning",
                    ],
                    env=env,
                    stdout=logs["dashboard"].open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "segmentflow.cli.main", "triggers", "--port", "0"],
                    env=env,
                    stdout=logs["triggers"].open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
            base = f"http://127.0.0.1:{port}"
            _wait_http(base + "/health", 30, procs[0], logs["dashboard"])

            # produce in three waves so the population chart has a history
            kafka = producer(stack.settings)
            topics = stack.settings.input_topics
            third = len(messages) // 3
            for wave in range(3):
                for m in messages[
                    wave * third : len(messages) if wave == 2 else (wave + 1) * third
                ]:
                    kafka.send(topics[m.topic_kind], key=m.key, value=m.value)
                kafka.flush()
                time.sleep(1.0)
            kafka.close()
            deadline = time.monotonic() + 60
            while _metric(stack, "segmentflow_events_received_total") < len(messages):
                assert time.monotonic() < deadline, "worker did not read every message"
                time.sleep(0.3)

            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                    ],
                )
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    # the token is set: the page asks for it first
                    page.goto(base + "/")
                    page.fill("#token", "wrong")
                    page.click("button[type=submit]")
                    assert page.text_content("#error") == "wrong token"
                    page.fill("#token", TOKEN)
                    page.click("button[type=submit]")
                    page.wait_for_selector("body[data-rendered='1']", timeout=30_000)

                    # the populations shown are the worker's /segments, exactly
                    deadline = time.monotonic() + 30
                    while True:
                        want = orjson.loads(get(stack, "/segments", token=TOKEN))
                        shown = _dom_populations(page)
                        if shown == want or time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
                    assert shown == want
                    assert {"lifecycle", "rfm", "rule:repeat_buyers"} <= set(shown)

                    # the lifecycle flows (from segment-changes) balance to the populations
                    # (from Redis via /segments): into a stage minus out of it = its population
                    deadline = time.monotonic() + 20
                    while True:
                        links = page.eval_on_selector_all(
                            "#sankey path.link",
                            "ps => ps.map(p => [p.dataset.from, p.dataset.to,"
                            " Number(p.dataset.count)])",
                        )
                        net: dict[str, int] = {}
                        for src, dst, n in links:
                            net[dst] = net.get(dst, 0) + n
                            net[src] = net.get(src, 0) - n
                        balance = {k: v for k, v in net.items() if k != "(first)" and v}
                        if balance == want["lifecycle"] or time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
                    assert balance == want["lifecycle"]
                    assert -net["(first)"] == sum(want["lifecycle"].values())

                    # population chart: one line per lifecycle value, ending at its population
                    page.click("#dimension-tabs button[data-dimension='lifecycle']")
                    lines = page.eval_on_selector_all(
                        "#population-chart path.series",
                        "ps => ps.map(p => [p.dataset.segment, Number(p.dataset.last),"
                        " p.getAttribute('d').split('L').length])",
                    )
                    assert {s: n for s, n, _ in lines if n} == want[
                        "lifecycle"
                    ]  # (a stage emptied shows 0)
                    assert min(points for _, _, points in lines) >= 3  # a history, not a dot
                    page.click("#dimension-tabs button[data-dimension='rfm']")
                    assert (
                        page.eval_on_selector("#population-chart", "e => e.dataset.dimension")
                        == "rfm"
                    )
                    rfm = page.eval_on_selector_all(
                        "#population-chart path.series",
                        "ps => ps.map(p => [p.dataset.segment, Number(p.dataset.last)])",
                    )
                    assert {s: n for s, n in rfm if n} == want["rfm"]
                    page.click("#dimension-tabs button[data-dimension='lifecycle']")

                    # per-minute bars, recent changes, dead letters
                    assert page.locator("#per-minute rect.bar").count() >= 1
                    assert page.locator("#recent-table tbody tr").count() == 20
                    reasons = page.eval_on_selector_all(
                        "#dl-reasons tbody tr[data-key]",
                        "rs => rs.map(r => Number(r.cells[1].textContent.replace(/,/g, '')))",
                    )
                    assert sum(reasons) == bad
                    assert page.text_content("#worker-status") == "worker ok"
                    assert page.is_hidden("#config-walk")  # shown only while a walk runs (§6)
                    assert page.text_content("#kafka-status") == "kafka ok"
                    churned = sum(n for _, dst, n in links if dst == "churned")
                    assert churned > 0
                    cell = "#dl-targets tr[data-key='crm-churned'] td.num"
                    shown_js = f'Number(document.querySelector("{cell}")?.textContent)'
                    page.wait_for_function(
                        f"() => {shown_js} === {churned}",
                        timeout=30_000,
                    )
                    page.wait_for_timeout(1600)  # one more refresh for the screenshot
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
                    assert not errors, errors
                finally:
                    browser.close()
        finally:
            for proc in procs:
                stop_pid(proc)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
