"""Checkpoints hold nested state (including optimizer state) as safetensors, never pickle."""

from __future__ import annotations

from pathlib import Path

import torch

from openmaas.training.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    read_checkpoint,
    write_checkpoint,
)


def test_nested_state_with_int_keys_roundtrips() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "epoch": 3,
        "best": -float("inf"),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": [{"epoch": 1.0, "loss": 0.5}],
        "none": None,
    }
    restored = checkpoint_from_bytes(checkpoint_to_bytes(state))
    assert restored["epoch"] == 3 and restored["best"] == -float("inf") and restored["none"] is None
    assert restored["history"] == state["history"]
    assert set(restored["optimizer"]["state"]) == {0, 1}  # int keys survive
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(restored["optimizer"])
    assert torch.equal(
        restored["optimizer"]["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_checkpoint_file_is_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "c.safetensors"
    write_checkpoint({"w": torch.arange(4)}, path)
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["c.safetensors"]
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


def test_directory_context_keeps_only_the_latest_checkpoints(tmp_path: Path) -> None:
    from openmaas.training.context import DirectoryContext

    context = DirectoryContext(tmp_path, keep=2)
    for epoch in range(1, 6):
        context.save_checkpoint({"epoch": epoch})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-000004.safetensors",
        "checkpoint-000005.safetensors",
    ]
    latest = DirectoryContext(tmp_path).latest_checkpoint()
    assert latest is not None and latest["epoch"] == 5
