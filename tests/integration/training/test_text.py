"""Text classification: both architectures learn a generated three-topic set well above chance."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.training.artifact import load_artifact, write_artifact
from openmaas.training.train import train
from tests.data.builders import topic_texts_csv

SPEC = {"text": {"vocab_size": 200, "max_length": 16}}


@pytest.mark.parametrize(("architecture", "tokenizer"), [("lstm", "wordpiece"), ("transformer", "bpe")])
def test_text_classifier_learns_topics(tmp_path: Path, architecture: str, tokenizer: str) -> None:
    path = topic_texts_csv(tmp_path / "texts.csv")
    spec = {"text": {**SPEC["text"], "tokenizer": tokenizer}}
    trained = train(
        "text-classification", path, {"epochs": 8, "architecture": architecture, "learning_rate": 0.003}, spec
    )
    assert trained.architecture["name"] == architecture
    assert trained.metrics["accuracy"] >= 0.8  # chance is 1/3
    write_artifact(trained, tmp_path / "model")
    predictions = load_artifact(tmp_path / "model").predict(
        ["the rocket left orbit near the moon", "bake the flour with sugar and butter"]
    )
    assert [p.label for p in predictions] == ["space", "cooking"]  # type: ignore[union-attr]
