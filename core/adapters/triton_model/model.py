"""Triton Python-backend model: sentence-transformers embeddings, L2-normalised float32.

Copied into `<repository>/<model>/<version>/model.py`; the weights sit beside it in `model/`.
Runs inside triton_python_backend_stub: locally in the environment infra.triton_dist.write_stub_env
makes (the platform's venv, with NumPy 1 first), under compose in the image of infra/Dockerfile.triton.
On a GPU when Triton placed the instance there (kind GPU, or MODEL when torch sees one).

The form it serves (fp32; on a CPU bf16 autocast, ONNX Runtime `onnx` and `onnx-int8`; fp16
on a GPU) is chosen when the version loads, on this machine: forms.py measures each
candidate's speed and its quality against fp32 on check_set.json (both shipped beside this
file) and picks; the decision is written to serving.json in the version directory. The ONNX
forms are exported once per version into `<version>/onnx/` by onnx_form.py (also beside this
file); tokenization, pooling and normalisation stay here, so clients still send text. The
config parameter `precision` (auto, fp32, bf16, fp16, onnx, onnx-int8) restricts the
candidates; `min_cosine` is the deployer's smoke-test threshold. A form runs at the speed of the
model's architecture, not its weights: a version whose architecture another version already
timed in the same server takes those speeds (`speeds_from`) and only checks quality, fastest
form first, so a rollout loads in seconds. The same files serve both
lanes (core.serving): the query model's versions link here, and its instance reads the
decision the bulk one wrote. Parameter `nice` (bulk lane, CPU only) lowers this instance's CPU
priority, so a query's instance is scheduled first on shared cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Weights are always local; never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from sentence_transformers import SentenceTransformer

MODEL_SUBDIR = "model"
HERE = Path(__file__).resolve().parent
TIMED_ROUNDS = 4


def _load_beside(name: str) -> Any:
    """`name`.py of this version directory (beside this file), by path: no sys.path games."""
    unique = f"flywheel_{name}_{abs(hash(str(HERE)))}"
    spec = importlib.util.spec_from_file_location(unique, HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


forms = _load_beside("forms")
onnx_form = _load_beside("onnx_form")
# What loading this version writes (its serving decisions, its ONNX files) goes outside the
# model's directory, to <repo>/.serving/<model>/<version>/: Triton reloads a model whose
# directory changed in any way since the last load. The versions of the embedder share the
# parent, so a later version finds the speeds an earlier one measured (sibling_speeds).
# (HERE is resolved: the query model's link shares it.)
WORK = forms.work_dir(HERE)


def parameter(config: dict[str, Any], name: str, default: str) -> str:
    return str(config.get("parameters", {}).get(name, {}).get("string_value", "") or default)


@contextlib.contextmanager
def serving_form(form: str, device: str) -> Iterator[None]:
    """Autocast for `form` (fp32: none)."""
    if form == "fp32":
        yield
        return
    dtype = torch.bfloat16 if form == "bf16" else torch.float16
    with torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=dtype):
        yield


def encode(model: Any, texts: list[str], form: str, device: str, batch_size: int) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` with the model in `form` (the pooled output
    is normalised in fp32 whatever the form computed it in)."""
    with torch.inference_mode(), serving_form(form, device):
        vectors = model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                               normalize_embeddings=False, show_progress_bar=False)
    vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=1)
    return np.ascontiguousarray(vectors.cpu().numpy(), dtype=np.float32)


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.rglob("*")
               if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".onnx"))


def onnx_encoder(model: Any, form: str) -> tuple[Any, dict[str, Any]]:
    """The ONNX Runtime encoder of `form` and the build record, its files built into the
    version's work directory first if missing (callers hold the version's lock, or run after
    the instance that measured built them)."""
    why = onnx_form.unsupported(model)
    if why:
        raise RuntimeError(why)
    build = onnx_form.build(model, WORK)
    return onnx_form.OnnxEncoder(model, WORK, form, torch.get_num_threads()), build


