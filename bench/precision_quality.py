"""nDCG@10 of the model in fp32 and in its fast forms, in process, on a BEIR directory.

`python -m bench.precision_quality /work/shared/data/scifact-dev [--qrels test] [--forms
fp32,bf16,onnx,onnx-int8]`: the check that the fast forms Triton may serve
(core/adapters/triton_model/forms.py: bf16 autocast, ONNX Runtime fp32 and int8, built as
onnx_form.py builds them, into a temporary directory) keep retrieval quality on a real
dataset, beyond the check set the model ships with. Each document is embedded whole (the
model truncates at its max sequence length), in slices of 256 that the forms take in turns,
so load from other work falls on all; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMS = ("fp32", "bf16")  # the default; also onnx, onnx-int8


Qrels = dict[str, dict[str, int]]


def read_beir(root: Path, split: str) -> tuple[list[dict[str, Any]], dict[str, str], Qrels]:
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (root / "queries.jsonl").open(encoding="utf-8"))}
    qrels: Qrels = {}
    for line in (root / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, {})[did] = int(score)
    return corpus, queries, {q: rel for q, rel in qrels.items() if q in queries}


def ndcg_at_10(scores: np.ndarray, doc_ids: list[str], qids: list[str], qrels: Qrels) -> float:
    values = []
    for row, qid in zip(scores, qids, strict=True):
        top = np.argsort(-row)[:10]
        dcg = sum((2 ** qrels[qid].get(doc_ids[d], 0) - 1) / math.log2(r + 2) for r, d in enumerate(top))
        ideal = sorted(qrels[qid].values(), reverse=True)[:10]
        values.append(dcg / sum((2 ** g - 1) / math.log2(r + 2) for r, g in enumerate(ideal)))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--qrels", default="test", help="the qrels split (qrels/<split>.tsv)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forms", default=",".join(FORMS),
                        help="fp32 first, then any of bf16, onnx, onnx-int8")
    args = parser.parse_args()
    forms = [form.strip() for form in args.forms.split(",") if form.strip()]
    if forms[0] != "fp32" or not set(forms) <= {"fp32", "bf16", "onnx", "onnx-int8"}:
        parser.error("--forms: fp32 first, then any of bf16, onnx, onnx-int8")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from core.base_model import default_base_model_dir

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(str(default_base_model_dir()), device="cpu", local_files_only=True)
    corpus, queries, qrels = read_beir(args.dataset, args.qrels)
    texts = [f"{doc.get('title', '')} {doc['text']}".strip() for doc in corpus]
    qids = list(qrels)

    onnx: dict[str, Any] = {}
    if {"onnx", "onnx-int8"} & set(forms):
        import tempfile

        from core.adapters.triton_model import onnx_form

        version_dir = Path(tempfile.mkdtemp(prefix="precision-quality-"))
        onnx_form.build(model, version_dir)
        onnx = {form: onnx_form.OnnxEncoder(model, version_dir, form, args.threads)
                for form in forms if form in onnx_form.FORMS}

    def encode(batch: list[str], form: str) -> np.ndarray:
        if form in onnx:
            return np.asarray(onnx[form].encode(batch, 64))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=form == "bf16")
        with torch.inference_mode(), autocast:
            vectors = model.encode(batch, batch_size=64, convert_to_tensor=True, normalize_embeddings=False)
        return np.asarray(torch.nn.functional.normalize(vectors.float(), dim=1).numpy())

    seconds = dict.fromkeys(forms, 0.0)
    parts: dict[str, list[np.ndarray]] = {form: [] for form in forms}
    for start in range(0, len(texts), 256):
        for form in forms:
            began = time.perf_counter()
            parts[form].append(encode(texts[start:start + 256], form))
            seconds[form] += time.perf_counter() - began
    docs = {form: np.vstack(parts[form]) for form in forms}
    doc_ids = [str(doc["_id"]) for doc in corpus]
    results = {}
    for form in forms:
        scores = encode([queries[q] for q in qids], form) @ docs[form].T
        results[form] = {"ndcg_at_10": round(ndcg_at_10(scores, doc_ids, qids, qrels), 5),
                         "docs_per_s": round(len(texts) / seconds[form], 2)}
    fp32_ndcg = results["fp32"]["ndcg_at_10"]
    print(json.dumps({
        "dataset": str(args.dataset), "qrels": args.qrels, "queries": len(qids), "documents": len(texts),
        "threads": args.threads, "results": results,
        **{f"ndcg_at_10_{form}_minus_fp32": round(results[form]["ndcg_at_10"] - fp32_ndcg, 5)
           for form in forms[1:]},
        **{f"min_cosine_{form}_to_fp32": round(float(np.min(np.sum(docs["fp32"] * docs[form], axis=1))), 6)
           for form in forms[1:]},
        "load_avg_1m": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
