"""The compose ``cluster`` profile's one-shot job (docker-compose.yml ``redis-cluster-init``)
really forms a 3-primary, 3-replica cluster: its script runs with ``sh`` against six fresh
``redis-server --cluster-enabled yes`` nodes on 127.0.0.1 (the compose addresses replaced by
theirs), and a second run finds the cluster formed and leaves it alone (a later ``up``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from segmentflow.embedded import EmbeddedStartError, _redis_binary
from segmentflow.embedded_cluster import ClusterNode, _cli_binary, _parse_nodes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 120.0


def _services() -> dict[str, Any]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert isinstance(services, dict)
    return services


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ClusterNode]]:
    server = _redis_binary(None)
    started: list[ClusterNode] = []
    try:
        for i in range(6):
            node = ClusterNode(server, tmp_path / f"node{i}", node_timeout_ms=2000)
            node.launch()
            started.append(node)
            deadline = time.monotonic() + LIMIT
            while not node.answers():
                if not node.running() or time.monotonic() > deadline:
                    raise EmbeddedStartError(f"cluster node did not start (log {node.log_path})")
                time.sleep(0.05)
        yield started
    finally:
        for node in started:
            node.stop()


def _run(script: str, cli: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(cli).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=LIMIT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_the_init_job_forms_the_cluster_once(nodes: list[ClusterNode]) -> None:
    services = _services()
    script = services["redis-cluster-init"]["command"][0]
    names = [f"redis-node-{i}" for i in range(1, 7)]
    for name, node in zip(names, nodes, strict=True):  # compose address -> this node's
        ip = services[name]["networks"]["redis-cluster"]["ipv4_address"]
        assert f"{ip}:6379" in script
        script = script.replace(f"{ip}:6379", node.address)
        script = script.replace(f"-h {ip} -p 6379", f"-h 127.0.0.1 -p {node.port}")
    assert "172.28.50." not in script
    cli = _cli_binary(None, _redis_binary(None))

    first = _run(script, cli)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "already formed" not in first.stdout
    assert "cluster_state:ok" in nodes[0].info("CLUSTER", "INFO")  # the job waited for it
    view = _parse_nodes(nodes[0].info("CLUSTER", "NODES"))
    primaries = [n for n in view if n.primary and n.slots]
    assert len(view) == 6 and len(primaries) == 3
    assert sum(hi - lo + 1 for p in primaries for lo, hi in p.slots) == 16384
    ids = sorted(p.node_id for p in primaries)

    def replicas_of_each() -> list[str]:  # the replicas' roles spread by gossip
        current = _parse_nodes(nodes[0].info("CLUSTER", "NODES"))
        return sorted(n.primary_id or "" for n in current if not n.primary)

    deadline = time.monotonic() + LIMIT
    while replicas_of_each() != ids:  # one replica per primary
        assert time.monotonic() < deadline, (replicas_of_each(), ids)
        time.sleep(0.1)
    view = _parse_nodes(nodes[0].info("CLUSTER", "NODES"))

    again = _run(script, cli)  # a later `docker compose up`
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already formed" in again.stdout
    assert _parse_nodes(nodes[0].info("CLUSTER", "NODES")) == view
