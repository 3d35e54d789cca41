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
    assert (repo / "embedder_v1" / "1" / "model.py").read_text().startswith('"""Triton Python-backend model')
    assert (repo / "embedder_v1" / "1" / "model" / "modules.json").is_file()
    config = (repo / "embedder_v1" / "config.pbtxt").read_text()
    assert 'name: "embedder_v1"' in config and "kind:" not in config
    assert "specific { versions: [1] }" in config
    # Run again (a restarted init job): the version is kept, the config rewritten.
    (repo / "embedder_v1" / "1" / "model" / "marker").write_text("kept")
    assert main([str(repo), "--model-dir", str(model), "--instance-kind", "KIND_GPU"]) == 0
    assert (repo / "embedder_v1" / "1" / "model" / "marker").read_text() == "kept"
    assert "kind: KIND_GPU" in (repo / "embedder_v1" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in (repo / "embedder_v1_query" / "config.pbtxt").read_text()
    out = capsys.readouterr().out
    assert "versions [1]" in out and "embedder_v1, embedder_v1_query" in out


async def test_each_version_is_a_model_of_its_own_in_each_lane(tmp_path: Path) -> None:
    """Placing, parking, restoring or removing a version touches that version's models alone
    (Triton reloads every version of a model whose directory changed)."""
    from core.adapters.triton_control import TritonModelControl
    from core.adapters.triton_repository import build_model_repository

    model = fake_model(tmp_path)
    repo = tmp_path / "models"
    build_model_repository(repo, model, "embedder", 1, 64, [16, 64], bulk_nice=10)
    query = repo / "embedder_v1_query"
    assert 'name: "embedder_v1_query"' in (query / "config.pbtxt").read_text()
    assert 'string_value: "10"' in (repo / "embedder_v1" / "config.pbtxt").read_text()
    # The query lane's version is a relative link, so the repository can be mounted anywhere.
    assert (query / "1").is_symlink() and str((query / "1").readlink()) == "../embedder_v1/1"

    def tree(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in root.rglob("*")}

    base = {name: tree(repo / name) for name in ("embedder_v1", "embedder_v1_query")}
    control = TritonModelControl("127.0.0.1:1", "embedder", repo)
    control.place_version(2, model)
    assert model_versions(repo, "embedder") == [1, 2]
    assert 'name: "embedder_v2"' in (repo / "embedder_v2" / "config.pbtxt").read_text()
    assert "specific { versions: [2] }" in (repo / "embedder_v2" / "config.pbtxt").read_text()
    assert str((repo / "embedder_v2_query" / "2").readlink()) == "../embedder_v2/2"
    control.park_version(2)
    assert model_versions(repo, "embedder") == [1] and control.parked_versions() == [2]
    assert not (repo / "embedder_v2").exists() and not (repo / "embedder_v2_query").exists()
    control.restore_version(2)
    assert model_versions(repo, "embedder") == [1, 2] and control.parked_versions() == []
    assert (repo / "embedder_v2_query" / "2" / "model.py").is_file()
    control.remove_version(2)
    assert model_versions(repo, "embedder") == [1]
    assert not (repo / "embedder_v2").exists() and not (repo / "embedder_v2_query").exists()
    assert {name: tree(repo / name) for name in base} == base  # version 1 never touched
    # The same settings written again leave every file as it was.
    build_model_repository(repo, model, "embedder", 1, 64, [16, 64], bulk_nice=10)
    assert {name: tree(repo / name) for name in base} == base
    await control.close()


def test_a_version_cannot_be_placed_before_the_settings_are_written(tmp_path: Path) -> None:
    from core.adapters.triton_repository import add_model_version

    with pytest.raises(FileNotFoundError, match="write_model_config"):
        add_model_version(tmp_path / "models", "embedder", 2, fake_model(tmp_path))
    assert not (tmp_path / "models" / "embedder_v2").exists()


def test_a_repository_of_one_model_with_all_versions_moves_to_one_model_per_version(tmp_path: Path) -> None:
    from core.adapters.triton_repository import build_model_repository, parked_versions

    repo = tmp_path / "models"
    for entry in ("1", "3", ".parked-2"):  # the layout written before one model per version
        files = repo / "embedder" / entry
        (files / "model").mkdir(parents=True)
        (files / "model.py").write_text("# model")
        (files / "model" / "weights").write_text(entry)
    (repo / "embedder" / "config.pbtxt").write_text('name: "embedder"')
    (repo / "embedder_query").mkdir()
    (repo / "embedder_query" / "1").symlink_to(Path("..") / "embedder" / "1")

    build_model_repository(repo, fake_model(tmp_path), "embedder", 1, 64, [64])
    assert model_versions(repo, "embedder") == [1, 3] and parked_versions(repo, "embedder") == [2]
    assert (repo / "embedder_v3" / "3" / "model" / "weights").read_text() == "3"
    assert (repo / "embedder_v1" / "1" / "model" / "weights").read_text() == "1"  # kept, not rewritten
    assert 'name: "embedder_v3"' in (repo / "embedder_v3" / "config.pbtxt").read_text()
    assert (repo / "embedder_v3_query" / "3").is_symlink()
    assert not (repo / "embedder").exists() and not (repo / "embedder_query").exists()
