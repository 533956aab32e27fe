"""LoRA fine-tuning of an imported Llama/Qwen2 model folder on chat-format files: the config with
OpenAI's hyperparameters ("auto" resolved here), and `fine_tune`, which trains epoch by epoch
through a `TrainingContext` — metrics per step, a checkpoint (adapter and optimizer state) after
every epoch, and a resumed run restarting after its latest checkpoint with the same result as an
uninterrupted one — and returns the adapted model to save with `lora.save_adapter`.

The model is transformers' own class for the folder, in float32 on the CPU (or CUDA when asked);
the tokenizer and chat template are our engine's, the ones the adapter will be served with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from openmaas.datasets.chat_format import read_chat_examples
from openmaas.training.context import TrainingContext
from openmaas.training.loop import TrainingStopped
from openmaas.training.lora import (
    DEFAULT_TARGETS,
    LoraSpec,
    adapter_state_dict,
    apply_lora,
    load_adapter_state,
    lora_parameters,
)
from openmaas.training.sft import EncodedExample, StepResult, encode_example, mean_loss, train_epoch

# OpenAI multiplies its own base rate; ours is a usual LoRA rate for models of a few billion weights.
BASE_LEARNING_RATE = 5e-4
Auto = Literal["auto"]


@dataclass(frozen=True)
class FineTuneConfig:
    """OpenAI's supervised hyperparameters plus LoRA's; "auto" is resolved by `resolved`."""

    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    seed: int = 0

    def resolved(self, n_examples: int) -> ResolvedConfig:
        """Concrete values: 3 epochs, about one batch per 16 examples up to 16, multiplier 1."""
        epochs = 3 if self.n_epochs == "auto" else self.n_epochs
        batch = min(16, max(1, n_examples // 16)) if self.batch_size == "auto" else self.batch_size
        multiplier = 1.0 if self.learning_rate_multiplier == "auto" else self.learning_rate_multiplier
        spec = LoraSpec(self.lora_rank, self.lora_alpha, self.lora_dropout, tuple(self.lora_target_modules))
        return ResolvedConfig(epochs, batch, BASE_LEARNING_RATE * multiplier, spec, self.seed)


@dataclass(frozen=True)
class ResolvedConfig:
    n_epochs: int
    batch_size: int
    learning_rate: float
    lora: LoraSpec
    seed: int


@dataclass
class FineTuned:
    model: Any  # transformers' model with the LoRA wrappers in place
    config: ResolvedConfig
    trained_tokens: int  # answer tokens × epochs: what fine-tuning is billed by
    steps: int
    metrics: dict[str, float]
    resumed_from_epoch: int = 0


def load_base(folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    """transformers' model of the folder (float32) and our engine's tokenizer of it."""
    from transformers import AutoModelForCausalLM

    from openmaas.engine.tokenizer import Tokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = model.to(device)
    return model, Tokenizer.from_pretrained(folder)


def encode_file(tokenizer: Any, path: Path) -> list[EncodedExample]:
    return [encode_example(tokenizer, example.messages) for example in read_chat_examples(path)]


def _pad_id(model: Any) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def fine_tune(
    base_folder: Path,
    training_file: Path,
    validation_file: Path | None,
    config: FineTuneConfig,
    context: TrainingContext,
    *,
    device: str = "cpu",
) -> FineTuned:
    """Train a LoRA adapter of the model in `base_folder`; raises TrainingStopped when the context
    asks to stop: within an epoch at the next step (a resumed run redoes that epoch), or after an
    epoch's checkpoint."""
    model, tokenizer = load_base(base_folder, device)
    train = encode_file(tokenizer, training_file)
    valid = encode_file(tokenizer, validation_file) if validation_file is not None else []
    resolved = config.resolved(len(train))
    torch.manual_seed(resolved.seed)  # the adapter's initial A: a resumed run must start alike
    apply_lora(model, resolved.lora)
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=resolved.learning_rate, weight_decay=0.0)
    pad_id = _pad_id(model)
    steps_per_epoch = -(-len(train) // resolved.batch_size)
    total_steps = steps_per_epoch * resolved.n_epochs
    first_epoch, step, resumed = _resume(model, optimizer, context)
    metrics: dict[str, float] = {}
    epoch_losses: list[float] = []

    def on_step(result: StepResult) -> None:
        epoch_losses.append(result.train_loss)
        context.report(
            {"epoch": result.epoch + 1, "step": result.step, "total_steps": total_steps,
             "train_loss": result.train_loss}
        )  # fmt: skip
        if result.step % steps_per_epoch and context.should_stop():
            # Mid-epoch: the resumed run redoes this epoch from the last checkpoint, in the same
            # order with the same optimizer state, so it ends exactly where this one would have.
            raise TrainingStopped(result.epoch)

    for epoch in range(first_epoch, resolved.n_epochs):
        started = time.monotonic()
        epoch_losses.clear()
        step = train_epoch(
            model, optimizer, train, epoch=epoch, first_step=step, batch_size=resolved.batch_size,
            seed=resolved.seed, pad_id=pad_id, on_step=on_step,
        )  # fmt: skip
        metrics = {"epoch": epoch + 1, "step": step, "seconds": time.monotonic() - started}
        if valid:
            metrics["full_valid_loss"] = mean_loss(model, valid, pad_id, resolved.batch_size)
        else:
            # The mean of the epoch's step losses: a second pass over the training set only to
            # report its loss would cost a third of the epoch again.
            metrics["train_loss"] = sum(epoch_losses) / max(1, len(epoch_losses))
        context.report(metrics)
        context.save_checkpoint(
            {"epoch": epoch + 1, "step": step, "adapter": adapter_state_dict(model),
             "optimizer": optimizer.state_dict(), "metrics": metrics}
        )  # fmt: skip
        if epoch + 1 < resolved.n_epochs and context.should_stop():
            raise TrainingStopped(epoch + 1)
    tokens = sum(example.trained_tokens for example in train) * resolved.n_epochs
    return FineTuned(model, resolved, tokens, step, metrics, resumed)


def _resume(model: Any, optimizer: torch.optim.Optimizer, context: TrainingContext) -> tuple[int, int, int]:
    """(first epoch to train, step reached, epochs restored) from the latest checkpoint."""
    state = context.latest_checkpoint()
    if state is None:
        return 0, 0, 0
    load_adapter_state(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), int(state["step"]), int(state["epoch"])


def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[list[dict[str, Any]]], max_tokens: int
) -> list[str]:
    """Each prompt's greedy answer under the adapted model (for tests and evaluation)."""
    model.eval()
    answers = []
    eos = getattr(model.config, "eos_token_id", None)
    for messages in prompts:
        ids = tokenizer.encode_chat(messages)
        out = model.generate(
            torch.tensor([ids], device=model.device), max_new_tokens=max_tokens, do_sample=False,
            eos_token_id=eos, pad_token_id=_pad_id(model),
        )  # fmt: skip
        answers.append(tokenizer.decode(out[0, len(ids) :].tolist()))
    return answers
