"""`flywheel search`: the same search function the gateway serves, from a terminal."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import fail, out
from core.bootstrap import build_embedder, build_store
from core.config import get_settings
from core.domain import SearchQuery, SearchResult
from core.search import NoActiveModel
from core.search import search as run_search


def parse_filters(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON (numbers, true, lists) is taken as JSON."""
    filters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"bad filter {pair!r}: expected key=value")
        try:
            filters[key] = json.loads(value)
        except json.JSONDecodeError:
            filters[key] = value
    return filters


async def _search(query: SearchQuery) -> SearchResult:
    settings = get_settings()
    store = await build_store(settings)
    embedder = build_embedder(settings)
    try:
        return await run_search(query, store, embedder)
    finally:
        await store.close()
        await embedder.close()


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="How many results.")] = 10,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", help="Metadata filter key=value (repeatable).")
    ] = None,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="Fuse full-text and vector ranking.")] = False,
    tenant: Annotated[str, typer.Option("--tenant", help="Whose items to search.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Semantic (or hybrid) search over the active index."""
    try:
        parsed = parse_filters(filters or [])
    except ValueError as error:
        raise fail(str(error)) from error
    request = SearchQuery(query, k, tenant, parsed, "hybrid" if hybrid else "vector")
    try:
        result = asyncio.run(_search(request))
    except NoActiveModel as error:
        raise fail(str(error), 1) from error
    if as_json:
        print(json.dumps({
            "results": [
                {"id": h.id, "score": h.score, "title": h.title, "metadata": h.metadata} for h in result.hits
            ],
            "model_version": result.model_version,
            "mode": result.mode,
            "took_ms": round(sum(result.timings_ms.values()), 2),
        }, indent=2))
        return
    table = Table("#", "score", "id", "title", title=f"model version {result.model_version}, {result.mode}")
    for rank, hit in enumerate(result.hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, hit.title)
    out.print(table)
