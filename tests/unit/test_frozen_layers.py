"""Freezing the lower layers of the shipped model before a fine-tune."""

from __future__ import annotations

import pytest

from core.base_model import base_model_dir
from core.config import Settings
from core.training.finetune import freeze_lower_layers
from core.training.runtime import load_model


def test_the_embeddings_and_the_lowest_layers_stop_training() -> None:
    model = load_model(base_model_dir(Settings()), "cpu")
    everything = len(list(model.parameters()))
    assert len(freeze_lower_layers(model, 0)) == everything
    trained = {id(p) for p in freeze_lower_layers(model, 4)}
    encoder = model[0].auto_model
    assert not any(id(p) in trained for p in encoder.embeddings.parameters())
    for index, block in enumerate(encoder.encoder.layer):
        assert all((id(p) in trained) == (index >= 4) for p in block.parameters())
    assert 0 < len(trained) < everything
    with pytest.raises(ValueError, match="frozen_layers"):
        freeze_lower_layers(model, 7)
