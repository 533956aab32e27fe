"""`fine_tune` on chat-format files: OpenAI's "auto" hyperparameters resolved, metrics per step,
a checkpoint per epoch, and a run stopped after an epoch (a paused, cancelled or killed job)
resuming to exactly the adapter an uninterrupted run ends with — which has learned the mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from openmaas.engine.testing import build_tiny_model
from openmaas.engine.tokenizer import Tokenizer
from openmaas.training.context import DirectoryContext, InMemoryContext
from openmaas.training.finetune import BASE_LEARNING_RATE, FineTuneConfig, fine_tune, greedy_answers
from openmaas.training.loop import TrainingStopped
from openmaas.training.lora import adapter_state_dict
from tests.unit.training.test_lora import ANSWERS, chat

CONFIG = FineTuneConfig(n_epochs=5, batch_size=8, learning_rate_multiplier=10)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("finetune")
    folder = build_tiny_model(root / "tiny", "llama", max_position_embeddings=128)
    train, valid = root / "train.jsonl", root / "valid.jsonl"
    for path, numbers in ((train, range(40)), (valid, range(50, 53))):
        lines = (json.dumps({"messages": chat(t, k)}) + "\n" for t in ANSWERS for k in numbers)
        path.write_text("".join(lines))
    return folder, train, valid


def _after_reports(n: int) -> Callable[[InMemoryContext], bool]:
    return lambda context: len(context.reports) >= n


def test_auto_hyperparameters() -> None:
    resolved = FineTuneConfig().resolved(n_examples=100)
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate) == (3, 6, BASE_LEARNING_RATE)
    assert FineTuneConfig(batch_size=4, learning_rate_multiplier=2).resolved(5).batch_size == 4
    assert FineTuneConfig().resolved(3).batch_size == 1


def test_a_stopped_run_resumes_to_the_adapter_of_an_uninterrupted_one(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder, train, valid = files
    whole_context = InMemoryContext()
    whole = fine_tune(folder, train, valid, CONFIG, whole_context)
    assert whole.steps == 100 and whole.config.learning_rate == pytest.approx(5e-3)
    per_step = [r for r in whole_context.reports if "train_loss" in r and "seconds" not in r]
    assert [r["step"] for r in per_step] == list(range(1, 101)) and per_step[0]["total_steps"] == 100
    per_epoch = [r for r in whole_context.reports if "full_valid_loss" in r]
    assert [r["epoch"] for r in per_epoch] == [1, 2, 3, 4, 5] and whole_context.checkpoints_saved == 5
    assert per_epoch[-1]["full_valid_loss"] < per_epoch[0]["full_valid_loss"]
    assert whole.trained_tokens > 0

    tokenizer = Tokenizer.from_pretrained(folder)
    held_out = [chat(t, k) for t in ANSWERS for k in range(100, 110)]
    answers = greedy_answers(whole.model, tokenizer, [m[:1] for m in held_out], max_tokens=8)
    assert sum(a == m[1]["content"] for a, m in zip(answers, held_out, strict=True)) / len(held_out) >= 0.9

    checkpoints = tmp_path / "checkpoints"
    # Stopped at the end of epoch 1, then again 4 steps into epoch 3 (20 steps an epoch; each
    # epoch reports its steps and then its losses).
    with pytest.raises(TrainingStopped) as stopped:
        fine_tune(folder, train, valid, CONFIG, DirectoryContext(checkpoints, stop_when=_after_reports(21)))
    assert stopped.value.checkpoint_epoch == 1
    with pytest.raises(TrainingStopped) as stopped:
        fine_tune(
            folder,
            train,
            valid,
            CONFIG,
            DirectoryContext(checkpoints, stop_when=lambda c: len(c.reports) >= 25),
        )
    assert stopped.value.checkpoint_epoch == 2
    resumed_context = DirectoryContext(checkpoints)
    resumed = fine_tune(folder, train, valid, CONFIG, resumed_context)
    assert resumed.resumed_from_epoch == 2 and resumed.steps == 100
    assert [r["epoch"] for r in resumed_context.reports if "full_valid_loss" in r] == [3, 4, 5]
    mine, reference = adapter_state_dict(resumed.model), adapter_state_dict(whole.model)
    assert all(torch.equal(mine[name], reference[name]) for name in reference)
