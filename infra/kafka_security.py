"""The local broker's principals: their passwords, and creating users and ACLs on the broker.

Passwords live in `<state_dir>/kafka/credentials.json` (mode 600): the broker and the operator
(`admin`) are created when the storage is formatted, every other principal and its ACLs
(infra/kafka_acls.py) each time the broker starts, through infra/KafkaSecurity.java and the
Admin API of the broker's own client jar.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.kafka_auth import java_client_properties, local_credentials
from infra import kafka_acls
from infra.process import require_program

INFRA_DIR = Path(__file__).resolve().parent
CONTROLLER = "controller"  # the controller listener (SASL/PLAIN, loopback only)


def ensure_credentials(settings: Settings) -> dict[str, str]:
    """Every principal's password, made up once and kept in the credentials file."""
    known = local_credentials(settings)
    wanted = [*kafka_acls.SUPER_USERS, CONTROLLER, *kafka_acls.plan(settings)]
    if settings.kafka_username == kafka_acls.OPERATOR and settings.kafka_password:
        known.setdefault(kafka_acls.OPERATOR, settings.kafka_password)
    missing = [name for name in wanted if name not in known]
    if missing:
        known |= {name: secrets.token_urlsafe(24) for name in missing}
        path = settings.kafka_credentials_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(known, out, indent=2)
        path.with_suffix(".tmp").replace(path)
    return known


def service_principal(settings: Settings, principal: str) -> dict[str, str]:
    """`principal`'s username and password as Settings fields (none under PLAINTEXT)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    return {"kafka_username": principal, "kafka_password": ensure_credentials(settings)[principal]}


def service_environment(settings: Settings, principal: str) -> dict[str, str]:
    """The FLYWHEEL_KAFKA_* variables that make a process of the local stack `principal`."""
    return {f"FLYWHEEL_{k.upper()}": v for k, v in service_principal(settings, principal).items()}


def apply(settings: Settings, libs_dir: Path, lines: list[str]) -> str:
    """Run `lines` (user/acl commands) against the broker as the operator: FLYWHEEL_KAFKA_USERNAME
    and _PASSWORD, or the local stack's `admin`."""
    java = require_program("java", "a JDK 17 or newer")
    properties = {"bootstrap.servers": settings.bootstrap_servers, **java_client_properties(settings)}
    with tempfile.NamedTemporaryFile("w", suffix=".properties", delete=True) as config:
        os.chmod(config.name, 0o600)
        config.write("".join(f"{k}={v}\n" for k, v in properties.items()))
        config.flush()
        result = subprocess.run(
            [java, "-cp", f"{libs_dir}/*", str(INFRA_DIR / "KafkaSecurity.java"), config.name],
            input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120,
        )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-2000:]
        raise RuntimeError(f"could not create Kafka users and ACLs:\n{output}")
    return result.stdout.strip()


def principals_and_acls(settings: Settings) -> list[str]:
    """Every service principal's SCRAM user and ACLs, as KafkaSecurity.java lines."""
    passwords = ensure_credentials(settings)
    lines = []
    for principal, grants in kafka_acls.plan(settings).items():
        lines.append(f"user {principal} {passwords[principal]}")
        lines.extend(kafka_acls.commands(principal, grants))
    return lines


@dataclass(frozen=True)
class Principal:
    name: str
    scram: bool  # has a SCRAM-SHA-512 credential
    acls: tuple[str, ...]  # "ALLOW WRITE TOPIC content-upserted", "ALLOW READ GROUP reindex-*"


def principals(settings: Settings, libs_dir: Path) -> list[Principal]:
    """Every principal the broker knows: its SCRAM user and ACLs (super users have no ACLs)."""
    users: set[str] = set()
    acls: dict[str, list[str]] = {}
    for line in apply(settings, libs_dir, ["list"]).splitlines():
        fields = line.split()
        if fields[:1] == ["user"] and len(fields) == 2:
            users.add(fields[1])
        elif fields[:1] == ["acl"] and len(fields) == 7:
            _, principal, resource, pattern, name, operation, permission = fields
            star = "*" if pattern == "PREFIXED" else ""
            acls.setdefault(principal.removeprefix("User:"), []).append(
                f"{permission} {operation} {resource} {name}{star}")
    return [Principal(name, name in users, tuple(sorted(acls.get(name, []))))
            for name in sorted(users | set(acls))]


def add_producer(settings: Settings, libs_dir: Path, name: str) -> str:
    """A new SCRAM user `name` that may produce content and clicks; returns its password."""
    password = secrets.token_urlsafe(24)
    apply(settings, libs_dir, [f"user {name} {password}",
                               *kafka_acls.commands(name, kafka_acls.producer_grants())])
    return password
