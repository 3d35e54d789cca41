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
