"""The one training loop every task family shares: seeded epochs of shuffled mini-batches,
per-epoch validation metrics, early stopping on a monitored metric, and checkpoints through a
`TrainingContext` from which an interrupted run resumes exactly where it left off.

Reproducibility across a resume comes from seeding each epoch from (seed, epoch) instead of
carrying RNG state: epoch 7 shuffles and drops out the same way whether or not epoch 6 ran in
this process.

Data-parallel training (`training/distributed.py`) runs this same loop on every rank: a context
that carries a `DataParallel` has the loop train its model wrapped for gradient averaging, on its
rank's shard, with the global batch split among the ranks.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from openmaas.training.checkpoint import State
from openmaas.training.context import TrainingContext

LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]
EvaluateFn = Callable[[nn.Module], dict[str, float]]


class TrainingStopped(Exception):
    """The context asked the run to stop; a resumed run restarts after `checkpoint_epoch`."""

    def __init__(self, checkpoint_epoch: int) -> None:
        super().__init__(f"training stopped; the latest checkpoint holds {checkpoint_epoch} epochs")
        self.checkpoint_epoch = checkpoint_epoch


class DataParallel(Protocol):
    """One rank of a data-parallel run, as the loop sees it (found as `context.parallel`)."""

    world_size: int

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model whose backward pass averages gradients across ranks (DDP)."""
        ...

    def shard(self, data: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's rows of the training tensors (every rank gets as many)."""
        ...

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks."""
        ...


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    monitor: str
    mode: Literal["max", "min"] = "max"
    weight_decay: float = 0.0
    patience: int = 0  # epochs without improvement before stopping; 0 turns early stopping off
    checkpoint_every: int = 1
    checkpoint_min_seconds: float = 0.0  # also wait this long between checkpoints (0: no wait)
    # Skip a due checkpoint while saving would take more than this share of the run's time
    # (the last save's cost against the time since it); 0 saves every due checkpoint.
    checkpoint_overhead: float = 0.02
    grad_clip: float | None = 5.0


@dataclass
class LoopResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    stopped_early: bool
    resumed_from_epoch: int = 0


@dataclass
class _Progress:
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def _seed_default_generators(seed: int) -> None:
    """What `torch.manual_seed` does for the devices in use. Not `torch.manual_seed` itself, per
    epoch: with no accelerator initialised it queues a lazy seeding call with a formatted stack
    for each backend (CUDA, XPU, MTIA) — milliseconds per epoch and a queue that never shrinks."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def train_loop(
    model: nn.Module,
    data: Sequence[torch.Tensor],
    loss_fn: LossFn,
    evaluate: EvaluateFn,
    settings: LoopSettings,
    context: TrainingContext,
) -> LoopResult:
    """Train `model` on the aligned tensors `data` (batched along dim 0), restore its best
    weights, and return the per-epoch history. Raises TrainingStopped when the context says so."""
    parallel: DataParallel | None = getattr(context, "parallel", None)
    trained, batch_size = model, settings.batch_size
    if parallel is not None:
        # Checkpoints, evaluation and the best weights keep using `model` itself (one copy of the
        # weights, the same on every rank); only the training step goes through the wrapper.
        # Wrapped first: a rank on a GPU moves the model there, and resuming then loads the
        # optimizer's state onto the same device.
        trained, data = parallel.wrap(model), parallel.shard(data)
        batch_size = max(1, settings.batch_size // parallel.world_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    progress = _resume(model, optimizer, context)
    resumed_from = progress.epoch
    schedule = CheckpointSchedule(settings, progress.epoch)
    while progress.epoch < settings.epochs and not progress.stopped_early:
        epoch = progress.epoch + 1
        started = time.perf_counter()
        train_loss = _train_epoch(
            trained, optimizer, data, loss_fn, settings, batch_size, epoch, context, schedule.saved_epoch
        )
        if parallel is not None:
            train_loss = parallel.mean(train_loss)
        model.eval()
        with torch.no_grad():
            metrics = evaluate(model)
        record = {"epoch": float(epoch), "train_loss": train_loss, "seconds": time.perf_counter() - started}
        record.update({f"val_{name}": value for name, value in metrics.items()})
        _update_best(model, progress, record, settings)
        progress.epoch = epoch
        progress.history.append(record)
        context.report(dict(record))
        if schedule.due(epoch, final=epoch == settings.epochs or progress.stopped_early):
            schedule.save(context, lambda: _snapshot(model, optimizer, progress), epoch)
    if progress.best_model is not None:
        model.load_state_dict(progress.best_model)
    model.eval()
    best = progress.best_score if settings.mode == "max" else -progress.best_score
    return LoopResult(progress.history, progress.best_epoch, best, progress.stopped_early, resumed_from)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Sequence[torch.Tensor],
    loss_fn: LossFn,
    settings: LoopSettings,
    batch_size: int,
    epoch: int,
    context: TrainingContext,
    checkpoint_epoch: int,
) -> float:
    _seed_default_generators(_epoch_seed(settings.seed, epoch))
    generator = torch.Generator().manual_seed(_epoch_seed(settings.seed, epoch))
    size = len(data[0])
    order = torch.randperm(size, generator=generator)
    model.train()
    total, seen = 0.0, 0
    for start in range(0, size, batch_size):
        if context.should_stop():
            raise TrainingStopped(checkpoint_epoch)
        index = order[start : start + batch_size]
        batch = tuple(tensor[index] for tensor in data)
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        total += float(loss.detach()) * len(index)
        seen += len(index)
    return total / max(seen, 1)


