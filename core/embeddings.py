"""Embeddings for clients (`POST /v1/embeddings`, `flywheel embed`): which model version a
request names, its token counts and limits, and the vectors from Triton's query lane."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.adapters.triton_repository import version_dir
from core.base_model import base_model_dir
from core.chunking import tokenizer_for
from core.config import Settings
from core.ports import Embedder, ServedVersions
from core.serving import BASE_SERVING_VERSION, REGISTERED_MODEL_NAME

# Names a client may use instead of a version number.
ALIASES = {
    "active": "the caller's tenant's active version (what search uses)",
    REGISTERED_MODEL_NAME: "the same as `active`",
    "latest": "the newest version with an index (possibly still being built or tested)",
    "base": f"the base model shipped with the stack (version {BASE_SERVING_VERSION})",
}


class UnknownModel(LookupError):
    """The request names no version this tenant may use."""


class InputRejected(ValueError):
    """An input breaks a limit; `field` names it, `reason` says why and what to do."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class EmbeddingLimits:
    max_inputs: int
    max_tokens: int  # per request, all inputs together
    max_input_tokens: int  # per input: the model's sequence length; longer would be truncated


@dataclass(frozen=True)
class ClientEmbeddings:
    vectors: np.ndarray  # (inputs, dim) float32, L2-normalised
    version: str
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


def _owned_by_other(row: dict[str, Any], tenant: str) -> bool:
    owner = row.get("tenant")
    return owner is not None and owner != tenant


async def resolve_version(model: str, tenant: str, versions: ServedVersions) -> tuple[str, int]:
    """The serving version and dimension `model` names for `tenant`: `active` (or the registered
    model's name), `latest` (the newest version that has not failed), `base`, or a version number
    (`3` or `v3`). A failed version is refused; so is one whose record names another tenant
    (versions are shared by every tenant until they carry an owner)."""
    rows = {str(row["version"]): row for row in await versions.list_versions()
            if not _owned_by_other(row, tenant)}
    name = model.strip()
    if name in ("active", REGISTERED_MODEL_NAME):
        version = await versions.active_version()
        if version is None:
            raise UnknownModel("no model version is active yet; index some content first")
    elif name == "latest":
        usable = [v for v, row in rows.items() if row.get("status") != "failed"]
        if not usable:
            raise UnknownModel("no model version has an index yet; index some content first")
        version = max(usable, key=int)
    elif name == "base":
        version = BASE_SERVING_VERSION
    else:
        number = name[1:] if name[:1] in ("v", "V") else name
        if not (number.isascii() and number.isdigit()):
            raise UnknownModel(
                f"model {model!r} is neither a version number nor one of: {', '.join(ALIASES)}")
        version = str(int(number))
    if version not in rows:
        known = ", ".join(sorted(rows, key=int)) or "none"
        raise UnknownModel(f"model version {version} does not exist for this tenant (versions: {known})")
    if rows[version].get("status") == "failed":
        reason = rows[version].get("reason") or "its reindex failed"
        raise UnknownModel(f"model version {version} failed ({reason}); use `active`")
    return version, int(rows[version]["dim"])


def served_model_dir(settings: Settings, version: str | None) -> Path:
    """The weights Triton serves for `version` (from its model repository when it is on this
    machine), else the base model: fine-tuned versions keep the base model's tokenizer."""
    if version is not None:
        served = version_dir(settings.triton_repository, settings.triton_model_name, version) / "model"
        if (served / "modules.json").is_file():
            return served
    return base_model_dir(settings)


def max_sequence_tokens(model_dir: Path) -> int:
    """The tokens the model reads per text (special tokens included); the rest is cut off."""
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        length = json.loads(config.read_text()).get("max_seq_length")
        if length:
            return int(length)
    return int(min(tokenizer_for(model_dir).model_max_length, 512))


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens per text as the model sees them, [CLS] and [SEP] included."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def check_limits(texts: Sequence[str], token_counts: Sequence[int], limits: EmbeddingLimits) -> None:
    """Raise InputRejected naming the first limit the request breaks."""
    if len(texts) > limits.max_inputs:
        raise InputRejected("input", f"{len(texts)} inputs; at most {limits.max_inputs} per request: "
                            "send the rest in further requests")
    for index, tokens in enumerate(token_counts):
        if tokens > limits.max_input_tokens:
            raise InputRejected(
                f"input[{index}]" if len(texts) > 1 else "input",
                f"{tokens} tokens; the model reads at most {limits.max_input_tokens} per input and "
                "would ignore the rest: split the text into shorter pieces")
    total = sum(token_counts)
    if total > limits.max_tokens:
        raise InputRejected("input", f"{total} tokens in all; at most {limits.max_tokens} per request: "
                            "send fewer inputs per request")


async def embed_for_client(
    texts: Sequence[str], version: str, tokenizer: Any, limits: EmbeddingLimits, embedder: Embedder,
) -> ClientEmbeddings:
    """Check the limits, then embed in the query lane (ahead of any bulk indexing)."""
    if len(texts) > limits.max_inputs:  # before tokenizing a huge request
        check_limits(texts, [], limits)
    # Tokenizing up to a request's limit is CPU work: in a worker thread, so the gateway's
    # event loop keeps answering other requests (health checks included) meanwhile.
    counts = await asyncio.to_thread(count_tokens, tokenizer, texts)
    check_limits(texts, counts, limits)
    embedded = await embedder.embed(texts, version, lane="query")
    return ClientEmbeddings(np.asarray(embedded.vectors, dtype=np.float32), version, counts)
