"""Mixing a fine-tuned model's weights with its base's (bench.finetune_split.interpolate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.finetune_split import interpolate
from core.base_model import base_model_dir
from core.config import Settings
from core.training.runtime import load_model


def test_each_weight_is_the_given_share_of_the_fine_tuned_model(tmp_path: Path) -> None:
    base_dir = base_model_dir(Settings())
    tuned = load_model(base_dir, "cpu")
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(1.0)  # every weight of the "fine-tuned" model is the base's + 1
    tuned.save(str(tmp_path / "tuned"))
    base = load_model(base_dir, "cpu").state_dict()

    interpolate(base_dir, tmp_path / "tuned", tmp_path / "mixed", 0.25)
    mixed = load_model(tmp_path / "mixed", "cpu").state_dict()
    floating = [name for name, weight in mixed.items() if weight.is_floating_point()]
    assert floating and all(torch.allclose(mixed[name], base[name] + 0.25, atol=1e-5) for name in floating)

    interpolate(base_dir, tmp_path / "tuned", tmp_path / "base-again", 0.0)
    again = load_model(tmp_path / "base-again", "cpu")
    assert torch.allclose(again.encode(["a claim"], convert_to_tensor=True),
                          load_model(base_dir, "cpu").encode(["a claim"], convert_to_tensor=True), atol=1e-6)
    with pytest.raises(ValueError, match="ratio"):
        interpolate(base_dir, tmp_path / "tuned", tmp_path / "bad", 1.5)
