"""`flywheel publish` (events from JSON Lines) and `flywheel load` (a corpus as content-upserted)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from cli.common import Bootstrap, JsonOutput, MaxRate, Progress, bootstrap_or_default, err, fail, out
from producers.bulk import BulkResult, Item, RejectsFile, publish_items, read_json_lines
from producers.loaders import CorpusFormat, FieldMap, count_rows, read_corpus
from producers.publisher import Publisher, PublisherError
from producers.ratelimit import limiter
from schemas.topics import TOPICS, TopicSpec, get_topic

RejectsOption = Annotated[
    Path | None,
    typer.Option("--rejects", help="Where to write rejects (default: <FILE>.rejects.jsonl)."),
]
AllowRejects = Annotated[
    bool, typer.Option("--allow-rejects", help="Exit 0 even when some lines were rejected.")
]
Source = Annotated[str, typer.Option("--source", help="Envelope `source` for events that do not set one.")]


def _bulk(
    spec: TopicSpec, items: Iterable[Item], total: int | None, rejects_path: Path, *,
    bootstrap: str, source: str, max_rate: float | None, progress: bool,
) -> BulkResult:
    async def run() -> BulkResult:
        with (
            tqdm(total=total, unit="ev", desc=spec.name, disable=not progress, file=sys.stderr) as bar,
            RejectsFile(rejects_path) as rejects,
        ):
            async with Publisher(bootstrap, source=source) as publisher:
                return await publish_items(
                    publisher, spec, items, rejects, limit=limiter(max_rate), on_progress=bar.update
                )

    try:
        return asyncio.run(run())
    except PublisherError as error:
        raise fail(str(error)) from error


def _report(result: BulkResult, rejects_path: Path, allow_rejects: bool, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"sent": result.sent, "rejected": result.rejected,
                          "events_per_s": round(result.rate, 1), "elapsed_s": round(result.elapsed_s, 3),
                          "rejects": str(rejects_path) if result.rejected else None}, indent=2))
    else:
        out.print(
            f"sent {result.sent}, rejected {result.rejected}, "
            f"{result.rate:.0f} events/s ({result.elapsed_s:.1f}s)", highlight=False,
        )
    if result.rejected:
        err.print(f"rejects (line number, reason, raw line): {rejects_path}", highlight=False)
        if not allow_rejects:
            raise typer.Exit(1)


def _topic(name: str) -> TopicSpec:
    try:
        return get_topic(name)
    except KeyError:
        raise fail(f"unknown topic {name!r}; known topics: {', '.join(TOPICS)}") from None


def publish(
    topic: Annotated[str, typer.Argument(help=f"One of: {', '.join(TOPICS)}.")],
    file: Annotated[str, typer.Argument(help="JSON Lines file, one event a line; '-' reads stdin.")],
    rejects: RejectsOption = None,
    allow_rejects: AllowRejects = False,
    bootstrap: Bootstrap = None,
    source: Source = "flywheel-cli",
    max_rate: MaxRate = None,
    progress: Progress = True,
    as_json: JsonOutput = False,
) -> None:
    """Validate every line, publish the valid ones, write rejects with their line numbers.

    Envelope fields (event_id, occurred_at, schema_version, type, source) are filled in
    when a line leaves them out. Exits 1 when any line was rejected, unless --allow-rejects.
    """
    spec = _topic(topic)
    if file == "-":
        rejects_path = rejects or Path("stdin.rejects.jsonl")
        result = _bulk(
            spec, read_json_lines(sys.stdin), None, rejects_path,
            bootstrap=bootstrap_or_default(bootstrap), source=source, max_rate=max_rate, progress=progress,
        )
    else:
        path = Path(file)
        if not path.is_file():
            raise fail(f"{path} is not a file")
        rejects_path = rejects or path.with_name(path.name + ".rejects.jsonl")
        with path.open(encoding="utf-8") as handle:
            total = sum(1 for line in handle if line.strip())
        with path.open(encoding="utf-8") as handle:
            result = _bulk(
                spec, read_json_lines(handle), total, rejects_path,
                bootstrap=bootstrap_or_default(bootstrap), source=source, max_rate=max_rate,
                progress=progress,
            )
    _report(result, rejects_path, allow_rejects, as_json)


def load(
    path: Annotated[Path, typer.Argument(help="A BEIR directory, corpus.jsonl, JSON Lines or CSV file.")],
    fmt: Annotated[CorpusFormat, typer.Option("--format", help="Input format.")] = CorpusFormat.AUTO,
    id_field: Annotated[
        str | None, typer.Option("--id-field", help="Field/column of the id (default: _id for BEIR, or id).")
    ] = None,
    title_field: Annotated[str, typer.Option("--title-field", help="Field/column of the title.")] = "title",
    text_field: Annotated[str, typer.Option("--text-field", help="Field/column of the text.")] = "text",
    delimiter: Annotated[
        str | None, typer.Option("--delimiter", help="CSV delimiter (default: , or tab for .tsv).")
    ] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant of every item.")] = "default",
    version: Annotated[int, typer.Option("--version", min=1, help="Item version of every item.")] = 1,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Load only the first N items.")] = None,
    rejects: RejectsOption = None,
    allow_rejects: AllowRejects = False,
    bootstrap: Bootstrap = None,
    source: Source = "flywheel-load",
    max_rate: MaxRate = None,
    progress: Progress = True,
    as_json: JsonOutput = False,
) -> None:
    """Publish a corpus as content-upserted events (other fields/columns become metadata)."""
    fields = FieldMap(id=id_field, title=title_field, text=text_field)
    try:
        total = count_rows(path, fmt)
        items = read_corpus(
            path, fmt, fields, tenant=tenant, version=version, limit=limit, delimiter=delimiter
        )
    except (FileNotFoundError, UnicodeDecodeError) as error:
        raise fail(str(error)) from error
    total = min(total, limit) if limit else total
    base = path / "corpus.jsonl" if path.is_dir() else path
    rejects_path = rejects or Path(base.name + ".rejects.jsonl")  # in the working directory
    result = _bulk(
        get_topic("content-upserted"), items, total, rejects_path,
        bootstrap=bootstrap_or_default(bootstrap), source=source, max_rate=max_rate, progress=progress,
    )
    _report(result, rejects_path, allow_rejects, as_json)
