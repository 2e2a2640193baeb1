"""``segmentflow demo`` on a loaded machine: with every core kept busy by a CPU-burning process
it still finishes by progress (not a fixed wait) and its accounting balances; when it cannot
finish it says so and exits non-zero."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import alive, descendants

from segmentflow.embedded import stop_pid

pytestmark = pytest.mark.e2e

ROW = re.compile(r"│ ([a-z][a-z ]+?) +│ +([\d,]+) │")


@pytest.fixture
def busy_cores() -> Iterator[list[int]]:
    """One busy-looping process per core for the test's duration (stopped by PID)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield [p.pid for p in burners]
    finally:
        for proc in burners:
            stop_pid(proc)


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``segmentflow demo``; should the test itself give up, SIGTERM lets the demo stop
    what it started (a SIGKILL would orphan its broker and worker)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "segmentflow.cli.main", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        out, err = proc.communicate(timeout=900)  # the demo's own --timeout ends it first
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.timeout(600)
def test_demo_finishes_with_balanced_accounting_while_every_core_is_busy(
    busy_cores: list[int],
) -> None:
    done = demo("--customers", "80", "--days", "120", "--show", "3", "--timeout", "420")
    assert all(os.path.exists(f"/proc/{pid}") for pid in busy_cores)  # load held throughout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    produced = int(re.search(r"produced ([\d,]+) messages", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    counts = {name: int(value.replace(",", "")) for name, value in ROW.findall(out)}
    assert counts["received"] == produced
    assert counts["received"] == counts["applied"] + counts["deadlettered"] + counts["duplicates"]
    assert counts["late"] == 0
    assert counts["outbox pending"] == 0
    assert counts["changes read back"] == counts["changes emitted"] > 0
    total = int(re.search(r"([\d,]+) changes in all", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert total == counts["changes read back"]
    assert re.search(r"done in [\d.]+s", out)


def test_demo_that_cannot_finish_exits_non_zero_and_says_why() -> None:
    # a limit no worker can meet: the demo must not report success
    done = demo("--customers", "20", "--days", "30", "--timeout", "1")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "demo failed:" in done.stdout
    assert "worker logs:" in done.stdout
    assert "changes in all" not in done.stdout


def test_demo_stopped_by_sigterm_stops_what_it_started(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segmentflow.cli.main", "demo"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 180
        while "worker http" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        started = descendants(proc.pid)
        assert len(started) >= 2, started  # the broker and the worker at least
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if alive(pid)]
        assert "changes in all" not in log.read_text()
    finally:
        stop_pid(proc, timeout=30)  # type: ignore[arg-type]


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"


def test_demo_script_explains_a_missing_venv_module(tmp_path: Path) -> None:
    """Debian without python3-venv: the script says what to install instead of failing oddly."""
    fake = tmp_path / "python3"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "venv" ]; then\n'
        '  echo "ensurepip is not available" >&2; exit 1\nfi\nexit 0\n'
    )
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PYTHON": str(fake), "SEGMENTFLOW_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "apt-get install python3-venv" in done.stderr
    assert not venv.exists()


def test_readme_first_command_makes_a_venv() -> None:
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("\n", 1)[0]
    assert first.startswith("bash scripts/demo.sh")
    assert 'm venv "$VENV"' in SCRIPT.read_text()