def form_sizes(model_dir: Path, build: dict[str, Any] | None) -> dict[str, int]:
    """Bytes on disk of what each form loads: the torch forms the weights, an ONNX form its graph."""
    weights = weights_bytes(model_dir)
    sizes = {form: weights for form in forms.FORMATS if forms.FORMATS[form] == "pytorch"}
    sizes.update({form: int(size) for form, size in ((build or {}).get("size_bytes") or {}).items()})
    return sizes


def measure_and_choose(model: Any, device: str, precision: str, min_cosine: float, batch_size: int) -> Any:
    """Embed the check set with each candidate form: speed (texts/s of its fastest of
    TIMED_ROUNDS passes, the forms taking turns, after one warm-up pass each) and quality
    against fp32; forms.choose decides."""
    texts, n, relevant = check_texts()
    speeds: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    forms_to_time: list[str] = []
    encoders: dict[str, Any] = {}
    build: dict[str, Any] | None = None
    for form in forms.candidates(precision, device):
        try:
            if form in forms.ONNX_FORMS:
                if build is None:  # once for both ONNX forms: export and quantize, or find them
                    began = time.perf_counter()
                    why = onnx_form.unsupported(model)
                    if why:
                        raise RuntimeError(why)
                    build = onnx_form.build(model, WORK)
                    build["ready_seconds"] = round(time.perf_counter() - began, 3)
                runner = onnx_form.OnnxEncoder(model, WORK, form, torch.get_num_threads())
                encoders[form] = lambda t, runner=runner: runner.encode(t, batch_size)
            else:
                encoders[form] = lambda t, form=form: encode(model, t, form, device, batch_size)
            vectors[form] = encoders[form](texts)  # warm-up, and its output
            forms_to_time.append(form)
        except Exception as exc:  # a form this machine cannot run is not a candidate
            if form == forms.REFERENCE:
                raise
            errors[form] = repr(exc)[:300]
    # Rounds interleave the forms and each form's best pass counts: other work on the machine
    # slows some passes down, whichever form runs them, and the best pass is the least slowed.
    passes: dict[str, list[float]] = {form: [] for form in forms_to_time}
    for _ in range(TIMED_ROUNDS):
        for form in forms_to_time:
            began = time.perf_counter()
            encoders[form](texts)
            passes[form].append(round(time.perf_counter() - began, 4))
    speeds = {form: len(texts) / max(min(seconds), 1e-9) for form, seconds in passes.items()}
    ref = vectors[forms.REFERENCE]
    qualities = {form: forms.quality(v[:n], v[n:], ref[:n], ref[n:], relevant) for form, v in vectors.items()}
    decision = forms.choose(speeds, qualities, precision=precision, device=device, min_cos=min_cosine,
                            errors=errors)
    sizes = {f: size for f, size in form_sizes(HERE / MODEL_SUBDIR, build).items() if f in decision.passed}
    decision.extra.update({
        "check_set": {"queries": n, "documents": len(texts) - n, "timed_rounds": TIMED_ROUNDS,
                      "batch_size": batch_size},
        "pass_seconds": passes,  # every timed pass, for whoever doubts the choice
        **served_record(decision.form, sizes),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    })
    if build is not None:
        decision.extra["onnx_build"] = build  # export/quantize seconds, cached or not, versions
    return decision


def architecture(model_dir: Path) -> str:
    """What a form's speed depends on besides the machine: the transformer's shape and the
    sequence length, not its weights (a fine-tuned version runs at its base's speed)."""
    shape: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        shape = {key: config.get(key) for key in ("model_type", "hidden_size", "num_hidden_layers",
                                                 "num_attention_heads", "intermediate_size", "vocab_size")}
    with contextlib.suppress(OSError, ValueError):
        shape["max_seq_length"] = json.loads(
            (model_dir / "sentence_bert_config.json").read_text(encoding="utf-8")).get("max_seq_length")
    return json.dumps(shape, sort_keys=True)


