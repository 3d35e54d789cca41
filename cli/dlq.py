"""`flywheel dlq list|show|redrive`: what consumers could not process, and sending it back."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import Bootstrap, bootstrap_or_default, fail, out
from kafka_ops import dead_letter_queue as dlq

app = typer.Typer(help="Dead-letter topics: list, inspect, redrive.", no_args_is_help=True)
TopicOption = Annotated[str | None, typer.Option("--topic", "-t", help="Only this topic (or its .dlq).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _topics(topic: str | None) -> list[str]:
    try:
        return dlq.dlq_topics(topic)
    except ValueError as error:
        raise fail(str(error)) from error


@app.command("list")
def list_letters(
    topic: TopicOption = None, bootstrap: Bootstrap = None, as_json: AsJson = False,
    limit: Annotated[int, typer.Option(
        "--limit", min=0, max=200, help="Letters shown per topic, as the API's `letters`.")] = 10,
) -> None:
    """Dead letters per topic: how many, how many not yet redriven, and the latest reasons."""
    server = bootstrap_or_default(bootstrap)
    summaries = asyncio.run(dlq.summarize(server, _topics(topic)))
    letters = {s.topic: asyncio.run(dlq.read_letters(server, s.topic, limit)) if s.total and limit else []
               for s in summaries}
    if as_json:
        print(json.dumps([{
            "topic": s.topic, "total": s.total, "pending": s.pending,
            "letters": [{"partition": x.partition, "offset": x.offset, "key": x.key, "error": x.error,
                         "original": x.original} for x in letters[s.topic]],
        } for s in summaries], indent=2))
        return
    table = Table("dead-letter topic", "letters", "not redriven")
    for s in summaries:
        table.add_row(s.topic, str(s.total), str(s.pending))
    out.print(table)
    for s in summaries:
        if letters[s.topic]:
            detail = Table("partition@offset", "key", "from", "error", title=s.topic)
            for x in letters[s.topic]:
                detail.add_row(f"{x.partition}@{x.offset}", x.key or "", x.original, x.error[:120])
            out.print(detail)


@app.command("show")
def show(
    topic: Annotated[str, typer.Argument(help="The topic or its .dlq.")],
    position: Annotated[str, typer.Argument(help="PARTITION@OFFSET of the letter.")],
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """One letter: its headers (error, stack, origin, attempts) and its value."""
    partition, sep, offset = position.partition("@")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise fail(f"bad position {position!r}: expected PARTITION@OFFSET, e.g. 0@42")
    [name] = _topics(topic)
    server = bootstrap_or_default(bootstrap)
    found = asyncio.run(dlq.read_letters(server, name, 1, int(partition), int(offset)))
    if not found or found[0].offset != int(offset):
        raise fail(f"no letter at {name} {position}", 1)
    letter = found[0].as_dict()
    if as_json:
        print(json.dumps(letter, indent=2))
        return
    for field in ("topic", "partition", "offset", "timestamp_ms", "key"):
        out.print(f"{field}: {letter.get(field)}", highlight=False)
    for header, value in (letter.get("headers") or {}).items():
        out.print(f"header {header}: {value}", highlight=False)
    out.print("value:", highlight=False)
    print(letter.get("value"))


@app.command("redrive")
def redrive(
    topic: Annotated[str, typer.Argument(help="The topic whose dead letters go back to it.")],
    bootstrap: Bootstrap = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be sent.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    as_json: AsJson = False,
) -> None:
    """Republish not-yet-redriven letters to their original topic (resumable)."""
    [name] = _topics(topic)
    sent: list[dict[str, object]] = []

    def show_letter(letter: dlq.Letter) -> None:
        sent.append({"partition": letter.partition, "offset": letter.offset, "key": letter.key,
                     "original": letter.original})
        if not as_json:
            verb = "would send" if dry_run else "sent"
            out.print(f"{verb} {letter.partition}@{letter.offset} key={letter.key} -> {letter.original}")

    count = asyncio.run(dlq.redrive(
        bootstrap_or_default(bootstrap), name, dry_run=dry_run, limit=limit, on_letter=show_letter))
    if as_json:
        print(json.dumps({"topic": name, "redriven": count, "dry_run": dry_run, "letters": sent}, indent=2))
        return
    out.print(f"{'would redrive' if dry_run else 'redrove'} {count} letter(s) from {name}")
