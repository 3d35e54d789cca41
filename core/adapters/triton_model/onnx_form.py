"""ONNX Runtime forms of a sentence-transformers model (CPU): `onnx` (fp32) and `onnx-int8`.

Copied beside model.py into every version directory and loaded by it by path. The model's
transformer is exported once per version with torch.onnx (its last hidden state, from the
tokenizer's tensors) into `<version>/onnx/model.onnx`; `onnx-int8` is that graph with its
MatMul weights quantized to int8 per channel (onnxruntime.quantization.quantize_dynamic),
`<version>/onnx/model_int8.onnx`. A reload finds both there and exports nothing.

Tokenization stays here (the model's own tokenizer, its max_seq_length), and the pooling and
normalisation that follow the transformer in the SentenceTransformer (mean or CLS pooling, then
L2 normalisation) run in NumPy, so a form returns what the fp32 SentenceTransformer returns up
to its arithmetic. A model with other modules (a Dense layer, another pooling) has no ONNX form:
`unsupported` says why and the form is recorded as one that could not run.

Sessions run with every graph optimisation (ORT_ENABLE_ALL) and the intra-op threads torch was
given; nothing here reaches a hub.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

FORMS = ("onnx", "onnx-int8")
ONNX_SUBDIR = "onnx"
FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
BUILD_FILE = "build.json"
OPSET = 17
POOLINGS = ("mean", "cls")


def available() -> bool:
    """Whether ONNX Runtime (and its quantizer) can be imported here."""
    try:
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def _modules(model: Any) -> list[Any]:
    return [model[i] for i in range(len(model))]


def linear_map(model: Any) -> np.ndarray | None:
    """The matrix `W` of a model ending Normalize -> Dense (no bias, identity) -> Normalize (the
    trainer's linear-map recipe), applied as `x @ W`; None for any other model."""
    try:
        modules = _modules(model)
    except (TypeError, IndexError, KeyError):
        return None
    if [type(m).__name__ for m in modules[-3:]] != ["Normalize", "Dense", "Normalize"]:
        return None
    linear = getattr(modules[-2], "linear", None)
    activation = getattr(modules[-2], "activation_function", None)
    if linear is None or linear.bias is not None or type(activation).__name__ != "Identity":
        return None
    return np.ascontiguousarray(linear.weight.detach().cpu().numpy().T, dtype=np.float32)


def pooling_mode(model: Any) -> str | None:
    """`mean` or `cls` when the model is Transformer -> Pooling (that mode) [-> Normalize]
    [-> a linear map -> Normalize]."""
    try:
        modules = _modules(model)
    except (TypeError, IndexError, KeyError):  # not a SentenceTransformer's module list
        return None
    names = [type(m).__name__ for m in modules]
    if names[3:] and linear_map(model) is not None:
        names = names[:3]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return None
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers >= 6: a str (or a tuple)
    if hasattr(pooling, "get_pooling_mode_str"):  # older: flags, and this
        mode = pooling.get_pooling_mode_str()
    return mode if isinstance(mode, str) and mode in POOLINGS else None


def unsupported(model: Any) -> str | None:
    """Why this model has no ONNX form (None: it has one)."""
    if not available():
        return "onnxruntime is not installed where Triton runs"
    if pooling_mode(model) is None:
        return (f"{type(model).__name__} is not Transformer -> Pooling (mean or cls) [-> Normalize] "
                "[-> Dense (no bias) -> Normalize], "
                "the modules an ONNX form reproduces")
    return None


def _traceable(auto_model: Any, names: list[str]) -> Any:
    """The transformer as a module of positional tensors (the tokenizer's, in `names` order)
    returning its last hidden state: what torch.onnx traces."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = auto_model

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    return LastHiddenState().eval()


def _tokenize(model: Any, texts: list[str], kind: str) -> dict[str, Any]:
    return dict(model[0].tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length,
                                   return_tensors=kind))


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def build(model: Any, work_dir: Path) -> dict[str, Any]:
    """Export the fp32 graph and quantize it into `<work_dir>/onnx/` unless already there (the
    caller holds the version's lock). Returns build.json: files, sizes, seconds, cached."""
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = work_dir / ONNX_SUBDIR
    paths = {form: out / name for form, name in FILES.items()}
    record_path = out / BUILD_FILE
    if all(p.is_file() for p in paths.values()) and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        return {**record, "cached": True}
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    sample = _tokenize(model, ["an example sentence to trace", "a second, longer example sentence"], "pt")
    names = list(sample)
    wrapped = _traceable(model[0].auto_model, names)
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on branches fixed by the trace
        _atomic(paths["onnx"], lambda tmp: torch.onnx.export(
            wrapped, tuple(sample[n] for n in names), str(tmp), input_names=names,
            output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=OPSET,
            do_constant_folding=True, dynamo=False))
    exported = time.perf_counter()
    # MatMul only, per channel: quantizing the embeddings (Gather) or per tensor costs far
    # more quality on MiniLM-like models than it gains.
    _atomic(paths["onnx-int8"], lambda tmp: quantize_dynamic(
        str(paths["onnx"]), str(tmp), op_types_to_quantize=["MatMul"], per_channel=True,
        weight_type=QuantType.QInt8))
    record = {
        "inputs": names, "opset": OPSET, "pooling": pooling_mode(model),
        "files": {form: f"{ONNX_SUBDIR}/{p.name}" for form, p in paths.items()},
        "size_bytes": {form: p.stat().st_size for form, p in paths.items()},
        "export_seconds": round(exported - began, 3),
        "quantize_seconds": round(time.perf_counter() - exported, 3),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
    }
    _atomic(record_path, lambda tmp: tmp.write_text(json.dumps(record, indent=1), encoding="utf-8"))
    return {**record, "cached": False}


class OnnxEncoder:
    """One ONNX form of the model: tokenizer -> ONNX Runtime session -> pooling -> L2 norm
    [-> its linear map -> L2 norm]."""

    def __init__(self, model: Any, work_dir: Path, form: str, threads: int) -> None:
        import onnxruntime as ort

        if form not in FORMS:
            raise ValueError(f"not an ONNX form: {form!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        path = work_dir / ONNX_SUBDIR / FILES[form]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.model = model
        self.pooling = pooling_mode(model)
        self.linear_map = linear_map(model)
        self.form = form

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """L2-normalised float32 embeddings, `batch_size` texts per session run."""
        # Longest first, as SentenceTransformer.encode does: batches of like lengths pad little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        out: list[np.ndarray] = []
        for start in range(0, len(ordered), batch_size):
            tokens = _tokenize(self.model, ordered[start:start + batch_size], "np")
            feeds = {name: np.asarray(tokens[name], dtype=np.int64) for name in self.inputs}
            hidden = self.session.run(None, feeds)[0].astype(np.float32)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = feeds["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled)
        if not out:
            width = self.session.get_outputs()[0].shape[-1]
            return np.zeros((0, width if isinstance(width, int) else 0), dtype=np.float32)
        vectors = np.vstack(out)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if self.linear_map is not None:
            vectors = vectors @ self.linear_map
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors[order] = vectors.copy()
        return np.ascontiguousarray(vectors, dtype=np.float32)