def sibling_speeds(
    server: int, precision: str, device: str, arch: str,
) -> tuple[str, dict[str, float]] | None:
    """The forms' speeds another version of this model measured in this same server, for the
    same setting, device and architecture (the newest such version), or None."""
    siblings = WORK.parent.iterdir() if WORK.parent.is_dir() else iter(())
    for sibling in sorted((p for p in siblings if p.name.isdigit() and p.name != HERE.name),
                          key=lambda p: -int(p.name)):
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            known = json.loads((sibling / forms.DECISION_FILE).read_text(encoding="utf-8"))
            if (known.get("server_pid") == server and known.get("precision") == precision
                    and known.get("device") == device and known.get("architecture") == arch):
                return sibling.name, {form: float(v) for form, v in known["texts_per_s"].items()}
    return None


def check_with_known_speeds(model: Any, device: str, precision: str, min_cosine: float, batch_size: int,
                            known: tuple[str, dict[str, float]]) -> Any:
    """The decision for a version whose architecture this server already timed: the fast forms
    are checked for quality only, fastest first, until one holds (one pass each, no timing)."""
    source, speeds = known
    texts, n, relevant = check_texts()
    reference = encode(model, texts, forms.REFERENCE, device, batch_size)
    qualities = {forms.REFERENCE: forms.quality(reference[:n], reference[n:], reference[:n], reference[n:],
                                                relevant)}
    errors: dict[str, str] = {}
    build: dict[str, Any] | None = None
    fast = sorted((f for f in forms.candidates(precision, device) if f != forms.REFERENCE),
                  key=lambda f: -speeds[f])
    for form in fast:
        if precision == "auto" and speeds[form] < speeds[forms.REFERENCE] * forms.MIN_SPEEDUP:
            break  # this and every slower form would be refused for speed
        try:
            if form in forms.ONNX_FORMS:
                runner, made = onnx_encoder(model, form)
                build = build or made
                vectors = runner.encode(texts, batch_size)
            else:
                vectors = encode(model, texts, form, device, batch_size)
        except Exception as exc:  # a form this machine cannot run is not a candidate
            errors[form] = repr(exc)[:300]
            continue
        qualities[form] = forms.quality(vectors[:n], vectors[n:], reference[:n], reference[n:], relevant)
        if not forms.failures(qualities[form], qualities[forms.REFERENCE], forms.MAX_NDCG_DROP, min_cosine):
            break  # the fastest form that holds: the slower ones could not be chosen
    measured = {f: v for f, v in speeds.items() if f == forms.REFERENCE or f in fast}
    decision = forms.choose(measured, qualities, precision=precision, device=device, min_cos=min_cosine,
                            errors=errors)
    sizes = {f: size for f, size in form_sizes(HERE / MODEL_SUBDIR, build).items() if f in decision.passed}
    decision.extra.update({
        "check_set": {"queries": n, "documents": len(texts) - n, "batch_size": batch_size},
        "speeds_from": source,  # texts/s are that version's measurements on this server
        "not_checked": sorted(f for f in fast if f not in qualities and f not in errors),
        **served_record(decision.form, sizes),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    })
    if build is not None:
        decision.extra["onnx_build"] = build
    return decision


def check_texts() -> tuple[list[str], int, list[list[int]]]:
    """The check set: its queries then its documents, the number of queries, and each query's
    relevant documents (indices among the documents)."""
    # UTF-8 whatever the locale of the stub (often C: ASCII)
    check = json.loads((HERE / forms.CHECK_SET_FILE).read_text(encoding="utf-8"))
    index = {d["id"]: i for i, d in enumerate(check["documents"])}
    queries = [q["text"] for q in check["queries"]]
    relevant = [[index[r] for r in q["relevant"]] for q in check["queries"]]
    return queries + [d["text"] for d in check["documents"]], len(queries), relevant


