"""Sources: other systems' database tables, captured by Debezium, mapped to content-upserted.

A source names a database connection, a table, the id column, the title and text (columns, or
a template over the columns), the metadata columns, the tenant and where the version comes
from (a version column, or the change's log position so later changes always win). The
platform registers a Debezium connector for it through Kafka Connect's REST API; the
`sources` consumer service maps each change event (snapshot, create, update, delete) to a
`content-upserted` event or a tombstone with :func:`map_change` (pure, no I/O).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from schemas.content import ContentUpserted
from schemas.envelope import DEFAULT_TENANT, TENANT_PATTERN

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
# The item's own metadata key naming the source it came from (used to find its items).
SOURCE_METADATA_KEY = "source"


class SourceError(ValueError):
    """A source cannot be added or mapped as given; the message says what to fix."""


class SourceSpec(BaseModel):
    """What a source captures and how its rows become content items."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Lowercase letters, digits and _; unique.")
    tenant: str = Field(default=DEFAULT_TENANT, pattern=TENANT_PATTERN)
    kind: Literal["postgres", "mysql"] = "postgres"
    dsn: str = Field(min_length=1, description="postgresql://user:password@host:port/database "
                                               "(mysql://... for MySQL).")
    table: str = Field(description="schema.table (PostgreSQL) or database.table (MySQL).")
    id_column: str
    title_column: str | None = None
    text_columns: list[str] = Field(default_factory=list, description="Joined by a blank line.")
    text_template: str | None = Field(
        default=None, description="Instead of text_columns: e.g. '{headline}\\n\\n{body}'.")
    metadata_columns: list[str] = Field(default_factory=list)
    version_column: str | None = Field(
        default=None, description="An integer column that grows with every change; "
                                  "empty: the change's log position.")
    created_at: datetime | None = None

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        parts = table.split(".")
        if len(parts) != 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError("table must be schema.table (e.g. public.articles), plain identifiers")
        return table

    @field_validator("id_column", "title_column", "version_column")
    @classmethod
    def _column(cls, column: str | None) -> str | None:
        if column is not None and not _IDENTIFIER.match(column):
            raise ValueError(f"{column!r} is not a plain column name")
        return column

    @field_validator("text_columns", "metadata_columns")
    @classmethod
    def _columns(cls, columns: list[str]) -> list[str]:
        for column in columns:
            if not _IDENTIFIER.match(column):
                raise ValueError(f"{column!r} is not a plain column name")
        return columns

    @model_validator(mode="after")
    def _text(self) -> SourceSpec:
        if bool(self.text_columns) == bool(self.text_template):
            raise ValueError("give either text_columns or text_template (not both, not neither)")
        if self.text_template is not None:
            for _, field, spec, conversion in string.Formatter().parse(self.text_template):
                if field is not None and (not _IDENTIFIER.match(field) or spec or conversion):
                    raise ValueError(f"text_template may only name columns, as {{column}}; not {field!r}")
        parse_dsn(self.dsn, self.kind)
        return self

    def public(self) -> dict[str, Any]:
        """The spec as shown to users: the password in the DSN masked."""
        data = self.model_dump(mode="json")
        data["dsn"] = mask_password(self.dsn)
        return data


@dataclass(frozen=True)
class Connection:
    host: str
    port: int
    user: str
    password: str
    database: str


def parse_dsn(dsn: str, kind: str) -> Connection:
    parts = urlsplit(dsn)
    schemes = ("postgresql", "postgres") if kind == "postgres" else ("mysql",)
    if parts.scheme not in schemes or not parts.hostname or not parts.username:
        raise SourceError(f"dsn must look like {schemes[0]}://user:password@host:port/database")
    database = parts.path.lstrip("/")
    if kind == "postgres" and not database:
        raise SourceError("dsn must name the database: ...@host:port/database")
    return Connection(parts.hostname, parts.port or (5432 if kind == "postgres" else 3306),
                      unquote(parts.username), unquote(parts.password or ""), database)


def mask_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    return dsn.replace(f":{parts.password}@", ":***@", 1)


def connector_name(source: str) -> str:
    return f"flywheel-source-{source}"


def slot_name(source: str) -> str:
    """The PostgreSQL replication slot (and publication) of a source."""
    return f"flywheel_{source}"


def change_topic(spec: SourceSpec, prefix: str) -> str:
    """Where Debezium writes the source's changes: <prefix>.<source>.<schema>.<table>."""
    return f"{prefix}.{spec.name}.{spec.table}"