class CheckpointSchedule:
    """Decides when to checkpoint: every `checkpoint_every` epochs, at least `checkpoint_min_seconds`
    apart, and never so often that saving costs more than `checkpoint_overhead` of the run."""

    def __init__(self, settings: LoopSettings, resumed_epoch: int) -> None:
        self.settings = settings
        self.saved_epoch = resumed_epoch
        self.last_saved = time.monotonic()
        self.last_cost = 0.0

    def due(self, epoch: int, *, final: bool) -> bool:
        if final:
            return True
        if epoch % self.settings.checkpoint_every:
            return False
        wait = self.settings.checkpoint_min_seconds
        if self.settings.checkpoint_overhead > 0:
            wait = max(wait, self.last_cost / self.settings.checkpoint_overhead)
        return time.monotonic() - self.last_saved >= wait

    def save(self, context: TrainingContext, snapshot: Callable[[], State], epoch: int) -> None:
        started = time.monotonic()
        context.save_checkpoint(snapshot())
        self.last_saved = time.monotonic()
        self.last_cost = self.last_saved - started
        self.saved_epoch = epoch


def _update_best(
    model: nn.Module, progress: _Progress, record: dict[str, float], settings: LoopSettings
) -> None:
    key = f"val_{settings.monitor}"
    if key not in record:
        raise KeyError(f"evaluate() did not return the monitored metric {settings.monitor!r}")
    score = record[key] if settings.mode == "max" else -record[key]
    if score > progress.best_score + 1e-12 or progress.best_model is None:
        progress.best_score = score
        progress.best_epoch = int(record["epoch"])
        progress.best_model = copy.deepcopy(model.state_dict())
        progress.bad_epochs = 0
        return
    progress.bad_epochs += 1
    if settings.patience and progress.bad_epochs >= settings.patience:
        progress.stopped_early = True


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, progress: _Progress) -> State:
    return {
        "epoch": progress.epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        # One JSON string, not a nested structure: packing grows with every epoch otherwise.
        "history": json.dumps(progress.history),
        "best_score": progress.best_score,
        "best_epoch": progress.best_epoch,
        "best_model": progress.best_model,
        "bad_epochs": progress.bad_epochs,
        "stopped_early": progress.stopped_early,
    }


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, context: TrainingContext) -> _Progress:
    state: dict[str, Any] | None = context.latest_checkpoint()
    if state is None:
        return _Progress()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return _Progress(
        epoch=int(state["epoch"]),
        history=json.loads(state["history"]),
        best_score=float(state["best_score"]),
        best_epoch=int(state["best_epoch"]),
        best_model=state["best_model"],
        bad_epochs=int(state["bad_epochs"]),
        stopped_early=bool(state["stopped_early"]),
    )
