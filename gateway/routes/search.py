"""Search: the shared search function, and the `search` event of a session."""

from __future__ import annotations

from fastapi import APIRouter

from core.ab import choose_version
from core.domain import SearchQuery
from core.search import NoActiveModel, search
from gateway.bodies import SearchRequest, SearchResponse, SearchResultItem
from gateway.deps import EmbedderDep, ExperimentsDep, PublisherDep, Searching, SettingsDep, StoreDep
from gateway.problems import Problem
from schemas.clicks import SearchEvent, ShownResult
from schemas.topics import CLICKS

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search_items(
    body: SearchRequest, who: Searching, store: StoreDep, embedder: EmbedderDep,
    publisher: PublisherDep, settings: SettingsDep, experiments: ExperimentsDep,
) -> SearchResponse:
    if body.k > settings.gateway_max_k:
        raise Problem(422, f"k: at most {settings.gateway_max_k}",
                      errors=[{"field": "k", "reason": f"must be <= {settings.gateway_max_k}"}])
    if len(body.query) > settings.gateway_max_query_chars:
        limit = settings.gateway_max_query_chars
        raise Problem(422, f"query: at most {limit} characters",
                      errors=[{"field": "query", "reason": f"longer than {limit} characters"}])
    # A/B: a session's searches go to the version its bucket picks (core.ab); else active.
    split = await experiments.split()
    version = choose_version(await store.active_version(), split, body.session_id) if split else None
    try:
        result = await search(
            SearchQuery(body.query, body.k, who.tenant, dict(body.filters), body.mode, version),
            store, embedder,
        )
    except NoActiveModel as error:
        raise Problem(409, str(error)) from error
    hits = [SearchResultItem(id=h.id, score=h.score, title=h.title, metadata=h.metadata) for h in result.hits]
    if body.session_id:
        await publisher.publish(CLICKS, SearchEvent(
            tenant=who.tenant, source="gateway", session_id=body.session_id, query=body.query,
            model_version=result.model_version,
            results=[ShownResult(id=h.id, rank=rank, score=h.score) for rank, h in enumerate(hits, 1)],
        ))
    return SearchResponse(results=hits, model_version=result.model_version,
                          took_ms=round(sum(result.timings_ms.values()), 3))