def connector_config(spec: SourceSpec, prefix: str, partitions: int, kafka_bootstrap: str) -> dict[str, str]:
    """The Debezium connector of `spec`, as Kafka Connect's REST API takes it."""
    conn = parse_dsn(spec.dsn, spec.kind)
    config = {
        "database.hostname": conn.host,
        "database.port": str(conn.port),
        "database.user": conn.user,
        "database.password": conn.password,
        "topic.prefix": f"{prefix}.{spec.name}",
        "table.include.list": spec.table,
        "snapshot.mode": "initial",
        # Our own tombstones come from the delete events: Debezium's would be noise.
        "tombstones.on.delete": "false",
        "decimal.handling.mode": "double",
        "time.precision.mode": "connect",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": str(partitions),
        "tasks.max": "1",
    }
    if spec.kind == "postgres":
        config |= {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.dbname": conn.database,
            "plugin.name": "pgoutput",
            "slot.name": slot_name(spec.name),
            "publication.name": slot_name(spec.name),
            "publication.autocreate.mode": "filtered",
        }
    else:
        config |= {
            "connector.class": "io.debezium.connector.mysql.MySqlConnector",
            "database.server.id": str(5400 + sum(spec.name.encode()) % 10_000),
            "database.include.list": spec.table.split(".")[0],
            "schema.history.internal.kafka.bootstrap.servers": kafka_bootstrap,
            "schema.history.internal.kafka.topic": f"{prefix}.{spec.name}.schema-history",
        }
    return config


# --- mapping change events ----------------------------------------------------------------
@dataclass(frozen=True)
class Delete:
    tenant: str
    id: str


Change = ContentUpserted | Delete
_OPERATIONS = {"r": "snapshot", "c": "create", "u": "update", "d": "delete"}
_EVENT_NAMESPACE = UUID("3c9a8f0e-5d6b-4f1a-9e2c-7b4d1a0c8e53")


def change_source(change: dict[str, Any]) -> str:
    """The source name of a Debezium change event (its connector's topic prefix, less ours)."""
    name = (change.get("source") or {}).get("name")
    if not isinstance(name, str) or "." not in name:
        raise SourceError("not a Debezium change event of a flywheel source (no source.name)")
    return name.split(".", 1)[1]


def map_change(change: dict[str, Any], spec: SourceSpec) -> Change:
    """The content-upserted event (or delete) for one Debezium change event of `spec`'s table.

    Raises SourceError naming the row and the problem when the row cannot become an item."""
    op = change.get("op")
    if op not in _OPERATIONS:
        raise SourceError(f"unknown Debezium operation {op!r}; expected one of r, c, u, d")
    row = change.get("before") if op == "d" else change.get("after")
    if not isinstance(row, dict):
        raise SourceError(f"a {_OPERATIONS[op]} event without its row")
    item_id = row.get(spec.id_column)
    if item_id is None or item_id == "":
        raise SourceError(f"row has no {spec.id_column!r} (the id column)")
    if isinstance(item_id, (dict, list, float)):
        raise SourceError(
            f"id column {spec.id_column!r} holds {type(item_id).__name__}, not a string or integer")
    if op == "d":
        return Delete(spec.tenant, str(item_id))
    metadata: dict[str, JsonValue] = {column: row.get(column) for column in spec.metadata_columns}
    metadata[SOURCE_METADATA_KEY] = spec.name
    version = _version(change, row, spec)
    try:
        return ContentUpserted(
            # The same change mapped again (a redelivery, a replay) is the same event.
            event_id=uuid5(_EVENT_NAMESPACE, f"{spec.name}/{item_id}/{version}"),
            id=str(item_id), tenant=spec.tenant, source=f"source:{spec.name}",
            title=_title(row, spec), text=_text(row, spec), metadata=metadata, version=version,
        )
    except ValueError as error:  # pydantic's ValidationError included
        raise SourceError(f"row {item_id!r} is not a valid item: {error}") from error


def _string(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise SourceError(f"column {column!r} holds {type(value).__name__}, not text")
    return str(value)


def _title(row: dict[str, Any], spec: SourceSpec) -> str:
    return _string(row, spec.title_column) if spec.title_column else ""


def _text(row: dict[str, Any], spec: SourceSpec) -> str:
    if spec.text_template is not None:
        fields = {name: _string(row, name)
                  for _, name, _, _ in string.Formatter().parse(spec.text_template) if name}
        text = spec.text_template.format_map(fields)
    else:
        text = "\n\n".join(part for part in (_string(row, c) for c in spec.text_columns) if part)
    if not text.strip():
        raise SourceError("the row's text is empty")
    return text


def _version(change: dict[str, Any], row: dict[str, Any], spec: SourceSpec) -> int:
    if spec.version_column is not None:
        value = row.get(spec.version_column)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SourceError(
                f"version column {spec.version_column!r} holds {value!r}, not a positive integer")
        return value
    source = change.get("source") or {}
    if isinstance(source.get("lsn"), int):  # PostgreSQL: the WAL position of the change
        return int(source["lsn"])
    if isinstance(source.get("pos"), int):  # MySQL: the binlog file's number and position
        number = int(str(source.get("file", "0")).rsplit(".", 1)[-1] or 0)
        return (number << 32) + int(source["pos"])
    raise SourceError("the change carries no log position; give the source a version_column")