def served_record(form: str, sizes: dict[str, int]) -> dict[str, Any]:
    """What the decision says of the served form: its format, weights' dtype and size on disk
    (and every measured form's size)."""
    return {"format": forms.FORMATS[form], "weights_dtype": forms.WEIGHTS_DTYPES[form],
            "size_bytes": sizes.get(form, 0), "size_bytes_by_form": sizes}


def decide(model: Any, device: str, precision: str, min_cosine: float, batch_size: int) -> dict[str, Any]:
    """The decision for this version: measured by the first instance this server loads and
    written to serving.json; the other instances of the same server (same parent process,
    same setting and device) read it instead of measuring beside each other."""
    target = WORK / forms.DECISION_FILE
    server = os.getppid()
    lock_path = WORK / ".serving.lock"
    try:
        WORK.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "a+")  # noqa: SIM115 - held for the measurement
    except OSError:
        lock = None  # a read-only repository: measure, keep the decision in memory
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(target.read_text(encoding="utf-8"))
            if (known.get("server_pid") == server and known.get("precision") == precision
                    and known.get("device") == device):
                return dict(known)
        arch = architecture(HERE / MODEL_SUBDIR)
        known = sibling_speeds(server, precision, device, arch)
        if known is not None and all(f in known[1] for f in forms.candidates(precision, device)):
            decision = check_with_known_speeds(model, device, precision, min_cosine, batch_size, known)
        else:
            decision = measure_and_choose(model, device, precision, min_cosine, batch_size)
        decision.extra.update({"server_pid": server, "version": HERE.name, "architecture": arch,
                               "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        data = decision.as_dict()
        try:
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(target)
        except OSError as error:
            pb_utils.Logger.log_warn(f"could not write {target}: {error}")
        return data
    finally:
        if lock is not None:
            lock.close()


def intra_op_threads(config: dict[str, Any], device: str) -> int:
    """The config's `intra_op_threads` parameter, or (0) the cores this process may run on
    divided among the instance group's instances, so together they never oversubscribe."""
    value = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0")
    if int(value or 0) > 0:
        return int(value)
    if device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return max(1, cores // instances)


QUERY_FILE = "serving-query.json"
QUERY_ROUNDS = 3


def query_form(model: Any, device: str, decision: dict[str, Any], batch_size: int) -> str:
    """The query lane's form: of the forms that passed the version's quality guard, the one
    that embeds a single short text fastest (the version's form is chosen on 64-text batches;
    for one text, autocast's per-call cast of the weights can cost more than it saves). The
    check set's queries are timed one at a time, the forms taking turns; the median counts.
    The choice is written to serving-query.json in the version's work directory, and a reload
    by the same server reuses it rather than timing the forms again."""
    passed = sorted(form for form, ok in (decision.get("passed") or {}).items() if ok) or [forms.REFERENCE]
    with contextlib.suppress(OSError, ValueError, AttributeError):
        known = json.loads((WORK / QUERY_FILE).read_text(encoding="utf-8"))
        if (known.get("server_pid") == os.getppid() and known.get("candidates") == passed
                and known.get("version_form") == decision.get("form") and known.get("form") in passed):
            return str(known["form"])
    texts, n, _ = check_texts()
    encoders: dict[str, Any] = {}
    for form in passed:
        if form in forms.ONNX_FORMS:
            runner, _ = onnx_encoder(model, form)
            encoders[form] = lambda t, runner=runner: runner.encode(t, batch_size)
        else:
            encoders[form] = lambda t, form=form: encode(model, t, form, device, batch_size)
        encoders[form](texts[:1])  # warm-up
    took: dict[str, list[float]] = {form: [] for form in encoders}
    for _ in range(QUERY_ROUNDS):
        for text in texts[:n]:
            for form, run in encoders.items():
                began = time.perf_counter()
                run([text])
                took[form].append((time.perf_counter() - began) * 1000)
    median_ms = {form: round(float(np.median(values)), 3) for form, values in took.items()}
    chosen = min(median_ms, key=lambda form: median_ms[form])
    with contextlib.suppress(OSError):
        record = {"form": chosen, "median_ms_per_query": median_ms, "candidates": passed,
                  "version_form": decision.get("form"), "server_pid": os.getppid(),
                  "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (WORK / QUERY_FILE).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    return chosen


def lower_cpu_priority(nice: int) -> int:
    """Give every thread of this stub process (and so the threads they start later, torch's
    pool included) niceness `nice`, never raising a priority; returns the niceness reached.
    Raising one's niceness needs no privilege."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            tid = int(task.name)
            current = os.getpriority(os.PRIO_PROCESS, tid)
            if current < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        kind = args.get("model_instance_kind", "CPU")
        if torch.cuda.is_available() and kind in ("GPU", "MODEL"):
            device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cuda"
        else:
            device = "cpu"
        config = json.loads(args["model_config"])
        self.lane = parameter(config, "lane", "bulk")
        nice = int(parameter(config, "nice", "0"))
        niceness = lower_cpu_priority(nice if device == "cpu" else 0)
        threads = intra_op_threads(config, device)
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        model_dir = Path(__file__).resolve().parent / MODEL_SUBDIR
        self.model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        self.model.eval()
        self.batch_size = int(config.get("max_batch_size") or 64)
        self.device = device
        precision = parameter(config, "precision", "auto")
        min_cosine = float(parameter(config, "min_cosine", str(forms.DEFAULT_MIN_COSINE)))
        try:
            self.decision = decide(self.model, device, precision, min_cosine, self.batch_size)
        except Exception as exc:  # the measurement is an optimisation: fp32 always serves
            pb_utils.Logger.log_warn(f"serving-form measurement failed, serving fp32: {exc!r}")
            self.decision = {"form": "fp32", "reason": f"fp32: the measurement failed: {exc!r}"[:500],
                             "precision": precision, "device": device, "texts_per_s": {}}
        self.form = str(self.decision["form"])
        if self.lane == "query":
            try:
                self.form = query_form(self.model, device, self.decision, self.batch_size)
            except Exception as exc:  # timing is an optimisation: the version's form serves
                pb_utils.Logger.log_warn(f"query-lane timing failed, serving {self.form}: {exc!r}")
        self.onnx: Any = None
        if self.form in forms.ONNX_FORMS:
            try:
                self.onnx, _ = onnx_encoder(self.model, self.form)
            except Exception as exc:  # the files went missing or broke: fp32 serves
                pb_utils.Logger.log_warn(f"{self.form} could not be loaded, serving fp32: {exc!r}")
                self.form = "fp32"
        pb_utils.Logger.log_info(
            f"serving form {self.form} ({self.lane} lane; version's decision: {self.decision['reason']}); "
            f"texts/s {self.decision['texts_per_s']}"
        )
        pb_utils.Logger.log_info(
            f"loaded {model_dir} on {device} ({threads} intra-op threads, {self.lane} lane, "
            f"nice {niceness}), "
            f"dim={self.model.get_sentence_embedding_dimension()}, "
            f"torch {torch.__version__}, numpy {np.__version__}, python prefix {sys.prefix}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        # One forward pass over every text of every request the dynamic batcher handed us.
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            decoded = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in raw]
            texts.extend(decoded)
            counts.append(len(decoded))
        try:
            if self.onnx is not None:
                vectors = self.onnx.encode(texts, self.batch_size)
            else:
                vectors = encode(self.model, texts, self.form, self.device, self.batch_size)
        except Exception as exc:  # one bad batch must not kill the stub
            error = pb_utils.TritonError(f"embedding failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for count in counts:
            out = pb_utils.Tensor("EMBEDDING", vectors[start : start + count])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += count
        return responses

    def finalize(self) -> None:
        self.onnx = None
        del self.model
