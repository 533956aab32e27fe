"""The shared loop: seeded, resumable mid-run to the same weights, with early stopping."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openmaas.training.context import DirectoryContext, InMemoryContext
from openmaas.training.loop import LoopResult, LoopSettings, TrainingStopped, train_loop
from openmaas.training.models import MLP


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=generator)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def _loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _run(context: InMemoryContext, epochs: int = 6, **overrides: object) -> tuple[nn.Module, LoopResult]:
    x, y = _data()
    torch.manual_seed(1)
    model = MLP(5, 2, (16,), dropout=0.2)

    def evaluate(trained: nn.Module) -> dict[str, float]:
        logits = trained(x[:50])
        return {
            "loss": float(F.cross_entropy(logits, y[:50])),
            "accuracy": float((logits.argmax(1) == y[:50]).float().mean()),
        }

    settings = LoopSettings(
        epochs=epochs, batch_size=32, learning_rate=0.01, seed=3, monitor="loss", mode="min"
    )
    settings = LoopSettings(**{**vars(settings), **overrides})  # type: ignore[arg-type]
    return model, train_loop(model, (x, y), _loss, evaluate, settings, context)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_same_seed_gives_the_same_weights_and_metrics() -> None:
    first_model, first = _run(InMemoryContext())
    second_model, second = _run(InMemoryContext())
    assert _same_weights(first_model, second_model)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in first.history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in second.history
    ]
    assert first.history[-1]["val_accuracy"] > 0.8


def test_resuming_after_an_interruption_gives_the_same_final_weights(tmp_path: Path) -> None:
    uninterrupted, expected = _run(InMemoryContext())
    folder = tmp_path / "ckpt"
    # Stop in the middle of epoch 4: after 3 checkpoints and a few batches.
    batches = {"n": 0}

    def stop(context: InMemoryContext) -> bool:
        batches["n"] += 1
        return len(context.reports) == 3 and batches["n"] > 22

    with pytest.raises(TrainingStopped) as info:
        _run(DirectoryContext(folder, stop_when=stop), checkpoint_overhead=0.0)
    assert info.value.checkpoint_epoch == 3
    resumed_context = DirectoryContext(folder)  # a fresh process sees only the folder
    resumed, result = _run(resumed_context, checkpoint_overhead=0.0)
    assert result.resumed_from_epoch == 3
    assert [r["epoch"] for r in resumed_context.reports] == [4.0, 5.0, 6.0]
    assert _same_weights(uninterrupted, resumed)
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in expected.history]


def test_early_stopping_restores_the_best_epoch() -> None:
    context = InMemoryContext()
    # A huge learning rate makes validation loss worse after the first epochs.
    _model, result = _run(context, epochs=30, patience=2, learning_rate=5.0, checkpoint_overhead=0.0)
    assert result.stopped_early and len(result.history) < 30
    best = min(r["val_loss"] for r in result.history)
    assert result.best_score == best
    assert result.history[result.best_epoch - 1]["val_loss"] == best
    assert context.checkpoints_saved == len(result.history)


def test_reports_carry_epoch_loss_and_validation_metrics() -> None:
    context = InMemoryContext()
    _run(context, epochs=2, checkpoint_every=2)
    assert [r["epoch"] for r in context.reports] == [1.0, 2.0]
    assert {"train_loss", "val_loss", "val_accuracy", "seconds"} <= set(context.reports[0])
    assert context.checkpoints_saved == 1


class SlowSaves(InMemoryContext):
    def save_checkpoint(self, state: dict[str, object]) -> None:
        time.sleep(0.05)
        super().save_checkpoint(state)


def test_checkpoints_are_skipped_while_saving_would_cost_over_2_percent() -> None:
    context = SlowSaves()
    _run(context, epochs=12)
    assert 1 <= context.checkpoints_saved < 6  # each save (50 ms) needs ~2.5 s of training before the next
    latest = context.latest_checkpoint()
    assert latest is not None and latest["epoch"] == 12  # the final epoch is always saved
    every_epoch = SlowSaves()
    _run(every_epoch, epochs=3, checkpoint_overhead=0.0)
    assert every_epoch.checkpoints_saved == 3


def test_a_stop_reports_the_epoch_of_the_latest_checkpoint() -> None:
    context = SlowSaves(stop_when=lambda ctx: len(ctx.reports) == 5)
    with pytest.raises(TrainingStopped) as info:
        _run(context, epochs=12)
    latest = context.latest_checkpoint()
    assert latest is not None and info.value.checkpoint_epoch == latest["epoch"] <= 5
