"""Supervised fine-tuning of a causal LM on chat examples: each example rendered through the
model's own chat template, the loss on assistant tokens only, and a plain AdamW loop over the
LoRA parameters, epoch by epoch.

The prompt and each answer are tokenized as the separate pieces the template renders them in: at
serving time the prompt up to the generation header is tokenized whole and the answer is the
model's own tokens, so this is exactly the sequence the model will see. An assistant message with
`"weight": 0` is context, not a target. No job, database or storage code here: `finetune` runs it
as a job.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

IGNORE = -100  # the label of a token that is not learned (transformers' convention)


class ChatTokenizer(Protocol):
    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the token is prompt, not answer

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _render(tokenizer: ChatTokenizer, messages: list[dict[str, Any]], prompt: bool) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, add_generation_prompt=prompt)


def encode_example(tokenizer: ChatTokenizer, messages: list[dict[str, Any]]) -> EncodedExample:
    """Token ids and labels of one chat example: labels are the assistant answers' tokens (with the
    template's end-of-turn), everything else IGNORE. Raises ValueError when the template does not
    render a conversation's beginning as the beginning of its whole."""
    ids: list[int] = []
    labels: list[int] = []
    done = ""  # the text encoded so far

    def add(text: str, learn: bool) -> None:
        tokens = tokenizer.encode(text, add_special_tokens=False) if text else []
        ids.extend(tokens)
        labels.extend(tokens if learn else [IGNORE] * len(tokens))

    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:index], prompt=True)
        whole = _render(tokenizer, messages[: index + 1], prompt=False)
        if not prompt.startswith(done) or not whole.startswith(prompt):
            raise ValueError("the chat template does not render a conversation's start as a prefix")
        add(prompt[len(done) :], learn=False)
        add(whole[len(prompt) :], learn=message.get("weight", 1) != 0)
        done = whole
    rest = _render(tokenizer, messages, prompt=False)
    if rest.startswith(done):
        add(rest[len(done) :], learn=False)
    return EncodedExample(ids, labels)


def batches(
    examples: Sequence[EncodedExample], batch_size: int, *, seed: int, epoch: int
) -> list[list[EncodedExample]]:
    """One epoch's batches, shuffled by (seed, epoch) so a resumed epoch sees the same order."""
    order = list(range(len(examples)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    starts = range(0, len(order), batch_size)
    return [[examples[i] for i in order[start : start + batch_size]] for start in starts]


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def batch_loss(model: nn.Module, batch: Sequence[EncodedExample], pad_id: int) -> torch.Tensor:
    """Mean cross-entropy over the batch's answer tokens (transformers shifts the labels)."""
    output = model(**collate(batch, pad_id))
    loss: torch.Tensor = output.loss
    return loss


@torch.no_grad()
def mean_loss(model: nn.Module, examples: Sequence[EncodedExample], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean loss over `examples` (validation)."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        n = sum(example.trained_tokens for example in batch)
        total += batch_loss(model, batch, pad_id).item() * n
        tokens += n
    model.train()
    return total / max(tokens, 1)


@dataclass(frozen=True)
class StepResult:
    step: int
    epoch: int
    train_loss: float


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: Sequence[EncodedExample],
    *,
    epoch: int,
    first_step: int,
    batch_size: int,
    seed: int,
    pad_id: int,
    on_step: Callable[[StepResult], None] | None = None,
) -> int:
    """One epoch of AdamW steps over the adapter's parameters; returns the next step number."""
    model.train()
    step = first_step
    for batch in batches(examples, batch_size, seed=seed, epoch=epoch):
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch, pad_id)
        loss.backward()
        optimizer.step()
        step += 1
        if on_step is not None:
            on_step(StepResult(step, epoch, loss.item()))
    return step
