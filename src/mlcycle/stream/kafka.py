"""Kafka client settings shared by the consumer, the publisher and the checks."""

from __future__ import annotations

import logging
from typing import Any

from mlcycle.config import Settings


def default_topic(dataset: str) -> str:
    return f"mlcycle.{dataset}"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def default_group(dataset: str) -> str:
    return f"mlcycle-stream-{dataset}"


def security_config(settings: Settings) -> dict[str, Any]:
    """librdkafka security settings from the environment (never logged)."""
    out: dict[str, Any] = {}
    if settings.kafka_security_protocol:
        out["security.protocol"] = settings.kafka_security_protocol
    if settings.kafka_sasl_mechanism:
        out["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        out["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        out["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return out


def client_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "mlcycle",
        # a broker that is down is retried by librdkafka itself; these keep logs readable
        "reconnect.backoff.max.ms": 5000,
        # When every broker the client knows is gone (a single broker restarting can
        # answer one metadata request, while shutting down, that lists no broker; a
        # broker can come back at another address), bootstrap again from
        # bootstrap.servers after 10 s instead of librdkafka's 5 minutes, in which a
        # consumer stays blocked in its offset commit.
        "metadata.recovery.rebootstrap.trigger.ms": 10_000,
        "log.connection.close": False,
        "logger": logging.getLogger("mlcycle.kafka"),  # librdkafka's lines via logging
        # connection failures repeat every reconnect: they reach the log once a minute
        # through the error callback instead of once per attempt
        "log_level": 2,
        **(extra or {}),
    }


__all__ = [
    "client_config",
    "default_group",
    "default_topic",
    "dlq_topic",
    "security_config",
]
