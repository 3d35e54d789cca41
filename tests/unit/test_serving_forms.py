"""The serving form a model version chooses (core/adapters/triton_model/forms.py), the check set
it ships with, the repository writer's setting, and the deployer's record of the choice."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from consumers.deployer.handlers import deploy, mlflow_record
from core.adapters.triton_repository import (
    MODEL_FILES,
    add_model_version,
    model_config,
    read_serving_decision,
    serving_dir,
    version_root,
    write_model_config,
)
from core.config import Settings
from tests.unit.test_rollout_handlers import DeployRig, published

MODEL_DIR = Path(__file__).resolve().parents[2] / "core" / "adapters" / "triton_model"


def load_forms() -> ModuleType:
    # forms.py runs beside model.py in a version directory, loaded by path: so are its tests.
    spec = importlib.util.spec_from_file_location("serving_forms_under_test", MODEL_DIR / "forms.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


forms = load_forms()


def q(ndcg: float = 0.95, vs_fp32: float = 1.0, cosine: float = 0.9999) -> Any:
    return forms.Quality(ndcg_at_10=ndcg, ndcg_at_10_vs_fp32=vs_fp32, min_cosine_to_fp32=cosine)


REF = q(0.95, 1.0, 1.0)


# --- the choice -----------------------------------------------------------------------------
def test_the_fastest_form_whose_quality_holds_is_served() -> None:
    decision = forms.choose({"fp32": 50.0, "bf16": 120.0}, {"fp32": REF, "bf16": q(0.948)})
    assert decision.form == "bf16" and decision.passed == {"fp32": True, "bf16": True}
    assert "2.40x" in decision.reason and decision.texts_per_s == {"fp32": 50.0, "bf16": 120.0}
    data = decision.as_dict()
    assert data["quality"]["bf16"]["ndcg_at_10"] == 0.948 and data["max_ndcg_drop"] == 0.005
    # a better score than fp32 is no reason to refuse
    assert forms.choose({"fp32": 50.0, "bf16": 120.0}, {"fp32": REF, "bf16": q(0.99)}).form == "bf16"


@pytest.mark.parametrize(("quality", "why"), [
    (q(ndcg=0.944), "more than 0.005 below fp32's 0.9500"),
    (q(vs_fp32=0.99), "against fp32's ranking 0.9900 < 0.995"),
    (q(cosine=0.998), "min cosine to fp32 0.99800 < 0.999"),
])
def test_a_faster_form_that_loses_quality_falls_back_to_fp32_and_says_why(quality: Any, why: str) -> None:
    decision = forms.choose({"fp32": 50.0, "bf16": 500.0}, {"fp32": REF, "bf16": quality})
    assert decision.form == "fp32" and decision.passed["bf16"] is False
    assert decision.reason.startswith("fp32: bf16: ") and why in decision.reason


def test_the_guard_is_exactly_within_0_005_ndcg() -> None:
    assert forms.choose({"fp32": 50.0, "bf16": 100.0}, {"fp32": REF, "bf16": q(0.945)}).form == "bf16"
    assert forms.choose({"fp32": 50.0, "bf16": 100.0}, {"fp32": REF, "bf16": q(0.9449)}).form == "fp32"


def test_a_form_barely_faster_than_fp32_is_not_worth_it() -> None:
    decision = forms.choose({"fp32": 50.0, "bf16": 51.0}, {"fp32": REF, "bf16": q()})
    assert decision.form == "fp32" and "1.02x fp32's speed" in decision.reason
    slower = forms.choose({"fp32": 50.0, "bf16": 20.0}, {"fp32": REF, "bf16": q()})
    assert slower.form == "fp32" and slower.passed["bf16"] is False
    # named by the setting, the form serves when its quality holds, whatever the speed measured
    named = forms.choose({"fp32": 50.0, "bf16": 40.0}, {"fp32": REF, "bf16": q()}, precision="bf16")
    assert named.form == "bf16" and "0.80x" in named.reason
    assert forms.choose({"fp32": 50.0, "bf16": 40.0}, {"fp32": REF, "bf16": q(cosine=0.99)},
                        precision="bf16").form == "fp32"


def test_among_passing_forms_the_fastest_wins() -> None:
    decision = forms.choose({"fp32": 10.0, "bf16": 30.0, "fp16": 40.0},
                            {"fp32": REF, "bf16": q(), "fp16": q()}, device="cuda")
    assert decision.form == "fp16"
    decision = forms.choose({"fp32": 10.0, "bf16": 30.0, "fp16": 40.0},
                            {"fp32": REF, "bf16": q(), "fp16": q(cosine=0.9)}, device="cuda")
    assert decision.form == "bf16" and decision.passed["fp16"] is False


def test_only_fp32_or_a_form_that_cannot_run() -> None:
    only = forms.choose({"fp32": 50.0}, {"fp32": REF}, precision="fp32")
    assert only.form == "fp32" and "the setting is 'fp32'" in only.reason
    broken = forms.choose({"fp32": 50.0}, {"fp32": REF}, errors={"bf16": "RuntimeError('no bf16')"})
    assert broken.form == "fp32" and "bf16 failed to run" in broken.reason and broken.passed["bf16"] is False
    with pytest.raises(ValueError):
        forms.choose({"bf16": 50.0}, {"bf16": q()})


def test_candidates_follow_the_setting_and_the_device() -> None:
    assert forms.candidates("auto", "cpu") == ["fp32", "bf16", "onnx", "onnx-int8"]
    assert forms.candidates("auto", "cuda:0") == ["fp32", "fp16"]
    assert forms.candidates("fp32", "cuda:0") == ["fp32"]
    assert forms.candidates("bf16", "cuda") == ["fp32", "bf16"]
    assert forms.candidates("fp16", "cpu") == ["fp32"]  # never measured where it cannot pay
    assert forms.candidates("auto", "cpu", bf16_supported=False) == ["fp32", "onnx", "onnx-int8"]
    assert forms.candidates("onnx", "cpu") == ["fp32", "onnx"]
    assert forms.candidates("onnx-int8", "cpu") == ["fp32", "onnx-int8"]
    assert forms.candidates("onnx-int8", "cuda:0") == ["fp32"]  # ONNX Runtime's CPU provider only
    assert set(forms.FORMATS) == set(forms.WEIGHTS_DTYPES) == set(forms.PRECISIONS) - {"auto"}
    with pytest.raises(ValueError):
        forms.candidates("int4", "cpu")


def test_the_onnx_forms_compete_with_the_others() -> None:
    speeds = {"fp32": 50.0, "bf16": 60.0, "onnx": 100.0, "onnx-int8": 140.0}
    qualities = {"fp32": REF, "bf16": q(), "onnx": q(0.95, 1.0, 0.99999), "onnx-int8": q(0.95, 0.99, 0.965)}
    decision = forms.choose(speeds, qualities, min_cos=0.999)
    # int8 is the fastest but its cosine and its ranking fail the guard: onnx (fp32) is served
    assert decision.form == "onnx" and decision.reason.startswith("onnx: 2.00x")
    assert decision.passed == {"fp32": True, "bf16": True, "onnx": True, "onnx-int8": False}
    assert decision.refused == {"onnx-int8": "onnx-int8: nDCG@10 against fp32's ranking 0.9900 < 0.995; "
                                             "min cosine to fp32 0.96500 < 0.999"}
    int8_only = {"fp32": REF, "onnx-int8": qualities["onnx-int8"]}
    alone = forms.choose({"fp32": 50.0, "onnx-int8": 140.0}, int8_only, min_cos=0.999)
    assert alone.form == "fp32" and alone.reason == (
        "fp32: onnx-int8: nDCG@10 against fp32's ranking 0.9900 < 0.995; min cosine to fp32 0.96500 < 0.999")
    # where the int8 form's quality holds, it wins
    holds = {**qualities, "onnx-int8": q(0.95, 0.999, 0.99)}
    assert forms.choose(speeds, holds, min_cos=0.98).form == "onnx-int8"
    # named: served whenever its quality holds, even no faster; refused with the reason otherwise
    named = forms.choose({"fp32": 50.0, "onnx-int8": 45.0}, {"fp32": REF, "onnx-int8": q(cosine=0.99)},
                         precision="onnx-int8", min_cos=0.98)
    assert named.form == "onnx-int8"
    refused = forms.choose({"fp32": 50.0, "onnx-int8": 140.0}, {"fp32": REF, "onnx-int8": q(cosine=0.99)},
                           precision="onnx-int8", min_cos=1.0)
    assert refused.form == "fp32" and "onnx-int8: min cosine to fp32 0.99000 < 1.0" in refused.reason
    missing = forms.choose({"fp32": 50.0}, {"fp32": REF}, precision="onnx",
                           errors={"onnx": "RuntimeError('onnxruntime is not installed where Triton runs')"})
    assert missing.form == "fp32" and "onnx failed to run" in missing.reason


# --- the quality measures --------------------------------------------------------------------
def test_ndcg_and_the_quality_of_a_form() -> None:
    assert forms.ndcg_at_k([0, 1, 2], {0: 1.0}) == 1.0
    assert forms.ndcg_at_k([1, 0], {0: 1.0}) == pytest.approx(1 / np.log2(3))
    assert forms.ndcg_at_k([5], {}) == 0.0
    rng = np.random.default_rng(7)
    docs = rng.normal(size=(30, 16))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:5] + 0.05 * rng.normal(size=(5, 16))
    relevant = [[i] for i in range(5)]
    same = forms.quality(queries, docs, queries, docs, relevant)
    assert same.ndcg_at_10 == 1.0 and same.ndcg_at_10_vs_fp32 == 1.0 and same.min_cosine_to_fp32 == 1.0
    noisy = docs + 0.3 * rng.normal(size=docs.shape)
    worse = forms.quality(queries, noisy, queries, docs, relevant)
    assert worse.ndcg_at_10_vs_fp32 < 0.995 and worse.min_cosine_to_fp32 < 0.999
    assert forms.choose({"fp32": 1.0, "bf16": 3.0}, {"fp32": same, "bf16": worse}).form == "fp32"


def test_the_check_set_shipped_with_the_model_is_sound() -> None:
    check = json.loads((MODEL_DIR / forms.CHECK_SET_FILE).read_text())
    ids = [d["id"] for d in check["documents"]]
    assert len(set(ids)) == len(ids) and 40 <= len(ids) <= 60
    assert len(check["queries"]) >= 10
    assert all(q["relevant"] and set(q["relevant"]) <= set(ids) for q in check["queries"])
    assert any(not d["text"].isascii() for d in check["documents"])  # non-ASCII text too


# --- the repository writer -------------------------------------------------------------------
def test_the_setting_is_in_the_config_and_the_chooser_ships_with_each_version(tmp_path: Path) -> None:
    config = model_config("embedder", 64, [64], instance_kind="KIND_CPU", precision="fp32", min_cosine=0.998)
    assert 'key: "precision"\n  value: { string_value: "fp32" }' in config
    assert 'key: "min_cosine"\n  value: { string_value: "0.998" }' in config
    assert 'string_value: "auto"' in model_config("embedder", 64, [64], instance_kind="KIND_CPU")
    with pytest.raises(ValueError):
        model_config("embedder", 64, [64], instance_kind="KIND_CPU", precision="int3")
    assert Settings().triton_precision == "auto"

    model = tmp_path / "st"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    write_model_config(tmp_path / "repo", "embedder", 64, [64])
    target = add_model_version(tmp_path / "repo", "embedder", 2, model)
    assert all((target / name).is_file() for name in MODEL_FILES)
    assert read_serving_decision(tmp_path / "repo", "embedder", 2) is None
    # what a load writes lives outside the model's directory, which Triton watches
    work = serving_dir(tmp_path / "repo", "embedder", 2)
    assert not work.is_relative_to(version_root(tmp_path / "repo", "embedder", 2))
    work.mkdir(parents=True)
    (work / "serving.json").write_text(json.dumps({"form": "bf16", "reason": "faster"}))
    assert read_serving_decision(tmp_path / "repo", "embedder", "2") == {"form": "bf16", "reason": "faster"}
    (work / "serving-query.json").write_text(json.dumps({"form": "fp32", "median_ms_per_query": {}}))
    assert read_serving_decision(tmp_path / "repo", "embedder", 2) == {
        "form": "bf16", "reason": "faster", "query_lane": {"form": "fp32", "median_ms_per_query": {}}}
    (work / "serving.json").write_text("{not json")
    assert read_serving_decision(tmp_path / "repo", "embedder", 2) is None
    # a version number placed again (after a removal) does not inherit the old decision
    (work / "serving.json").write_text(json.dumps({"form": "bf16", "reason": "faster"}))
    shutil.rmtree(target)
    add_model_version(tmp_path / "repo", "embedder", 2, model)
    assert read_serving_decision(tmp_path / "repo", "embedder", 2) is None


# --- the deployer's record -------------------------------------------------------------------
def test_the_decision_becomes_mlflow_tags_and_metrics() -> None:
    decision = forms.choose({"fp32": 50.0, "bf16": 120.0}, {"fp32": REF, "bf16": q(0.948)}).as_dict()
    decision.update(size_bytes=90_000_000, format="pytorch", weights_dtype="float32",
                    size_bytes_by_form={"fp32": 90_000_000, "onnx-int8": 58_000_000})
    tags, metrics = mlflow_record(decision)
    assert tags["serving.format"] == "pytorch" and tags["serving.weights_dtype"] == "float32"
    assert metrics["serving_onnx-int8_size_bytes"] == 58_000_000
    assert tags["serving.form"] == "bf16" and tags["serving.device"] == "cpu"
    assert "2.40x" in tags["serving.reason"]
    assert metrics["serving_bf16_texts_per_s"] == 120.0 and metrics["serving_fp32_texts_per_s"] == 50.0
    assert metrics["serving_bf16_ndcg_at_10"] == 0.948
    assert metrics["serving_bf16_min_cosine_to_fp32"] == 0.9999
    assert metrics["serving_size_bytes"] == 90_000_000


async def test_deploy_records_the_served_form_on_the_task_and_in_mlflow(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)
    logged: list[tuple[str, dict[str, Any]]] = []
    rig.deps.record_serving = lambda event, decision: logged.append((event.model_version, decision))
    task = await deploy(published(), rig.deps)
    assert task["status"] == "succeeded", task
    assert task["details"]["serving"]["form"] == "bf16"
    assert [(v, d["form"]) for v, d in logged] == [("2", "bf16")]


async def test_mlflow_down_does_not_stop_a_rollout(tmp_path: Path) -> None:
    rig = DeployRig(tmp_path)

    def unavailable(event: Any, decision: dict[str, Any]) -> None:
        raise ConnectionError("MLflow is down")

    rig.deps.record_serving = unavailable
    task = await deploy(published(), rig.deps)
    assert task["status"] == "succeeded" and task["details"]["serving"]["form"] == "bf16"


# --- model.py's measurement, over a fake model -----------------------------------------------
class FakeSentenceModel:
    """Embeds a text as a fixed random vector per text, whatever the autocast."""

    def encode(self, texts: list[str], **options: Any) -> Any:
        import torch

        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]
        return torch.tensor(np.array(rows), dtype=torch.float32)


def test_the_model_measures_once_per_server_and_writes_its_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil
    import types

    backend = types.ModuleType("triton_python_backend_utils")
    backend.Logger = types.SimpleNamespace(log_info=print, log_warn=print)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", backend)
    version = tmp_path / "embedder_v7" / "7"  # triton_repository.version_dir
    (version / "model").mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(MODEL_DIR / name, version / name)
    (version / "model" / "model.safetensors").write_bytes(b"0" * 1000)
    spec = importlib.util.spec_from_file_location("triton_model_measured", version / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert version == module.HERE

    decision = module.decide(FakeSentenceModel(), "cpu", "auto", 0.999, 64)
    assert decision["form"] in ("fp32", "bf16") and set(decision["texts_per_s"]) == {"fp32", "bf16"}
    # a model that is not Transformer -> Pooling [-> Normalize] has no ONNX form, and says so
    assert decision["passed"]["onnx"] is False and decision["passed"]["onnx-int8"] is False
    assert decision["refused"]["onnx"].startswith("onnx failed to run: RuntimeError(")
    assert "ONNX form reproduces" in decision["refused"]["onnx-int8"]
    assert decision["format"] == "pytorch" and decision["size_bytes_by_form"]["fp32"] == 1000
    assert decision["quality"]["bf16"]["min_cosine_to_fp32"] > 0.99
    assert decision["size_bytes"] == 1000 and decision["check_set"]["documents"] == 53
    assert [len(decision["pass_seconds"][form]) for form in ("fp32", "bf16")] == [4, 4]
    written = json.loads((module.WORK / "serving.json").read_text())
    assert serving_dir(tmp_path, "embedder", 7) == module.WORK  # the stub's copy of the layout
    assert written == decision
    # another instance of the same server reads it; another setting measures again
    monkeypatch.setattr(module, "measure_and_choose", lambda *a: pytest.fail("measured twice"))
    assert module.decide(FakeSentenceModel(), "cpu", "auto", 0.999, 64) == decision
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", backend)
    fp32 = module.decide(FakeSentenceModel(), "cpu", "fp32", 0.999, 64)
    assert fp32["form"] == "fp32" and list(fp32["texts_per_s"]) == ["fp32"]
