"""Overhead of the platform's shared training loop against a plain PyTorch loop.

Same model, data, optimizer, batch size and epochs; the platform side adds what a job pays for:
per-batch stop checks, per-epoch validation metrics and reports, and serialised checkpoints
(safetensors) through an in-memory TrainingContext: with the default schedule (every epoch unless
saving would cost over 2% of the run) and on every epoch. Data preparation is not timed.

Usage: python benchmarks/training_overhead.py [--mlp-epochs 200] [--cnn-epochs 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.data.builders

from tests.data.builders import breast_cancer_csv, digits_zip

from openmaas.datasets.loading import read_labelled_files, read_table
from openmaas.datasets.preprocessing import (
    ImagePreprocessor,
    ImageSpec,
    LabelEncoder,
    SplitSpec,
    TabularPreprocessor,
    TabularSpec,
    split_examples,
)
from openmaas.training.classification import SplitTensors, train_classifier
from openmaas.training.config import CommonConfig
from openmaas.training.context import InMemoryContext
from openmaas.training.models import MLP, SmallResNet

BATCH, LR, SEED = 64, 0.003, 0


def tabular_data(folder: Path) -> SplitTensors:
    frame = read_table(breast_cancer_csv(folder / "bc.csv"))
    labels = LabelEncoder.fit(frame["label"].tolist()).encode(frame["label"].tolist())
    split = split_examples(len(frame), SplitSpec(), labels.numpy())
    features = frame.drop(columns=["label"])
    x = TabularPreprocessor.fit(features.iloc[split.train], TabularSpec()).transform_frame(features)
    return _split(x, labels, split.train, split.validation, split.test)


def image_data(folder: Path) -> SplitTensors:
    files = read_labelled_files(digits_zip(folder / "digits.zip"), "image")
    labels = LabelEncoder.fit(files.labels).encode(files.labels)
    split = split_examples(len(labels), SplitSpec(), labels.numpy())
    spec = ImageSpec(height=8, width=8, grayscale=True)
    x = ImagePreprocessor.fit([files.data[i] for i in split.train], spec).transform(files.data)
    return _split(x, labels, split.train, split.validation, split.test)


def _split(x: torch.Tensor, y: torch.Tensor, *parts: object) -> SplitTensors:
    train, val, test = parts
    return SplitTensors(x[train], y[train], x[val], y[val], x[test], y[test])  # type: ignore[index]


def plain_loop(model: nn.Module, data: SplitTensors, epochs: int) -> None:
    """What one would write by hand: shuffle, step, and a validation pass per epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.train_y), generator=generator)
        for start in range(0, len(order), BATCH):
            index = order[start : start + BATCH]
            loss = F.cross_entropy(model(data.train_x[index]), data.train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            model(data.val_x).argmax(1).eq(data.val_y).float().mean()


def platform_loop(
    model: nn.Module, data: SplitTensors, epochs: int, checkpoint_overhead: float = 0.02
) -> None:
    config = CommonConfig(
        epochs=epochs, batch_size=BATCH, learning_rate=LR, seed=SEED, checkpoint_overhead=checkpoint_overhead
    )
    context = InMemoryContext()
    train_classifier(model, data, config, context)
    assert len(context.reports) == epochs and context.checkpoints_saved >= 1
    assert checkpoint_overhead > 0 or context.checkpoints_saved == epochs


def timed(
    run: Callable[[nn.Module, SplitTensors, int], None],
    build: Callable[[], nn.Module],
    data: SplitTensors,
    epochs: int,
) -> float:
    torch.manual_seed(SEED)
    model = build()
    # CPU time of this process, not wall time: on a shared machine other processes' load
    # would otherwise swamp a difference of a few percent.
    started = time.process_time()
    run(model, data, epochs)
    return time.process_time() - started


def compare(name: str, build: Callable[[], nn.Module], data: SplitTensors, epochs: int, repeats: int) -> None:
    """Best of `repeats` interleaved runs each, in rotating order (damps noise from other processes)."""
    runs: dict[str, Callable[[nn.Module, SplitTensors, int], None]] = {
        "plain": plain_loop,
        "platform (default schedule)": platform_loop,
        "platform, checkpoint every epoch": lambda m, d, e: platform_loop(m, d, e, checkpoint_overhead=0.0),
    }
    times: dict[str, list[float]] = {label: [] for label in runs}
    labels = list(runs)
    for repeat in range(repeats):
        # Rotate the order so that no variant always runs first (warm caches, allocator state).
        for label in labels[repeat % len(labels) :] + labels[: repeat % len(labels)]:
            times[label].append(timed(runs[label], build, data, epochs))
    plain = min(times["plain"])
    print(f"{name}, {epochs} epochs: plain loop {plain:.2f} CPU-s")
    for label in list(runs)[1:]:
        best = min(times[label])
        print(f"  {label:<34} {best:7.2f} CPU-s  overhead {(best - plain) / plain * 100:+.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mlp-epochs", type=int, default=200)
    parser.add_argument("--cnn-epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        tabular, images = tabular_data(Path(folder)), image_data(Path(folder))
    compare(
        "MLP", lambda: MLP(tabular.train_x.shape[1], 2, (64, 32), 0.1), tabular, args.mlp_epochs, args.repeats
    )
    compare("CNN", lambda: SmallResNet(1, 10, (16, 32), 1, 0.1), images, args.cnn_epochs, args.repeats)


if __name__ == "__main__":
    main()
