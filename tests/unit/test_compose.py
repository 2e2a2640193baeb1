"""docker-compose.yml, the Dockerfile and the example config agree with CONTRACT §6/§7."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from segmentflow.config import Settings, load_config

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("worker-1", "worker-2")


def default(field: str) -> Any:
    """The default of a `Settings` field (immune to SEGMENTFLOW_* in the test environment)."""
    return Settings.model_fields[field].default


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_services_present(services: dict[str, Any]) -> None:
    assert {"kafka", "redis", *WORKERS} <= set(services)


def test_kafka_is_kraft_single_node_with_healthcheck(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "9092" in healthcheck_text(kafka)


def test_redis_7_with_aof_and_healthcheck(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert "ping" in healthcheck_text(redis)


def test_topics_created_match_contract_defaults(services: dict[str, Any]) -> None:
    words = set(re.findall(r"[\w.-]+", " ".join(services["kafka-init"]["command"])))
    topic_fields = [f for f in Settings.model_fields if f.startswith("topic_")]
    assert len(topic_fields) == 6
    for field in topic_fields:
        assert default(field) in words, field


@pytest.mark.parametrize("name", WORKERS)
def test_worker_env_matches_contract(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    assert worker["command"] == ["worker"]
    assert worker["build"] == "."
    env = env_of(worker)
    # every variable is one Settings reads (CONTRACT §7 names)
    for key in env:
        assert key.startswith("SEGMENTFLOW_"), key
        assert key.removeprefix("SEGMENTFLOW_").lower() in Settings.model_fields, key
    assert env["SEGMENTFLOW_KAFKA_URL"] == "kafka://kafka:9092"
    assert env["SEGMENTFLOW_REDIS_URL"] == "redis://redis:6379/0"
    assert env["SEGMENTFLOW_NAMESPACE"] == default("namespace") == "segmentflow"
    assert env["SEGMENTFLOW_WEB_PORT"] == str(default("web_port")) == "6066"
    # same defaults as the contract's local ones, with the service host names
    assert default("kafka_url") == "kafka://127.0.0.1:9092"
    assert default("redis_url") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_config_is_mounted_and_valid(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    target = env_of(worker)["SEGMENTFLOW_CONFIG"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    assert mounts[target] == "./config/segmentflow.example.yaml"
    config = load_config(ROOT / mounts[target])
    assert [r.name for r in config.rules] == ["de_repeat_buyers"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_health_port_and_dependencies(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    port = env_of(worker)["SEGMENTFLOW_WEB_PORT"]
    assert f"http://127.0.0.1:{port}/health" in healthcheck_text(worker)
    published = [p.rsplit(":", 1)[-1] for p in worker["ports"]]
    assert port in published
    deps = worker["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["redis"]["condition"] == "service_healthy"


def test_host_ports_bind_loopback_only(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_worker_ids_distinct(services: dict[str, Any]) -> None:
    ids = {env_of(services[n]).get("SEGMENTFLOW_WORKER_ID") for n in WORKERS}
    assert len(ids) == len(WORKERS)


def test_dockerfile_runs_worker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert 'ENTRYPOINT ["segmentflow"]' in text
    assert 'CMD ["worker"]' in text
    assert "pip install" in text


def test_example_config_has_every_contract_key() -> None:
    data = yaml.safe_load((ROOT / "config" / "segmentflow.example.yaml").read_text())
    assert set(data) == {
        "clock",
        "allowed_lateness",
        "max_event_bytes",
        "lifecycle",
        "rfm",
        "persona",
        "rules",
    }
    assert set(data["lifecycle"]) == {
        "new_days",
        "reactivated_days",
        "at_risk_days",
        "churned_days",
    }
    assert "sweep_every" in data["rfm"]


def test_integrations_and_prometheus_in_compose(services: dict[str, Any]) -> None:
    """The collector, trigger dispatcher, dashboard and Prometheus run beside the workers."""
    from segmentflow.config import Settings
    from segmentflow.triggers.config import load_triggers_config

    assert services["collector"]["command"] == ["collect"]
    collector_env = services["collector"]["environment"]
    assert collector_env["SEGMENTFLOW_COLLECTOR_PORT"] == str(Settings().collector_port)
    assert "127.0.0.1:8088:8088" in services["collector"]["ports"]
    assert services["triggers"]["command"][0] == "triggers"
    mount = services["triggers"]["volumes"][0].split(":")[0]
    assert load_triggers_config(ROOT / mount).targets  # the mounted example is valid
    assert services["dashboard"]["command"][0] == "dashboard"
    prometheus = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    assert {"worker-1:6066", "worker-2:6066", "collector:8088", "triggers:6068"} <= targets
    for name in ("collector", "triggers", "prometheus"):
        assert "healthcheck" in services[name], name
