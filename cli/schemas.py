"""`flywheel schemas list|show|export`: the topics, JSON Schema per topic and the AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import JsonOutput, err, fail, out
from core.config import REPO_ROOT
from schemas.export import stale_docs, topic_json_schema, write_docs
from schemas.topics import TOPICS, get_topic

app = typer.Typer(help="Event contracts: list topics, show or export JSON Schema and AsyncAPI.",
                  no_args_is_help=True)


@app.command("list")
def list_topics(as_json: JsonOutput = False) -> None:
    """The registered topics: key, partitions, cleanup policy, retention, event types."""
    rows = [{"topic": s.name, "key": s.key_field, "partitions": s.partitions, "cleanup": s.cleanup_policy,
             "retention_ms": s.retention_ms, "events": [e.event_type() for e in s.events],
             "description": s.description} for s in TOPICS.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    for column in ("topic", "key", "partitions", "cleanup", "events"):
        table.add_column(column, overflow="fold")
    for spec in TOPICS.values():
        table.add_row(spec.name, spec.key_field, str(spec.partitions), spec.cleanup_policy,
                      ", ".join(e.event_type() for e in spec.events))
    out.print(table)


@app.command("show")
def show(
    topic: Annotated[str, typer.Argument(help=f"One of: {', '.join(TOPICS)}.")],
    as_json: JsonOutput = False,
) -> None:
    """The topic's JSON Schema (always JSON; --json is accepted for the common grammar)."""
    try:
        spec = get_topic(topic)
    except KeyError:
        raise fail(f"unknown topic {topic!r}; topics: {', '.join(TOPICS)}") from None
    print(json.dumps(topic_json_schema(spec), indent=2))


@app.command("export")
def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Docs directory.")] = REPO_ROOT / "docs",
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the files are stale.")
    ] = False,
    as_json: JsonOutput = False,
) -> None:
    """Write docs/schemas/<topic>.json and docs/asyncapi.json (deterministic output)."""
    if check:
        stale = stale_docs(out_dir)
        if as_json:
            print(json.dumps({"stale": [str(p) for p in stale]}))
        for path in stale:
            err.print(f"stale: {path}", highlight=False)
        if stale:
            err.print("run `flywheel schemas export` and commit the result")
            raise typer.Exit(1)
        if not as_json:
            out.print("schema docs are up to date")
        return
    written = write_docs(out_dir)
    if as_json:
        print(json.dumps({"written": [str(p) for p in written]}))
        return
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    if not written:
        out.print("schema docs are up to date")
