"""`flywheel search`: the same search function the gateway serves, from a terminal."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import JsonOutput, fail, out
from core.bootstrap import build_embedder, build_store
from core.config import Settings, get_settings
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
        return await run_search(query, store.for_tenant(query.tenant), embedder)
    finally:
        await store.close()
        await embedder.close()


class Mode(StrEnum):
    vector = "vector"
    hybrid = "hybrid"


# As the API: POST /v1/search caps k at FLYWHEEL_GATEWAY_MAX_K and the query's length.
MAX_K = Settings.model_fields["gateway_max_k"].default
MAX_QUERY_CHARS = Settings.model_fields["gateway_max_query_chars"].default


def search(
    query: Annotated[str, typer.Argument(help=f"What to look for (at most {MAX_QUERY_CHARS} characters).")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="How many results, as the API's `k`.")
                 ] = 10,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", help="Metadata filter key=value (repeatable).")
    ] = None,
    mode: Annotated[Mode, typer.Option(
        "--mode", help="vector, or hybrid: full-text and vector ranking fused (as the API's `mode`).")
    ] = Mode.vector,
    hybrid: Annotated[bool, typer.Option("--hybrid", hidden=True, help="Same as --mode hybrid.")] = False,
    tenant: Annotated[str, typer.Option("--tenant", help="Whose items to search.")] = "default",
    as_json: JsonOutput = False,
) -> None:
    """Semantic (or hybrid) search over the active index, as POST /v1/search."""
    if not query.strip():
        raise fail("QUERY is only whitespace: give at least one word")
    if len(query) > MAX_QUERY_CHARS:
        raise fail(f"QUERY: at most {MAX_QUERY_CHARS} characters, as the API")
    try:
        parsed = parse_filters(filters or [])
    except ValueError as error:
        raise fail(str(error)) from error
    request = SearchQuery(query, k, tenant, parsed, "hybrid" if hybrid else mode.value)
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
            "fusion_weight": result.fusion_weight,
            "took_ms": round(sum(result.timings_ms.values()), 2),
        }, indent=2))
        return
    how: str = result.mode
    if result.fusion_weight is not None:
        how += f" (vector weight {result.fusion_weight:g})"
    table = Table("#", "score", "id", "title", title=f"model version {result.model_version}, {how}")
    for rank, hit in enumerate(result.hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.id, hit.title)
    out.print(table)
