"""Who may do what on the local broker: one SCRAM principal per service, and its ACLs.

Each principal gets only the topics and consumer groups its job needs; everything else is
refused (StandardAuthorizer, allow.everyone.if.no.acl.found=false). `admin` (the operator:
infra, `flywheel replay`, `flywheel dlq`, the topic tools, the tests) and the broker itself are
super users. `external` is for other systems that publish: content and clicks, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import Settings
from schemas.topics import CLICKS, CONTENT_UPSERTED, MODEL_PUBLISHED, REINDEX_REQUESTED, TRAINING_REQUESTED

BROKER = "broker"  # inter-broker (SCRAM) on the client listener
OPERATOR = "admin"
EXTERNAL = "external"
SUPER_USERS = (BROKER, OPERATOR)
SERVICE_GROUPS = ("indexer", "sessions", "trainer", "deployer", "reindexer", "improver", "sources")


@dataclass(frozen=True)
class Grant:
    """ALLOW `operations` on one resource (TOPIC, GROUP) named literally or by prefix."""

    resource: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def read(topic: str) -> Grant:
    return Grant("TOPIC", topic, ("READ", "DESCRIBE"))


def write(topic: str) -> Grant:
    return Grant("TOPIC", topic, ("WRITE", "DESCRIBE"))


def group(name: str, prefixed: bool = True) -> Grant:
    """A service's consumer groups: its own and any named from it (a test's `indexer-traced`)."""
    return Grant("GROUP", name, ("READ", "DESCRIBE"), prefixed)


def producer_grants() -> list[Grant]:
    """What a producing system may do (the `external` principal, `flywheel kafka credentials add`)."""
    return [write(CONTENT_UPSERTED.name), write(CLICKS.name)]


def plan(settings: Settings) -> dict[str, list[Grant]]:
    """Principal -> its grants. The super users are not listed (they need none)."""
    cdc = f"{settings.sources_topic_prefix}."
    content, clicks = CONTENT_UPSERTED.name, CLICKS.name
    training, published, reindex = TRAINING_REQUESTED.name, MODEL_PUBLISHED.name, REINDEX_REQUESTED.name
    platform = [content, clicks, training, published, reindex]
    return {
        "indexer": [read(content), write(CONTENT_UPSERTED.dlq), group(settings.indexer_group)],
        "sessions": [read(clicks), write(CLICKS.dlq), write(training), group("sessions")],
        "improver": [read(clicks), write(CLICKS.dlq), group("improver")],
        "trainer": [read(training), write(TRAINING_REQUESTED.dlq), write(published), group("trainer")],
        "deployer": [read(published), write(MODEL_PUBLISHED.dlq), write(reindex), group("deployer")],
        # A backfill replays content-upserted with a group per version (reindex-v<version>), so
        # its groups are reindexer* and reindex-*.
        "reindexer": [read(reindex), write(REINDEX_REQUESTED.dlq), read(content),
                      write(CONTENT_UPSERTED.dlq), group("reindex")],
        "sources": [Grant("TOPIC", cdc, ("READ", "WRITE", "DESCRIBE", "CREATE"), prefixed=True),
                    write(content), group("sources")],
        # The API: content, clicks and training/reindex requests; the dead letters it lists and
        # redrives (back to their topics, model-published excepted); the topics of sources.
        "gateway": [
            *(write(name) for name in (content, clicks, training, reindex)),
            *(Grant("TOPIC", f"{name}.dlq", ("READ", "DESCRIBE")) for name in platform),
            Grant("TOPIC", published, ("DESCRIBE",)),
            Grant("TOPIC", cdc, ("READ", "WRITE", "DESCRIBE", "CREATE"), prefixed=True),
            group("flywheel-dlq-redrive."),
            # GET /v1/admin/topics: each service group's committed offsets.
            *(Grant("GROUP", name, ("DESCRIBE",)) for name in SERVICE_GROUPS),
        ],
        # The Connect worker: its own config/offset/status topics and group, and the change
        # topics (and MySQL schema histories) its Debezium connectors create and write.
        "connect": [
            Grant("TOPIC", settings.connect_group, ("ALL",), prefixed=True),
            Grant("TOPIC", cdc, ("ALL",), prefixed=True),
            Grant("GROUP", settings.connect_group, ("ALL",), prefixed=True),
            Grant("GROUP", cdc, ("ALL",), prefixed=True),
        ],
        EXTERNAL: producer_grants(),
    }


def commands(principal: str, grants: list[Grant]) -> list[str]:
    """The lines infra/KafkaSecurity.java takes: `acl PRINCIPAL TYPE PATTERN NAME OPERATION`."""
    return [
        f"acl User:{principal} {g.resource} {'PREFIXED' if g.prefixed else 'LITERAL'} {g.name} {op}"
        for g in grants for op in g.operations
    ]


def env_name(principal: str) -> str:
    """The compose variable holding `principal`'s password (`.env`)."""
    return f"KAFKA_{principal.upper()}_PASSWORD"


def compose_lines(settings: Settings) -> list[str]:
    """The ACLs as infra/kafka-compose/security.sh reads them: `PRINCIPAL TYPE PATTERN NAME OPS`,
    one line per resource with its operations comma-separated (infra/kafka-compose/acls.txt)."""
    return [
        " ".join((principal, g.resource, "PREFIXED" if g.prefixed else "LITERAL", g.name,
                  ",".join(g.operations)))
        for principal, grants in plan(settings).items() for g in grants
    ]


def main(argv: list[str]) -> None:
    """`python -m infra.kafka_acls env`: a new .env for compose with a random password for every
    principal; `python -m infra.kafka_acls compose`: infra/kafka-compose/acls.txt."""
    import secrets

    settings = Settings()
    if argv[1:] == ["env"]:
        for principal in (*SUPER_USERS, "controller", *plan(settings)):
            print(f"{env_name(principal)}={secrets.token_urlsafe(24)}")
    elif argv[1:] == ["compose"]:
        print("\n".join(compose_lines(settings)))
    else:
        raise SystemExit("usage: python -m infra.kafka_acls env|compose")


if __name__ == "__main__":
    import sys

    main(sys.argv)
