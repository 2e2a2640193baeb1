"""docker-compose.yml's optional ``cluster`` profile (issue 17) is consistent (no Docker engine
needed): six cluster-enabled nodes on fixed addresses, a create job naming exactly those nodes
with one replica each, and a worker on a ``redis+cluster://`` URL of them that shares neither
consumer group nor outputs with the default workers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from segmentflow.config import Settings
from segmentflow.state.client import seeds

ROOT = Path(__file__).resolve().parents[2]
NODES = [f"redis-node-{i}" for i in range(1, 7)]
PROFILE_SERVICES = {*NODES, "redis-cluster-init", "worker-cluster"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def words(command: Any) -> list[str]:
    return [str(w) for w in command] if isinstance(command, list) else str(command).split()


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def node_address(service: dict[str, Any]) -> str:
    """``IP:PORT`` the node serves on (its fixed address and ``--port``)."""
    ip = service["networks"]["redis-cluster"]["ipv4_address"]
    return f"{ip}:{flag(words(service['command']), '--port')}"


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_the_profile_holds_the_cluster_and_nothing_else(services: dict[str, Any]) -> None:
    in_profile = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert in_profile == PROFILE_SERVICES
    # the default `docker compose up` still starts no cluster service
    assert all("profiles" not in s for n, s in services.items() if n not in PROFILE_SERVICES)


def test_six_cluster_enabled_nodes_on_distinct_fixed_addresses(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    addresses = [node_address(services[n]) for n in NODES]
    assert len(set(addresses)) == 6
    subnet = compose["networks"]["redis-cluster"]["ipam"]["config"][0]["subnet"]
    prefix = subnet.rsplit(".", 1)[0] + "."
    assert subnet.endswith(".0/24") and all(a.startswith(prefix) for a in addresses)
    volumes = set()
    for name in NODES:
        node = services[name]
        command = words(node["command"])
        assert command[0] == "redis-server" and flag(command, "--cluster-enabled") == "yes"
        assert flag(command, "--maxmemory-policy") == "noeviction"  # the worker refuses others
        assert flag(command, "--appendonly") == "yes"
        assert "ping" in " ".join(words(node["healthcheck"]["test"]))
        assert node["image"].startswith("redis:7")
        assert not node.get("ports"), "nodes are reached inside the network only"
        volumes.add(node["volumes"][0].split(":")[0])
    assert len(volumes) == 6  # each node its own nodes.conf and AOF
    assert volumes <= set(compose["volumes"])


def test_the_create_job_names_exactly_the_nodes_with_one_replica_each(
    services: dict[str, Any],
) -> None:
    init = services["redis-cluster-init"]
    script = " ".join(words(init["command"]))
    create = re.search(r"redis-cli --cluster create ((?:\S+:\d+ )+)(.*)", script)
    assert create is not None
    named = create.group(1).split()
    assert sorted(named) == sorted(node_address(services[n]) for n in NODES)
    options = create.group(2).split()
    assert flag(options, "--cluster-replicas") == "1" and "--cluster-yes" in options
    assert len(named) // (1 + int(flag(options, "--cluster-replicas"))) == 3  # primaries
    # waits for the nodes, joins them once, then waits for every slot to be served
    assert {d: c["condition"] for d, c in init["depends_on"].items()} == {
        n: "service_healthy" for n in NODES
    }
    assert "cluster_known_nodes:6" in script and "cluster_state:ok" in script
    assert init["restart"] == "no" and init["networks"] == ["redis-cluster"]
    checked = re.findall(r"redis-cli -h (\S+) -p (\d+)", script)
    assert {f"{h}:{p}" for h, p in checked} <= set(named)


def test_the_cluster_worker_uses_the_nodes_and_its_own_group_and_outputs(
    services: dict[str, Any],
) -> None:
    worker = services["worker-cluster"]
    env = env_of(worker)
    for key in env:  # every variable is one Settings reads
        assert key.removeprefix("SEGMENTFLOW_").lower() in Settings.model_fields, key
    found = seeds(env["SEGMENTFLOW_REDIS_URL"])
    assert found is not None, "a redis+cluster:// URL"
    nodes = {node_address(services[n]) for n in NODES}
    assert {f"{h}:{p}" for h, p in found[1]} <= nodes
    assert worker["command"] == ["worker"] and "redis-cluster" in worker["networks"]
    # every commit on a replica too (the create job gives each primary one): failover-safe
    assert int(env["SEGMENTFLOW_REDIS_MIN_REPLICAS"]) == 1
    assert "default" in worker["networks"]  # Kafka
    deps = worker["depends_on"]
    assert deps["redis-cluster-init"]["condition"] == "service_completed_successfully"
    assert deps["kafka"]["condition"] == "service_healthy" and "redis" not in deps
    # beside worker-1/2 on the same input: never the same consumer group, state or outputs
    default = env_of(services["worker-1"])
    for key in (
        "SEGMENTFLOW_NAMESPACE",
        "SEGMENTFLOW_TOPIC_SEGMENT_CHANGES",
        "SEGMENTFLOW_TOPIC_SEGMENTFLOW_DEADLETTER",
        "SEGMENTFLOW_TOPIC_SEGMENTFLOW_METRICS",
    ):
        field = key.removeprefix("SEGMENTFLOW_").lower()
        assert env[key] != default.get(key, Settings.model_fields[field].default), key
    published = {p.rsplit(":", 2)[-2] for s in services.values() for p in s.get("ports", [])}
    own = worker["ports"][0]
    assert own.startswith("127.0.0.1:") and own.endswith(":" + env["SEGMENTFLOW_WEB_PORT"])
    assert len([p for p in published if p == own.split(":")[1]]) == 1  # host port not reused
