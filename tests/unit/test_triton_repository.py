"""The model-repository writer and its `python -m core.adapters.triton_repository` entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.adapters.triton_repository import main, model_config, model_versions


def fake_model(tmp_path: Path) -> Path:
    model = tmp_path / "st-model"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    (model / "config.json").write_text("{}")
    return model


def test_kind_auto_leaves_the_instance_kind_to_triton() -> None:
    auto = model_config("embedder", 64, [16, 64], instance_kind="KIND_AUTO", instance_count=1)
    assert "kind:" not in auto and "count: 1" in auto
    assert "kind: KIND_CPU" in model_config("embedder", 64, [64], instance_kind="KIND_CPU")
    with pytest.raises(ValueError):
        model_config("embedder", 64, [64], instance_kind="KIND_TPU")


def test_main_writes_version_and_config_idempotently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLYWHEEL_TRITON_MODEL_NAME", "embedder")
    model = fake_model(tmp_path)
    repo = tmp_path / "models"
    assert main([str(repo), "--model-dir", str(model)]) == 0
    assert model_versions(repo, "embedder") == [1]
    assert (repo / "embedder" / "1" / "model.py").read_text().startswith('"""Triton Python-backend model')
    assert (repo / "embedder" / "1" / "model" / "modules.json").is_file()
    config = (repo / "embedder" / "config.pbtxt").read_text()
    assert 'name: "embedder"' in config and "kind:" not in config
    # Run again (a restarted init job): the version is kept, the config rewritten.
    (repo / "embedder" / "1" / "model" / "marker").write_text("kept")
    assert main([str(repo), "--model-dir", str(model), "--instance-kind", "KIND_GPU"]) == 0
    assert (repo / "embedder" / "1" / "model" / "marker").read_text() == "kept"
    assert "kind: KIND_GPU" in (repo / "embedder" / "config.pbtxt").read_text()
    assert "versions [1]" in capsys.readouterr().out


async def test_the_query_model_mirrors_the_bulk_models_versions(tmp_path: Path) -> None:
    from core.adapters.triton_control import TritonModelControl
    from core.adapters.triton_repository import build_model_repository

    model = fake_model(tmp_path)
    repo = tmp_path / "models"
    build_model_repository(repo, model, "embedder", 1, 64, [16, 64], bulk_nice=10)
    query = repo / "embedder_query"
    assert 'name: "embedder_query"' in (query / "config.pbtxt").read_text()
    assert 'string_value: "10"' in (repo / "embedder" / "config.pbtxt").read_text()
    # A version is a relative link, so the repository can be mounted anywhere (compose, helm).
    assert (query / "1").is_symlink() and str((query / "1").readlink()) == "../embedder/1"
    assert model_versions(repo, "embedder_query") == [1]

    control = TritonModelControl("127.0.0.1:1", "embedder", repo)
    control.place_version(2, model)
    assert model_versions(repo, "embedder_query") == [1, 2]
    control.park_version(2)
    assert model_versions(repo, "embedder_query") == [1] and not (query / "2").exists()
    control.restore_version(2)
    assert model_versions(repo, "embedder_query") == [1, 2]
    control.remove_version(2)
    assert model_versions(repo, "embedder_query") == [1] and not (query / "2").is_symlink()
    assert model_versions(repo, "embedder") == [1]
    await control.close()
