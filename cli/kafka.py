"""`flywheel kafka-credentials`: the broker's SASL/SCRAM principals and what each may do, and
new credentials for another system that publishes (`add NAME`).

For the operator only: these commands authenticate as the Kafka super user (the local stack's
`admin`, or FLYWHEEL_KAFKA_USERNAME/PASSWORD of one) and need java (they use the Admin API of
the broker's client jar, as the local stack resolved it)."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Annotated

import typer
from rich.table import Table

from cli.common import Bootstrap, JsonOutput, fail, out
from core.config import Settings, get_settings
from core.kafka_auth import uses_sasl
from infra.kafka_security import Principal, principals

app = typer.Typer(
    help="Kafka principals (SASL/SCRAM) and their ACLs; credentials for producing systems. Operator only.",
    no_args_is_help=True,
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _settings(bootstrap: str | None) -> Settings:
    settings = get_settings()
    if not uses_sasl(settings):
        raise fail("Kafka runs without SASL (FLYWHEEL_KAFKA_SECURITY_PROTOCOL=PLAINTEXT): "
                   "there are no principals")
    return settings.model_copy(update={"kafka_bootstrap_servers": bootstrap}) if bootstrap else settings


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The new principal: letters, digits, '.', '_', '-'.")],
    bootstrap: Bootstrap = None,
    as_json: JsonOutput = False,
) -> None:
    """Create (or give a new password to) a SCRAM-SHA-512 user that may produce to
    content-upserted and clicks and nothing else, and print its password: the only time it
    is shown."""
    from infra import kafka_acls
    from infra.kafka import Kafka
    from infra.kafka_security import CONTROLLER, add_producer

    settings = _settings(bootstrap)
    reserved = {*kafka_acls.SUPER_USERS, CONTROLLER, *kafka_acls.plan(settings)} - {kafka_acls.EXTERNAL}
    if not _NAME.match(name) or name in reserved:
        raise fail(f"NAME {name!r}: letters, digits, '.', '_', '-' (at most 64), not one of the "
                   f"platform's own principals ({', '.join(sorted(reserved))})")
    try:
        password = add_producer(settings, Kafka(settings).libs_dir, name)
    except (RuntimeError, OSError) as error:
        raise fail(str(error), 1) from error
    topics = [g.name for g in kafka_acls.producer_grants()]
    if as_json:
        print(json.dumps({"username": name, "password": password, "mechanism": "SCRAM-SHA-512",
                          "bootstrap_servers": settings.bootstrap_servers, "may_produce": topics}, indent=2))
        return
    out.print(f"{name} may produce to {', '.join(topics)} (SASL SCRAM-SHA-512). Password:", highlight=False)
    print(password)


def _principals(bootstrap: str | None) -> list[Principal]:
    from infra.kafka import Kafka

    settings = _settings(bootstrap)
    try:
        return principals(settings, Kafka(settings).libs_dir)
    except (RuntimeError, OSError) as error:
        raise fail(str(error), 1) from error


@app.command("list")
def list_principals(bootstrap: Bootstrap = None, as_json: JsonOutput = False) -> None:
    """Every principal the broker knows, with its ACLs (super users need none)."""
    found = _principals(bootstrap)
    if as_json:
        print(json.dumps([dataclasses.asdict(p) for p in found], indent=2))
        return
    table = Table("principal", "scram", "acls")
    for p in found:
        table.add_row(p.name, "yes" if p.scram else "no", str(len(p.acls)))
    out.print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A principal, e.g. external.")],
    bootstrap: Bootstrap = None,
    as_json: JsonOutput = False,
) -> None:
    """What one principal may do: its ACLs."""
    found = next((p for p in _principals(bootstrap) if p.name == name), None)
    if found is None:
        raise fail(f"no principal {name!r}", 1)
    if as_json:
        print(json.dumps(dataclasses.asdict(found), indent=2))
        return
    out.print(f"{name} (SCRAM user: {'yes' if found.scram else 'no'})", highlight=False)
    for acl in found.acls:
        out.print(f"  {acl}", highlight=False)
