"""Which form of the model a Triton version serves: the choice, pure (numpy only).

Copied beside model.py into every version directory, with check_set.json. When Triton loads
a version, model.py embeds the check set with each candidate form (fp32; on a CPU bf16
autocast and the ONNX Runtime forms `onnx` (fp32, every graph optimisation) and `onnx-int8`
(int8 dynamic quantization), see onnx_form.py; fp16 on a GPU), times it, and hands the
measurements to `choose`: the fastest form whose
quality holds is served, else fp32, and the decision (with why) is written to
`<version>/serving.json`, which the deployer logs to MLflow and `GET /v1/models` shows.

Quality of a form, against fp32 on the check set:
- nDCG@10 of its ranking of the check documents for the check queries, against the shipped
  labels: at most `max_ndcg_drop` (0.005) below fp32's;
- nDCG@10 of its ranking against fp32's own ranking as the reference (graded by fp32's
  order): at least 1 - `max_ndcg_drop`;
- the smallest cosine between its embedding of a check text and fp32's: at least
  `min_cosine` (the deployer's smoke-test threshold, so what is served passes the smoke test).
Speed (setting `auto`): a faster form is served only when it beats fp32 by `min_speedup`
(1.05x): timing noise never trades exactness for nothing. A setting that names the form
(`bf16`, `fp16`, `onnx`, `onnx-int8`) serves it whenever its quality holds, whatever this
measurement's speed (the operator knows the machine better than a few passes on a busy
one); its speed is recorded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = "fp32"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "onnx", "onnx-int8")
ONNX_FORMS = ("onnx", "onnx-int8")  # ONNX Runtime on a CPU
# How each form is stored and run, for the record (serving.json, MLflow, GET /v1/models).
FORMATS = {"fp32": "pytorch", "bf16": "pytorch", "fp16": "pytorch", "onnx": "onnx", "onnx-int8": "onnx"}
WEIGHTS_DTYPES = {  # autocast computes in the form's dtype from fp32 weights
    "fp32": "float32", "bf16": "float32", "fp16": "float32", "onnx": "float32",
    "onnx-int8": "int8 (MatMul weights, per channel)",
}
MAX_NDCG_DROP = 0.005
MIN_SPEEDUP = 1.05
DEFAULT_MIN_COSINE = 0.999
K = 10
DECISION_FILE = "serving.json"
# Where a version's load writes (decisions, ONNX files): <repo>/.serving/<model>/<version>/.
SERVING_DIR = ".serving"
CHECK_SET_FILE = "check_set.json"


def candidates(precision: str, device: str, bf16_supported: bool = True) -> list[str]:
    """The forms to measure for the setting `precision` on `device` ("cpu", "cuda..."); fp32
    always comes first (the reference). `fp32` measures nothing else; `bf16`, `fp16`, `onnx`,
    `onnx-int8` name the one fast form to check; `auto` takes every fast form of the device
    (a CPU: bf16 where supported, onnx, onnx-int8; a GPU: fp16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    gpu = device.startswith("cuda")
    if precision == "fp32":
        return [REFERENCE]
    if precision == "auto":
        fast = ["fp16"] if gpu else [*(["bf16"] if bf16_supported else []), *ONNX_FORMS]
        return [REFERENCE, *fast]
    if precision == "bf16" and not bf16_supported:
        return [REFERENCE]
    if precision == "fp16" and not gpu:
        return [REFERENCE]  # fp16 matmuls on a CPU are emulated: never faster
    if precision in ONNX_FORMS and gpu:
        return [REFERENCE]  # the ONNX forms run on ONNX Runtime's CPU provider
    return [REFERENCE, precision]


def ndcg_at_k(ranking: Sequence[int], gains: Mapping[int, float], k: int = K) -> float:
    """nDCG@k of `ranking` (document indices, best first) for the graded `gains`."""
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def rankings(queries: np.ndarray, documents: np.ndarray, k: int = K) -> list[list[int]]:
    """For each query vector, the indices of the k documents of highest cosine (normalised
    vectors), best first; ties broken by index so the order is deterministic."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(documents, dtype=np.float64).T
    # A stable sort of the negated scores keeps the lower index first among ties.
    return [[int(d) for d in np.argsort(-row, kind="stable")[:k]] for row in scores]


def labelled_ndcg(ranked: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]], k: int = K) -> float:
    """Mean nDCG@k over the queries against the shipped labels (binary relevance)."""
    pairs = zip(ranked, relevant, strict=True)
    return float(np.mean([ndcg_at_k(r, {d: 1.0 for d in rel}, k) for r, rel in pairs]))


def agreement_ndcg(ranked: Sequence[Sequence[int]], reference: Sequence[Sequence[int]], k: int = K) -> float:
    """Mean nDCG@k of `ranked` with the reference ranking as graded truth (its first
    document gain k, its k-th gain 1)."""
    return float(np.mean([
        ndcg_at_k(r, {d: float(k - i) for i, d in enumerate(ref[:k])}, k)
        for r, ref in zip(ranked, reference, strict=True)
    ]))


def min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    a = np.asarray(vectors, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


@dataclass
class Quality:
    ndcg_at_10: float  # against the labels
    ndcg_at_10_vs_fp32: float  # against fp32's ranking
    min_cosine_to_fp32: float


def quality(
    query_vectors: np.ndarray, doc_vectors: np.ndarray,
    reference_queries: np.ndarray, reference_docs: np.ndarray,
    relevant: Sequence[Sequence[int]],
) -> Quality:
    """A form's quality from its embeddings of the check set and fp32's."""
    ranked = rankings(query_vectors, doc_vectors)
    reference = rankings(reference_queries, reference_docs)
    every = np.vstack([query_vectors, doc_vectors])
    every_ref = np.vstack([reference_queries, reference_docs])
    return Quality(
        ndcg_at_10=round(labelled_ndcg(ranked, relevant), 6),
        ndcg_at_10_vs_fp32=round(agreement_ndcg(ranked, reference), 6),
        min_cosine_to_fp32=round(min_cosine(every, every_ref), 6),
    )


@dataclass
class Decision:
    form: str
    reason: str
    precision: str  # the setting: auto, fp32, bf16, fp16, onnx or onnx-int8
    device: str
    texts_per_s: dict[str, float] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    passed: dict[str, bool] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # each form not served: why
    max_ndcg_drop: float = MAX_NDCG_DROP
    min_cosine: float = DEFAULT_MIN_COSINE
    min_speedup: float = MIN_SPEEDUP
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


def failures(q: Quality, ref: Quality, max_ndcg_drop: float, min_cos: float) -> list[str]:
    """Why a form's quality does not hold (empty: it holds)."""
    why = []
    if q.ndcg_at_10 < ref.ndcg_at_10 - max_ndcg_drop:
        why.append(f"nDCG@10 {q.ndcg_at_10:.4f} is more than {max_ndcg_drop} below "
                   f"fp32's {ref.ndcg_at_10:.4f}")
    if q.ndcg_at_10_vs_fp32 < 1.0 - max_ndcg_drop:
        why.append(f"nDCG@10 against fp32's ranking {q.ndcg_at_10_vs_fp32:.4f} < {1.0 - max_ndcg_drop:.3f}")
    if q.min_cosine_to_fp32 < min_cos:
        why.append(f"min cosine to fp32 {q.min_cosine_to_fp32:.5f} < {min_cos}")
    return why


def choose(
    speeds: Mapping[str, float],
    qualities: Mapping[str, Quality],
    *,
    precision: str = "auto",
    device: str = "cpu",
    max_ndcg_drop: float = MAX_NDCG_DROP,
    min_cos: float = DEFAULT_MIN_COSINE,
    min_speedup: float = MIN_SPEEDUP,
    errors: Mapping[str, str] | None = None,
) -> Decision:
    """The form to serve: the fastest one whose quality holds and (setting `auto`) that beats
    fp32's speed by `min_speedup`; fp32 when none does (or only fp32 was measured). `speeds` are texts/s,
    `qualities` each form's quality against fp32 (fp32's own included); `errors` the forms
    that failed to run at all."""
    if REFERENCE not in speeds or REFERENCE not in qualities:
        raise ValueError("fp32 (the reference) must be measured")
    ref = qualities[REFERENCE]
    passed: dict[str, bool] = {REFERENCE: True}
    refused: dict[str, str] = {}
    for form, error in (errors or {}).items():
        passed[form] = False
        refused[form] = f"{form} failed to run: {error}"
    eligible: list[str] = []
    for form, q in qualities.items():
        if form == REFERENCE or form not in speeds:
            continue
        why = failures(q, ref, max_ndcg_drop, min_cos)
        speedup = speeds[form] / speeds[REFERENCE] if speeds[REFERENCE] > 0 else math.inf
        if not why and precision == "auto" and speedup < min_speedup:
            why.append(f"{speedup:.2f}x fp32's speed, below the {min_speedup}x that justifies it")
        passed[form] = not why
        if why:
            refused[form] = f"{form}: " + "; ".join(why)
        else:
            eligible.append(form)
    if eligible:
        form = max(eligible, key=lambda f: speeds[f])
        q = qualities[form]
        reason = (f"{form}: {speeds[form] / speeds[REFERENCE]:.2f}x fp32's texts/s; "
                  f"nDCG@10 {q.ndcg_at_10:.4f} (fp32 {ref.ndcg_at_10:.4f}), "
                  f"{q.ndcg_at_10_vs_fp32:.4f} against fp32's ranking, "
                  f"min cosine {q.min_cosine_to_fp32:.5f}")
    elif len(speeds) == 1 and not errors:
        form, reason = REFERENCE, f"fp32: the setting is {precision!r}, no other form measured on {device}"
    else:
        form, reason = REFERENCE, "fp32: " + ("; ".join(refused.values()) or "no faster form")
    return Decision(
        form=form, reason=reason, precision=precision, device=device,
        texts_per_s={f: round(s, 2) for f, s in speeds.items()},
        quality={f: asdict(q) for f, q in qualities.items()}, passed=passed, refused=refused,
        max_ndcg_drop=max_ndcg_drop, min_cosine=min_cos, min_speedup=min_speedup,
    )


def work_dir(version_dir: Path) -> Path:
    """The work directory of the version in `version_dir`, `<repo>/<model>_v<N>/<N>`:
    `<repo>/.serving/<model>/<N>` (core.adapters.triton_repository.serving_dir)."""
    model = re.sub(r"_v\d+$", "", version_dir.parent.name)
    return version_dir.parent.parent / SERVING_DIR / model / version_dir.name
