"""A run stopped mid-training (a cancelled or killed job) resumes from its last checkpoint in a new
context over the same folder, and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openmaas.training.context import DirectoryContext, InMemoryContext
from openmaas.training.loop import TrainingStopped
from openmaas.training.train import train
from tests.data.builders import digits_zip

PARAMS = {"epochs": 4, "learning_rate": 0.003, "channels": [8, 16], "checkpoint_overhead": 0.0}
SPEC = {"image": {"height": 8, "width": 8, "grayscale": True}}


def test_interrupted_image_training_resumes_to_identical_weights(tmp_path: Path) -> None:
    path = digits_zip(tmp_path / "digits.zip", limit=400)
    reference = train("image-classification", path, PARAMS, SPEC, InMemoryContext())
    folder = tmp_path / "checkpoints"
    with pytest.raises(TrainingStopped) as info:
        train(
            "image-classification",
            path,
            PARAMS,
            SPEC,
            DirectoryContext(folder, stop_when=lambda ctx: len(ctx.reports) == 2),
        )
    assert info.value.checkpoint_epoch == 2
    resumed_context = DirectoryContext(folder)
    resumed = train("image-classification", path, PARAMS, SPEC, resumed_context)
    assert [r["epoch"] for r in resumed_context.reports] == [3.0, 4.0]  # not restarted at epoch 1
    assert resumed.resumed_from_epoch == 2 and reference.resumed_from_epoch == 0
    reference_state, resumed_state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(reference_state[name], resumed_state[name]) for name in reference_state)
    assert resumed.metrics == reference.metrics
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in reference.history]
