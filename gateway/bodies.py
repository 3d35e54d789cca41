"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from schemas.envelope import INT64_MAX, reject_nul
from schemas.training import DatasetName, EpochsChoice, RecipeChoice, check_sources

# A model version: a number PostgreSQL's bigint holds (the stores order versions as bigint).
VERSION_PATTERN = r"^[0-9]{1,18}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    _no_nul = field_validator("*", mode="after")(reject_nul)


class ContentItem(Strict):
    id: str = Field(min_length=1, max_length=512)
    title: str = Field(default="", max_length=4096)
    text: str = Field(min_length=1)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    version: int = Field(ge=1, le=INT64_MAX,
                         description="Higher versions replace lower ones; equal or lower are ignored.")
    vector: list[float] | None = Field(default=None, description="A precomputed embedding to import.")
    model_version: str | None = Field(default=None, description="The model version of `vector`.")


class ContentBatch(Strict):
    items: list[ContentItem] = Field(min_length=1)


class Accepted(BaseModel):
    event_ids: list[str]
    accepted: int


class Deleted(BaseModel):
    id: str
    partition: int
    offset: int


class Published(BaseModel):
    event_id: str | None
    topic: str
    partition: int
    offset: int


class SearchRequest(Strict):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, description="Results wanted; at most FLYWHEEL_GATEWAY_MAX_K (100).")
    filters: dict[str, JsonValue] = Field(
        default_factory=dict, description="Metadata that results must contain (equality / containment)."
    )
    mode: Literal["vector", "hybrid"] = "vector"
    session_id: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="Records a `search` event on the clicks topic with the results shown.",
    )


class ScorePart(BaseModel):
    score: float = Field(description="The item's score in this ranking (cosine similarity of its best "
                                     "chunk, or BM25).")
    rank: int = Field(ge=1, description="Its rank in this ranking (of up to 100 candidates).")
    normalised: float = Field(ge=0, le=1, description="Its score min-max normalised over this ranking's "
                                                     "candidates: the part the fused score weighs.")


class ScoreParts(BaseModel):
    vector: ScorePart | None = Field(description="The vector ranking's part; null: not among its candidates.")
    keyword: ScorePart | None = Field(description="The keyword (BM25) ranking's part; null: not among its "
                                                  "candidates (no query term in the item).")


class SearchResultItem(BaseModel):
    id: str
    score: float = Field(description="Vector mode: cosine similarity of the item's best chunk. Hybrid: the "
                                     "fused score in [0, 1]: 0.5 * vector + 0.5 * keyword, each part's score "
                                     "min-max normalised over its 100 candidates (0 where it does not hold "
                                     "the item).")
    title: str
    metadata: dict[str, Any]
    snippet: str | None = Field(
        default=None, description="The text of the item's chunk closest to the query (without the title "
                                  "header), whitespace collapsed, at most 300 characters.")
    score_parts: ScoreParts | None = Field(
        default=None, description="Hybrid only: the vector and keyword rankings' score and rank of the item.")


class SearchResponse(BaseModel):
    results: list[SearchResultItem]
    model_version: str
    took_ms: float
    fusion_weight: float | None = Field(
        default=None, description="Hybrid only: the vector part's share of each score (the keyword part's is "
        "the rest), chosen for the model version by its training run on held-out queries; 0.5 for a "
        "version that chose none.")


class SessionEventIn(Strict):
    type: Literal["click", "conversion"]
    session_id: str = Field(min_length=1, max_length=256)
    content_id: str = Field(min_length=1, max_length=512)
    rank: int | None = Field(default=None, ge=1, le=INT64_MAX, description="Required for clicks.")
    value: float | None = None
    search_event_id: str | None = None


class SessionEvents(Strict):
    events: list[SessionEventIn] = Field(min_length=1)


class TrainingRunRequest(Strict):
    base_version: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    min_sessions: int = Field(default=100, ge=1, le=INT64_MAX)
    recipe: RecipeChoice = None
    epochs: EpochsChoice = None
    gate_margin: float = Field(default=0.0, ge=0.0, le=1.0)
    use_sessions: bool = Field(default=True, description="Learn from the tenant's click sessions.")
    datasets: list[DatasetName] = Field(default_factory=list, max_length=20, description=(
        "The tenant's uploaded datasets (POST /v1/datasets) to learn from."))
    eval_dataset: DatasetName | None = Field(default=None, description=(
        "One of the tenant's datasets held out for the gate, instead of held-out sessions."))

    @model_validator(mode="after")
    def _sources(self) -> TrainingRunRequest:
        check_sources(self.use_sessions, self.datasets, self.eval_dataset)
        return self


class TaskAccepted(BaseModel):
    task_id: str
    status_url: str


