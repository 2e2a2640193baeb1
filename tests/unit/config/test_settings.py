"""Environment settings (CONTRACT §7) and their pass-through to Kafka and Redis clients."""

from __future__ import annotations

import faust
import pytest

from segmentflow.config import Settings
from segmentflow.streams.app import broker_credentials, create_app
from segmentflow.streams.kafka_clients import security_options


def test_contract_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_URL", "REDIS_URL", "NAMESPACE", "WEB_PORT", "API_TOKEN", "CONFIG"):
        monkeypatch.delenv(f"SEGMENTFLOW_{name}", raising=False)
    s = Settings()
    assert s.kafka_url == "kafka://127.0.0.1:9092" and s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.namespace == "segmentflow" and s.web_port == 6066 and s.api_token is None
    assert s.input_topics == {
        "website": "website-events",
        "email": "email-events",
        "purchase": "purchase-events",
    }
    assert s.topic_segment_changes == "segment-changes"
    assert s.topic_segmentflow_deadletter == "segmentflow-deadletter"


def test_topic_renames_and_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTFLOW_TOPIC_SEGMENT_CHANGES", "changes-v2")
    monkeypatch.setenv("SEGMENTFLOW_TOPIC_WEBSITE_EVENTS", "web")
    monkeypatch.setenv("SEGMENTFLOW_KAFKA_URL", "kafka://k1:9092,kafka://k2:9092")
    s = Settings()
    assert s.topic_segment_changes == "changes-v2" and s.input_topics["website"] == "web"
    assert s.kafka_bootstrap == "k1:9092,k2:9092"


def test_plaintext_has_no_credentials() -> None:
    s = Settings(kafka_security_protocol="PLAINTEXT")
    assert broker_credentials(s) is None
    assert security_options(s) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEGMENTFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SEGMENTFLOW_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("SEGMENTFLOW_KAFKA_SASL_PASSWORD", "pw")
    s = Settings()
    options = security_options(s)
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }
    credentials = broker_credentials(s)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "svc" and credentials.password == "pw"
    assert credentials.ssl_context is not None  # SASL over TLS
    app = create_app(s)
    configured = app.conf.broker_credentials
    assert isinstance(configured, faust.SASLCredentials)
    assert (configured.username, configured.mechanism) == ("svc", credentials.mechanism)


def test_ssl_only_uses_tls_credentials() -> None:
    s = Settings(kafka_security_protocol="SSL")
    assert isinstance(broker_credentials(s), faust.SSLCredentials)


def test_redis_tls_and_password_travel_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    monkeypatch.setenv("SEGMENTFLOW_REDIS_URL", "rediss://:hunter2@cache.example:6380/2")
    s = Settings()
    client = redis.Redis.from_url(s.redis_url)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == "hunter2" and kwargs["port"] == 6380 and kwargs["db"] == 2
    assert client.connection_pool.connection_class is redis.SSLConnection
