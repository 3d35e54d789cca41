"""Embeddings as OpenAI's embeddings API, by the caller's tenant's model, through Triton's query
lane: any OpenAI client works with `base_url=<gateway>/v1` and an API key of this gateway."""

from __future__ import annotations

import asyncio
import base64
from functools import lru_cache
from pathlib import Path

import numpy as np
from fastapi import APIRouter
from tritonclient.utils import InferenceServerException

from core.adapters.triton_embedder import EmbedderUnavailable
from core.chunking import tokenizer_for
from core.embeddings import (
    EmbeddingLimits,
    InputRejected,
    UnknownModel,
    embed_for_client,
    max_sequence_tokens,
    resolve_version,
    served_model_dir,
)
from gateway.bodies import EmbeddingData, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage
from gateway.deps import EmbedderDep, Searching, SettingsDep, StoreDep
from gateway.problems import Problem

router = APIRouter(prefix="/v1", tags=["embeddings"])


@lru_cache(maxsize=8)
def _max_input_tokens(model_dir: Path) -> int:
    return max_sequence_tokens(model_dir)


def encode_base64(vector: np.ndarray) -> str:
    """Little-endian float32 bytes, base64: what OpenAI clients decode."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.post("/embeddings", response_model=EmbeddingsResponse)
async def create_embeddings(
    body: EmbeddingsRequest, who: Searching, store: StoreDep, embedder: EmbedderDep, settings: SettingsDep,
) -> EmbeddingsResponse:
    """Vectors for one text or a list of texts, as OpenAI's `POST /v1/embeddings` returns them
    (`encoding_format` `float` or `base64`); `usage` counts tokens with the model's tokenizer.
    Limits: `FLYWHEEL_GATEWAY_EMBEDDINGS_MAX_INPUTS` texts and
    `FLYWHEEL_GATEWAY_EMBEDDINGS_MAX_TOKENS` tokens per request, and the model's sequence length
    per text (a longer text is refused, not silently cut)."""
    try:
        version, dim = await resolve_version(body.model, who.tenant, store.for_tenant(who.tenant))
    except UnknownModel as error:
        raise Problem(404, str(error), errors=[{"field": "model", "reason": str(error)}]) from error
    if body.dimensions is not None and body.dimensions != dim:
        reason = f"model version {version} has {dim} dimensions; omit `dimensions` or send {dim}"
        raise Problem(422, f"dimensions: {reason}", errors=[{"field": "dimensions", "reason": reason}])
    model_dir = served_model_dir(settings, version)
    tokenizer = await asyncio.to_thread(tokenizer_for, model_dir)
    limits = EmbeddingLimits(settings.gateway_embeddings_max_inputs, settings.gateway_embeddings_max_tokens,
                             _max_input_tokens(model_dir))
    try:
        result = await embed_for_client(body.texts, version, tokenizer, limits, embedder)
    except InputRejected as error:
        raise Problem(422, str(error), errors=[{"field": error.field, "reason": error.reason}]) from error
    except EmbedderUnavailable as error:
        raise Problem(503, f"Triton is unavailable: {error}", headers={"Retry-After": "5"}) from error
    except InferenceServerException as error:  # e.g. a retired version Triton no longer serves
        raise Problem(409, f"model version {version} is not served by Triton now: {error.message()}",
                      errors=[{"field": "model", "reason": "not served now; use `active`"}]) from error
    if body.encoding_format == "base64":
        data = [EmbeddingData(index=i, embedding=encode_base64(v)) for i, v in enumerate(result.vectors)]
    else:
        data = [EmbeddingData(index=i, embedding=v) for i, v in enumerate(result.vectors.tolist())]
    return EmbeddingsResponse(data=data, model=result.version,
                              usage=EmbeddingsUsage(prompt_tokens=result.total_tokens,
                                                    total_tokens=result.total_tokens))
