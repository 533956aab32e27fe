"""LoRA fine-tuning speed: our `fine_tune` (what a fine-tuning job runs) against a plain
transformers + peft loop on the same model, the same examples (our chat template and labels), the
same rank, alpha, target modules, learning rate, batch size and padding — taken in turns, same run.

Prints training tokens/s (every token of the batches' examples, prompt and answer, per second of the
whole call: loading the model, encoding, training) for each, their median over the rounds, and the
ratio. Target (issue 17): ours at least equal.

    PYTHONPATH=src python -m benchmarks.lora_training [--preset small|tiny] [--examples 96] [--rounds 3]

Needs `peft` (`pip install peft==0.21.2`; not a dependency of the platform).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from openmaas.engine.testing import build_tiny_model
from openmaas.training.context import InMemoryContext
from openmaas.training.finetune import FineTuneConfig, encode_file, fine_tune, load_base
from openmaas.training.lora import DEFAULT_TARGETS
from openmaas.training.sft import batch_loss, batches

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]


def write_examples(path: Path, n: int, seed: int = 0) -> None:
    """`n` chat examples: a question of a few words, and an answer of a few more."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(n):
            question = " ".join(rng.choices(WORDS, k=rng.randint(8, 24)))
            answer = " ".join(rng.choices(WORDS, k=rng.randint(8, 24)))
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            out.write(json.dumps({"messages": messages}) + "\n")


def ours(folder: Path, data: Path, config: FineTuneConfig) -> float:
    """Seconds of one epoch of our fine-tuning job's training function."""
    started = time.perf_counter()
    fine_tune(folder, data, None, config, InMemoryContext())
    return time.perf_counter() - started


def peft_loop(folder: Path, data: Path, config: FineTuneConfig) -> float:
    """Seconds of one epoch of a plain transformers + peft loop over the same batches."""
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    model, tokenizer = load_base(folder)
    examples = encode_file(tokenizer, data)
    resolved = config.resolved(len(examples))
    torch.manual_seed(resolved.seed)
    lora = LoraConfig(
        r=resolved.lora.rank,
        lora_alpha=resolved.lora.alpha,
        lora_dropout=0.0,
        target_modules=list(DEFAULT_TARGETS),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=resolved.learning_rate, weight_decay=0.0)
    pad = model.config.pad_token_id or 0
    model.train()
    for batch in batches(examples, resolved.batch_size, seed=resolved.seed, epoch=0):
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, batch, pad)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def build(preset: str, root: Path) -> Path:
    folder = root / preset
    if preset == "tiny":
        return build_tiny_model(folder, "qwen2", max_position_embeddings=512)
    return build_tiny_model(
        folder, "qwen2", hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8,
        num_kv_heads=2, max_position_embeddings=512, initializer_range=0.02,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["small", "tiny"], default="small")
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = build(args.preset, root)
        data = root / "train.jsonl"
        write_examples(data, args.examples)
        _, tokenizer = load_base(folder)
        tokens = sum(len(e.input_ids) for e in encode_file(tokenizer, data))
        config = FineTuneConfig(n_epochs=1, batch_size=args.batch_size, learning_rate_multiplier=1)
        runs: dict[str, list[float]] = {"ours": [], "transformers+peft": []}
        ours(folder, data, config)  # warm both paths' imports and caches once
        peft_loop(folder, data, config)
        for _ in range(args.rounds):
            runs["ours"].append(tokens / ours(folder, data, config))
            runs["transformers+peft"].append(tokens / peft_loop(folder, data, config))
    shape = f"preset {args.preset}, {args.examples} examples, {tokens} tokens an epoch"
    print(f"{shape}, batch {args.batch_size}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}")
    print(f"{'':<20}{'tokens/s (median)':>20}  rounds")
    medians: dict[str, Any] = {}
    for name, values in runs.items():
        medians[name] = statistics.median(values)
        print(f"{name:<20}{medians[name]:>20.1f}  {' '.join(f'{v:.1f}' for v in values)}")
    print(f"ours / transformers+peft: {medians['ours'] / medians['transformers+peft']:.2f} (target >= 1.00)")


if __name__ == "__main__":
    main()
