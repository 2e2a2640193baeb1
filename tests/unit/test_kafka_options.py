"""One set of Kafka client options (``segmentflow.kafka_options``) rendered per client library."""

from __future__ import annotations

import ssl

import faust
import pytest

from segmentflow.config import Settings
from segmentflow.kafka_options import KafkaOptions, KafkaOptionsError
from segmentflow.streams.app import broker_credentials, compression, create_app


def _sasl_ssl(codec: str = "none") -> Settings:
    return Settings(
        kafka_url="kafka://b1:9093,kafka://b2:9093",
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_compression=codec,  # type: ignore[arg-type]
    )


def test_plaintext_renders_only_bootstrap_client_id_and_protocol() -> None:
    options = KafkaOptions.from_settings(Settings(kafka_url="kafka://k:9092"))
    expected = {
        "bootstrap_servers": ["k:9092"],
        "client_id": "segmentflow-x",
        "security_protocol": "PLAINTEXT",
    }
    assert options.aiokafka(client_id="segmentflow-x") == expected
    assert options.kafka_python(client_id="segmentflow-x") == expected
    assert options.faust_credentials() is None
    assert options.ssl_context() is None


def test_sasl_ssl_reaches_every_library_the_same() -> None:
    options = KafkaOptions.from_settings(_sasl_ssl())
    sasl = {
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }
    aio = options.aiokafka()
    assert aio["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert aio["security_protocol"] == "SASL_SSL"
    assert {k: aio[k] for k in sasl} == sasl
    context = aio["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    kp = options.kafka_python()
    assert kp["security_protocol"] == "SASL_SSL" and {k: kp[k] for k in sasl} == sasl
    assert "ssl_context" not in kp  # kafka-python builds its own from ssl_cafile
    credentials = options.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("svc", "pw")
    assert credentials.ssl_context is not None


def test_the_password_is_not_in_the_repr() -> None:
    assert "pw" not in repr(KafkaOptions.from_settings(_sasl_ssl()))


def test_tls_without_sasl_uses_tls_credentials_and_the_ca_file() -> None:
    import certifi

    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=certifi.where())
    options = KafkaOptions.from_settings(settings)
    assert options.kafka_python()["ssl_cafile"] == certifi.where()
    assert "sasl_mechanism" not in options.aiokafka()
    assert isinstance(options.faust_credentials(), faust.SSLCredentials)


def test_a_missing_ca_file_fails_with_its_path() -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(KafkaOptionsError, match="unset it"):
        KafkaOptions.from_settings(settings).aiokafka()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_goes_to_producers_only(codec: str) -> None:
    options = KafkaOptions.from_settings(_sasl_ssl(codec))
    assert options.aiokafka(producer=True)["compression_type"] == codec
    assert options.kafka_python(producer=True)["compression_type"] == codec
    assert "compression_type" not in options.aiokafka()
    assert "compression_type" not in options.kafka_python()
    assert options.faust()["producer_compression_type"] == codec


def test_no_compression_is_none_everywhere() -> None:
    options = KafkaOptions.from_settings(Settings())
    assert options.compression is None
    assert "compression_type" not in options.aiokafka(producer=True)
    assert options.faust()["producer_compression_type"] is None


def test_the_worker_app_is_configured_from_the_same_options() -> None:
    settings = _sasl_ssl("zstd")
    assert compression(settings) == "zstd"
    assert isinstance(broker_credentials(settings), faust.SASLCredentials)
    app = create_app(settings)
    assert app.conf.producer_compression_type == "zstd"
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
