"""The one version convention between MLflow and serving.

Serving version "1" is the base model shipped with the stack (Triton repository version 1,
never registered). Serving version N >= 2 is version N - 1 of the MLflow registered model
`REGISTERED_MODEL_NAME`. Serving versions name the Triton model of the version
(version_model_name: `<model>_v<N>`, with version N as its one version) and the pgvector chunk
table (`chunks_v<N>`).
"""

from __future__ import annotations

import re

REGISTERED_MODEL_NAME = "flywheel-embedder"
BASE_SERVING_VERSION = "1"

# The embedder's tensors in Triton: a batch of UTF-8 strings in, float32 vectors out.
TRITON_INPUT = "TEXT"
TRITON_OUTPUT = "EMBEDDING"

# One Triton model per version: Triton reloads every version of a model whose directory changed,
# so with all versions in one model each deploy, park or removal reloaded all of them.
VERSION_MODEL_INFIX = "_v"

# Lanes through Triton: single queries (search, /v1/embeddings) go to the query model, a
# second Triton model over the same version directory with an instance of its own, so they
# never wait for a bulk batch in execution; on a CPU the bulk instances run at a lower CPU
# priority (`nice`). Within a model, the dynamic batcher serves priority 1 before 2; requests
# without a priority are bulk.
QUERY_PRIORITY = 1
BULK_PRIORITY = 2
PRIORITY_LEVELS = 2
QUERY_MODEL_SUFFIX = "_query"


def query_model_name(model_name: str) -> str:
    """The Triton model of the query lane beside `model_name` (the bulk model)."""
    return f"{model_name}{QUERY_MODEL_SUFFIX}"


def version_model_name(model_name: str, version: int | str) -> str:
    """The Triton model (bulk lane) that serves version `version` of the embedder `model_name`."""
    return f"{model_name}{VERSION_MODEL_INFIX}{version}"


def served_version(model_name: str, triton_model: str) -> int | None:
    """The version a Triton model of either lane serves, if it is one of `model_name`'s."""
    found = re.fullmatch(rf"{re.escape(model_name)}{VERSION_MODEL_INFIX}(\d+)(?:{QUERY_MODEL_SUFFIX})?",
                         triton_model)
    return int(found.group(1)) if found else None


def bulk_version(model_name: str, triton_model: str) -> int | None:
    """The version whose bulk model `triton_model` is, if it is one (not a query model)."""
    version = served_version(model_name, triton_model)
    if version is None or triton_model != version_model_name(model_name, version):
        return None
    return version


def serving_version(registry_version: int) -> str:
    """The serving version of MLflow registered model version `registry_version`."""
    if registry_version < 1:
        raise ValueError(f"registry versions start at 1, not {registry_version}")
    return str(registry_version + 1)


def registry_version(serving: str) -> int | None:
    """The MLflow registered model version behind a serving version; None for the base model."""
    if not serving.isdigit() or int(serving) < 1:
        raise ValueError(f"serving versions are positive integers, not {serving!r}")
    number = int(serving)
    return None if number == 1 else number - 1