class Task(BaseModel):
    id: str
    type: str
    tenant: str | None = None
    status: str
    stage: str | None = None
    progress: float | None = None
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    cancel_requested_at: datetime | None = Field(
        default=None, description="When a cancel was asked for; a running task then stops at its next step.")
    started_at: datetime | None = Field(
        default=None, description="When a worker last started it (training and reindex: taken from the "
                                  "work queue in fair turns between tenants).")
    links: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class ModelVersionInfo(BaseModel):
    version: str
    status: str = Field(description="building, active, retired (complete, not serving) or failed.")
    reason: str | None = Field(default=None, description="Why the version failed (its reindex's error).")
    active: bool
    owner: str | None = Field(
        default=None, description="The tenant whose sessions trained it; null: shared (the base model).")
    dim: int
    created_at: datetime
    activated_at: datetime | None = None
    fusion_weight: float | None = Field(
        default=None, description="The vector part's share of its hybrid scores, chosen by its training "
        "run on held-out queries; null: 0.5 (the base model).")
    metrics: dict[str, float] = Field(default_factory=dict)
    traffic: dict[str, float] = Field(
        default_factory=dict, description="`percent`: the share of session traffic this version serves.")
    searches: int = Field(default=0, description="Searches it served in the online window (sessions).")
    clicked_searches: int = 0
    ctr: float | None = Field(default=None, description="Searches with at least one click / searches.")
    mrr: float | None = Field(default=None, description="Mean reciprocal rank of a search's first click.")
    adjustments: dict[str, Any] = Field(
        default_factory=dict, description="The improver's revision, adjusted chunks and last evaluation.")
    serving: dict[str, Any] | None = Field(
        default=None, description="The form Triton serves this version in (`form`: fp32, bf16, fp16, onnx or "
        "onnx-int8; `format` pytorch or onnx; `size_bytes` on disk) and "
        "why: each candidate's texts/s and quality on the check set against fp32 (nDCG@10 against labels and "
        "against fp32's ranking, min cosine), the weights' size, the setting and device; `query_lane`: the "
        "passed form the query instance serves (fastest on one short text). Measured by the "
        "version when Triton loaded it; null when it wrote no decision.")
    lineage: dict[str, Any] | None = Field(
        default=None, description="Where a fine-tuned version comes from: `training_run` (its task id), "
        "`tenant`, `base_version`, `dataset` (the training data's statistics), `gate` (`decision`, `margin`, "
        "`reason`), `mlflow_run` (a link to the MLflow run), `trained_at`. Null for the base model.")


class ABSplitInfo(BaseModel):
    candidate_version: str
    percent: float = Field(ge=0.0, le=100.0)
    updated_at: datetime | None = None


class ABSplitRequest(Strict):
    candidate_version: str = Field(pattern=VERSION_PATTERN)
    percent: float = Field(ge=0.0, le=100.0)


class ABSplitEndedInfo(BaseModel):
    candidate_version: str
    percent: float
    ended_at: datetime | None = None
    reason: str = Field(description="Ended by an operator, or automatically when its candidate stopped "
                                    "receiving new content.")


class ModelsResponse(BaseModel):
    tenant: str = Field(default="default", description="The tenant whose model lineage this is.")
    active_version: str | None
    versions: list[ModelVersionInfo]
    ab_split: ABSplitInfo | None = None
    ab_split_ended: ABSplitEndedInfo | None = Field(
        default=None, description="The split last ended, while none is in force: when and why.")
    online_window_days: float | None = None
    online_sessions: int | None = Field(default=None, description="Sessions the CTR/MRR were read from.")


class Reverted(BaseModel):
    version: str
    restored_chunks: int
    revision: int


class Activated(BaseModel):
    active_version: str
    previous_version: str | None


class ReindexRequest(Strict):
    model_version: str = Field(pattern=VERSION_PATTERN)
    activate: bool = True


# --- embeddings, as OpenAI's embeddings API --------------------------------------------------
def _is_unicode(text: str) -> bool:
    """False for a string a JSON body can carry but UTF-8 cannot encode (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class EmbeddingsRequest(Strict):
    input: str | list[str] = Field(
        description="One text or a list of texts (token arrays are not accepted: send text).",
        examples=["How do I reset my password?"],
    )
    model: str = Field(
        min_length=1, max_length=128, examples=["active"],
        description="`active` (the tenant's active version, as search uses), `latest`, `base`, the "
        "registered model's name (= `active`) or a version number (`3` or `v3`).",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="`base64`: each vector as little-endian float32 bytes, base64-encoded.")
    dimensions: int | None = Field(
        default=None, ge=1, le=65536,
        description="Accepted when it equals the model's dimension (no truncation).")
    user: str | None = Field(default=None, max_length=256, description="Accepted and ignored.")

    @field_validator("input", mode="before")
    @classmethod
    def _texts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must hold at least one text")
            if any(isinstance(v, (int, list)) for v in value):
                raise ValueError("token arrays are not supported: send the text itself, "
                                 "a string or a list of strings")
            for index, text in enumerate(value):
                if isinstance(text, str) and not text:
                    raise ValueError(f"input[{index}] is empty: every text needs at least one character")
                if isinstance(text, str) and not _is_unicode(text):
                    raise ValueError(f"input[{index}] holds a lone surrogate: send valid Unicode")
        elif value == "":
            raise ValueError("is empty: send at least one character")
        elif isinstance(value, str) and not _is_unicode(value):
            raise ValueError("holds a lone surrogate: send valid Unicode")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of all inputs, by the model's tokenizer.")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str = Field(description="The model version that embedded the inputs (usable as `model`).")
    usage: EmbeddingsUsage


class SourceRequest(Strict):
    """A table to capture; see docs/sources.md."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$", description="Lowercase letters, digits and _.")
    tenant: str | None = Field(default=None, description="Operators only; default: the key's tenant.")
    kind: Literal["postgres", "mysql"] = "postgres"
    dsn: str = Field(min_length=1, max_length=2048,
                     description="postgresql://user:password@host:port/database")
    table: str = Field(max_length=200, description="schema.table, e.g. public.articles")
    id_column: str = Field(max_length=63)
    title_column: str | None = Field(default=None, max_length=63)
    text_columns: list[str] = Field(default_factory=list, max_length=32)
    text_template: str | None = Field(default=None, max_length=4096)
    metadata_columns: list[str] = Field(default_factory=list, max_length=64)
    version_column: str | None = Field(default=None, max_length=63)

