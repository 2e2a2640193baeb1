"""aiokafka client options from the environment (CONTRACT §7), shared with the dashboard."""

from __future__ import annotations

import ssl
from typing import Any

from segmentflow.config import Settings


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and SASL/SSL options in aiokafka's names."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol.upper(),
    }
    if "SSL" in options["security_protocol"]:
        options["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


#: Consumer timeouts that make a group join on Tansu take seconds, not half a minute (the join
#: answers after about half the session timeout), and detect a killed member quickly.
GROUP_TUNING: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 10000,
}
