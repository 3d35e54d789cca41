"""One valid example of every event type (payload fields only; the envelope is filled in).

Used by the documentation and the tests.
"""

from __future__ import annotations

from typing import Any

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "content-upserted": [
        {"id": "doc-42", "title": "Return policy", "text": "Items can be returned within 30 days.",
         "metadata": {"lang": "en", "category": "help"}, "version": 3},
        {"id": "doc-43", "text": "Imported with its embedding.", "version": 1, "tenant": "acme",
         "vector": [0.12, -0.03, 0.44], "model_version": "base-v1"},
    ],
    "clicks": [
        {"type": "search", "session_id": "s-9f2", "query": "return an item", "model_version": "base-v1",
         "results": [{"id": "doc-42", "rank": 1, "score": 0.83}, {"id": "doc-7", "rank": 2, "score": 0.71}]},
        {"type": "click", "session_id": "s-9f2", "content_id": "doc-42", "rank": 1},
        {"type": "conversion", "session_id": "s-9f2", "content_id": "doc-42", "value": 19.9},
    ],
    "training-requested": [
        {"run_id": "nightly-2024-05-01", "since": "2024-04-01T00:00:00Z", "until": "2024-05-01T00:00:00Z",
         "min_sessions": 200, "epochs": 1, "gate_margin": 0.005},
    ],
    "model-published": [
        {"model_version": "ft-2024-05-01", "registry_version": 4, "metrics": {"ndcg_at_10": 0.412},
         "artifact_uri": "mlflow-artifacts:/1/4f1c/artifacts/model", "run_id": "nightly-2024-05-01",
         "base_version": "base-v1"},
    ],
    "reindex-requested": [{"model_version": "ft-2024-05-01"}],
}
