"""Search: the shared search function, and the `search` event of a session."""

from __future__ import annotations

import math
import time

from fastapi import APIRouter

from core.ab import choose_version
from core.bootstrap import build_chunker
from core.config import Settings
from core.domain import SearchQuery
from core.metrics import SEARCH_SECONDS
from core.search import NoActiveModel, search
from core.snippets import Snippets
from gateway.bodies import SearchRequest, SearchResponse, SearchResultItem
from gateway.deps import EmbedderDep, ExperimentsDep, PublisherDep, Searching, SettingsDep, StoreDep
from gateway.problems import Problem
from gateway.tenancy import TenantQuery, acting_tenant
from schemas.clicks import SearchEvent, ShownResult
from schemas.topics import CLICKS

router = APIRouter(prefix="/v1", tags=["search"])


def _unprocessable(field: str, reason: str) -> Problem:
    return Problem(422, f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def check_request(body: SearchRequest, max_k: int, max_query_chars: int) -> None:
    """The limits that are settings, a query with words, and filters without operators."""
    if body.k > max_k:
        raise _unprocessable("k", f"must be <= {max_k} (FLYWHEEL_GATEWAY_MAX_K), got {body.k}")
    if len(body.query) > max_query_chars:
        raise _unprocessable("query", f"longer than {max_query_chars} characters "
                                      f"(FLYWHEEL_GATEWAY_MAX_QUERY_CHARS): shorten it")
    if not body.query.strip():
        raise _unprocessable("query", "is only whitespace: send at least one word")
    wrong = _filter_mistake(body.filters, "filters")
    if wrong is not None:
        raise _unprocessable(*wrong)


def _filter_mistake(value: object, path: str) -> tuple[str, str] | None:
    """The first key that looks like a query operator (`$gt`, `$in`, ...), or number JSON cannot
    hold (NaN, Infinity), with where it is and what to do."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.startswith("$"):
                return path, (f"unknown operator {key!r}: filters match metadata by equality or "
                              'containment only, e.g. {"year": 2001} or {"tags": ["a"]}')
            found = _filter_mistake(inner, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found = _filter_mistake(inner, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(value, float) and not math.isfinite(value):
        return path, f"{value} is not a number metadata can hold: send a finite number"
    return None


_snippets: list[tuple[Settings, Snippets]] = []


def snippets_for(settings: Settings) -> Snippets:
    """One Snippets per gateway's settings (its chunker, as the indexer's, built on first need)."""
    for known, found in _snippets:
        if known is settings:
            return found
    made = Snippets(lambda: build_chunker(settings))
    _snippets[:] = [*_snippets[-3:], (settings, made)]
    return made


@router.post("/search", response_model=SearchResponse)
async def search_items(
    body: SearchRequest, who: Searching, store: StoreDep, embedder: EmbedderDep,
    publisher: PublisherDep, settings: SettingsDep, experiments: ExperimentsDep,
    tenant: TenantQuery = None,
) -> SearchResponse:
    """The tenant's top k items, each with its title, metadata and the snippet of its chunk
    closest to the query; hybrid results also with the vector and keyword parts of their score.
    An operator key searches as another tenant with `?tenant=`."""
    check_request(body, settings.gateway_max_k, settings.gateway_max_query_chars)
    tenant = acting_tenant(who, tenant, "items")
    # The tenant's lineage: its active version, or for a session its A/B split's candidate
    # when the session's bucket picks it (core.ab).
    lineage = store.for_tenant(tenant)
    split = await experiments.split(tenant)
    version = choose_version(await lineage.active_version(), split, body.session_id) if split else None
    started = time.perf_counter()
    try:
        result = await search(
            SearchQuery(body.query, body.k, tenant, dict(body.filters), body.mode, version),
            lineage, embedder, snippets_for(settings),
        )
    except NoActiveModel as error:
        raise Problem(409, str(error)) from error
    SEARCH_SECONDS.labels(body.mode).observe(time.perf_counter() - started)
    hits = [SearchResultItem.model_validate(vars(h)) for h in result.hits]
    if body.session_id:
        await publisher.publish(CLICKS, SearchEvent(
            tenant=tenant, source="gateway", session_id=body.session_id, query=body.query,
            model_version=result.model_version,
            results=[ShownResult(id=h.id, rank=rank, score=h.score) for rank, h in enumerate(hits, 1)],
        ))
    return SearchResponse(results=hits, model_version=result.model_version,
                          took_ms=round(sum(result.timings_ms.values()), 3),
                          fusion_weight=result.fusion_weight)
