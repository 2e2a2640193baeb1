"""Kafka client options, built once from the environment (CONTRACT §7) for every client.

`KafkaOptions` holds the bootstrap servers, the security settings (SASL and TLS), the client id
and the producer codec (``SEGMENTFLOW_KAFKA_COMPRESSION``) and renders them in the names of
each client library: aiokafka (collector, trigger dispatcher, dashboard), kafka-python (CLI
tools, topic administration) and Faust (the worker).

Examples
--------
>>> from segmentflow.config import Settings
>>> options = KafkaOptions.from_settings(Settings(kafka_url="kafka://k1:9092,kafka://k2:9092"))
>>> options.kafka_python(client_id="segmentflow-cli")
{'bootstrap_servers': ['k1:9092', 'k2:9092'], 'client_id': 'segmentflow-cli', \
'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from segmentflow.config import Settings

__all__ = ["DEFAULT_CLIENT_ID", "GROUP_TUNING", "KafkaOptions", "KafkaOptionsError"]

#: Client id of connections that do not name their role.
DEFAULT_CLIENT_ID = "segmentflow"

#: Consumer timeouts that make a group join on Tansu take seconds, not half a minute (the join
#: answers after about half the session timeout), and detect a killed member quickly.
GROUP_TUNING: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 10000,
}


class KafkaOptionsError(ValueError):
    """The Kafka settings cannot be used (the message says which one and what to do)."""


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Connection, security and codec settings of every Kafka client.

    Parameters
    ----------
    url
        ``SEGMENTFLOW_KAFKA_URL`` as given (for error messages).
    bootstrap
        ``host:port`` of each bootstrap server.
    security_protocol
        ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL`` (upper case).
    sasl_mechanism, sasl_username, sasl_password
        SASL credentials (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``); none by default.
    ssl_cafile
        CA bundle that verifies the brokers' certificates (the system's by default).
    compression
        Codec of the records segmentflow produces, ``None`` for uncompressed.
    """

    url: str
    bootstrap: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    compression: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaOptions:
        """The options of ``settings`` (``SEGMENTFLOW_KAFKA_*``).

        Examples
        --------
        >>> s = Settings(kafka_compression="zstd", kafka_security_protocol="sasl_ssl")
        >>> o = KafkaOptions.from_settings(s)
        >>> o.bootstrap, o.security_protocol, o.compression, o.uses_tls
        (('127.0.0.1:9092',), 'SASL_SSL', 'zstd', True)
        """
        codec = settings.kafka_compression
        return cls(
            url=settings.kafka_url,
            bootstrap=tuple(settings.kafka_bootstrap.split(",")),
            security_protocol=settings.kafka_security_protocol.upper(),
            sasl_mechanism=settings.kafka_sasl_mechanism or None,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            compression=None if codec == "none" else codec,
        )

    @property
    def uses_tls(self) -> bool:
        """Whether connections are encrypted (``SSL`` or ``SASL_SSL``)."""
        return "SSL" in self.security_protocol

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (with ``ssl_cafile`` when set), ``None`` without TLS."""
        if not self.uses_tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ssl_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaOptionsError(
                f"cannot load the Kafka CA file SEGMENTFLOW_KAFKA_SSL_CAFILE={self.ssl_cafile!r} "
                f"({exc}): point it at the PEM bundle of the brokers' CA, or unset it to use "
                "the system's CA store"
            ) from exc

    def _sasl(self) -> dict[str, Any]:
        if not self.sasl_mechanism:
            return {}
        return {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
        }

    def security(self) -> dict[str, Any]:
        """Security options in kafka-python's names (it builds its own TLS context).

        Examples
        --------
        >>> o = KafkaOptions("kafka://k:9092", ("k:9092",), "SASL_PLAINTEXT", "PLAIN", "u", "p")
        >>> o.security()
        {'security_protocol': 'SASL_PLAINTEXT', 'sasl_mechanism': 'PLAIN', \
'sasl_plain_username': 'u', 'sasl_plain_password': 'p'}
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol, **self._sasl()}
        if self.ssl_cafile:
            options["ssl_cafile"] = self.ssl_cafile
        return options

    def kafka_python(
        self, *, client_id: str = DEFAULT_CLIENT_ID, producer: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments of kafka-python's ``KafkaProducer``/``KafkaConsumer``/admin client;
        ``producer=True`` adds the codec."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap),
            "client_id": client_id,
            **self.security(),
        }
        if producer and self.compression:
            options["compression_type"] = self.compression
        return options

    def aiokafka(
        self, *, client_id: str = DEFAULT_CLIENT_ID, producer: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments of aiokafka's ``AIOKafkaProducer``/``AIOKafkaConsumer``;
        ``producer=True`` adds the codec.

        Examples
        --------
        >>> o = KafkaOptions("kafka://k:9092", ("k:9092",), compression="lz4")
        >>> o.aiokafka(producer=True)["compression_type"], "compression_type" in o.aiokafka()
        ('lz4', False)
        """
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap),
            "client_id": client_id,
            "security_protocol": self.security_protocol,
            **self._sasl(),
        }
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if producer and self.compression:
            options["compression_type"] = self.compression
        return options

    def faust_credentials(self) -> Any:
        """Faust ``broker_credentials``: SASL or TLS credentials, ``None`` for PLAINTEXT."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust

        if self.sasl_mechanism:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        return faust.SSLCredentials(self.ssl_context())

    def faust(self) -> dict[str, Any]:
        """Faust app settings: broker URL, credentials and the producer codec."""
        return {
            "broker": self.url,
            "broker_credentials": self.faust_credentials(),
            "producer_compression_type": self.compression,
        }
