"""``wait_replicas``: a commit counts once enough replicas hold what the primary had written
(``INFO replication`` offsets), else ``ReplicaLag`` after the timeout (pure logic, fakes)."""

from __future__ import annotations

from typing import Any

import pytest

from segmentflow.state.client import ReplicaLag, wait_replicas


class FakeServer:
    """Answers ``INFO replication`` from a script of replica offsets (one row per call)."""

    def __init__(self, master: int, rows: list[list[int]]) -> None:
        self.master, self.rows, self.calls = master, rows, 0

    def info(self, section: str) -> dict[str, Any]:
        assert section == "replication"
        row = self.rows[min(self.calls, len(self.rows) - 1)]
        self.calls += 1
        info: dict[str, Any] = {"role": "master", "master_repl_offset": self.master}
        for i, offset in enumerate(row):
            info[f"slave{i}"] = {"ip": "127.0.0.1", "port": 7000 + i, "offset": offset}
        return info


def test_returns_once_enough_replicas_caught_up() -> None:
    server = FakeServer(100, [[40, 90], [100, 90], [100, 120]])
    slept: list[float] = []
    wait_replicas(server, ["k"], 1, timeout=60, sleep=slept.append)  # type: ignore[arg-type]
    assert server.calls == 2 and len(slept) == 1
    server = FakeServer(100, [[40, 90], [100, 90], [100, 120]])
    wait_replicas(server, ["k"], 2, timeout=60, sleep=slept.append)  # type: ignore[arg-type]
    assert server.calls == 3


def test_no_replica_wanted_asks_nothing() -> None:
    server = FakeServer(100, [[]])
    wait_replicas(server, ["k"], 0, timeout=1)  # type: ignore[arg-type]
    assert server.calls == 0


def test_a_primary_without_replicas_times_out_with_what_to_do() -> None:
    server = FakeServer(100, [[]])
    now = [0.0]

    def sleep(seconds: float) -> None:  # a fake clock: sleeping moves it
        now[0] += seconds

    with pytest.raises(ReplicaLag, match=r"0 of 1 replicas .*SEGMENTFLOW_REDIS_MIN_REPLICAS"):
        wait_replicas(server, ["k"], 1, 5, sleep, lambda: now[0])  # type: ignore[arg-type]
    assert 5 < now[0] < 5.1 and server.calls > 10  # backed off up to 50 ms between reads
