"""Who a process is to Kafka: the one place every Kafka client's security options are built.

Each process authenticates as its own principal (SASL/SCRAM-SHA-512), named by
FLYWHEEL_KAFKA_USERNAME / FLYWHEEL_KAFKA_PASSWORD; the broker's ACLs then allow it only the
topics and groups its job needs (infra/kafka_acls.py). Without a username a process of the
local stack is the operator (`admin`), whose password the local broker wrote into
`<state_dir>/kafka/credentials.json` (readable by its owner only). With
FLYWHEEL_KAFKA_SECURITY_PROTOCOL=PLAINTEXT no credentials are sent at all (a broker without
SASL).
"""

from __future__ import annotations

import json
import ssl
from typing import Any

from faststream.security import BaseSecurity, SASLScram512

from core.config import Settings, get_settings

OPERATOR = "admin"


class KafkaCredentialsMissing(RuntimeError):
    """SASL is on but this process was given no principal and no local credentials file."""


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol != "PLAINTEXT"


def local_credentials(settings: Settings) -> dict[str, str]:
    """Principal -> password, as the local broker created them (empty when there is none)."""
    try:
        data = json.loads(settings.kafka_credentials_file.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def kafka_credentials(settings: Settings) -> tuple[str, str]:
    """(username, password) of this process's principal."""
    if settings.kafka_username:
        return settings.kafka_username, settings.kafka_password
    password = local_credentials(settings).get(OPERATOR)
    if password is None:
        raise KafkaCredentialsMissing(
            f"Kafka uses {settings.kafka_security_protocol}: set FLYWHEEL_KAFKA_USERNAME and "
            f"FLYWHEEL_KAFKA_PASSWORD (no local credentials in {settings.kafka_credentials_file})"
        )
    return OPERATOR, password


def kafka_client_options(settings: Settings | None = None) -> dict[str, Any]:
    """The keyword arguments that make an aiokafka client (producer, consumer, admin)
    authenticate as this process's principal; none under PLAINTEXT."""
    settings = settings or get_settings()
    if not uses_sasl(settings):
        return {}
    username, password = kafka_credentials(settings)
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        options["ssl_context"] = ssl.create_default_context()
    return options


def faststream_security(settings: Settings | None = None) -> BaseSecurity | None:
    """The same principal as FastStream's KafkaBroker takes it (`security=`)."""
    settings = settings or get_settings()
    if not uses_sasl(settings):
        return None
    username, password = kafka_credentials(settings)
    ssl_context = ssl.create_default_context() if settings.kafka_security_protocol == "SASL_SSL" else None
    return SASLScram512(username, password, ssl_context=ssl_context, use_ssl=ssl_context is not None)


def java_client_properties(settings: Settings | None = None, prefix: str = "") -> dict[str, str]:
    """The same principal as a Java client's properties (the Kafka Connect worker)."""
    settings = settings or get_settings()
    if not uses_sasl(settings):
        return {}
    username, password = kafka_credentials(settings)
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{username}" password="{password}";')
    return {
        f"{prefix}security.protocol": settings.kafka_security_protocol,
        f"{prefix}sasl.mechanism": "SCRAM-SHA-512",
        f"{prefix}sasl.jaas.config": jaas,
    }
