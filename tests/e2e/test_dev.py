"""``segmentflow dev`` as a process: sessions on one Redis get their own namespaces, print
``SEGMENTFLOW_WORKER_URL``, and SIGTERM, SIGHUP or SIGINT stops every process they started
(broker, worker, private Redis; checked by PID: the ones dev prints and every descendant found in
/proc), dropping their fresh namespace."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from support.procs import alive, descendants

from segmentflow.cli.main import build_parser
from segmentflow.embedded import free_port
from segmentflow.state.keys import Keys

pytestmark = pytest.mark.e2e


class DevSession:
    """A ``segmentflow dev`` child process and what it printed."""

    def __init__(self, log: Path, redis_url: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SEGMENTFLOW_NAMESPACE"}
        env.update(SEGMENTFLOW_REDIS_URL=redis_url, COLUMNS="200")
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segmentflow.cli.main", "dev"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, deadline: float) -> dict[str, str]:
        """Until dev printed its environment and PIDs (it must stay alive meanwhile)."""
        while "processes:" not in self.text():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"dev not up:\n{self.text()}"
            time.sleep(0.3)
        return dict(re.findall(r"export (SEGMENTFLOW_\w+)=(\S+)", self.text()))

    def pids(self) -> dict[str, int]:
        line = re.search(r"processes: (.*)", self.text())
        assert line, self.text()
        return {name: int(pid) for name, pid in re.findall(r"([\w-]+) (\d+)", line.group(1))}


def test_dev_sessions_own_namespaces_and_stop_everything_on_sigterm_sighup_sigint(
    tmp_path: Path, redis_url: str
) -> None:
    # two sessions on one Redis; a third with no Redis reachable starts a private redis-server
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    urls = [redis_url, redis_url, unreachable]
    sessions = [DevSession(tmp_path / f"dev-{i}.log", url) for i, url in enumerate(urls)]
    started: list[set[int]] = []
    try:
        deadline = time.monotonic() + 240
        envs = [s.wait_up(deadline) for s in sessions]
        namespaces = [env["SEGMENTFLOW_NAMESPACE"] for env in envs]
        assert len(set(namespaces)) == 3
        assert all(ns.startswith("dev-") for ns in namespaces)
        for session, env in zip(sessions, envs, strict=True):
            with urllib.request.urlopen(env["SEGMENTFLOW_WORKER_URL"] + "/health") as answer:
                assert answer.status == 200
            pids = session.pids()
            assert {"broker", "worker"} <= set(pids), pids
            below = descendants(session.proc.pid)
            assert pids["worker"] in below and pids["broker"] in below
            assert ("redis" in pids) == (env["SEGMENTFLOW_REDIS_URL"] != redis_url)
            started.append(below | set(pids.values()))
            assert all(alive(pid) for pid in pids.values())

        assert "redis" in sessions[2].pids()
        signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
        for session, sig in zip(sessions, signals, strict=True):
            os.kill(session.proc.pid, sig)
        for session in sessions:
            assert session.proc.wait(timeout=120) == 0, session.text()
        for session, gone in zip(sessions, started, strict=True):
            deadline = time.monotonic() + 30  # reaped children vanish at once; be generous
            while any(alive(pid) for pid in gone) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [pid for pid in gone if alive(pid)], session.text()
        assert "SIGTERM: stopping" in sessions[0].text()
        assert "SIGHUP: stopping" in sessions[1].text()
        assert "stopping the worker" in sessions[2].text()
        client = redis.Redis.from_url(redis_url)
        try:
            for ns in namespaces[:2]:  # a fresh namespace is dropped on exit
                for pattern in Keys(ns).everything:
                    assert not list(client.scan_iter(match=pattern, count=1000)), pattern
        finally:
            client.close()
    finally:
        for session in sessions:
            if session.proc.poll() is None:
                session.proc.kill()
                session.proc.wait(timeout=30)


def test_dev_namespace_is_fresh_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMENTFLOW_NAMESPACE", raising=False)
    assert build_parser().parse_args(["dev"]).namespace is None  # fresh one per session
    monkeypatch.setenv("SEGMENTFLOW_NAMESPACE", "mine")
    assert build_parser().parse_args(["dev"]).namespace == "mine"
    assert build_parser().parse_args(["dev", "--namespace", "x"]).namespace == "x"
